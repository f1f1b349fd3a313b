//! Real peers for tests: an OpenSSH `sshd` started on a free loopback port with its own
//! generated host keys and configuration, and helpers for running the real clients.
//!
//! Tests need root (sshd's privilege separation, logging in as root) and
//! `/usr/sbin/sshd`; `.ci/run` installs openssh-server and runs as root.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Run `ssh-keygen` to make a key pair without passphrase; `kind` is e.g. "ed25519",
/// "rsa", "ecdsa" and `bits` optional.
pub fn keygen(path: &Path, kind: &str, bits: Option<u32>) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "test", "-t", kind, "-f"]).arg(path);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    let out = cmd.output().expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Options of a test sshd.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Host key types to generate, in order ("ed25519", "rsa", "ecdsa", "ecdsa384").
    pub host_keys: Vec<&'static str>,
    /// Extra sshd_config lines.
    pub extra: Vec<String>,
    /// Public keys (OpenSSH lines) allowed to log in, for every user.
    pub authorized_keys: Vec<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        Self { host_keys: vec!["ed25519"], extra: Vec::new(), authorized_keys: Vec::new() }
    }
}

/// A running `sshd -D` on loopback; killed on drop.
pub struct Sshd {
    pub port: u16,
    pub dir: TempDir,
    /// Host public keys, as OpenSSH lines, in the order of `SshdOptions::host_keys`.
    pub host_public_keys: Vec<String>,
    child: Child,
}

impl Sshd {
    pub fn start(opts: SshdOptions) -> Sshd {
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (run tests as root)");
        let dir = tempfile::Builder::new().prefix("sshr-sshd").tempdir().unwrap();
        let mut config = String::new();
        let mut host_public_keys = Vec::new();
        for (i, kind) in opts.host_keys.iter().enumerate() {
            let path = dir.path().join(format!("host_{i}_{kind}"));
            match *kind {
                "ecdsa384" => keygen(&path, "ecdsa", Some(384)),
                "ecdsa" => keygen(&path, "ecdsa", Some(256)),
                "rsa" => keygen(&path, "rsa", Some(2048)),
                k => keygen(&path, k, None),
            }
            config.push_str(&format!("HostKey {}\n", path.display()));
            host_public_keys.push(fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_owned());
        }
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, opts.authorized_keys.join("\n") + "\n").unwrap();
        let port = free_port();
        config.push_str(&format!(
            "ListenAddress 127.0.0.1:{port}\n\
             PidFile none\n\
             AuthorizedKeysFile {}\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel DEBUG1\n\
             Subsystem sftp internal-sftp\n",
            authorized.display()
        ));
        for line in &opts.extra {
            config.push_str(line);
            config.push('\n');
        }
        let config_path = dir.path().join("sshd_config");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/sshd (is openssh-server installed?)");
        let sshd = Sshd { port, dir, host_public_keys, child };
        assert!(
            wait_for_port(sshd.addr(), Duration::from_secs(10)),
            "sshd did not start; log:\n{}",
            sshd.log()
        );
        sshd
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("sshd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh` with a clean configuration: no config files, no known_hosts, batch mode.
pub fn ssh_command(program: &str, port: u16, identity: Option<&Path>) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]);
    cmd.arg(if program.ends_with("scp") || program.ends_with("sftp") { "-P" } else { "-p" });
    cmd.arg(port.to_string());
    if let Some(id) = identity {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    cmd
}

/// Run a command with a time limit; panics with its output if it does not finish.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} timed out after {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
