//! A fleet behind a VIP: a real HAProxy in TCP mode in front of two `sshr` processes,
//! sending PROXY protocol v2 headers and health-checking them with PROXY `LOCAL`
//! headers, one real OpenSSH `sshd` upstream, and real `ssh` clients.
//!
//! - the client address sshr sees (and logs) is the client's, not HAProxy's;
//! - a PROXY header from a source outside `proxy_protocol.trusted` is never believed,
//!   a malformed one is refused, a `LOCAL` one is closed quietly;
//! - one sshr stopped with SIGTERM drains: its `/readyz` turns 503, HAProxy's checks
//!   mark it down while its live session runs to the end, and logins go on through the
//!   other;
//! - the audit log records the client's address, not HAProxy's.
//!
//! Needs root (sshd), the OpenSSH client and server, and `/usr/sbin/haproxy`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sshr_testsupport::haproxy::{Haproxy, HealthCheck};
use sshr_testsupport::{
    free_listen_port, keygen, run_with_timeout, ssh_command, Sshd, SshdOptions, Sshr, SshrSetup,
    TempDir,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");
/// The account of the user table, routed to root on the sshd.
const USER: &str = "alice";

/// `n` sshr processes, each with a PROXY-protocol listener trusting 127.0.0.1 only, all
/// routing alice to root on one sshd.
struct Fleet {
    sshrs: Vec<Sshr>,
    /// Each sshr's `proxy_protocol.listen` port, in the order of `sshrs`.
    proxy_ports: Vec<u16>,
    /// Alice's private key.
    key: PathBuf,
    _keys: TempDir,
    _sshd: Sshd,
}

impl Fleet {
    /// `top`: top-level settings for every sshr's configuration (before its tables).
    fn start(n: usize, top: &str) -> Fleet {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join(USER);
        keygen(&key, "ed25519", None);
        let alice_pub = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let setups: Vec<SshrSetup> = (0..n).map(|_| SshrSetup::new()).collect();
        let sshd = Sshd::start(SshdOptions {
            authorized_keys: setups
                .iter()
                .map(|s| s.upstream_public_key.clone())
                .collect(),
            ..SshdOptions::default()
        });
        let mut sshrs = Vec::new();
        let mut proxy_ports = Vec::new();
        for setup in setups {
            let proxy_port = free_listen_port();
            let audit_log = setup.dir.path().join("audit.log");
            let tables = format!(
                "{top}\naudit_log = {:?}\n\
                 [proxy_protocol]\n\
                 listen = [\"127.0.0.1:{proxy_port}\"]\n\
                 trusted = [\"127.0.0.1/32\"]\n\
                 \n\
                 [[users]]\n\
                 name = \"{USER}\"\n\
                 upstream = \"127.0.0.1:{}\"\n\
                 upstream_user = \"root\"\n\
                 authorized_keys = [{:?}]\n",
                audit_log.display().to_string(),
                sshd.port,
                alice_pub.trim(),
            );
            sshrs.push(setup.start(SSHR.as_ref(), &tables));
            proxy_ports.push(proxy_port);
        }
        Fleet {
            sshrs,
            proxy_ports,
            key,
            _keys: keys,
            _sshd: sshd,
        }
    }

    fn proxy_addrs(&self) -> Vec<SocketAddr> {
        (self.proxy_ports.iter())
            .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    /// A real `ssh` login through `port` from `source`, running `echo {marker}`; Err
    /// with what ssh printed unless it exited 0 having printed the marker.
    fn login(&self, port: u16, source: &str, marker: &str) -> Result<(), String> {
        let mut cmd = ssh_command("ssh", port, Some(&self.key));
        cmd.args(["-b", source, &format!("{USER}@127.0.0.1"), "echo", marker]);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.trim() == marker {
            Ok(())
        } else {
            Err(format!(
                "ssh {}: stdout {stdout:?}, stderr {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// HAProxy in front of every sshr of `fleet`, once its health checks passed for all.
fn haproxy_for(fleet: &Fleet) -> Haproxy {
    let haproxy = Haproxy::start(&fleet.proxy_addrs());
    for i in 0..fleet.sshrs.len() {
        // L4OK: a check connected (and sent its PROXY LOCAL header).
        haproxy
            .wait_for_field(i, "check_status", "L4OK", Duration::from_secs(20))
            .unwrap();
        haproxy
            .wait_for_field(i, "status", "UP", Duration::from_secs(20))
            .unwrap();
    }
    haproxy
}

/// The lines of `log` that say a login was relayed.
fn logins(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("authenticated; relaying"))
        .collect()
}

/// Waits (at most 10 s) until `sshr`'s log has a line containing every one of `parts`.
fn wait_for_line(sshr: &Sshr, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = sshr.log();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} within 10 s; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit records `sshr` wrote so far (its `audit_log` is `audit.log` in its
/// directory).
fn audit_records(sshr: &Sshr) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(sshr.setup.dir.path().join("audit.log")).unwrap_or_default();
    (text.lines())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Lines that say a connection to a PROXY listener was closed for a bad header.
const HEADER_REFUSED: &str = "closing PROXY protocol connection";

#[test]
fn the_client_address_behind_haproxy_is_the_clients() {
    let fleet = Fleet::start(2, "");
    let haproxy = haproxy_for(&fleet);
    // 127.0.0.2: a client address that is neither HAProxy's nor sshr's.
    fleet
        .login(haproxy.port, "127.0.0.2", "behind-haproxy")
        .unwrap();
    let relayed: Vec<String> = (fleet.sshrs.iter())
        .flat_map(|s| {
            logins(&s.log())
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    let line = &relayed[0];
    assert!(line.contains("peer=127.0.0.2:"), "{line}");
    // The balancer it came through is in the session's span.
    assert!(line.contains("proxied{via=127.0.0.1:"), "{line}");
    // The audit log has the client's address too, on every record of the session.
    let records = (fleet.sshrs.iter())
        .map(audit_records)
        .find(|r| r.iter().any(|r| r["event"] == "auth"))
        .expect("an sshr with auth records");
    let auth = (records.iter())
        .find(|r| r["event"] == "auth" && r["result"] == "success")
        .unwrap_or_else(|| panic!("no successful auth record in {records:?}"));
    let client = auth["client_addr"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.2:"), "{auth}");
    let session = auth["session_id"].clone();
    let of_session: Vec<_> = (records.iter())
        .filter(|r| r["session_id"] == session)
        .collect();
    for event in ["connect", "auth", "upstream", "channel"] {
        assert!(
            of_session.iter().any(|r| r["event"] == event),
            "no {event} record in {of_session:?}"
        );
    }
    assert!(
        of_session.iter().all(|r| r["client_addr"] == client),
        "{of_session:?}"
    );

    // HAProxy's health checks (PROXY LOCAL, every 200 ms) are closed quietly.
    std::thread::sleep(Duration::from_secs(1));
    for sshr in &fleet.sshrs {
        let log = sshr.log();
        assert!(!log.contains(HEADER_REFUSED), "{log}");
    }
}

/// Connects to `addr` from `source`, sends `bytes` and closes its sending side, and
/// returns the connection's local
/// port and everything it got back before the connection closed (each read waits at
/// most 10 s).
fn raw_exchange(source: [u8; 4], addr: SocketAddr, bytes: &[u8]) -> (u16, Vec<u8>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream: TcpStream = socket.into();
    let port = stream.local_addr().unwrap().port();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // sshr may close before all is written: what matters is what comes back.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: at most 64 KiB, each read at most 10 s.
    while got.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (port, got)
}

/// A PROXY v2 header from `client` (IPv4) to 10.0.0.1:22, with `command` (1: PROXY,
/// 0: LOCAL).
fn v2_header(command: u8, client: ([u8; 4], u16)) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, 0x11, 0, 12]);
    h.extend_from_slice(&client.0);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&client.1.to_be_bytes());
    h.extend_from_slice(&22u16.to_be_bytes());
    h
}

/// `sshr_proxy_protocol_errors_total{reason="..."}` of `sshr`.
fn header_errors(sshr: &Sshr, reason: &str) -> f64 {
    let series = format!("sshr_proxy_protocol_errors_total{{reason=\"{reason}\"}}");
    let text = sshr.metrics().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn forged_malformed_and_local_headers_are_closed() {
    // One shard: its log lines come in the order of the connections.
    let fleet = Fleet::start(1, "workers = 1");
    let sshr = &fleet.sshrs[0];
    let listener = fleet.proxy_addrs()[0];
    const SSH_HELLO: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n";
    // Refusals are logged at most once a second: wait that long between cases so each
    // gets its own line.
    let next_case = || std::thread::sleep(Duration::from_millis(1100));

    // A valid header from an untrusted source, claiming a trusted client address.
    let mut forged = v2_header(1, ([127, 0, 0, 1], 40000));
    forged.extend_from_slice(SSH_HELLO);
    let (port, got) = raw_exchange([127, 0, 0, 3], listener, &forged);
    assert_eq!(String::from_utf8_lossy(&got), "", "no SSH banner");
    let line = wait_for_line(sshr, &[HEADER_REFUSED, &format!("peer=127.0.0.3:{port}")]);
    assert!(line.contains("not in proxy_protocol.trusted"), "{line}");
    assert_eq!(header_errors(sshr, "untrusted"), 1.0);
    next_case();

    // A trusted source with a malformed header.
    let mut bad = b"PROXY TCP4 999.0.0.1 10.0.0.1 40000 22\r\n".to_vec();
    bad.extend_from_slice(SSH_HELLO);
    let (port, got) = raw_exchange([127, 0, 0, 1], listener, &bad);
    assert_eq!(String::from_utf8_lossy(&got), "");
    let line = wait_for_line(sshr, &[HEADER_REFUSED, &format!("peer=127.0.0.1:{port}")]);
    assert!(line.contains("malformed PROXY header"), "{line}");
    assert_eq!(header_errors(sshr, "malformed"), 1.0);
    next_case();

    // Health checks, with a LOCAL header or none (connect and close): closed, and no
    // warning about them...
    let mut checks = Vec::new();
    for check in [v2_header(0, ([0; 4], 0)), Vec::new()] {
        let (port, got) = raw_exchange([127, 0, 0, 1], listener, &check);
        assert_eq!(String::from_utf8_lossy(&got), "");
        checks.push(port);
        next_case();
    }
    // ... which would have come before this one's: an SSH client that bypassed the
    // balancer.
    let (port, got) = raw_exchange([127, 0, 0, 1], listener, SSH_HELLO);
    assert_eq!(String::from_utf8_lossy(&got), "");
    let line = wait_for_line(sshr, &[HEADER_REFUSED, &format!("peer=127.0.0.1:{port}")]);
    assert!(line.contains("SSH identification line"), "{line}");
    let log = sshr.log();
    for port in checks {
        let peer = format!("peer=127.0.0.1:{port}");
        assert!(
            !log.lines()
                .any(|l| l.contains(HEADER_REFUSED) && l.contains(&peer)),
            "a health check was warned about:\n{log}"
        );
    }
    assert_eq!(header_errors(sshr, "missing"), 1.0);
    // Nothing got as far as a session. (The start-up probe of the plain listener is one
    // at RUST_LOG=debug, without the span of proxied sessions.)
    assert!(logins(&log).is_empty(), "{log}");
    assert!(!log.contains("proxied{"), "{log}");
}

#[test]
fn logins_go_on_through_haproxy_when_one_sshr_stops() {
    let mut fleet = Fleet::start(2, "");
    // Checked as docs/deploy.md recommends: /readyz on each sshr's metrics port.
    let metrics_ports = fleet.sshrs.iter().map(|s| s.setup.metrics_port).collect();
    let haproxy = Haproxy::start_checked(&fleet.proxy_addrs(), &HealthCheck::Readyz(metrics_ports));
    for i in 0..fleet.sshrs.len() {
        haproxy
            .wait_for_field(i, "check_status", "L7OK", Duration::from_secs(20))
            .unwrap();
        haproxy
            .wait_for_field(i, "status", "UP", Duration::from_secs(20))
            .unwrap();
    }
    // Round robin: two logins, one on each.
    for i in 0..2 {
        fleet
            .login(haproxy.port, "127.0.0.2", &format!("before-{i}"))
            .unwrap();
    }
    for sshr in &fleet.sshrs {
        assert_eq!(logins(&sshr.log()).len(), 1, "{}", sshr.log());
    }

    // A live session on the first one (straight to its plain listener), which its
    // drain must let finish.
    let mut live = ssh_command("ssh", fleet.sshrs[0].port(), Some(&fleet.key));
    live.args([&format!("{USER}@127.0.0.1"), "sleep 4; echo live-done"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let live = live.spawn().unwrap();
    wait_for_line(
        &fleet.sshrs[0],
        &["authenticated; relaying", "peer=127.0.0.1:"],
    );

    // SIGTERM: the first one stops accepting and drains; its /readyz says so, and
    // HAProxy marks it down while the live session still runs.
    let stopped = &mut fleet.sshrs[0];
    assert_eq!(
        unsafe { libc::kill(stopped.pid() as i32, libc::SIGTERM) },
        0
    );
    haproxy
        .wait_for_field(0, "status", "DOWN", Duration::from_secs(20))
        .unwrap();
    assert!(
        stopped.exited().is_none(),
        "sshr exited before its live session ended; log:\n{}",
        stopped.log()
    );

    for i in 0..10 {
        fleet
            .login(haproxy.port, "127.0.0.2", &format!("after-{i}"))
            .unwrap_or_else(|e| panic!("login {i} after the stop: {e}"));
    }
    let out = live.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("live-done"),
        "the draining sshr's session: {}, {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = &mut fleet.sshrs[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = stopped.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sshr did not exit within 30 s of its last session"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}; log:\n{}", stopped.log());

    let survivor = fleet.sshrs[1].log();
    assert_eq!(logins(&survivor).len(), 11, "{survivor}");
    assert!(
        logins(&survivor)
            .iter()
            .all(|l| l.contains("peer=127.0.0.2:")),
        "{survivor}"
    );
}
