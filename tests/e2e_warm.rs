//! Warm upstream connections (`[warm_upstreams]`, src/proxy/warm.rs) with a real sshd upstream
//! and real `ssh` clients: a later login takes the connection made after an earlier one;
//! one the server has closed meanwhile is never handed out; an unused one is closed after
//! `idle_secs`; `per_upstream = 0` turns the pool off; a client that proves nothing makes
//! none.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sshr_testsupport::{
    connections_to, keygen, run_with_timeout, ssh_command, Sshd, SshdOptions, SshrSetup,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

struct Rig {
    _dir: tempfile::TempDir,
    key: PathBuf,
    sshd: Sshd,
    sshr: sshr_testsupport::Sshr,
}

fn public_key(path: &Path) -> String {
    fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// One sshd (with `sshd_overrides`) behind an sshr with one worker, so that every login
/// lands on the same shard and its pool, and `warm` as the `[warm_upstreams]` table.
fn rig(sshd_overrides: &[&str], warm: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    keygen(&key, "ed25519", None);
    let setup = SshrSetup::new();
    let sshd = Sshd::start_with_overrides(
        SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone()],
            ..Default::default()
        },
        sshd_overrides,
    );
    let tables = format!(
        "workers = 1\n\n[warm_upstreams]\n{warm}\n\n[[users]]\nname = \"alice\"\n\
         upstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\nauthorized_keys = [{:?}]\n\
         upstream_host_key = {:?}\n",
        sshd.port,
        public_key(&key),
        sshd.host_public_keys[0],
    );
    let sshr = setup.start(Path::new(SSHR), &tables);
    Rig {
        _dir: dir,
        key,
        sshd,
        sshr,
    }
}

impl Rig {
    fn login(&self, tag: &str) {
        let mut cmd = ssh_command("ssh", self.sshr.port(), Some(&self.key));
        cmd.arg("alice@127.0.0.1").arg(format!("echo {tag}"));
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(tag),
            "login {tag} failed: {}\nsshr log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.sshr.log()
        );
    }

    /// The `warm_upstream=` field of the proxy's "authenticated; relaying" lines, in order.
    fn warm_flags(&self) -> Vec<bool> {
        self.sshr
            .log()
            .lines()
            .filter(|l| l.contains("authenticated; relaying"))
            .map(|l| l.contains("warm_upstream=true"))
            .collect()
    }

    /// Wait (bounded) until the metric has the value.
    fn wait_metric(&self, name: &str, want: f64, within: Duration) {
        let start = Instant::now();
        loop {
            let v = self.sshr.metric(name).ok().flatten().unwrap_or(0.0);
            if v == want {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{name} stayed {v}, expected {want}; sshr log:\n{}",
                self.sshr.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_later_login_takes_the_warm_connection() {
    let rig = rig(&[], "per_upstream = 1\nidle_secs = 60");
    rig.login("first");
    // The connection made after the first login is held (published within a second).
    rig.wait_metric("sshr_upstream_warm_held", 1.0, Duration::from_secs(10));
    rig.login("second");
    assert_eq!(rig.warm_flags(), vec![false, true], "{}", rig.sshr.log());
    rig.wait_metric("sshr_upstream_warm_total", 2.0, Duration::from_secs(10));
    // ...and the pool was topped up again for the next one.
    rig.wait_metric("sshr_upstream_warm_held", 1.0, Duration::from_secs(10));
    // Both logins reached the upstream as the proxy's key, once each.
    let accepted = rig.sshd.log().matches("Accepted publickey").count();
    assert_eq!(accepted, 2, "{}", rig.sshd.log());
}

#[test]
fn a_connection_the_server_closed_is_not_handed_out() {
    // sshd drops unauthenticated connections after LoginGraceTime: the held one dies
    // long before the pool's own idle limit.
    let rig = rig(&["LoginGraceTime 2"], "per_upstream = 1\nidle_secs = 60");
    rig.login("first");
    rig.wait_metric("sshr_upstream_warm_held", 1.0, Duration::from_secs(10));
    // sshd does not log that timeout; watch the connection itself go away.
    let start = Instant::now();
    while connections_to(rig.sshd.port) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sshd never timed the warm connection out:\n{}",
            rig.sshd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Gone on the server's side: the next login connects afresh and works.
    rig.login("after-timeout");
    assert_eq!(rig.warm_flags(), vec![false, false], "{}", rig.sshr.log());
}

#[test]
fn an_unused_connection_is_closed_after_idle_secs() {
    let rig = rig(&[], "per_upstream = 1\nidle_secs = 1");
    rig.login("first");
    let start = Instant::now();
    while !rig.sshd.log().contains("sshr: idle") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the warm connection was never closed by the proxy:\nsshd log:\n{}",
            rig.sshd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.wait_metric("sshr_upstream_warm_held", 0.0, Duration::from_secs(10));
}

#[test]
fn per_upstream_zero_turns_the_pool_off() {
    let rig = rig(&[], "per_upstream = 0");
    let connections = || rig.sshd.log().matches("Connection from").count();
    let before = connections(); // the support crate's readiness probe
    rig.login("first");
    rig.login("second");
    assert_eq!(rig.warm_flags(), vec![false, false], "{}", rig.sshr.log());
    // Two logins, two connections: nothing made ahead.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(connections() - before, 2, "{}", rig.sshd.log());
}

#[test]
fn a_client_that_proves_nothing_makes_no_warm_connection() {
    let rig = rig(&[], "per_upstream = 1\nidle_secs = 60");
    // alice's name with a key the proxy does not accept: refused.
    let stranger = rig._dir.path().join("stranger");
    keygen(&stranger, "ed25519", None);
    let mut cmd = ssh_command("ssh", rig.sshr.port(), Some(&stranger));
    cmd.arg("alice@127.0.0.1").arg("echo no");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "a stranger logged in");
    // Warm connections are made for the next login after a successful one only: none
    // is held once the metrics have been published (every second) twice over.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        rig.sshr.metric("sshr_upstream_warm_held").unwrap(),
        Some(0.0),
        "{}",
        rig.sshr.log()
    );
    // ...while a real login does make one.
    rig.login("proven");
    rig.wait_metric("sshr_upstream_warm_held", 1.0, Duration::from_secs(10));
}
