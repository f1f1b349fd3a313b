//! A real HAProxy in front of sshr processes, as a fleet runs behind a VIP: TCP mode,
//! round robin, a PROXY protocol v2 header on every connection to a backend, and fast
//! health checks that send PROXY `LOCAL` headers.
//!
//! Everything it uses is in its own temporary directory: the configuration, the log
//! (HAProxy's stderr) and the admin socket the test reads server states from. It runs
//! in the foreground (`-db`) with no `chroot`, `user`, pid file or daemon mode, so it
//! never touches the system's HAProxy service or its files. `scripts/test` installs
//! Debian's `haproxy` package.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_listen_port, TempDir};

/// Where Debian's package puts it.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// The name of the one proxy section, in stats.
const PROXY_NAME: &str = "sshr";

/// A running `haproxy -db`; killed and reaped on drop.
pub struct Haproxy {
    /// The frontend's port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl Haproxy {
    /// Starts HAProxy listening on a free 127.0.0.1 port, balancing over `backends`
    /// (named `s0`, `s1`, ... in that order), and waits until its admin socket answers.
    /// HAProxy in front of `backends`, health-checking them with PROXY `LOCAL` headers.
    pub fn start(backends: &[SocketAddr]) -> Haproxy {
        Haproxy::start_checked(backends, &HealthCheck::ProxyLocal)
    }

    /// HAProxy in front of `backends`, health-checking them as `check` says.
    pub fn start_checked(backends: &[SocketAddr], check: &HealthCheck) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("sshr-haproxy")
            .tempdir()
            .unwrap();
        let log_path = dir.path().join("haproxy.log");
        let read_log = || {
            fs::read(&log_path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let admin = dir.path().join("admin.sock");
        for attempt in 1..=3 {
            let port = free_listen_port();
            let config_path = dir.path().join("haproxy.cfg");
            fs::write(&config_path, config(port, &admin, backends, check)).unwrap();
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(HAPROXY)
                .arg("-db")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {HAPROXY} (is haproxy installed?): {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = read_log();
                    // Another process took the port since it was picked: pick another.
                    if log.contains("cannot bind socket") && attempt < 3 {
                        break;
                    }
                    panic!("haproxy exited at start ({status}); log:\n{log}");
                }
                if show_stat(&admin).is_ok() {
                    return Haproxy { port, dir, child };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "haproxy's admin socket did not answer within 10 s; log:\n{}",
                        read_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the third attempt panics instead of breaking")
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What HAProxy printed (its log goes to stderr).
    pub fn log(&self) -> String {
        fs::read(self.dir.path().join("haproxy.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The admin socket's `show stat` (CSV).
    pub fn show_stat(&self) -> Result<String, String> {
        show_stat(&self.dir.path().join("admin.sock"))
    }

    /// Column `column` of `show stat` for backend `s{index}`: "status" ("UP", "DOWN",
    /// "UP 1/2", ...), "check_status" ("L4OK", "L4CON", ...).
    pub fn server_field(&self, index: usize, column: &str) -> Result<String, String> {
        let stat = self.show_stat()?;
        let header = stat.lines().next().ok_or("empty show stat")?;
        let at = (header.trim_start_matches("# ").split(','))
            .position(|c| c == column)
            .ok_or_else(|| format!("no column {column} in show stat"))?;
        let name = format!("s{index}");
        stat.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > at && f[0] == PROXY_NAME && f[1] == name)
            .map(|f| f[at].to_owned())
            .ok_or_else(|| format!("no server {name} in:\n{stat}"))
    }

    /// Waits (at most `timeout`) until [`Haproxy::server_field`] starts with `want`.
    pub fn wait_for_field(
        &self,
        index: usize,
        column: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.server_field(index, column) {
                Ok(value) if value.starts_with(want) => return Ok(()),
                Ok(value) => last = value,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "s{index}'s {column} not {want} within {timeout:?} (last: {last}); haproxy log:\n{}",
            self.log()
        ))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `show stat` (CSV) over the admin socket at `path`.
fn show_stat(path: &Path) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect {path:?}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"show stat\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    Ok(text)
}

/// The configuration: one TCP `listen` section balancing over `backends`.
/// How HAProxy checks its backends.
pub enum HealthCheck {
    /// TCP connects that send a PROXY v2 `LOCAL` header (`check-send-proxy`).
    ProxyLocal,
    /// `GET /readyz` on each backend's metrics port (in the order of the backends),
    /// expecting 200: what `docs/deploy.md` recommends.
    Readyz(Vec<u16>),
}

fn config(port: u16, admin: &Path, backends: &[SocketAddr], check: &HealthCheck) -> String {
    let mut c = format!(
        "global\n\
         \x20   log stderr format raw local0 info\n\
         \x20   stats socket {admin} mode 600 level admin\n\
         \x20   maxconn 256\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout check 1s\n\
         \x20   # A backend that went away between two checks: try the others.\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \n\
         listen {PROXY_NAME}\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   balance roundrobin\n",
        admin = admin.display(),
    );
    if let HealthCheck::Readyz(_) = check {
        c.push_str("    option httpchk GET /readyz\n    http-check expect status 200\n");
    }
    for (i, addr) in backends.iter().enumerate() {
        let how = match check {
            HealthCheck::ProxyLocal => "check check-send-proxy".to_owned(),
            HealthCheck::Readyz(ports) => format!("check port {}", ports[i]),
        };
        c.push_str(&format!(
            "    server s{i} {addr} send-proxy-v2 {how} inter 200ms fall 2 rise 1\n"
        ));
    }
    c
}
