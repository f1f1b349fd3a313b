//! A relayed session's life in time, end to end with real `ssh` and a real sshd behind
//! the real sshr: a frozen client (SIGSTOP) or a frozen upstream is noticed by the
//! proxy's keepalives and both legs are closed with a reason; an idle session is closed,
//! a busy one is not; a packet that stalls half-way ends the session and gives its relay
//! buffer back; the upstream's answers to the proxy's keepalives never reach the client,
//! while its answers to the client's requests do; an account at `max_sessions_per_user`
//! is refused until one of its sessions ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;

use sshr_protocol::msg;
use sshr_testsupport::conn::Conn;
use sshr_testsupport::{connections_to, one_user, run_bounded, ssh_command, tail, Sshd, Sshr};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// sshr with `tables` in front of a real sshd, one user `alice`; and alice's key. No
/// warm upstream connections: every connection to the sshd is a relayed session's.
fn proxy(tables: &str) -> (Sshd, Sshr, tempfile::TempDir, PathBuf) {
    let tables = format!(
        "{tables}
[warm_upstreams]
per_upstream = 0
"
    );
    let (sshd, sshr, keys) = one_user::start(SSHR, &[], &tables);
    let alice = keys.path().join(one_user::USER);
    (sshd, sshr, keys, alice)
}

/// `ssh alice@proxy remote...`, without ssh's own keepalives.
fn ssh(sshr: &Sshr, key: &Path, remote: &str) -> Command {
    let mut cmd = ssh_command("ssh", sshr.port(), Some(key));
    cmd.args(["-o", "ServerAliveInterval=0", "-T"])
        .arg(format!("{}@127.0.0.1", one_user::USER))
        .arg(remote);
    cmd
}

