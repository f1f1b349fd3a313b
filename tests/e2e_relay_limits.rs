//! The relay's bounds against an authenticated client that misbehaves: floods while a
//! leg rekeys, transport messages that would pile up, a peer that stops reading, the
//! first bytes of a big packet and then nothing; and time-based rekeying of a leg that
//! only receives.
//! A scripted client (our own transport, driven by the test) against a real sshd.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sshr_protocol::auth;
use sshr_protocol::msg;
use sshr_protocol::wire;
use sshr_testsupport::conn::Conn;
use sshr_testsupport::{one_user, Sshd, SshrSetup};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// sshr (with `extra` config tables) and one user `alice` routed to a real sshd; returns
/// them with the directory of alice's key and its path.
fn proxy(extra: &str) -> (Sshd, sshr_testsupport::Sshr, tempfile::TempDir, PathBuf) {
    let (sshd, sshr, keys) = one_user::start(SSHR, &[], extra);
    let alice = keys.path().join(one_user::USER);
    (sshd, sshr, keys, alice)
}

/// A global request the upstream answers (with REQUEST_FAILURE): proves the session
/// still relays both ways.
fn round_trip(c: &mut Conn) -> Result<u8, sshr_protocol::Error> {
    let mut g = vec![msg::GLOBAL_REQUEST];
    wire::put_string(&mut g, b"no-such-request@example.com");
    g.push(1);
    c.t.send(&g).unwrap();
    loop {
        let p = c.next_packet()?;
        if p[0] == msg::REQUEST_FAILURE || p[0] == msg::REQUEST_SUCCESS {
            return Ok(p[0]);
        }
    }
}

#[test]
fn thousands_of_small_messages_while_the_upstream_rekeys() {
    // Rekey the upstream leg every 64 KiB: the flood below crosses that many times, and
    // each time more messages arrive than the transport may queue during the exchange.
    let (_sshd, sshr, _keys, alice) = proxy("[rekey]\nbytes = 65536\n");
    let mut c = Conn::logged_in(sshr.port(), "alice", &alice);
    let mut g = vec![msg::GLOBAL_REQUEST];
    wire::put_string(&mut g, b"keepalive@openssh.com");
    g.push(0);
    for _ in 0..20_000 {
        c.t.send(&g).unwrap();
    }
    c.flush();
    let r = round_trip(&mut c);
    assert_eq!(
        r.as_ref().ok(),
        Some(&msg::REQUEST_FAILURE),
        "the session died under the flood: {r:?}\nsshr log:\n{}",
        sshr.log()
    );
}

#[test]
fn transport_messages_do_not_pile_up_during_the_relay() {
    let (_sshd, sshr, _keys, alice) = proxy("");
    let mut c = Conn::logged_in(sshr.port(), "alice", &alice);
    assert!(round_trip(&mut c).is_ok());
    let before = sshr.rss_kib();
    // 400 EXT_INFO of 200 KB each (80 MB): the transport parses them; nothing may keep
    // them.
    let mut e = vec![msg::EXT_INFO];
    wire::put_u32(&mut e, 1);
    wire::put_string(&mut e, b"x@example.com");
    wire::put_string(&mut e, &vec![0u8; 200_000]);
    for _ in 0..20 {
        for _ in 0..20 {
            c.t.send(&e).unwrap();
        }
        c.flush();
    }
    assert!(round_trip(&mut c).is_ok(), "{}", sshr.log());
    let after = sshr.rss_kib();
    assert!(
        after < before + 40 * 1024,
        "resident memory grew from {before} to {after} KiB"
    );
}

#[test]
fn a_client_that_stops_reading_cannot_hold_its_session_after_the_auth_timeout() {
    let setup = SshrSetup::new();
    let sshr = setup.start(Path::new(SSHR), "[limits]\nauth_timeout_secs = 2\n");
    // A small receive buffer, and a flood of requests whose answers it never reads:
    // the proxy's replies back up, so the auth-timeout DISCONNECT cannot be written.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&sshr.addr().into()).unwrap();
    let mut c = Conn::client(sock.into());
    let none = auth::Request {
        user: "nobody",
        service: auth::CONNECTION_SERVICE,
        method: auth::Method::None,
    };
    c.t.send(&none.encode()).unwrap();
    assert_eq!(c.next_packet().unwrap()[0], msg::USERAUTH_FAILURE);
    c.s.set_write_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let start = Instant::now();
    'flood: while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            c.t.send(&none.encode()).unwrap();
        }
        let out = c.t.transmit().to_vec();
        c.t.advance_transmit(out.len());
        if c.s.write_all(&out).is_err() {
            break 'flood;
        }
    }
    // Auth timeout (2 s) plus the DISCONNECT's grace (2 s), with room: the session
    // must be gone although the client still holds the connection open.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let active = sshr.metric("sshr_sessions_active").unwrap();
        if active == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session is still active ({active:?}) 15 s after the auth timeout\nsshr log:\n{}",
            sshr.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
}

#[test]
fn the_first_bytes_of_a_big_packet_hold_no_relay_buffer() {
    let (_sshd, sshr, _keys, alice) = proxy("");
    let mut c = Conn::logged_in(sshr.port(), "alice", &alice);
    assert!(round_trip(&mut c).is_ok());
    let mut ignore = vec![msg::IGNORE];
    ignore.extend(std::iter::repeat_n(0u8, 200_000));
    c.t.send(&ignore).unwrap();
    let out = c.t.transmit().to_vec();
    c.t.advance_transmit(out.len());
    let in_use = || {
        sshr.metric("sshr_buffer_pool_in_use")
            .unwrap()
            .unwrap_or(0.0)
    };
    // 1 KB of a 200 KB packet, then nothing: the inline buffer holds it; a pooled relay
    // buffer (256 KiB, from a capped pool) is taken only once the bytes fill that.
    c.s.write_all(&out[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(in_use(), 0.0, "{}", sshr.log());
    // The rest arrives: relayed (IGNORE is consumed by the transport), and the session
    // goes on.
    c.s.write_all(&out[1000..]).unwrap();
    assert!(round_trip(&mut c).is_ok(), "{}", sshr.log());
}

#[test]
fn a_leg_that_only_receives_is_rekeyed_on_time() {
    // Rekey every 2 s. The client sends messages the upstream never answers: only the
    // client-to-upstream pump runs, and the upstream leg must still get its new keys.
    let (sshd, sshr, _keys, alice) =
        proxy("[rekey]\nseconds = 2\n\n[warm_upstreams]\nper_upstream = 0\n");
    let mut c = Conn::logged_in(sshr.port(), "alice", &alice);
    let kexinits = || sshd.log().matches("SSH2_MSG_KEXINIT received").count();
    assert_eq!(kexinits(), 1, "{}", sshd.log());
    let mut g = vec![msg::GLOBAL_REQUEST];
    wire::put_string(&mut g, b"keepalive@openssh.com");
    g.push(0);
    let start = Instant::now();
    while kexinits() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the upstream leg was not rekeyed within 15 s (KEXINITs: {})\nsshr log:\n{}",
            kexinits(),
            sshr.log()
        );
        c.t.send(&g).unwrap();
        c.flush();
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still relaying both ways under the new keys.
    assert!(round_trip(&mut c).is_ok(), "{}", sshr.log());
}
