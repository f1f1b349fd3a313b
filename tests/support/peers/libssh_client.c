/*
 * A libssh SSH client for sshr's tests: runs one command with exec, copies its own
 * stdin to the command's stdin, the command's stdout and stderr to its own, and exits
 * with the command's exit status (255 and one line on stderr when it cannot log in).
 *
 *     libssh_client --port P --user U --known-hosts FILE
 *                   (--key FILE | --password | --kbdint) COMMAND
 *
 * --password and --kbdint take the password from the environment variable
 * SSHR_PEER_PASSWORD. The server's host key must be in FILE (OpenSSH known_hosts
 * format): any other key is refused. Built by the tests with
 * `gcc -o libssh_client libssh_client.c -lssh` (Debian's libssh-dev).
 */
#include <errno.h>
#include <libssh/libssh.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

static void fail(ssh_session session, const char *what)
{
    fprintf(stderr, "libssh: %s: %s\n", what, session ? ssh_get_error(session) : "");
    exit(255);
}

static void write_all(int fd, const char *buf, int len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, (size_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            exit(255);
        buf += n;
        len -= (int)n;
    }
}

/* Copies what the channel has on stdout and stderr; returns SSH_ERROR on failure. */
static int drain(ssh_channel channel)
{
    char buf[65536];
    for (int is_stderr = 0; is_stderr <= 1; is_stderr++) {
        int n;
        while ((n = ssh_channel_read_nonblocking(channel, buf, sizeof buf, is_stderr)) > 0)
            write_all(is_stderr ? 2 : 1, buf, n);
        if (n == SSH_ERROR)
            return SSH_ERROR;
    }
    return SSH_OK;
}

/* One authentication request, as a function that can be called again. */
typedef int (*auth_call)(ssh_session session, const char *user, const void *arg);

static int by_key(ssh_session session, const char *user, const void *key)
{
    return ssh_userauth_publickey(session, user, (ssh_key)key);
}

static int by_password(ssh_session session, const char *user, const void *password)
{
    return ssh_userauth_password(session, user, password);
}

static int by_kbdint(ssh_session session, const char *user, const void *unused)
{
    (void)unused;
    return ssh_userauth_kbdint(session, user, NULL);
}

/*
 * Calls `call` until it is done. In blocking mode libssh 0.10 waits out its whole
 * timeout when the server disconnects during authentication (its wait looks at the
 * authentication state only): here it runs non-blocking and stops when the
 * connection is gone.
 */
static int auth_step(ssh_session session, const char *user, auth_call call, const void *arg)
{
    ssh_set_blocking(session, 0);
    int rc = SSH_AUTH_AGAIN;
    for (int i = 0; i < 6000 && ssh_is_connected(session); i++) {
        rc = call(session, user, arg);
        if (rc != SSH_AUTH_AGAIN)
            break;
        struct pollfd pfd = {.fd = ssh_get_fd(session), .events = POLLIN};
        poll(&pfd, 1, 10);
    }
    ssh_set_blocking(session, 1);
    return rc;
}

static int authenticate(ssh_session session, const char *user, const char *key_file,
                        const char *method)
{
    const char *password = getenv("SSHR_PEER_PASSWORD");
    if (key_file) {
        ssh_key key = NULL;
        if (ssh_pki_import_privkey_file(key_file, NULL, NULL, NULL, &key) != SSH_OK)
            fail(session, "cannot read the key");
        int rc = auth_step(session, user, by_key, key);
        ssh_key_free(key);
        return rc;
    }
    if (!password)
        fail(NULL, "SSHR_PEER_PASSWORD is not set");
    if (strcmp(method, "password") == 0)
        return auth_step(session, user, by_password, password);
    int rc = auth_step(session, user, by_kbdint, NULL);
    for (int round = 0; rc == SSH_AUTH_INFO && round < 10; round++) {
        int prompts = ssh_userauth_kbdint_getnprompts(session);
        for (int i = 0; i < prompts; i++)
            if (ssh_userauth_kbdint_setanswer(session, (unsigned)i, password) < 0)
                fail(session, "keyboard-interactive answer");
        rc = auth_step(session, user, by_kbdint, NULL);
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *user = NULL, *known_hosts = NULL, *key_file = NULL, *method = NULL;
    const char *command = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
            user = argv[++i];
        else if (strcmp(argv[i], "--known-hosts") == 0 && i + 1 < argc)
            known_hosts = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key_file = argv[++i], method = "publickey";
        else if (strcmp(argv[i], "--password") == 0)
            method = "password";
        else if (strcmp(argv[i], "--kbdint") == 0)
            method = "keyboard-interactive";
        else if (argv[i][0] != '-' && i == argc - 1)
            command = argv[i];
        else {
            fprintf(stderr, "libssh: unknown argument %s\n", argv[i]);
            return 255;
        }
    }
    if (!port || !user || !known_hosts || !method || !command) {
        fprintf(stderr, "usage: libssh_client --port P --user U --known-hosts FILE "
                        "(--key FILE | --password | --kbdint) COMMAND\n");
        return 255;
    }

    ssh_session session = ssh_new();
    if (!session)
        fail(NULL, "ssh_new");
    long timeout = 60;
    int no = 0;
    ssh_options_set(session, SSH_OPTIONS_HOST, "127.0.0.1");
    ssh_options_set(session, SSH_OPTIONS_PORT, &port);
    ssh_options_set(session, SSH_OPTIONS_USER, user);
    ssh_options_set(session, SSH_OPTIONS_PROCESS_CONFIG, &no);
    ssh_options_set(session, SSH_OPTIONS_KNOWNHOSTS, known_hosts);
    ssh_options_set(session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &timeout);
    if (ssh_connect(session) != SSH_OK)
        fail(session, "connect");
    if (ssh_session_is_known_server(session) != SSH_KNOWN_HOSTS_OK)
        fail(NULL, "the server's host key is not in the known_hosts file");
    if (authenticate(session, user, key_file, method) != SSH_AUTH_SUCCESS)
        fail(session, "authentication failed");

    ssh_channel channel = ssh_channel_new(session);
    if (!channel || ssh_channel_open_session(channel) != SSH_OK)
        fail(session, "open session channel");
    if (ssh_channel_request_exec(channel, command) != SSH_OK)
        fail(session, "exec");

    int stdin_open = 1;
    char buf[65536];
    while (!ssh_channel_is_eof(channel)) {
        ssh_channel in[2] = {channel, NULL}, out[2] = {NULL, NULL};
        fd_set fds;
        FD_ZERO(&fds);
        if (stdin_open)
            FD_SET(0, &fds);
        struct timeval tv = {1, 0};
        int rc = ssh_select(in, out, 1, &fds, &tv);
        if (rc == SSH_ERROR)
            fail(session, "select");
        if (stdin_open && FD_ISSET(0, &fds)) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                stdin_open = 0;
                if (ssh_channel_send_eof(channel) != SSH_OK)
                    fail(session, "send eof");
            } else if (ssh_channel_write(channel, buf, (uint32_t)n) != n) {
                fail(session, "write");
            }
        }
        if (drain(channel) == SSH_ERROR)
            fail(session, "read");
    }
    if (drain(channel) == SSH_ERROR)
        fail(session, "read");
    int status = ssh_channel_get_exit_status(channel);
    ssh_channel_close(channel);
    ssh_channel_free(channel);
    ssh_disconnect(session);
    ssh_free(session);
    return status < 0 ? 255 : status;
}