/// A process run in the background, its stderr in a file, its stdin a pipe held open
/// (so that a remote `cat` waits, silent, until its session ends, and then exits with
/// it: nothing is left on the upstream); continued and killed on drop, so that nothing
/// is left running (or stopped) whatever the test did to it.
struct Background {
    child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Background {
    fn spawn(mut cmd: Command) -> Background {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("spawn ssh");
        Background { child, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Its exit status, waiting up to `timeout` (`None`: still running).
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a process this test started (or found serving its session).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until sshr relays `n` sessions to the sshd (its log says so and the upstream
/// connections are up).
fn wait_relaying(sshr: &Sshr, sshd: &Sshd, n: usize, client: &Background) {
    let relaying = eventually(secs(20), || {
        sshr.log().matches("authenticated; relaying").count() >= n && connections_to(sshd.port) >= n
    });
    assert!(
        relaying,
        "the session did not start relaying\nssh: {}\nsshr: {}",
        client.stderr(),
        tail(&sshr.log(), 20)
    );
}

fn diagnostics(sshr: &Sshr, sshd: &Sshd, client: &Background) -> String {
    format!(
        "\nssh stderr: {}\nsshr log: {}\nsshd log: {}",
        client.stderr(),
        tail(&sshr.log(), 20),
        tail(&sshd.log(), 20)
    )
}

#[test]
fn a_frozen_client_is_dropped_after_its_keepalives_and_the_upstream_sees_the_end() {
    let (sshd, sshr, _keys, alice) =
        proxy("[limits]\nkeepalive_interval_secs = 1\nkeepalive_count_max = 2\n");
    let mut client = Background::spawn(ssh(&sshr, &alice, "cat"));
    wait_relaying(&sshr, &sshd, 1, &client);
    // Past the first keepalives, a live client answers them: the session goes on.
    std::thread::sleep(secs(4));
    assert_eq!(connections_to(sshd.port), 1, "a live client was dropped");
    assert!(client.wait(Duration::ZERO).is_none(), "ssh ended early");

    signal(client.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    // Three silent intervals (two keepalives, then the verdict); generous for a busy
    // machine.
    let dropped = eventually(secs(15), || {
        sshr.log()
            .contains("session closed: the client stopped answering keepalives")
            && connections_to(sshd.port) == 0
    });
    assert!(
        dropped,
        "the frozen client was not dropped within 15 s{}",
        diagnostics(&sshr, &sshd, &client)
    );
    // The upstream was told why.
    let told = eventually(secs(5), || {
        sshd.log().contains("sshr: the client stopped answering")
    });
    assert!(
        told,
        "sshd did not log the reason{}",
        diagnostics(&sshr, &sshd, &client)
    );
    assert!(
        frozen.elapsed() >= secs(2),
        "dropped before the keepalives ran out"
    );

    // Woken up, the client finds its connection gone. (It answers the keepalives
    // waiting for it before it reads the DISCONNECT after them, so it usually dies of
    // a broken pipe rather than showing the reason.)
    signal(client.pid(), libc::SIGCONT);
    let status = client.wait(secs(20)).expect("ssh exits once continued");
    assert!(
        !status.success(),
        "ssh succeeded{}",
        diagnostics(&sshr, &sshd, &client)
    );
}

/// The sshd processes serving the connection that arrives from `from_port`.
fn sshd_session_pids(sshd: &Sshd) -> Vec<u32> {
    let out = Command::new("ss")
        .args([
            "-Htnp",
            "state",
            "established",
            "src",
            &format!("127.0.0.1:{}", sshd.port),
        ])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pids: Vec<u32> = text
        .split("pid=")
        .skip(1)
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Continues the stopped sshd session processes on drop.
struct Stopped(Vec<u32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            signal(pid, libc::SIGCONT);
        }
    }
}

#[test]
fn a_frozen_upstream_makes_the_proxy_close_the_client_with_a_reason() {
    let (sshd, sshr, _keys, alice) =
        proxy("[limits]\nkeepalive_interval_secs = 1\nkeepalive_count_max = 2\n");
    let mut client = Background::spawn(ssh(&sshr, &alice, "cat"));
    wait_relaying(&sshr, &sshd, 1, &client);
    let pids = sshd_session_pids(&sshd);
    assert!(
        !pids.is_empty(),
        "no sshd process found for the session{}",
        diagnostics(&sshr, &sshd, &client)
    );
    let stopped = Stopped(pids);
    for &pid in &stopped.0 {
        signal(pid, libc::SIGSTOP);
    }
    let status = client.wait(secs(20));
    drop(stopped);
    let status = status.unwrap_or_else(|| {
        panic!(
            "ssh still runs 20 s after its server froze{}",
            diagnostics(&sshr, &sshd, &client)
        )
    });
    assert!(!status.success());
    assert!(
        client
            .stderr()
            .contains("sshr: the server stopped answering"),
        "ssh did not show the reason{}",
        diagnostics(&sshr, &sshd, &client)
    );
    assert!(
        sshr.log()
            .contains("session closed: the upstream stopped answering keepalives"),
        "{}",
        diagnostics(&sshr, &sshd, &client)
    );
}

#[test]
fn an_idle_session_is_closed_and_a_busy_one_is_not() {
    let (sshd, sshr, _keys, alice) = proxy("[limits]\nidle_timeout_secs = 3\n");
    // Output every second: never idle for 3 s.
    let busy = run_bounded(
        &mut ssh(
            &sshr,
            &alice,
            "for i in 1 2 3 4 5 6; do echo x; sleep 1; done",
        ),
        Stdio::null(),
        secs(60),
    )
    .unwrap();
    assert!(
        busy.status.success(),
        "a busy session was cut: {}\nsshr: {}",
        String::from_utf8_lossy(&busy.stderr),
        tail(&sshr.log(), 20)
    );
    assert_eq!(
        String::from_utf8_lossy(&busy.stdout).matches('x').count(),
        6
    );

    let started = Instant::now();
    // A remote `cat` on an open stdin: silent, and gone with its session.
    let idle = run_bounded(&mut ssh(&sshr, &alice, "cat"), Stdio::piped(), secs(25))
        .unwrap_or_else(|e| panic!("the idle session was not closed: {e}\n{}", sshr.log()));
    let stderr = String::from_utf8_lossy(&idle.stderr);
    assert!(!idle.status.success());
    assert!(
        stderr.contains("sshr: idle timeout"),
        "ssh did not show the reason: {stderr}"
    );
    assert!(started.elapsed() >= secs(3));
    assert!(sshr.log().contains("session closed: idle timeout"));
    assert!(eventually(secs(10), || connections_to(sshd.port) == 0));
}

#[test]
fn an_account_at_its_session_cap_is_refused_until_a_session_ends() {
    let (sshd, sshr, _keys, alice) = proxy("workers = 2\n[limits]\nmax_sessions_per_user = 1\n");
    let mut first = Background::spawn(ssh(&sshr, &alice, "cat"));
    wait_relaying(&sshr, &sshd, 1, &first);

    // The same account again, whichever worker takes it.
    for _ in 0..3 {
        let second = run_bounded(&mut ssh(&sshr, &alice, "true"), Stdio::null(), secs(30)).unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "a second session was allowed");
        assert!(
            stderr.contains("sshr: too many sessions for this account, try again later"),
            "ssh did not show the reason: {stderr}"
        );
    }
    assert_eq!(connections_to(sshd.port), 1);

    // The first session ends: the account may log in again.
    let _ = first.child.kill();
    let _ = first.wait(secs(10));
    let mut last = String::new();
    let allowed = eventually(secs(20), || {
        let out = run_bounded(&mut ssh(&sshr, &alice, "echo ok"), Stdio::null(), secs(30)).unwrap();
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    });
    assert!(
        allowed,
        "not allowed again after the first session ended: {last}\n{}",
        tail(&sshr.log(), 20)
    );
}

#[test]
fn a_packet_that_stalls_during_the_relay_ends_the_session_and_frees_its_buffer() {
    let (sshd, sshr, _keys, alice) =
        proxy("[limits]\npacket_timeout_secs = 2\nkeepalive_interval_secs = 0\n");
    let mut c = Conn::logged_in(sshr.port(), one_user::USER, &alice);
    let mut ignore = vec![msg::IGNORE];
    ignore.extend(std::iter::repeat_n(0u8, 200_000));
    c.t.send(&ignore).unwrap();
    let out = c.t.transmit().to_vec();
    c.t.advance_transmit(out.len());
    // 16 KB of a 200 KB packet, more than the small inline buffer holds: the proxy
    // takes a pooled relay buffer for the rest, which never comes.
    c.s.write_all(&out[..16_000]).unwrap();
    let in_use = || {
        sshr.metric("sshr_buffer_pool_in_use")
            .unwrap()
            .unwrap_or(0.0)
    };
    let took = eventually(secs(5), || in_use() > 0.0);
    // (Published about once a second: a short hold may be missed, so only noted.)
    if !took {
        eprintln!("the pooled buffer was not seen in use");
    }
    // Told why, within the stall timeout and the watchdog's look-again period.
    match c.next_packet() {
        Err(sshr_protocol::Error::PeerDisconnected { description, .. }) => {
            assert_eq!(description, "sshr: packet not completed in time")
        }
        other => panic!("expected a DISCONNECT, got {other:?}\n{}", sshr.log()),
    }
    assert!(
        sshr.log()
            .contains("session closed: a packet stalled half-way"),
        "{}",
        tail(&sshr.log(), 10)
    );
    assert!(
        eventually(secs(10), || in_use() == 0.0),
        "the relay buffer was not given back"
    );
    assert!(eventually(secs(10), || connections_to(sshd.port) == 0));
    assert!(
        sshd.log().contains("sshr: the client stopped answering"),
        "the upstream was not told\n{}",
        tail(&sshd.log(), 10)
    );
}

#[test]
fn the_reply_to_a_forwarded_request_is_not_taken_for_the_answer_to_a_keepalive() {
    let (sshd, sshr, _keys, alice) =
        proxy("[limits]\nkeepalive_interval_secs = 1\nkeepalive_count_max = 30\n");
    let mut c = Conn::logged_in(sshr.port(), one_user::USER, &alice);
    let pids = sshd_session_pids(&sshd);
    assert!(!pids.is_empty(), "no sshd process found for the session");
    // The upstream freezes: the proxy's keepalives to it go unanswered for a while.
    let stopped = Stopped(pids);
    for &pid in &stopped.0 {
        signal(pid, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_millis(2500));
    // A request whose reply carries data, sealed for the upstream after the proxy's own.
    let mut forward = vec![msg::GLOBAL_REQUEST];
    sshr_protocol::wire::put_string(&mut forward, b"tcpip-forward");
    forward.push(1);
    sshr_protocol::wire::put_string(&mut forward, b"127.0.0.1");
    sshr_protocol::wire::put_u32(&mut forward, 0);
    c.t.send(&forward).unwrap();
    c.flush();
    std::thread::sleep(Duration::from_millis(500));
    drop(stopped);
    // The upstream answers the keepalives (REQUEST_FAILURE) and then the forward
    // (REQUEST_SUCCESS with the port): only the latter reaches the client.
    let reply = (0..100)
        .map(|_| c.next_packet().expect("a reply"))
        .find(|p| p[0] == msg::REQUEST_SUCCESS || p[0] == msg::REQUEST_FAILURE)
        .expect("a reply within 100 packets");
    assert_eq!(
        reply[0],
        msg::REQUEST_SUCCESS,
        "the client got the answer to the proxy's keepalive\n{}",
        tail(&sshd.log(), 20)
    );
    assert_eq!(reply.len(), 5, "a port follows");
    let port = u32::from_be_bytes(reply[1..5].try_into().unwrap());
    assert!(port > 0 && port < 65536);
    assert!(sshd
        .log()
        .contains("rtype keepalive@openssh.com want_reply 1"));
}
