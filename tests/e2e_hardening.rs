//! The attacks of the hardening review, each against the real `sshr` binary in front of a
//! real OpenSSH `sshd`: scripted clients (our own transport, driven by the test) do what
//! attackers do, real `ssh` clients do what users do, and each test checks what the
//! attacker got and that the users were not hurt.
//!
//! Needs root (sshd, PAM) and the OpenSSH client and server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sshr_protocol::auth::{self, InfoResponse, Method, Request};
use sshr_protocol::hostkey::{PrivateKey, SigAlg};
use sshr_protocol::msg;
use sshr_protocol::Error;
use sshr_testsupport::conn::Conn;
use sshr_testsupport::{connections_to, keygen, one_user, run_with_timeout, ssh_command, Sshr};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

fn send(c: &mut Conn, user: &str, method: Method<'_>) {
    let req = Request {
        user,
        service: auth::CONNECTION_SERVICE,
        method,
    };
    c.t.send(&req.encode()).unwrap();
    c.flush();
}

fn password<'a>(p: &'a str) -> Method<'a> {
    Method::Password {
        password: p,
        new_password: None,
    }
}

/// Log in as alice with a real ssh; Ok(()) if `echo` ran.
fn real_login(sshr: &Sshr, key: &Path) -> Result<(), String> {
    let mut cmd = ssh_command("ssh", sshr.port(), Some(key));
    cmd.args(["alice@127.0.0.1", "echo logged-in"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    if String::from_utf8_lossy(&out.stdout).contains("logged-in") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------------------------------
// 1. Wrong passwords and the cap of upstream connections for unauthenticated clients

#[test]
fn silent_wrong_password_clients_stay_within_the_cap_and_key_logins_go_through() {
    const CAP: usize = 8;
    // sshd drops what is beyond 10 unauthenticated connections (and logs it): the
    // proxy must never get there, whatever 100 clients without credentials do.
    let (sshd, sshr, keys) = one_user::start(
        SSHR,
        &["PasswordAuthentication yes", "MaxStartups 10:100:10"],
        &format!("[limits]\npreauth_upstream_connections = {CAP}\nauth_timeout_secs = 40\n"),
    );
    let max_seen = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (max_seen, sampling, port) = (max_seen.clone(), sampling.clone(), sshd.port);
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                max_seen.fetch_max(connections_to(port), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    // 100 clients each send one wrong password for a real user, then go silent.
    let attackers: Vec<Conn> = (0..100)
        .map(|_| {
            let mut c = Conn::connect(sshr.port());
            send(&mut c, "alice", Method::None);
            assert_eq!(c.next_packet().unwrap()[0], msg::USERAUTH_FAILURE);
            send(&mut c, "alice", password("not-the-password"));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let held = connections_to(sshd.port);
    assert!(
        (CAP - CAP / 4..=CAP).contains(&held),
        "the silent clients should hold the unproven slots ({} of {CAP}), upstream has {held}\n{}",
        CAP - CAP / 4,
        sshr.log()
    );
    // 20 real public-key logins at once, while the attackers hold their slots.
    let key = keys.path().join("alice");
    let logins: Vec<_> = (0..20)
        .map(|_| {
            let (port, key) = (sshr.port(), key.clone());
            std::thread::spawn(move || {
                let mut cmd = ssh_command("ssh", port, Some(&key));
                cmd.args(["alice@127.0.0.1", "echo logged-in"]);
                run_with_timeout(cmd, Duration::from_secs(60))
            })
        })
        .collect();
    let mut failed = Vec::new();
    for l in logins {
        let out = l.join().unwrap();
        if !String::from_utf8_lossy(&out.stdout).contains("logged-in") {
            failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of 20 key logins failed: {:?}\n{}",
        failed.len(),
        failed.first(),
        sshr.log()
    );
    let log = sshd.log();
    assert!(
        !log.contains("past MaxStartups") && !log.contains("beginning MaxStartups throttling"),
        "sshd saw more unauthenticated connections than the proxy's cap"
    );
    // Before the logins only unauthenticated ones existed: never more than the cap.
    assert!(
        held <= CAP,
        "upstream had {held} unauthenticated connections"
    );
    eprintln!(
        "most connections seen upstream (including relayed sessions): {}",
        max_seen.load(Ordering::Relaxed)
    );
    drop(attackers);
}

// ---------------------------------------------------------------------------------------
// 2. Timing of password refusals

/// One wrong password; the time from sending it to the refusal.
fn time_password_refusal(port: u16, user: &str) -> Duration {
    let mut c = Conn::connect(port);
    send(&mut c, user, Method::None);
    assert_eq!(c.next_packet().unwrap()[0], msg::USERAUTH_FAILURE);
    let started = Instant::now();
    send(&mut c, user, password("wrong-password"));
    let p = c.next_packet().expect("an answer");
    assert_eq!(p[0], msg::USERAUTH_FAILURE, "{user}");
    started.elapsed()
}

/// One wrong keyboard-interactive answer: (time to the prompt, time from the answer to
/// the refusal).
fn time_keyboard_interactive_refusal(port: u16, user: &str) -> (Duration, Duration) {
    let mut c = Conn::connect(port);
    let started = Instant::now();
    send(
        &mut c,
        user,
        Method::KeyboardInteractive {
            language: "",
            submethods: "",
        },
    );
    let p = c.next_packet().expect("a prompt");
    assert_eq!(p[0], msg::USERAUTH_INFO_REQUEST, "{user}");
    let prompt = started.elapsed();
    let answer = InfoResponse {
        responses: vec!["wrong-password"],
    };
    c.t.send(&answer.encode()).unwrap();
    c.flush();
    let answered = Instant::now();
    let p = c.next_packet().expect("an answer");
    assert_eq!(p[0], msg::USERAUTH_FAILURE, "{user}");
    (prompt, answered.elapsed())
}

#[test]
fn an_unknown_name_fails_as_slowly_as_a_real_account_on_a_pam_upstream() {
    // PAM's pam_unix delays every failed password by about 2 s.
    let (_sshd, sshr, _keys) = one_user::start(
        SSHR,
        &[
            "UsePAM yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication yes",
        ],
        "",
    );
    let port = sshr.port();
    // The proxy learns how long real refusals take from real ones.
    let known: Vec<Duration> = (0..3)
        .map(|_| time_password_refusal(port, "alice"))
        .collect();
    let unknown: Vec<Duration> = (0..3)
        .map(|_| time_password_refusal(port, "nosuchuser"))
        .collect();
    let avg = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (k, u) = (avg(&known), avg(&unknown));
    assert!(
        k > Duration::from_millis(1200),
        "the PAM upstream should be slow to refuse ({known:?}); the test means nothing otherwise"
    );
    assert!(
        u > k.mul_f32(0.6) && u < k.mul_f32(1.6),
        "password: known user refused in {known:?}, unknown name in {unknown:?}"
    );

    let known: Vec<_> = (0..2)
        .map(|_| time_keyboard_interactive_refusal(port, "alice"))
        .collect();
    let unknown: Vec<_> = (0..2)
        .map(|_| time_keyboard_interactive_refusal(port, "nosuchuser"))
        .collect();
    let refusals = |v: &[(Duration, Duration)]| avg(&v.iter().map(|x| x.1).collect::<Vec<_>>());
    let (k, u) = (refusals(&known), refusals(&unknown));
    assert!(
        k > Duration::from_millis(1200) && u > k.mul_f32(0.6) && u < k.mul_f32(1.6),
        "keyboard-interactive: known user {known:?}, unknown name {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Public-key queries count

/// Public-key queries (no signature) about `key` until the proxy hangs up; how many
/// were answered.
fn queries_until_hang_up(port: u16, key: &PrivateKey) -> (usize, String) {
    let mut c = Conn::connect(port);
    let blob = key.public().to_blob();
    for answered in 0..1000 {
        send(
            &mut c,
            "alice",
            Method::PublicKey {
                algorithm: SigAlg::Ed25519.name(),
                key_blob: &blob,
                signature: None,
            },
        );
        match c.next_packet() {
            Ok(p) if p[0] == msg::USERAUTH_FAILURE || p[0] == msg::USERAUTH_PK_OK => {}
            Ok(p) => panic!("unexpected message {}", p[0]),
            Err(Error::PeerDisconnected { description, .. }) => return (answered, description),
            Err(e) => panic!("{e:?}"),
        }
    }
    (1000, String::new())
}

#[test]
fn public_key_queries_count_as_attempts() {
    let (_sshd, sshr, keys) = one_user::start(SSHR, &[], "[limits]\nmax_auth_tries = 4\n");
    let stranger = PrivateKey::generate_ed25519(&mut rand_core::OsRng);
    let (answered, reason) = queries_until_hang_up(sshr.port(), &stranger);
    assert_eq!(
        answered, 3,
        "a key that is not allowed: the fourth query is the last try"
    );
    assert!(
        reason.contains("too many authentication failures"),
        "{reason}"
    );
    // Asking about an allowed key is not a failure (as in sshd), but it cannot go on
    // for ever either.
    let alice =
        PrivateKey::from_openssh(&std::fs::read_to_string(keys.path().join("alice")).unwrap())
            .unwrap();
    let (answered, reason) = queries_until_hang_up(sshr.port(), &alice);
    assert!(
        (8..100).contains(&answered) && reason.contains("too many authentication requests"),
        "{answered} queries about an allowed key: {reason}"
    );
    real_login(&sshr, &keys.path().join("alice")).unwrap();
}

// ---------------------------------------------------------------------------------------
// 4. What peers can put in the log and in a DISCONNECT

#[test]
fn peer_text_cannot_forge_log_lines_or_flood_them() {
    let (_sshd, sshr, _keys) = one_user::start(SSHR, &[], "");
    let forged = "FORGED-LINE INFO session: authenticated; relaying user=root";
    let mut c = Conn::connect(sshr.port());
    send(&mut c, &format!("mallory\n{forged}"), password("x"));
    assert_eq!(c.next_packet().unwrap()[0], msg::USERAUTH_FAILURE);
    drop(c);

    // A KEXINIT listing 4000 made-up key exchange methods (60 KB), in plain text.
    let before = sshr.log().len();
    let mut s = TcpStream::connect(("127.0.0.1", sshr.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"SSH-2.0-attacker\r\n").unwrap();
    // (Under the 64 KiB cap of packets before authentication, as in the review.)
    let names: Vec<String> = (0..2600).map(|i| format!("junk{i}@example.com")).collect();
    let mut payload = vec![msg::KEXINIT];
    payload.extend([7u8; 16]);
    let lists = [
        names.join(","),
        "ssh-ed25519".into(),
        "aes128-ctr".into(),
        "aes128-ctr".into(),
    ];
    for list in lists.iter().chain(&[
        "hmac-sha2-256".into(),
        "hmac-sha2-256".into(),
        "none".into(),
        "none".into(),
        String::new(),
        String::new(),
    ]) {
        payload.extend((list.len() as u32).to_be_bytes());
        payload.extend(list.as_bytes());
    }
    payload.extend([0, 0, 0, 0, 0]);
    let padding = 8 - (payload.len() + 5) % 8 + 8;
    let mut packet = ((payload.len() + padding + 1) as u32)
        .to_be_bytes()
        .to_vec();
    packet.push(padding as u8);
    packet.extend(&payload);
    packet.extend(vec![0u8; padding]);
    assert!(packet.len() > 50_000 && packet.len() < 64 * 1024);
    s.write_all(&packet).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("no common key exchange algorithm"),
        "the DISCONNECT says why: {text}"
    );
    assert!(
        answer.len() < 4096,
        "identification, KEXINIT and DISCONNECT: {} bytes",
        answer.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = sshr.log();
    assert!(
        log.len() - before < 4096,
        "one refused KEXINIT wrote {} bytes of log",
        log.len() - before
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED-LINE")),
        "a user name forged a log line:\n{log}"
    );
    assert!(log.contains("mallory\\nFORGED-LINE"), "{log}");
}

// ---------------------------------------------------------------------------------------
// 5. Memory before authentication

/// A connection that sends its identification line and the first `sent` bytes of a
/// 60004-byte plaintext packet, then stalls.
fn stalled_big_packet(port: u16, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"SSH-2.0-stall\r\n").unwrap();
    let mut head = 60_004u32.to_be_bytes().to_vec(); // (+4: a multiple of the block size)
    head.resize(sent, 0);
    s.write_all(&head).unwrap();
    s
}

#[test]
fn stalled_big_packets_before_auth_are_bounded_and_timed_out() {
    let (_sshd, sshr, keys) = one_user::start(
        SSHR,
        &[],
        "workers = 1\n[limits]\npreauth_buffer_bytes_per_shard = 1048576\npacket_timeout_secs = 3\n",
    );
    // A first login makes the allocations every later session reuses.
    real_login(&sshr, &keys.path().join("alice")).unwrap();
    let rss_before = sshr.rss_kib();
    let started = Instant::now();
    // 300 connections announce a 60 KB packet and send 9 KB of it.
    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|_| stalled_big_packet(sshr.port(), 9000))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let rss_during = sshr.rss_kib();
    let held = sshr_metric_eventually(&sshr, r#"sshr_preauth_buffer_bytes{shard="0"}"#);
    assert!(
        held <= 1048576.0,
        "handshake buffers beyond the budget: {held} bytes"
    );
    // Without a cap, 300 x 64 KiB = 19 MB.
    assert!(
        rss_during.saturating_sub(rss_before) < 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
    // A real login works meanwhile (its packets are small).
    real_login(&sshr, &keys.path().join("alice")).unwrap();
    // Every stalled connection is closed with a reason, well before the auth timeout:
    // "busy" for those beyond the budget, "not completed in time" for the others.
    let (mut busy, mut timed_out) = (0, 0);
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        if text.contains("sshr: the proxy is busy") {
            busy += 1;
        } else if text.contains("packet not completed in time") {
            timed_out += 1;
        } else {
            panic!("closed without a reason: {read:?} {text:?}");
        }
    }
    assert!(
        busy > 0 && timed_out > 0,
        "busy {busy}, timed out {timed_out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "closed after {:?}",
        started.elapsed()
    );
    let held = sshr_metric_eventually(&sshr, r#"sshr_preauth_buffer_bytes{shard="0"}"#);
    assert_eq!(held, 0.0, "the budget is back");
}

/// A metric's value, once published (the shards publish every second).
fn sshr_metric_eventually(sshr: &Sshr, name: &str) -> f64 {
    let start = Instant::now();
    loop {
        if let Ok(Some(v)) = sshr.metric(name) {
            std::thread::sleep(Duration::from_millis(1100));
            return sshr.metric(name).unwrap().unwrap_or(v);
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown, penalties, early drop, failed-login log lines

#[test]
fn at_the_end_of_the_grace_period_both_sides_learn_why() {
    let (sshd, sshr, keys) = one_user::start(SSHR, &[], "[limits]\nshutdown_grace_secs = 1\n");
    let mut cmd = ssh_command("ssh", sshr.port(), Some(&keys.path().join("alice")));
    cmd.args(["-o", "LogLevel=INFO", "alice@127.0.0.1", "sleep 60"]);
    let session = std::thread::spawn(move || run_with_timeout(cmd, Duration::from_secs(60)));
    let start = Instant::now();
    while sshr.metric("sshr_sessions_active").ok().flatten() != Some(1.0)
        || !sshr.log().contains("authenticated; relaying")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &sshr.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = session.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sshr: the proxy is shutting down"),
        "the client was not told: {stderr}\n{}",
        sshr.log()
    );
    let start = Instant::now();
    while !sshd.log().contains("sshr: the proxy is shutting down") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the upstream was not told:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn repeated_failures_penalise_the_source_and_are_logged() {
    let (_sshd, sshr, keys) = one_user::start(
        SSHR,
        &[],
        "[penalties]\nauthfail_secs = 5\nmin_secs = 15\nmax_secs = 60\n",
    );
    let stranger = keys.path().join("stranger");
    keygen(&stranger, "ed25519", None);
    let try_login = |user: &str| {
        let mut cmd = ssh_command("ssh", sshr.port(), Some(&stranger));
        cmd.args([&format!("{user}@127.0.0.1"), "true"]);
        String::from_utf8_lossy(&run_with_timeout(cmd, Duration::from_secs(30)).stderr).into_owned()
    };
    // Three failed connections: 15 s of penalty, not more than min_secs (the start-up
    // probe's connections add a second or two of `noauth`).
    for user in ["alice", "nosuchuser", "alice"] {
        let err = try_login(user);
        assert!(err.contains("Permission denied"), "{err}");
    }
    // The fourth or fifth is over min_secs: refused with a reason.
    let refused = (0..2).any(|_| {
        try_login("alice").contains("too many failed or abandoned logins from your address")
    });
    assert!(
        refused,
        "no refusal after five failed logins\n{}",
        sshr.log()
    );
    // A user with the right key is refused too (the source is penalised, not the
    // account)...
    assert!(real_login(&sshr, &keys.path().join("alice")).is_err());
    // ...and every failure left a line for fail2ban and audits.
    let log = sshr.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("login attempt failed"))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("user=\"alice\"")
            && l.contains("client=127.0.0.1:")
            && l.contains("method=\"publickey\"")
            && l.contains("key=\"SHA256:")
            && l.contains("reason=\"key not authorized")),
        "{log}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("user=\"nosuchuser\"") && l.contains("reason=\"unknown user")),
        "{log}"
    );
    assert!(log.contains("penalised: refusing connections from this address"));
    let refused = sshr_metric_eventually(&sshr, r#"sshr_sessions_refused_total{reason="penalty"}"#);
    assert!(refused >= 2.0, "{refused}");
}

#[test]
fn beyond_max_startups_new_connections_are_dropped_with_a_reason() {
    let (_sshd, sshr, keys) = one_user::start(SSHR, &[], "[limits]\nmax_startups = \"3\"\n");
    // The start-up probe's connections are gone...
    let start = Instant::now();
    while sshr
        .metric("sshr_unauthenticated_connections")
        .ok()
        .flatten()
        != Some(0.0)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and three connections that say nothing are three logins in progress.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", sshr.port())).unwrap())
        .collect();
    let start = Instant::now();
    while sshr
        .metric("sshr_unauthenticated_connections")
        .ok()
        .flatten()
        != Some(3.0)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = real_login(&sshr, &keys.path().join("alice")).unwrap_err();
    assert!(err.contains("too many logins in progress"), "{err}");
    drop(idle);
    let start = Instant::now();
    while real_login(&sshr, &keys.path().join("alice")).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}
