//! End to end: real OpenSSH clients (`ssh`, `scp`, `sftp`, `ssh-agent`) talk to the
//! `sshr` binary, which relays them to real OpenSSH `sshd` upstreams on loopback.
//!
//! Every test builds its own [`Env`]: two upstream `sshd`s ("A" and "B", each with a
//! distinct `SetEnv SSHR_UPSTREAM=...`) and one `sshr` in front of them with a small static
//! user table. Starting them takes a few tens of milliseconds, and separate daemons keep
//! the tests independent (the session gauge of the concurrency test, the sshd logs used
//! as evidence of rekeys).
//!
//! Needs root (sshd; `useradd`/`userdel` for the password tests' temporary accounts),
//! `/usr/sbin/sshd`, the OpenSSH clients and `python3` (standard library only, for the
//! PTY test).
//!
//! Debugging aid: `SSHR_E2E_DIRECT=1` points the clients straight at the upstreams (no
//! proxy) to check the tests themselves; the tests about the proxy's own refusals and
//! metrics then fail by design.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use sshr_testsupport::temp_account::TempAccount;
use sshr_testsupport::{
    echo_server, free_listen_port, keygen, run_bounded, tail, Sshd, SshdOptions, Sshr, SshrSetup,
    TempDir,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// The message OpenSSH prints when every method failed, after "user@host: ", for an
/// account on upstream B (which offers every method, with `UsePAM yes` and
/// `KbdInteractiveAuthentication yes`), and for names without a server once the proxy
/// has heard B's list.
const DENIED: &str = "Permission denied (publickey,password,keyboard-interactive).";
/// The same for upstream A, which offers only `publickey` (the proxy lists what the
/// account's server offers).
const DENIED_KEY_ONLY: &str = "Permission denied (publickey).";

/// Extra configuration of an [`Env`].
#[derive(Default)]
struct EnvOptions {
    /// Extra `sshd_config` lines of upstream A / B.
    extra_a: Vec<String>,
    extra_b: Vec<String>,
    /// Lines at the top of upstream B's sshd_config (they win over the defaults).
    overrides_b: Vec<&'static str>,
    /// Extra TOML tables of sshr's configuration (before the `[[users]]` table).
    proxy_tables: String,
    /// Create a [`TempAccount`] for this Env (see [`Env::account`]).
    password_account: bool,
}

/// Two upstream sshds and an sshr in front of them.
///
/// Users of the proxy's table:
///
/// | login | upstream | as | client key | notes |
/// | --- | --- | --- | --- | --- |
/// | alice | A | root | alice | |
/// | bob | B | root | bob | |
/// | pinok | A | root | alice | `upstream_host_key` = A's real key |
/// | pinbad | A | root | alice | `upstream_host_key` = an unrelated key |
/// | down | a port nobody listens on | root | alice | |
/// | refused | A | an account that does not exist | alice | |
/// | [`Env::account`]'s name | B | itself | none | password only; with `password_account` |
struct Env {
    /// Client-side scratch directory (keys, data files, scripts).
    dir: TempDir,
    a: Sshd,
    b: Sshd,
    proxy: Option<Sshr>,
    /// Client private keys by name ("alice", "bob", "stranger", "agent").
    keys: HashMap<&'static str, PathBuf>,
    /// Upstream address and account of each proxy login, for `SSHR_E2E_DIRECT`.
    direct: Option<HashMap<String, (u16, String)>>,
    /// Holds the port of the user "down".
    _dead: socket2::Socket,
    /// The local account of the password tests. Last: fields drop in order, so the
    /// account is deleted after the daemons are stopped.
    account: Option<TempAccount>,
}

impl Env {
    fn new() -> Env {
        Env::with(EnvOptions::default())
    }

    fn with(opts: EnvOptions) -> Env {
        let direct_mode = std::env::var_os("SSHR_E2E_DIRECT").is_some_and(|v| v == "1");
        let account = opts.password_account.then(|| TempAccount::create("sshrpw"));
        let dir = tempfile::Builder::new()
            .prefix("sshr-e2e")
            .tempdir()
            .unwrap();
        let mut keys = HashMap::new();
        for name in ["alice", "bob", "stranger", "agent", "unrelated"] {
            let path = dir.path().join(format!("id_{name}"));
            keygen(&path, "ed25519", None);
            keys.insert(name, path);
        }
        let setup = SshrSetup::new();
        let mut authorized = vec![setup.upstream_public_key.clone()];
        if direct_mode {
            for name in ["alice", "bob"] {
                authorized.push(public_key(&keys[name]));
            }
        }
        // Enough unauthenticated connections for the concurrency test (the default
        // MaxStartups 10:30:100 drops some of 100 simultaneous logins).
        let common = ["MaxStartups 300", "MaxSessions 50"].map(String::from);
        let mut extra_a: Vec<String> = vec!["SetEnv SSHR_UPSTREAM=A".into()];
        extra_a.extend(common.iter().cloned());
        extra_a.extend(opts.extra_a);
        let mut extra_b: Vec<String> = vec!["SetEnv SSHR_UPSTREAM=B".into()];
        extra_b.extend(common.iter().cloned());
        extra_b.extend(opts.extra_b);
        // sshd keeps the first value of an option and the support crate's config says
        // "PasswordAuthentication no" first; a Match block overrides it. Last, since a
        // Match block runs to the end of the file.
        extra_b.extend(["Match all", "PasswordAuthentication yes"].map(String::from));
        let a = Sshd::start(SshdOptions {
            host_keys: vec!["ed25519"],
            extra: extra_a,
            authorized_keys: authorized.clone(),
        });
        let b = Sshd::start_with_overrides(
            SshdOptions {
                host_keys: vec!["ed25519"],
                extra: extra_b,
                authorized_keys: authorized,
            },
            &opts.overrides_b,
        );
        // A bound socket that does not listen: connections to it are refused, and no
        // other test can take the port while this Env lives.
        let dead =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        dead.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let dead_port = dead.local_addr().unwrap().as_socket().unwrap().port();
        let alice = toml_str(&public_key(&keys["alice"]));
        let bob = toml_str(&public_key(&keys["bob"]));
        let a_key = toml_str(&a.host_public_keys[0]);
        let unrelated = toml_str(&public_key(&keys["unrelated"]));
        let (ap, bp) = (a.port, b.port);
        let password_user = match &account {
            Some(acc) => format!(
                "\n[[users]]\nname = \"{}\"\nupstream = \"127.0.0.1:{bp}\"\n",
                acc.name
            ),
            None => String::new(),
        };
        let users = format!(
            r#"
[limits]
auth_timeout_secs = 60
connect_timeout_secs = 5

{tables}

[[users]]
name = "alice"
upstream = "127.0.0.1:{ap}"
upstream_user = "root"
authorized_keys = [{alice}]

[[users]]
name = "bob"
upstream = "127.0.0.1:{bp}"
upstream_user = "root"
authorized_keys = [{bob}]

[[users]]
name = "pinok"
upstream = "127.0.0.1:{ap}"
upstream_user = "root"
authorized_keys = [{alice}]
upstream_host_key = {a_key}

[[users]]
name = "pinbad"
upstream = "127.0.0.1:{ap}"
upstream_user = "root"
authorized_keys = [{alice}]
upstream_host_key = {unrelated}

[[users]]
name = "down"
upstream = "127.0.0.1:{dead_port}"
upstream_user = "root"
authorized_keys = [{alice}]

[[users]]
name = "refused"
upstream = "127.0.0.1:{ap}"
upstream_user = "sshr-no-such-account"
authorized_keys = [{alice}]
{password_user}"#,
            tables = opts.proxy_tables,
        );
        let (proxy, direct) = if direct_mode {
            let mut m = HashMap::new();
            m.insert("alice".to_owned(), (ap, "root".to_owned()));
            m.insert("bob".to_owned(), (bp, "root".to_owned()));
            m.insert("pinok".to_owned(), (ap, "root".to_owned()));
            if let Some(acc) = &account {
                m.insert(acc.name.clone(), (bp, acc.name.clone()));
            }
            (None, Some(m))
        } else {
            (Some(setup.start(Path::new(SSHR), &users)), None)
        };
        Env {
            dir,
            a,
            b,
            proxy,
            keys,
            direct,
            _dead: dead,
            account,
        }
    }

    /// The password tests' account: its name is also the proxy login (routed to B).
    fn account(&self) -> &TempAccount {
        self.account
            .as_ref()
            .expect("this test needs EnvOptions::password_account")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn proxy(&self) -> &Sshr {
        self.proxy
            .as_ref()
            .expect("this test needs the proxy (unset SSHR_E2E_DIRECT)")
    }

    /// Port and login name a client uses for the proxy login `user`.
    fn target(&self, user: &str) -> (u16, String) {
        match &self.direct {
            Some(m) => m
                .get(user)
                .cloned()
                .unwrap_or_else(|| (self.a.port, user.to_owned())),
            None => (self.proxy().port(), user.to_owned()),
        }
    }

    /// The default client key of a login.
    fn key_of(&self, user: &str) -> Option<&Path> {
        match user {
            "bob" => Some(&self.keys["bob"]),
            _ if self.account.as_ref().is_some_and(|a| a.name == user) => None,
            _ => Some(&self.keys["alice"]),
        }
    }

    /// A client command (`ssh`, `scp` or `sftp`) with a clean configuration. `args` come
    /// first, so their `-o` options win over the defaults (OpenSSH keeps the first value
    /// of an option). Returns the command and the `user@host` to append.
    fn client(
        &self,
        program: &str,
        user: &str,
        key: Option<&Path>,
        args: &[&str],
    ) -> (Command, String) {
        let (port, login) = self.target(user);
        let mut cmd = Command::new(program);
        cmd.env_remove("SSH_AUTH_SOCK").env_remove("DISPLAY");
        cmd.args(args);
        cmd.args(["-F", "/dev/null"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=10"])
            .args(["-o", "LogLevel=ERROR"]);
        cmd.arg(if program == "ssh" { "-p" } else { "-P" })
            .arg(port.to_string());
        if let Some(k) = key {
            cmd.arg("-i").arg(k).args(["-o", "IdentitiesOnly=yes"]);
        } else {
            cmd.args(["-o", "PubkeyAuthentication=no"]);
        }
        (cmd, format!("{login}@127.0.0.1"))
    }

    /// `ssh [args] user@proxy remote...` with the user's own key.
    fn ssh(&self, user: &str, args: &[&str], remote: &[&str]) -> Command {
        self.ssh_with_key(user, self.key_of(user), args, remote)
    }

    fn ssh_with_key(
        &self,
        user: &str,
        key: Option<&Path>,
        args: &[&str],
        remote: &[&str],
    ) -> Command {
        let (mut cmd, dest) = self.client("ssh", user, key, args);
        cmd.arg(dest).args(remote);
        cmd
    }

    /// Run a command with stdin from /dev/null and a time limit; panics (with the
    /// diagnostics) if it times out.
    fn run(&self, mut cmd: Command, timeout: Duration) -> Output {
        match run_bounded(&mut cmd, Stdio::null(), timeout) {
            Ok(out) => out,
            Err(e) => self.fail(&e),
        }
    }

    /// Like [`Env::run`], and the command must succeed.
    fn run_ok(&self, cmd: Command, timeout: Duration) -> Output {
        let desc = format!("{cmd:?}");
        let out = self.run(cmd, timeout);
        if !out.status.success() {
            self.fail(&format!("{desc} failed: {}", describe(&out)));
        }
        out
    }

    /// Logs of the daemons, for failure messages.
    fn diagnostics(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.proxy {
            s += &format!("\n----- sshr log (tail) -----\n{}\n", tail(&p.log(), 80));
        }
        s += &format!(
            "----- sshd A log (tail) -----\n{}\n",
            tail(&self.a.log(), 40)
        );
        s += &format!(
            "----- sshd B log (tail) -----\n{}\n",
            tail(&self.b.log(), 40)
        );
        s
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.diagnostics())
    }

    fn check(&self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.fail(&what());
        }
    }
}

impl Drop for Env {
    /// After a test that passed: the daemon must still run and must not have logged a
    /// panic. `SSHR_E2E_SHOW_LOG=1` prints its log.
    fn drop(&mut self) {
        let Some(proxy) = self.proxy.as_mut() else {
            return;
        };
        let log = proxy.log();
        if std::env::var_os("SSHR_E2E_SHOW_LOG").is_some_and(|v| v == "1") {
            eprintln!("----- sshr log -----\n{log}");
        }
        if thread::panicking() {
            return;
        }
        if let Some(status) = proxy.exited() {
            panic!(
                "sshr exited during the test ({status}); log:\n{}",
                tail(&log, 80)
            );
        }
        if log.contains("panicked at") {
            panic!("sshr logged a panic; log:\n{}", tail(&log, 80));
        }
    }
}

/// A background process (ssh -N, ssh-agent) killed on drop; its stderr goes to a file.
struct Background {
    child: Child,
    stderr: PathBuf,
}

impl Background {
    fn spawn(mut cmd: Command, stderr: PathBuf) -> Background {
        let file = fs::File::create(&stderr).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn");
        Background { child, stderr }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Wait until `addr` accepts connections, failing if the process exits first.
    fn wait_for_port(&mut self, env: &Env, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                env.fail(&format!(
                    "process exited ({status}) before {addr} was ready; stderr:\n{}",
                    self.stderr()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                env.fail(&format!(
                    "{addr} not ready within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn public_key(private: &Path) -> String {
    fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A TOML basic string (the values here have no control characters).
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `SHA256:...` fingerprint of a public key file, as `ssh-add -l` prints it.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l output")
        .to_owned()
}

/// Write `len` pseudo-random bytes (seeded) to `path`; returns their SHA-256 (hex).
fn random_file(path: &Path, len: u64, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut file = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize())
}

fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------
// 1. routing

#[test]
fn routes_each_user_to_their_own_upstream() {
    let env = Env::new();
    let cmd = "echo upstream=$SSHR_UPSTREAM conn=$SSH_CONNECTION user=$(id -un)";
    for (user, mark, port) in [("alice", "A", env.a.port), ("bob", "B", env.b.port)] {
        let out = env.run_ok(env.ssh(user, &[], &[cmd]), secs(30));
        let text = stdout(&out);
        env.check(text.contains(&format!("upstream={mark} ")), || {
            format!("{user} should land on upstream {mark}: {}", describe(&out))
        });
        // SSH_CONNECTION ends with the server's port: the upstream's, not the proxy's.
        env.check(
            text.contains(&format!(" 127.0.0.1 {port} user=root")),
            || {
                format!(
                    "{user}: SSH_CONNECTION should name upstream port {port}: {}",
                    describe(&out)
                )
            },
        );
    }
    // And each upstream logged exactly the proxy's key login for its own user.
    if env.proxy.is_some() {
        for (name, sshd) in [("A", &env.a), ("B", &env.b)] {
            let n = sshd.log().matches("Accepted publickey for root").count();
            env.check(n == 1, || {
                format!("upstream {name} should have accepted one login, saw {n}")
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. exec

#[test]
fn exec_keeps_stdout_stderr_and_exit_status() {
    let env = Env::new();
    let out = env.run(
        env.ssh("alice", &[], &["echo out; echo err >&2; exit 7"]),
        secs(30),
    );
    env.check(out.status.code() == Some(7), || {
        format!("exit status should be 7: {}", describe(&out))
    });
    env.check(stdout(&out) == "out\n", || {
        format!("stdout should be exactly \"out\\n\": {}", describe(&out))
    });
    // The test sshds log at DEBUG1 to their stderr, which the session child inherits
    // until it execs the shell ("debug1: SELinux support disabled"): skip those lines.
    let remote_err: String = stderr(&out)
        .lines()
        .filter(|l| !l.starts_with("debug1: "))
        .map(|l| format!("{l}\n"))
        .collect();
    env.check(remote_err == "err\n", || {
        format!("stderr should be exactly \"err\\n\": {}", describe(&out))
    });
    // Success is relayed as success, on the other upstream too.
    let out = env.run(env.ssh("bob", &[], &["exit 0"]), secs(30));
    env.check(out.status.code() == Some(0), || {
        format!("exit 0 should give 0: {}", describe(&out))
    });
}

#[test]
fn exec_relays_64_mib_of_stdin_and_back() {
    let env = Env::new();
    let input = env.path("in.bin");
    let output = env.path("out.bin");
    let digest = random_file(&input, 64 << 20, 1);
    let mut cmd = env.ssh("bob", &[], &["cat"]);
    cmd.stdout(fs::File::create(&output).unwrap());
    let start = Instant::now();
    let mut child = cmd
        .stdin(fs::File::open(&input).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&env, &mut child, secs(90), "ssh bob cat");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    env.check(status.success(), || {
        format!("ssh cat failed ({status}): {err}")
    });
    let got = sha256_file(&output);
    let len = fs::metadata(&output).unwrap().len();
    env.check(got == digest, || {
        format!("64 MiB through cat: {len} bytes came back, sha256 {got} != {digest}")
    });
    eprintln!("64 MiB cat round trip: {:?}", start.elapsed());
}

/// Wait for a child with a deadline (killing it then).
fn wait_child(
    env: &Env,
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            env.fail(&format!("{what}: no end within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// 3. interactive PTY

/// Drives `ssh -tt` on a pseudo-terminal: starts it at 24x80, runs `stty size`,
/// resizes to 50x132, runs `stty size` again, then `exit`. Exits 0 when all went as
/// expected, else prints what it saw and exits 1.
const PTY_DRIVER: &str = r#"
import os, sys, time, select, fcntl, termios, struct, signal

argv = sys.argv[1:]
transcript = bytearray()

def setsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))

def fail(msg):
    sys.stdout.write('PTY TEST FAILED: %s\n--- transcript ---\n%r\n' % (msg, bytes(transcript)))
    sys.stdout.flush()
    try:
        os.kill(pid, signal.SIGKILL)
    except Exception:
        pass
    sys.exit(1)

master, slave = os.openpty()
setsize(slave, 24, 80)
pid = os.fork()
if pid == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    os.execvp(argv[0], argv)
os.close(slave)

eof = False
def expect(marker, timeout=20.0, fatal=True):
    """Read until `marker` appears after the current position; return what came before."""
    global eof
    start = len(transcript)
    deadline = time.time() + timeout
    while True:
        i = transcript.find(marker, start)
        if i >= 0:
            return bytes(transcript[start:i])
        left = deadline - time.time()
        if left <= 0 or eof:
            if not fatal and not eof:
                raise TimeoutError()
            fail('did not see %r within %.0f s' % (marker, timeout))
        r, _, _ = select.select([master], [], [], left)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b''
            if not data:
                eof = True
            transcript.extend(data)

def send(s):
    os.write(master, s.encode())

# The markers are computed by the remote shell, so the echo of the typed line never
# matches them.
# Input typed before the remote shell is up may be lost (the shell can flush its
# terminal's input when it starts): repeat the first command until it answers.
# Generous: other tests may load the machine (the 100-session test does).
t0 = time.time()
deadline = t0 + 60
attempts = 0
while True:
    attempts += 1
    send('echo READY$((40+2))\n')
    try:
        expect(b'READY42', min(2.0, max(0.1, deadline - time.time())), fatal=False)
        t_ready = time.time() - t0
        break
    except TimeoutError:
        if time.time() >= deadline:
            fail('the remote shell never answered')
send('stty size; echo DONE$((40+2))ONE\n')
before = expect(b'DONE42ONE')
if b'24 80' not in before:
    fail('first stty size should be 24 80, got %r' % before)
setsize(master, 50, 132)
os.kill(pid, signal.SIGWINCH)
time.sleep(0.5)
send('stty size; echo DONE$((40+2))TWO\n')
before = expect(b'DONE42TWO')
if b'50 132' not in before:
    fail('after the resize stty size should be 50 132, got %r' % before)
send('exit\n')
deadline = time.time() + 20
while not eof and time.time() < deadline:
    r, _, _ = select.select([master], [], [], max(0.0, deadline - time.time()))
    if r:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b''
        if not data:
            eof = True
        transcript.extend(data)
status = None
while time.time() < deadline + 5:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        status = st
        break
    time.sleep(0.05)
if status is None:
    fail('ssh did not exit after "exit"')
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
    fail('ssh should exit with status 0, wait status %r' % status)
print('PTY OK (first command sent %d times; shell answered after %.1f s)' % (attempts, t_ready))
"#;

#[test]
fn interactive_pty_session_resize_and_exit() {
    let env = Env::new();
    let script = env.path("pty_driver.py");
    fs::write(&script, PTY_DRIVER).unwrap();
    let ssh = env.ssh("alice", &["-tt"], &[]);
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(ssh.get_program()).args(ssh.get_args());
    cmd.env_remove("SSH_AUTH_SOCK").env("TERM", "xterm");
    let out = env.run(cmd, secs(150));
    env.check(
        out.status.success() && stdout(&out).contains("PTY OK"),
        || format!("PTY session: {}", describe(&out)),
    );
    eprintln!("{}", stdout(&out).trim());
}

// ---------------------------------------------------------------------------------------
// 4. scp and sftp

#[test]
fn scp_both_directions_100_mib() {
    let env = Env::new();
    let local = env.path("scp_src.bin");
    let digest = random_file(&local, 100 << 20, 2);
    // OpenSSH 9 scp speaks SFTP by default; -O is the legacy scp protocol.
    for (mode, flags) in [("sftp-based", &[][..]), ("legacy -O", &["-O"][..])] {
        let remote = env.path(&format!("scp_remote_{}.bin", flags.len()));
        let back = env.path(&format!("scp_back_{}.bin", flags.len()));
        let start = Instant::now();
        let (mut up, dest) = env.client("scp", "alice", env.key_of("alice"), flags);
        up.arg(&local).arg(format!("{dest}:{}", remote.display()));
        env.run_ok(up, secs(120));
        let t_up = start.elapsed();
        env.check(sha256_file(&remote) == digest, || {
            format!("scp ({mode}) upload: remote copy differs")
        });
        let (mut down, dest) = env.client("scp", "alice", env.key_of("alice"), flags);
        down.arg(format!("{dest}:{}", remote.display())).arg(&back);
        env.run_ok(down, secs(120));
        env.check(sha256_file(&back) == digest, || {
            format!("scp ({mode}) download: local copy differs")
        });
        eprintln!(
            "scp {mode} 100 MiB: up {t_up:?}, down {:?}",
            start.elapsed() - t_up
        );
    }
}

#[test]
fn sftp_batch_put_get_ls_rm_100_mib() {
    let env = Env::new();
    let local = env.path("sftp_src.bin");
    let back = env.path("sftp_back.bin");
    let remote_dir = env.path("sftp_remote");
    fs::create_dir(&remote_dir).unwrap();
    let remote = remote_dir.join("payload.bin");
    let digest = random_file(&local, 100 << 20, 3);
    let batch = env.path("batch");
    fs::write(
        &batch,
        format!(
            "put {local} {remote}\nget {remote} {back}\nls -l {dir}\nrm {remote}\nls {dir}\n",
            local = local.display(),
            remote = remote.display(),
            back = back.display(),
            dir = remote_dir.display(),
        ),
    )
    .unwrap();
    let (mut cmd, dest) = env.client("sftp", "bob", env.key_of("bob"), &[]);
    cmd.arg("-b").arg(&batch).arg(dest);
    let start = Instant::now();
    let out = env.run_ok(cmd, secs(180));
    eprintln!("sftp batch 100 MiB put+get: {:?}", start.elapsed());
    let text = stdout(&out);
    env.check(sha256_file(&back) == digest, || {
        format!("sftp get: copy differs; {}", describe(&out))
    });
    // `ls -l` listed the file with its size; after `rm` it is gone.
    env.check(
        text.contains("payload.bin") && text.contains(&(100u64 << 20).to_string()),
        || format!("sftp ls -l should list payload.bin of 104857600 bytes: {text}"),
    );
    env.check(!remote.exists(), || {
        format!("sftp rm should have removed {}: {text}", remote.display())
    });
}

// ---------------------------------------------------------------------------------------
// 5. forwarding

/// Send `len` random bytes through `stream` (to an echo server) and check they come back.
fn echo_roundtrip(env: &Env, mut stream: TcpStream, len: usize, what: &str) {
    let mut data = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(len as u64).fill_bytes(&mut data);
    stream.set_read_timeout(Some(secs(20))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || writer.write_all(&sent));
    let mut got = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match stream.read(&mut got[n..]) {
            Ok(0) => env.fail(&format!(
                "{what}: connection closed after {n} of {len} bytes"
            )),
            Ok(k) => n += k,
            Err(e) => env.fail(&format!("{what}: read after {n} of {len} bytes: {e}")),
        }
    }
    w.join().unwrap().unwrap();
    env.check(got == data, || format!("{what}: echoed bytes differ"));
}

fn connect(env: &Env, port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| env.fail(&format!("connect 127.0.0.1:{port}: {e}")))
}

/// `ssh -N -o ExitOnForwardFailure=yes <flag> <spec>` as `user`, running in the background
/// once `port` on loopback accepts connections (its stderr in `ssh_<flag letter>.err`).
fn forwarding_ssh(env: &Env, user: &str, flag: &str, spec: &str, port: u16) -> Background {
    let cmd = env.ssh(
        user,
        &["-N", "-o", "ExitOnForwardFailure=yes", flag, spec],
        &[],
    );
    let err = format!("ssh_{}.err", flag.trim_start_matches('-'));
    let mut ssh = Background::spawn(cmd, env.path(&err));
    ssh.wait_for_port(env, SocketAddr::from(([127, 0, 0, 1], port)), secs(30));
    ssh
}

/// Forward a free port to an echo server with `flag` (`-L` or `-R`) as `user`, then run
/// `channels` echo round trips through it at once, over the one session; the i-th of
/// `base_len + i` bytes.
fn port_forward(user: &str, flag: &str, channels: usize, base_len: usize) {
    let env = Env::new();
    let echo = echo_server();
    let port = free_listen_port();
    // With -R the upstream sshd listens on `port` (on this machine: the upstream is
    // loopback).
    let _ssh = forwarding_ssh(&env, user, flag, &format!("{port}:127.0.0.1:{echo}"), port);
    let what = format!("{flag} channel");
    thread::scope(|s| {
        for i in 0..channels {
            let (env, what) = (&env, &what);
            s.spawn(move || echo_roundtrip(env, connect(env, port), base_len + i, what));
        }
    });
}

#[test]
fn local_forward() {
    port_forward("alice", "-L", 4, 300_000);
}

#[test]
fn remote_forward() {
    port_forward("bob", "-R", 3, 200_000);
}

#[test]
fn dynamic_socks_forward() {
    let env = Env::new();
    let echo = echo_server();
    let dport = free_listen_port();
    let ssh = forwarding_ssh(&env, "alice", "-D", &format!("127.0.0.1:{dport}"), dport);
    // SOCKS5, no authentication, CONNECT 127.0.0.1:echo.
    let mut s = connect(&env, dport);
    s.set_read_timeout(Some(secs(20))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello)
        .unwrap_or_else(|e| env.fail(&format!("SOCKS greeting: {e}; {}", ssh.stderr())));
    env.check(hello == [5, 0], || {
        format!("SOCKS greeting answer {hello:?}")
    });
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&echo.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)
        .unwrap_or_else(|e| env.fail(&format!("SOCKS connect reply: {e}; {}", ssh.stderr())));
    env.check(reply[0] == 5 && reply[1] == 0, || {
        format!("SOCKS CONNECT refused: {reply:?}; ssh: {}", ssh.stderr())
    });
    echo_roundtrip(&env, s, 500_000, "-D channel");
}

#[test]
fn agent_forwarding() {
    let env = Env::new();
    let sock = env.path("agent.sock");
    let mut agent_cmd = Command::new("ssh-agent");
    agent_cmd.arg("-D").arg("-a").arg(&sock);
    let agent = Background::spawn(agent_cmd, env.path("agent.err"));
    let deadline = Instant::now() + secs(10);
    while !sock.exists() {
        env.check(Instant::now() < deadline, || {
            format!("ssh-agent did not create its socket: {}", agent.stderr())
        });
        thread::sleep(Duration::from_millis(20));
    }
    let key = &env.keys["agent"];
    let mut add = Command::new("ssh-add");
    add.arg(key).env("SSH_AUTH_SOCK", &sock);
    env.run_ok(add, secs(10));
    let fp = fingerprint(&key.with_extension("pub"));
    let mut cmd = env.ssh("alice", &["-A"], &["echo sock=$SSH_AUTH_SOCK; ssh-add -l"]);
    cmd.env("SSH_AUTH_SOCK", &sock);
    let out = env.run_ok(cmd, secs(30));
    env.check(stdout(&out).contains(&fp), || {
        format!(
            "remote ssh-add -l should list {fp} (the forwarded agent's key): {}",
            describe(&out)
        )
    });
    // Without -A the remote has no agent.
    let mut cmd = env.ssh("alice", &[], &["ssh-add -l; echo rc=$?"]);
    cmd.env("SSH_AUTH_SOCK", &sock);
    let out = env.run(cmd, secs(30));
    env.check(!stdout(&out).contains(&fp), || {
        format!(
            "without -A the agent must not be reachable: {}",
            describe(&out)
        )
    });
}

// ---------------------------------------------------------------------------------------
// 6. password pass-through

/// `ssh` logging in with a password given by an askpass script, which also appends
/// each prompt it is shown to the file `<name>.prompts`.
fn password_ssh(env: &Env, password: &str, name: &str, remote: &[&str]) -> Command {
    password_ssh_by(env, &env.account().name, "password", password, name, remote)
}

fn password_ssh_by(
    env: &Env,
    user: &str,
    method: &str,
    password: &str,
    name: &str,
    remote: &[&str],
) -> Command {
    password_ssh_tries(env, user, method, password, name, remote, 1, &[])
}

/// [`password_ssh_by`] with `tries` password prompts and `extra` ssh options first.
#[allow(clippy::too_many_arguments)]
fn password_ssh_tries(
    env: &Env,
    user: &str,
    method: &str,
    password: &str,
    name: &str,
    remote: &[&str],
    tries: u32,
    extra: &[&str],
) -> Command {
    let askpass = env.path(name);
    let prompts = env.path(&format!("{name}.prompts"));
    fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\necho '{password}'\n",
            prompts.display()
        ),
    )
    .unwrap();
    let preferred = format!("PreferredAuthentications={method}");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755)).unwrap();
    let tries = format!("NumberOfPasswordPrompts={tries}");
    let mut args = extra.to_vec();
    args.extend(["-o", "BatchMode=no", "-o", &preferred, "-o", &tries]);
    let mut cmd = env.ssh_with_key(user, None, &args, remote);
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    cmd
}

#[test]
fn password_login_is_passed_through() {
    let env = Env::with(EnvOptions {
        password_account: true,
        ..Default::default()
    });
    let user = &env.account().name;
    let out = env.run_ok(
        password_ssh(
            &env,
            &env.account().password,
            "askpass_good",
            &["echo who=$(id -un) up=$SSHR_UPSTREAM"],
        ),
        secs(30),
    );
    env.check(stdout(&out).contains(&format!("who={user} up=B")), || {
        format!(
            "password login should land as {user} on B: {}",
            describe(&out)
        )
    });
    let out = env.run(
        password_ssh(
            &env,
            "wrong-password",
            "askpass_bad",
            &["echo should-not-run"],
        ),
        secs(30),
    );
    env.check(
        out.status.code() == Some(255)
            && !stdout(&out).contains("should-not-run")
            && stderr(&out).contains("Permission denied"),
        || format!("a wrong password must be refused: {}", describe(&out)),
    );
}

// ---------------------------------------------------------------------------------------
// 7. refusals

/// The part of ssh's "user@host: Permission denied (...)." line after the user name.
fn denial(out: &Output) -> Option<String> {
    stderr(out).lines().find_map(|l| {
        l.split_once(": Permission denied")
            .map(|(_, r)| format!("Permission denied{r}"))
    })
}

#[test]
fn upstream_banners_are_shown_only_once_a_password_login_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner");
    fs::write(&banner, "SSHR-TEST-BANNER: authorized use only\n").unwrap();
    let setting: &'static str = Box::leak(format!("Banner {}", banner.display()).into_boxed_str());
    let env = Env::with(EnvOptions {
        overrides_b: vec![setting],
        password_account: true,
        ..Default::default()
    });
    if env.direct.is_some() {
        return; // sshd itself shows the banner before the password: nothing to compare
    }
    // A banner before the password would tell a real account from a name the proxy
    // does not know (which gets none): shown on success only.
    let account = env.account();
    for (user, password, shown) in [
        (account.name.as_str(), "wrong-password", false),
        ("nosuchuser", "wrong-password", false),
        (account.name.as_str(), account.password.as_str(), true),
    ] {
        let name = format!("banner_{user}_{shown}");
        let cmd = password_ssh_tries(
            &env,
            user,
            "password",
            password,
            &name,
            &["echo logged-in"],
            1,
            &["-o", "LogLevel=INFO"],
        );
        let out = env.run(cmd, secs(30));
        env.check(
            stderr(&out).contains("SSHR-TEST-BANNER") == shown && out.status.success() == shown,
            || {
                format!(
                    "{user} with {password}: banner expected: {shown}: {}",
                    describe(&out)
                )
            },
        );
    }
}

#[test]
fn the_upstreams_max_auth_tries_does_not_reveal_the_account() {
    // The upstream hangs up after one wrong password. The client has proven nothing:
    // its later tries must go on exactly as for a name the proxy does not know.
    let env = Env::with(EnvOptions {
        overrides_b: vec![
            "UsePAM yes",
            "KbdInteractiveAuthentication yes",
            "MaxAuthTries 1",
        ],
        password_account: true,
        ..Default::default()
    });
    for method in ["password", "keyboard-interactive"] {
        let mut seen = Vec::new();
        for user in [env.account().name.as_str(), "nosuchuser"] {
            let name = format!("tries_{}_{user}", &method[..3]);
            let out = env.run(
                password_ssh_tries(
                    &env,
                    user,
                    method,
                    "wrong-password",
                    &name,
                    &["echo no"],
                    3,
                    &[],
                ),
                secs(30),
            );
            env.check(
                out.status.code() == Some(255) && denial(&out).as_deref() == Some(DENIED),
                || {
                    format!(
                        "{method} as {user}: expected \"...: {DENIED}\": {}",
                        describe(&out)
                    )
                },
            );
            let prompts = fs::read_to_string(env.path(&format!("{name}.prompts")))
                .unwrap_or_default()
                .replace(user, "USER");
            seen.push(prompts);
        }
        env.check(seen[0] == seen[1] && seen[0].lines().count() == 3, || {
            format!(
                "{method}: the known user was asked {:?}, the unknown one {:?}",
                seen[0], seen[1]
            )
        });
    }
}

#[test]
fn wrong_key_and_unknown_user_are_refused_alike() {
    let env = Env::new();
    let started = Instant::now();
    let wrong = env.run(
        env.ssh_with_key(
            "alice",
            Some(&env.keys["stranger"]),
            &[],
            &["echo should-not-run"],
        ),
        secs(30),
    );
    let unknown = env.run(
        env.ssh_with_key(
            "nosuchuser",
            Some(&env.keys["alice"]),
            &[],
            &["echo should-not-run"],
        ),
        secs(30),
    );
    // Alice's server lists only publickey; the unknown name gets the list real servers
    // gave most often (the only one the proxy heard).
    for (what, out) in [("wrong key", &wrong), ("unknown user", &unknown)] {
        env.check(
            out.status.code() == Some(255) && !stdout(out).contains("should-not-run"),
            || format!("{what} must be refused: {}", describe(out)),
        );
        env.check(denial(out).as_deref() == Some(DENIED_KEY_ONLY), || {
            format!(
                "{what}: expected \"...: {DENIED_KEY_ONLY}\": {}",
                describe(out)
            )
        });
    }
    env.check(started.elapsed() < secs(20), || {
        format!("refusals took {:?}", started.elapsed())
    });
    // The upstream never saw either attempt.
    if env.proxy.is_some() {
        env.check(!env.a.log().contains("Accepted"), || {
            "upstream A accepted a login for a refused client".into()
        });
    }
}

/// Run `ssh user@proxy true` expected to end with the proxy's DISCONNECT "sshr: ...".
fn expect_sshr_disconnect(env: &Env, user: &str, words: &[&str]) {
    let started = Instant::now();
    let out = env.run(env.ssh(user, &[], &["echo should-not-run"]), secs(40));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("sshr: "))
        .map(str::to_owned);
    env.check(
        out.status.code() == Some(255) && !stdout(&out).contains("should-not-run"),
        || format!("{user} must be refused: {}", describe(&out)),
    );
    env.check(
        line.as_ref().is_some_and(|l| {
            l.starts_with("Received disconnect from ") && words.iter().all(|w| l.contains(w))
        }),
        || {
            format!(
                "{user}: expected \"Received disconnect from ...: sshr: ...{}...\": {}",
                words.join("..."),
                describe(&out)
            )
        },
    );
    eprintln!("{user}: {:?} in {:?}", line.unwrap(), started.elapsed());
}

#[test]
fn unreachable_upstream_is_reported() {
    let env = Env::new();
    expect_sshr_disconnect(&env, "down", &["unreachable"]);
}

#[test]
fn upstream_host_key_pin_is_enforced() {
    let env = Env::new();
    // The right pin works...
    let out = env.run_ok(
        env.ssh("pinok", &[], &["echo pinned-$SSHR_UPSTREAM"]),
        secs(30),
    );
    env.check(stdout(&out).contains("pinned-A"), || describe(&out));
    // ...a wrong one is refused with its own line.
    expect_sshr_disconnect(&env, "pinbad", &["host key"]);
    let n = env.a.log().matches("Accepted publickey").count();
    env.check(n == 1, || {
        format!("upstream A should have accepted only pinok's login, saw {n}")
    });
}

#[test]
fn upstream_refusing_the_proxy_key_is_reported() {
    let env = Env::new();
    expect_sshr_disconnect(&env, "refused", &[]);
}

// ---------------------------------------------------------------------------------------
// 8. rekeys in the middle of a transfer

/// Stream `len` pseudo-random bytes into `ssh user remote-sha256sum` and compare the
/// digest; returns the client's stderr (at LogLevel DEBUG1).
fn stream_and_digest(env: &Env, user: &str, args: &[&str], len: u64, timeout: Duration) -> String {
    let mut all_args = vec!["-o", "LogLevel=DEBUG1"];
    all_args.extend_from_slice(args);
    let mut cmd = env.ssh(user, &all_args, &["sha256sum"]);
    let out_path = env.path(&format!("digest_{user}.out"));
    let err_path = env.path(&format!("digest_{user}.err"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    let writer = thread::spawn(move || -> std::io::Result<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(len);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            hasher.update(&buf[..n]);
            stdin.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(hex::encode(hasher.finalize()))
    });
    let status = wait_child(env, &mut child, timeout, "streaming ssh");
    let client_log = String::from_utf8_lossy(&fs::read(&err_path).unwrap()).into_owned();
    let sent = writer.join().unwrap();
    let remote = fs::read_to_string(&out_path).unwrap();
    let elapsed = start.elapsed();
    let local = match sent {
        Ok(d) => d,
        Err(e) => env.fail(&format!(
            "writing into ssh failed: {e} (ssh {status}); client log tail:\n{}",
            tail(&client_log, 30)
        )),
    };
    env.check(status.success(), || {
        format!("ssh {status}; client log tail:\n{}", tail(&client_log, 30))
    });
    env.check(
        remote.split_whitespace().next() == Some(local.as_str()),
        || {
            format!(
                "{len} bytes: remote sha256 {:?} != local {local}; client log tail:\n{}",
                remote.trim(),
                tail(&client_log, 30)
            )
        },
    );
    eprintln!(
        "{} MiB streamed as {user} in {elapsed:?} ({:.0} MiB/s)",
        len >> 20,
        (len >> 20) as f64 / elapsed.as_secs_f64()
    );
    client_log
}

#[test]
fn rekeys_by_client_and_upstream_mid_transfer_lose_nothing() {
    let env = Env::with(EnvOptions {
        extra_a: vec!["RekeyLimit 64M".into()],
        ..Default::default()
    });
    let client_log =
        stream_and_digest(&env, "alice", &["-o", "RekeyLimit=64M"], 1 << 30, secs(180));
    let client_kex = client_log.matches("SSH2_MSG_NEWKEYS received").count();
    let upstream_kex = env.a.log().matches("SSH2_MSG_NEWKEYS received").count();
    // 1 GiB at 64 MiB per key: about 16 rekeys on each leg; insist on a few.
    env.check(client_kex >= 4 && upstream_kex >= 4, || {
        format!(
            "expected several rekeys on each leg, saw {client_kex} key exchanges on the \
             client leg and {upstream_kex} on the upstream leg"
        )
    });
    eprintln!("key exchanges: client leg {client_kex}, upstream leg {upstream_kex}");
}

#[test]
fn rekeys_started_by_the_proxy_lose_nothing() {
    let env = Env::with(EnvOptions {
        proxy_tables: "[rekey]\nbytes = 67108864\n".into(),
        ..Default::default()
    });
    // aes-gcm on the client leg here (chacha20-poly1305, the default, in the test above).
    let client_log = stream_and_digest(
        &env,
        "bob",
        &["-c", "aes128-gcm@openssh.com"],
        512 << 20,
        secs(120),
    );
    let client_kex = client_log.matches("SSH2_MSG_NEWKEYS received").count();
    let upstream_kex = env.b.log().matches("SSH2_MSG_NEWKEYS received").count();
    // Neither end has a rekey limit this low: further key exchanges were the proxy's.
    env.check(client_kex >= 3 && upstream_kex >= 3, || {
        format!(
            "the proxy should rekey each leg every 64 MiB: saw {client_kex} key exchanges \
             on the client leg and {upstream_kex} on the upstream leg"
        )
    });
    eprintln!("key exchanges: client leg {client_kex}, upstream leg {upstream_kex}");
}

// ---------------------------------------------------------------------------------------
// 9. concurrency and the session gauge

const ACTIVE: &str = "sshr_sessions_active";

#[test]
fn hundred_concurrent_sessions_and_gauge_back_to_zero() {
    let env = Env::new();
    let n = 100;
    let started = Instant::now();
    // Sample the gauge while the sessions run: it must rise above zero, or the final
    // "back to zero" would prove nothing.
    let stop = Arc::new(Mutex::new(false));
    let peak = Arc::new(Mutex::new(0f64));
    let sampler = env.proxy.as_ref().map(|_| {
        let (stop, peak) = (stop.clone(), peak.clone());
        let env = &env;
        let sample = move || {
            while !*stop.lock().unwrap() {
                if let Ok(Some(v)) = env.proxy().metric(ACTIVE) {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(v);
                }
                thread::sleep(Duration::from_millis(100));
            }
        };
        sample
    });
    let results: Vec<(usize, Result<Output, String>)> = thread::scope(|s| {
        let sampler = sampler.map(|f| s.spawn(f));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let env = &env;
                s.spawn(move || {
                    let user = if i % 2 == 0 { "alice" } else { "bob" };
                    let mut cmd = env.ssh(
                        user,
                        &["-o", "KexAlgorithms=curve25519-sha256"],
                        &[&format!("sleep 2; echo session-{i}-$SSHR_UPSTREAM")],
                    );
                    (i, run_bounded(&mut cmd, Stdio::null(), secs(120)))
                })
            })
            .collect();
        let r = handles.into_iter().map(|h| h.join().unwrap()).collect();
        *stop.lock().unwrap() = true;
        if let Some(h) = sampler {
            h.join().unwrap();
        }
        r
    });
    let elapsed = started.elapsed();
    let mut bad = Vec::new();
    for (i, r) in &results {
        let want = format!("session-{i}-{}\n", if i % 2 == 0 { "A" } else { "B" });
        match r {
            Ok(out) if out.status.success() && stdout(out) == want => {}
            Ok(out) => bad.push(format!("session {i}: {}", describe(out))),
            Err(e) => bad.push(format!("session {i}: {e}")),
        }
    }
    env.check(bad.is_empty(), || {
        format!(
            "{} of {n} sessions failed; first ones:\n{}",
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        )
    });
    eprintln!("{n} concurrent sessions in {elapsed:?}");
    let Some(proxy) = &env.proxy else { return };
    let peak = *peak.lock().unwrap();
    env.check(peak >= 1.0, || {
        format!("{ACTIVE} never rose above zero while {n} sessions ran (peak {peak})")
    });
    let deadline = Instant::now() + secs(15);
    let mut last;
    loop {
        last = proxy.metric(ACTIVE);
        if let Ok(Some(v)) = last {
            if v == 0.0 {
                break;
            }
        }
        if Instant::now() > deadline {
            env.fail(&format!(
                "{ACTIVE} did not return to 0 within 15 s after the sessions ended: {last:?}\n{}",
                proxy.metrics().unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
    let total = proxy.metric("sshr_sessions_total").ok().flatten();
    eprintln!("{ACTIVE}: peak {peak}, back to 0; sshr_sessions_total {total:?}");
    env.check(total.is_some_and(|t| t >= n as f64), || {
        format!("sshr_sessions_total should count {n} sessions: {total:?}")
    });
}

// ---------------------------------------------------------------------------------------
// 10. the client's known_hosts only ever learns the proxy's key

#[test]
fn client_known_hosts_learns_only_the_proxy_key() {
    let env = Env::new();
    let known = env.path("known_hosts");
    fs::write(&known, "").unwrap();
    let kh = format!("UserKnownHostsFile={}", known.display());
    // UpdateHostKeys=yes makes the client accept hostkeys-00@openssh.com announcements;
    // the upstream's must not reach it.
    let out = env.run_ok(
        env.ssh(
            "alice",
            &[
                "-o",
                &kh,
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "UpdateHostKeys=yes",
            ],
            &["sleep 1; echo hi"],
        ),
        secs(30),
    );
    env.check(stdout(&out) == "hi\n", || describe(&out));
    let text = fs::read_to_string(&known).unwrap();
    let blob = |line: &str| line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let upstream = blob(&env.a.host_public_keys[0]);
    let proxy_key = env.proxy.as_ref().map(|p| blob(&p.setup.host_public_key));
    env.check(!text.contains(&upstream), || {
        format!("the upstream's host key reached the client's known_hosts:\n{text}")
    });
    if let Some(k) = proxy_key {
        env.check(text.contains(&k), || {
            format!("known_hosts should hold the proxy's host key:\n{text}")
        });
    }
}

#[test]
fn keyboard_interactive_prompts_are_passed_through() {
    // PAM gives sshd a keyboard-interactive "Password: " prompt.
    let env = Env::with(EnvOptions {
        overrides_b: vec!["UsePAM yes", "KbdInteractiveAuthentication yes"],
        password_account: true,
        ..Default::default()
    });
    let user = &env.account().name;
    let out = env.run_ok(
        password_ssh_by(
            &env,
            user,
            "keyboard-interactive",
            &env.account().password,
            "kbd_good",
            &["echo who=$(id -un) up=$SSHR_UPSTREAM"],
        ),
        secs(30),
    );
    env.check(stdout(&out).contains(&format!("who={user} up=B")), || {
        format!(
            "keyboard-interactive login should land as {user} on B: {}",
            describe(&out)
        )
    });
    // The upstream's PAM prompt reached the user unchanged (ssh prefixes "(user@host) ").
    let prompts = fs::read_to_string(env.path("kbd_good.prompts")).unwrap_or_default();
    env.check(
        prompts.lines().count() == 1 && prompts.trim_end().ends_with(") Password:"),
        || format!("expected one \"Password: \" prompt, the askpass saw: {prompts:?}"),
    );
    let out = env.run(
        password_ssh_by(
            &env,
            user,
            "keyboard-interactive",
            "wrong-password",
            "kbd_bad",
            &["echo should-not-run"],
        ),
        secs(30),
    );
    env.check(
        out.status.code() == Some(255)
            && !stdout(&out).contains("should-not-run")
            && stderr(&out).contains("Permission denied"),
        || {
            format!(
                "a wrong keyboard-interactive answer must be refused: {}",
                describe(&out)
            )
        },
    );
}

#[test]
fn unknown_user_is_asked_and_refused_like_a_known_one() {
    let env = Env::with(EnvOptions {
        overrides_b: vec!["UsePAM yes", "KbdInteractiveAuthentication yes"],
        password_account: true,
        ..Default::default()
    });
    // The same wrong answer, for a real account, for a name the proxy does not know and
    // for an account whose server is down, with both pass-through methods: same prompts,
    // same refusal. (Telling "down" that its server is unreachable before it proved
    // anything would tell it the account exists.)
    for method in ["password", "keyboard-interactive"] {
        let mut seen = Vec::new();
        for user in [env.account().name.as_str(), "nosuchuser", "down"] {
            let name = format!("ask_{}_{user}", &method[..3]);
            let out = env.run(
                password_ssh_by(&env, user, method, "wrong-password", &name, &["echo no"]),
                secs(30),
            );
            env.check(
                out.status.code() == Some(255) && denial(&out).as_deref() == Some(DENIED),
                || {
                    format!(
                        "{method} as {user}: expected \"...: {DENIED}\": {}",
                        describe(&out)
                    )
                },
            );
            // "(user@host) Password: " for keyboard-interactive, "user@host's password: "
            // for password: compare with the user name taken out.
            let prompts = fs::read_to_string(env.path(&format!("{name}.prompts")))
                .unwrap_or_default()
                .replace(user, "USER");
            seen.push(prompts);
        }
        env.check(
            seen[0] == seen[1] && seen[0] == seen[2] && seen[0].lines().count() == 1,
            || {
                format!(
                    "{method}: the known user was asked {:?}, the unknown one {:?}, the one \
                     whose server is down {:?}",
                    seen[0], seen[1], seen[2]
                )
            },
        );
    }
}
