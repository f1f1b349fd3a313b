//! What sshr's tests and benches share.
//!
//! - Real peers: an OpenSSH `sshd` started on a free loopback port with its own generated
//!   host keys and configuration ([`Sshd`]), the `sshr` daemon in front of it
//!   ([`SshrSetup`], [`one_user`]), and helpers for running the real clients. These need
//!   root (sshd's privilege separation, logging in as root) and `/usr/sbin/sshd`;
//!   `scripts/test` installs openssh-server when it runs as root.
//! - [`peers`]: the other SSH implementations, for interop: PuTTY, Dropbear, paramiko,
//!   asyncssh, libssh and JSch clients, Dropbear and asyncssh servers.
//! - [`temp_account`]: local accounts with a random password and a home for
//!   authorized_keys, removed when the test ends.
//! - [`conn`]: a scripted SSH client over a blocking socket.
//! - [`haproxy`]: a real HAProxy in front of sshr processes, sending PROXY v2 headers.
//! - [`openssh10`]: OpenSSH 10.x `ssh` and `sshd` from a Debian unstable root that
//!   `scripts/openssh10-root` makes (sshd chrooted into it, ssh through its loader).
//! - [`pair`]: transports wired to each other in memory, with virtual time.
//! - [`postgres`]: a throwaway PostgreSQL server on loopback, for the `postgres`
//!   provider (Debian's `postgresql` package; as root it runs as the `postgres` account).

