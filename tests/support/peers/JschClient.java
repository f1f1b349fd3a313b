/*
 * A JSch SSH client for sshr's tests: runs one command with exec, copies its own stdin
 * to the command's stdin, the command's stdout and stderr to its own, and exits with
 * the command's exit status (255 and one line on stderr when it cannot log in).
 *
 *     java -cp /usr/share/java/jsch.jar:DIR JschClient --port P --user U
 *          --known-hosts FILE (--key FILE | --password | --kbdint) COMMAND
 *
 * --password and --kbdint take the password from the environment variable
 * SSHR_PEER_PASSWORD. The server's host key must be in FILE (OpenSSH known_hosts
 * format): any other key is refused. Built by the tests with javac against Debian's
 * libjsch-java.
 */
import com.jcraft.jsch.ChannelExec;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.JSchException;
import com.jcraft.jsch.Session;
import com.jcraft.jsch.UIKeyboardInteractive;
import com.jcraft.jsch.UserInfo;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Properties;

public class JschClient {
    /** Answers password and keyboard-interactive prompts with one password. */
    static final class Answers implements UserInfo, UIKeyboardInteractive {
        private final String password;

        Answers(String password) {
            this.password = password;
        }

        public String getPassphrase() { return null; }
        public String getPassword() { return password; }
        public boolean promptPassword(String message) { return password != null; }
        public boolean promptPassphrase(String message) { return false; }
        public boolean promptYesNo(String message) { return false; }
        public void showMessage(String message) {}

        public String[] promptKeyboardInteractive(
                String destination, String name, String instruction, String[] prompt, boolean[] echo) {
            if (password == null) {
                return null;
            }
            String[] answers = new String[prompt.length];
            java.util.Arrays.fill(answers, password);
            return answers;
        }
    }

    public static void main(String[] args) {
        int port = 0;
        String user = null, knownHosts = null, key = null, method = null, command = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--port": port = Integer.parseInt(args[++i]); break;
                case "--user": user = args[++i]; break;
                case "--known-hosts": knownHosts = args[++i]; break;
                case "--key": key = args[++i]; method = "publickey"; break;
                case "--password": method = "password"; break;
                case "--kbdint": method = "keyboard-interactive"; break;
                default:
                    if (i == args.length - 1 && !args[i].startsWith("-")) {
                        command = args[i];
                    } else {
                        fail("unknown argument " + args[i]);
                    }
            }
        }
        if (port == 0 || user == null || knownHosts == null || method == null || command == null) {
            fail("usage: JschClient --port P --user U --known-hosts FILE "
                    + "(--key FILE | --password | --kbdint) COMMAND");
        }
        try {
            System.exit(run(port, user, knownHosts, key, method, command));
        } catch (Exception e) {
            fail(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    static int run(int port, String user, String knownHosts, String key, String method, String command)
            throws Exception {
        JSch jsch = new JSch();
        jsch.setKnownHosts(knownHosts);
        if (key != null) {
            jsch.addIdentity(key);
        }
        Session session = jsch.getSession(user, "127.0.0.1", port);
        Properties config = new Properties();
        config.put("StrictHostKeyChecking", "yes");
        config.put("PreferredAuthentications", method);
        session.setConfig(config);
        session.setUserInfo(new Answers(key == null ? System.getenv("SSHR_PEER_PASSWORD") : null));
        session.connect(60000);

        ChannelExec channel = (ChannelExec) session.openChannel("exec");
        channel.setCommand(command);
        channel.setErrStream(System.err, true);
        OutputStream toRemote = channel.getOutputStream();
        InputStream fromRemote = channel.getInputStream();
        channel.connect(60000);

        Thread feeder = new Thread(() -> {
            byte[] buf = new byte[65536];
            try {
                int n;
                while ((n = System.in.read(buf)) > 0) {
                    toRemote.write(buf, 0, n);
                }
                toRemote.flush();
                toRemote.close(); // sends EOF
            } catch (java.io.IOException e) {
                // the channel closed first
            }
        });
        feeder.setDaemon(true);
        feeder.start();

        byte[] buf = new byte[65536];
        int n;
        while ((n = fromRemote.read(buf)) >= 0) {
            System.out.write(buf, 0, n);
        }
        System.out.flush();
        for (int i = 0; i < 200 && !channel.isClosed(); i++) {
            Thread.sleep(50);
        }
        int status = channel.getExitStatus();
        channel.disconnect();
        session.disconnect();
        return status < 0 ? 255 : status;
    }

    static void fail(String message) {
        System.err.println("jsch: " + message);
        System.exit(255);
    }
}
