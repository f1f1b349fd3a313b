//! Bad input closes that one connection with a reason and touches no other session:
//! a scripted client (our own transport, driven by the test) misbehaves against sshr
//! while a real `ssh` session through the same proxy keeps working; a client over the
//! session limit is told why.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use sshr_protocol::auth;
use sshr_protocol::msg;
use sshr_protocol::Error;
use sshr_testsupport::conn::Conn;
use sshr_testsupport::{
    connections_to, keygen, one_user, run_with_timeout, ssh_command, SshrSetup,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// A scripted client through key exchange and the ssh-userauth service.
fn established(port: u16) -> Conn {
    let mut c = Conn::connect(port);
    let none = auth::Request {
        user: "alice",
        service: auth::CONNECTION_SERVICE,
        method: auth::Method::None,
    };
    c.t.send(&none.encode()).unwrap();
    let p = c.next_packet().expect("auth methods");
    assert_eq!(p[0], msg::USERAUTH_FAILURE);
    c
}

fn real_session_works(sshr: &sshr_testsupport::Sshr, key: &std::path::Path) {
    let mut cmd = ssh_command("ssh", sshr.port(), Some(key));
    cmd.args(["alice@127.0.0.1", "echo still-serving"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still-serving"),
        "a real session failed after the hostile one: {}\nsshr log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshr.log()
    );
}

#[test]
fn oversized_packet_before_auth_is_refused_with_a_reason() {
    let (_sshd, sshr, keys) = one_user::start(SSHR, &[], "");
    let mut c = established(sshr.port());
    // 100 KB before authentication: legal for the transport's cap, refused by the proxy.
    let mut ignore = vec![msg::IGNORE];
    ignore.extend(std::iter::repeat_n(0u8, 100_000));
    c.t.send(&ignore).unwrap();
    c.flush();
    match c.next_packet() {
        Err(Error::PeerDisconnected {
            reason,
            description,
        }) => {
            assert_eq!(reason, msg::disconnect::PROTOCOL_ERROR);
            assert!(
                description.contains("too large before authentication"),
                "{description}"
            );
        }
        other => panic!(
            "expected a DISCONNECT with a reason, got {other:?}\n{}",
            sshr.log()
        ),
    }
    real_session_works(&sshr, &keys.path().join("alice"));
}

#[test]
fn tampered_packet_closes_only_that_connection() {
    let (_sshd, sshr, keys) = one_user::start(SSHR, &[], "");
    let mut c = established(sshr.port());
    // A second scripted connection stays open across the first one's failure.
    let mut other = established(sshr.port());
    let none = auth::Request {
        user: "alice",
        service: auth::CONNECTION_SERVICE,
        method: auth::Method::None,
    };
    c.t.send(&none.encode()).unwrap();
    let mut wire = c.t.transmit().to_vec();
    let n = wire.len();
    c.t.advance_transmit(n);
    wire[n - 3] ^= 0x40; // in the authentication tag
    std::io::Write::write_all(&mut c.s, &wire).unwrap();
    match c.next_packet() {
        Err(Error::PeerDisconnected { reason, .. }) => {
            assert_eq!(reason, msg::disconnect::MAC_ERROR)
        }
        other => panic!(
            "expected DISCONNECT (MAC error), got {other:?}\n{}",
            sshr.log()
        ),
    }
    other.t.send(&none.encode()).unwrap();
    let p = other
        .next_packet()
        .expect("the other connection still answers");
    assert_eq!(p[0], msg::USERAUTH_FAILURE);
    real_session_works(&sshr, &keys.path().join("alice"));
}

#[test]
fn a_client_over_the_session_limit_is_told_why() {
    let setup = SshrSetup::new();
    let sshr = setup.start(
        std::path::Path::new(SSHR),
        "workers = 1\n\n[limits]\nmax_sessions_per_shard = 1\n",
    );
    // The start-up probe's session has come and gone...
    let start = Instant::now();
    while sshr.metric("sshr_sessions_total").unwrap() != Some(1.0)
        || sshr.metric("sshr_sessions_active").unwrap() != Some(0.0)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and a connection that says nothing holds the only session slot.
    let _holder = TcpStream::connect(("127.0.0.1", sshr.port())).unwrap();
    let start = Instant::now();
    while sshr.metric("sshr_sessions_active").unwrap() != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    keygen(&key, "ed25519", None);
    let mut cmd = ssh_command("ssh", sshr.port(), Some(&key));
    cmd.args(["alice@127.0.0.1", "true"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(255)
            && stderr.contains("too many sessions on this proxy, try again later"),
        "expected the refusal's reason, got {:?}: {stderr}",
        out.status
    );
    // Counted (the shards publish their metrics every second).
    let start = Instant::now();
    while sshr.metric("sshr_sessions_refused_total").unwrap() != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sshr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clients_that_never_authenticate_hold_few_upstream_connections() {
    let (sshd, sshr, keys) = one_user::start(
        SSHR,
        &[],
        "[limits]\npreauth_upstream_connections = 2\n\n[warm_upstreams]\nper_upstream = 0\n",
    );
    // Five clients name a real user, then say nothing more: the proxy connects upstream
    // for one of them (the other slot is kept for proven logins), and waits for the
    // others to prove their key.
    let idle: Vec<Conn> = (0..5).map(|_| established(sshr.port())).collect();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(connections_to(sshd.port), 1, "{}", sshr.log());
    // A real login still works, connecting once its key is checked.
    real_session_works(&sshr, &keys.path().join("alice"));
    drop(idle);
}
