//! `/healthz`, `/readyz` and `/metrics` on `metrics_listen` (src/metrics/endpoint.rs,
//! src/health.rs, src/providers/health.rs) with the real binary: ready once listening;
//! unready while a `kind = "command"` provider fails (found by the probe, no login
//! needed) and ready again once it recovers; unready but alive while draining a live
//! session after SIGTERM. And `sshr --version`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sshr_testsupport::one_user;
use sshr_testsupport::{run_with_timeout, ssh_command};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// Generous: the probe runs every 5 s on a shared, busy machine.
const WITHIN: Duration = Duration::from_secs(30);

/// `GET path` on the metrics port: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {text:?}"));
    let code = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    (code, body.to_owned())
}

/// Polls `path` (bounded by [`WITHIN`]) until it answers `code` with a body containing
/// `text`; returns that body.
fn wait_for(sshr: &sshr_testsupport::Sshr, path: &str, code: u16, text: &str) -> String {
    let start = Instant::now();
    loop {
        let (got, body) = get(sshr.setup.metrics_port, path);
        if got == code && body.contains(text) {
            return body;
        }
        assert!(
            start.elapsed() < WITHIN,
            "{path} stayed {got} {body:?}, expected {code} with {text:?}; log:\n{}",
            sshr.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Replaces the provider's script at once (a rename: never half written).
fn set_script(path: &Path, body: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, body).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn readyz_follows_the_providers_and_draining() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lookup.sh");
    // Exit 0 with no output: "unknown user", the healthy answer to the probe.
    set_script(&script, "exit 0\n");
    let tables = format!(
        "[limits]\nshutdown_grace_secs = 30\n\n[[providers]]\nkind = \"command\"\n\
         command = \"/bin/sh {} %u\"\ntimeout_ms = 3000\nstale_if_error_secs = 0\n",
        script.display()
    );
    let (_sshd, mut sshr, keys) = one_user::start(SSHR, &[], &tables);
    let port = sshr.setup.metrics_port;

    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    wait_for(&sshr, "/readyz", 200, "ready");
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    // Published by every shard about once a second.
    let start = Instant::now();
    while !get(port, "/metrics").1.contains("sshr_sessions_active") {
        assert!(start.elapsed() < WITHIN, "{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(port, "/").0, 200, "/ still serves the metrics");
    assert_eq!(get(port, "/nothing-here").0, 404);

    // The backend fails: the probe notices without any login.
    set_script(&script, "echo 'directory is down' >&2\nexit 1\n");
    let body = wait_for(&sshr, "/readyz", 503, "directory is down");
    assert!(body.starts_with("provider command#1 ("), "{body}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert_eq!(get(port, "/healthz").0, 200);
    // The probe's name is never in a metric, and probes are not counted as lookups.
    let metrics = get(port, "/metrics").1;
    assert!(!metrics.contains("sshr-readiness-probe"), "{metrics}");
    assert!(
        !metrics.contains("sshr_provider_lookups_total"),
        "probes counted as lookups: {metrics}"
    );

    // It recovers: ready again.
    set_script(&script, "exit 0\n");
    wait_for(&sshr, "/readyz", 200, "ready");
    // Logged right after the probe's answer counts: allow a moment.
    let start = Instant::now();
    while !sshr.log().contains("provider answers its probe again") {
        assert!(
            start.elapsed() < WITHIN,
            "recovery not logged: {}",
            sshr.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe_log = sshr.log();
    assert!(
        !probe_log.contains("login refused"),
        "a probe was taken for a login: {probe_log}"
    );
    // The outage is logged once, not at every probe.
    assert_eq!(
        probe_log.matches("provider probe failed").count(),
        1,
        "{probe_log}"
    );

    // A live session, then SIGTERM: draining, but alive until the session ends.
    let mut cmd = ssh_command("ssh", sshr.port(), Some(&keys.path().join("alice")));
    cmd.args(["alice@127.0.0.1", "sleep 10; echo done"]);
    let session = std::thread::spawn(move || run_with_timeout(cmd, Duration::from_secs(60)));
    let start = Instant::now();
    while !sshr.log().contains("authenticated; relaying") {
        assert!(start.elapsed() < WITHIN, "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &sshr.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(wait_for(&sshr, "/readyz", 503, "draining"), "draining\n");
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    let out = session.join().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "the session did not finish: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshr.log()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = sshr.exited() {
            break status;
        }
        assert!(start.elapsed() < WITHIN, "no exit after the session ended");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}; log:\n{}", sshr.log());
}

#[test]
fn a_reload_reports_on_its_own_providers() {
    let dir = tempfile::tempdir().unwrap();
    let (fine, hung) = (dir.path().join("fine.sh"), dir.path().join("hung.sh"));
    set_script(&fine, "exit 0\n");
    set_script(&hung, "sleep 30\n");
    let tables = format!(
        "[[providers]]\nkind = \"command\"\ncommand = \"/bin/sh {} %u\"\ntimeout_ms = 1000\n",
        fine.display()
    );
    let (_sshd, sshr, _keys) = one_user::start(SSHR, &[], &tables);
    wait_for(&sshr, "/readyz", 200, "ready");

    // The new configuration's provider hangs: it is killed at its timeout, and the
    // proxy is unready because of it.
    let config = std::fs::read_to_string(&sshr.config_path).unwrap();
    let reloaded = config.replace(&fine.display().to_string(), &hung.display().to_string());
    assert_ne!(config, reloaded);
    std::fs::write(&sshr.config_path, reloaded).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &sshr.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let body = wait_for(&sshr, "/readyz", 503, "slow: no answer within 1 s timeout");
    assert!(body.starts_with("provider command#1 (/bin/sh) "), "{body}");
    assert!(
        sshr.log().contains("configuration reloaded"),
        "{}",
        sshr.log()
    );

    // Back to the first: ready again, the old probe no longer counts.
    std::fs::write(&sshr.config_path, config).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &sshr.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(&sshr, "/readyz", 200, "ready");
}

#[test]
fn version_tells_what_the_binary_was_built_with() {
    let out = Command::new(SSHR).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("sshr ", env!("CARGO_PKG_VERSION")))
    );
    for fact in [
        "features: ",
        "providers: sqlite",
        "kex: ",
        "ciphers: ",
        "build: ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(fact)),
            "no {fact:?} line in:\n{text}"
        );
    }
    // -V: the version alone.
    let out = Command::new(SSHR).arg("-V").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("sshr ", env!("CARGO_PKG_VERSION"))
    );
}