pub mod conn;
pub mod haproxy;
pub mod one_user;
pub mod openssh10;
pub mod pair;
pub mod peers;
pub mod postgres;
pub mod temp_account;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free TCP port on 127.0.0.1 for a server to listen on, taken below the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`), so the many outgoing connections of
/// parallel tests cannot grab it between this call and the server's bind, as they can
/// with [`free_port`].
/// A TCP echo server on loopback, serving until the test process ends; its port.
pub fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut conn);
            });
        }
    });
    port
}

pub fn free_listen_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10000u32, ephemeral_low.max(10000 + 2000));
    let span = high - low;
    // Start at a per-process offset so concurrent test processes rarely probe the same
    // ports; the bind below is the real check.
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    free_port()
}

/// Run `ssh-keygen` to make a key pair without passphrase; `kind` is e.g. "ed25519",
/// "rsa", "ecdsa" and `bits` optional.
pub fn keygen(path: &Path, kind: &str, bits: Option<u32>) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "test", "-t", kind, "-f"])
        .arg(path);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    let out = cmd.output().expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    /// Host key types to generate, in order ("ed25519", "rsa", "rsa1024", "ecdsa",
    /// "ecdsa384", "ecdsa521").
    pub host_keys: Vec<&'static str>,
    /// Extra sshd_config lines.
    pub extra: Vec<String>,
    /// Public keys (OpenSSH lines) allowed to log in, for every user.
    pub authorized_keys: Vec<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        Self {
            host_keys: vec!["ed25519"],
            extra: Vec::new(),
            authorized_keys: Vec::new(),
        }
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
        Sshd::start_with_overrides(opts, &[])
    }

    /// Like [`Sshd::start`], with `overrides` written at the top of sshd_config. sshd keeps
    /// the first value of most options, so these win over this crate's defaults (e.g.
    /// "UsePAM yes", "KbdInteractiveAuthentication yes"), which `extra` lines cannot do.
    pub fn start_with_overrides(opts: SshdOptions, overrides: &[&str]) -> Sshd {
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (run tests as root)");
        let dir = tempfile::Builder::new()
            .prefix("sshr-sshd")
            .tempdir()
            .unwrap();
        let mut config = String::new();
        for line in overrides {
            config.push_str(line);
            config.push('\n');
        }
        let mut host_public_keys = Vec::new();
        for (i, kind) in opts.host_keys.iter().enumerate() {
            let path = dir.path().join(format!("host_{i}_{kind}"));
            match *kind {
                "ecdsa384" => keygen(&path, "ecdsa", Some(384)),
                "ecdsa521" => keygen(&path, "ecdsa", Some(521)),
                "ecdsa" => keygen(&path, "ecdsa", Some(256)),
                "rsa" => keygen(&path, "rsa", Some(2048)),
                "rsa1024" => keygen(&path, "rsa", Some(1024)),
                k => keygen(&path, k, None),
            }
            config.push_str(&format!("HostKey {}\n", path.display()));
            host_public_keys.push(
                fs::read_to_string(path.with_extension("pub"))
                    .unwrap()
                    .trim()
                    .to_owned(),
            );
        }
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, opts.authorized_keys.join("\n") + "\n").unwrap();
        let port = free_listen_port();
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
        let sshd = Sshd {
            port,
            dir,
            host_public_keys,
            child,
        };
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
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ])
    .args([
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
    ]);
    cmd.arg(if program.ends_with("scp") || program.ends_with("sftp") {
        "-P"
    } else {
        "-p"
    });
    cmd.arg(port.to_string());
    if let Some(id) = identity {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    cmd
}

/// Run a command with a time limit; panics with its output if it does not finish.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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

/// Run a command with a time limit, its stdout and stderr captured in anonymous temporary
/// files (so large outputs cannot block the child on a full pipe). `Err` describes a
/// timeout (the child is killed) and carries what it printed.
pub fn run_bounded(cmd: &mut Command, stdin: Stdio, timeout: Duration) -> Result<Output, String> {
    use std::io::{Seek, SeekFrom};
    let out = tempfile::tempfile().expect("temporary file");
    let err = tempfile::tempfile().expect("temporary file");
    cmd.stdin(stdin)
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |mut f: fs::File| {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let output = Output {
        status,
        stdout: read(out),
        stderr: read(err),
    };
    if timed_out {
        Err(format!(
            "{cmd:?} timed out after {timeout:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    } else {
        Ok(output)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Files and ports of an `sshr` daemon that is not started yet: its directory (the
/// configuration goes there), listen and metrics ports, and its host and upstream keys,
/// generated now so that upstream servers can trust the upstream key before sshr starts.
pub struct SshrSetup {
    pub dir: TempDir,
    pub port: u16,
    pub metrics_port: u16,
    pub host_key: PathBuf,
    /// The proxy's host public key (OpenSSH line).
    pub host_public_key: String,
    pub upstream_key: PathBuf,
    /// The public half of `upstream_key` (OpenSSH line): put it in upstreams'
    /// authorized_keys.
    pub upstream_public_key: String,
    /// More key files listed after `upstream_key` (`upstream_key = [...]`), in order.
    pub more_upstream_keys: Vec<PathBuf>,
    /// Host keys offered after `host_key`, added by [`SshrSetup::add_host_key`].
    pub more_host_keys: Vec<PathBuf>,
}

impl SshrSetup {
    pub fn new() -> SshrSetup {
        let dir = tempfile::Builder::new()
            .prefix("sshr-proxy")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("ssh_host_ed25519_key");
        keygen(&host_key, "ed25519", None);
        let upstream_key = dir.path().join("upstream_ed25519");
        keygen(&upstream_key, "ed25519", None);
        let pubkey = |p: &Path| {
            fs::read_to_string(p.with_extension("pub"))
                .unwrap()
                .trim()
                .to_owned()
        };
        SshrSetup {
            port: free_listen_port(),
            metrics_port: free_listen_port(),
            host_public_key: pubkey(&host_key),
            upstream_public_key: pubkey(&upstream_key),
            host_key,
            upstream_key,
            more_upstream_keys: Vec::new(),
            more_host_keys: Vec::new(),
            dir,
        }
    }

    /// Generates one more host key for the proxy to offer, after the ed25519 one
    /// (`kind` and `bits` as for [`keygen`]); returns its public half (OpenSSH line).
    pub fn add_host_key(&mut self, kind: &str, bits: Option<u32>) -> String {
        let path = self.dir.path().join(format!(
            "ssh_host_{kind}{}_key",
            bits.map(|b| b.to_string()).unwrap_or_default()
        ));
        keygen(&path, kind, bits);
        self.more_host_keys.push(path.clone());
        fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Write `config.toml` (listen, host_keys (with `more_host_keys`), upstream_key (with
    /// `more_upstream_keys`), metrics_listen, then
    /// `tables`: `[limits]`, `[[users]]`, ...) and start `binary --config` on it; waits
    /// until it accepts connections. Its stderr goes to `sshr.log` in its directory;
    /// `RUST_LOG` defaults to `info`.
    ///
    /// Every test client comes from loopback, and many tests fail logins on purpose:
    /// unless `tables` has its own `[penalties]`, loopback is exempt from them.
    pub fn start(mut self, binary: &Path, tables: &str) -> Sshr {
        let tables = if tables.contains("[penalties]") {
            tables.to_owned()
        } else {
            format!("{tables}\n[penalties]\nexempt = [\"127.0.0.0/8\"]\n")
        };
        let config_path = self.dir.path().join("config.toml");
        let log_path = self.dir.path().join("sshr.log");
        let mut attempt = 0;
        let quoted = |p: &PathBuf| format!("{:?}", p.display().to_string());
        // One file as a string, several as a list.
        let upstream_keys = match self.more_upstream_keys.is_empty() {
            true => quoted(&self.upstream_key),
            false => {
                let all: Vec<String> = std::iter::once(&self.upstream_key)
                    .chain(&self.more_upstream_keys)
                    .map(quoted)
                    .collect();
                format!("[{}]", all.join(", "))
            }
        };
        loop {
            attempt += 1;
            let host_keys: Vec<String> = std::iter::once(&self.host_key)
                .chain(&self.more_host_keys)
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect();
            let config = format!(
                "listen = [\"127.0.0.1:{}\"]\nhost_keys = [{}]\nupstream_key = {upstream_keys}\n\
                 metrics_listen = \"127.0.0.1:{}\"\n\n{tables}\n",
                self.port,
                host_keys.join(", "),
                self.metrics_port,
            );
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new(binary);
            cmd.arg("--config").arg(&config_path);
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let read_log = || {
                fs::read(&log_path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = read_log();
                    // Another process took one of the ports since they were picked: pick
                    // new ones.
                    if log.contains("Address already in use") && attempt < 3 {
                        break;
                    }
                    panic!("sshr exited at start ({status}); log:\n{log}");
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Sshr {
                        setup: self,
                        config_path,
                        log_path,
                        child,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshr did not listen on {addr} within 20 s; log:\n{}",
                        read_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.port = free_listen_port();
            self.metrics_port = free_listen_port();
        }
    }
}

impl Default for SshrSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `sshr --config`; killed on drop.
pub struct Sshr {
    pub setup: SshrSetup,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Child,
}

impl Sshr {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.setup.port))
    }

    pub fn port(&self) -> u16 {
        self.setup.port
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Everything sshr logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `Some(status)` if the daemon has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// The Prometheus text of the metrics endpoint.
    pub fn metrics(&self) -> Result<String, String> {
        use std::io::Write;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.setup.metrics_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text)
            .map_err(|e| format!("read: {e}"))?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
                Ok(body.to_owned())
            }
            _ => Err(format!("unexpected answer: {text}")),
        }
    }

    /// The value of a metric (summed over its label sets), `None` if absent.
    pub fn metric(&self, name: &str) -> Result<Option<f64>, String> {
        Ok(metric_value(&self.metrics()?, name))
    }
}

/// The value of `name` in a Prometheus text exposition, summed over its label sets.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with(' ') {
            rest.trim()
        } else if rest.starts_with('{') {
            match rest.rsplit_once('}') {
                Some((_, v)) => v.trim(),
                None => continue,
            }
        } else {
            continue;
        };
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

impl Drop for Sshr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Established TCP connections to `port` on loopback (`ss`, from iproute2).
pub fn connections_to(port: u16) -> usize {
    let out = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            "dst",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}
