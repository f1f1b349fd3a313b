//! Key exchanges captured from a real OpenSSH client, replayed: known answers for the
//! exchange hash, K, the key derivation and the client-to-server packet protection, each
//! as OpenSSH computes them.
//!
//! Our server is deterministic given its seed, host key and configuration when every
//! random value it draws comes from that seed: always for the finite-field groups and the
//! host key signature (ed25519), and with the RustCrypto provider for X25519, the NIST
//! curves and sntrup761x25519 (AWS-LC draws ECDH keys from its own generator). So the bytes
//! an `ssh` client sent to it, recorded once by [`capture_openssh_transcripts`]
//! (`cargo test -p sshr-protocol --features rustcrypto --test openssh_transcripts --
//! --ignored`), are still a valid conversation for a fresh server with the same seed: it
//! sends the same KEXINIT and the same public value, so the client's recorded value, NEWKEYS
//! and its first encrypted packet (SERVICE_REQUEST) follow. The replay passes only if the
//! exchange hash, K and the derived keys are exactly those of OpenSSH: the client signed
//! nothing, but it encrypted and MACed that packet under keys it derived from its own H
//! (which it had checked against our signature when recorded). The recorded session id
//! pins H itself.
//!
//! The transcripts are in `protocol/tests/data/kex/openssh-*.txt`: the method, cipher and
//! MAC, the session id, and the client's bytes up to and including its SERVICE_REQUEST.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::crypto::{self, CryptoProvider};
use sshr_protocol::hostkey::{PrivateKey, SigAlg};
use sshr_protocol::kex::KexAlg;
use sshr_protocol::transport::{Config, Event, Input, Transport};
use sshr_testsupport::{run_with_timeout, ssh_command};

/// One captured exchange: the method and the packet protection the server allowed.
struct Case {
    kex: KexAlg,
    cipher: CipherAlg,
    mac: Option<MacAlg>,
    /// Whether the server draws every random value from its seed with any provider
    /// (finite-field DH), or only with RustCrypto's.
    any_provider: bool,
}

/// One method per exchange hash (SHA-256, -384, -512), every finite-field method, and
/// a spread of packet protections so that each is checked against OpenSSH too.
const CASES: &[Case] = &[
    Case {
        kex: KexAlg::DhGroup14Sha256,
        cipher: CipherAlg::Aes128Ctr,
        mac: Some(MacAlg::HmacSha1),
        any_provider: true,
    },
    Case {
        kex: KexAlg::DhGroup16Sha512,
        cipher: CipherAlg::Aes256Ctr,
        mac: Some(MacAlg::HmacSha1Etm),
        any_provider: true,
    },
    Case {
        kex: KexAlg::DhGroup18Sha512,
        cipher: CipherAlg::Aes256Gcm,
        mac: None,
        any_provider: true,
    },
    // aes128-gcm: OpenSSH asks for 3072 bits, and gets RFC 3526 group 15.
    Case {
        kex: KexAlg::DhGroupExchangeSha256,
        cipher: CipherAlg::Aes128Gcm,
        mac: None,
        any_provider: true,
    },
    Case {
        kex: KexAlg::EcdhNistp384,
        cipher: CipherAlg::Aes128Ctr,
        mac: Some(MacAlg::HmacSha512Etm),
        any_provider: false,
    },
    Case {
        kex: KexAlg::Sntrup761X25519Sha512OpenSsh,
        cipher: CipherAlg::ChaCha20Poly1305,
        mac: None,
        any_provider: false,
    },
    Case {
        kex: KexAlg::Curve25519Sha256,
        cipher: CipherAlg::Aes256Ctr,
        mac: Some(MacAlg::HmacSha256),
        any_provider: false,
    },
];

const SEED: [u8; 32] = [0x5e; 32];

fn host_keys() -> Arc<[PrivateKey]> {
    Arc::from(vec![PrivateKey::from_ed25519_seed(&[9; 32])])
}

/// Everything that goes into the server's KEXINIT and EXT_INFO, pinned.
fn config(case: &Case, provider: &'static CryptoProvider) -> Config {
    Config {
        version: "SSH-2.0-sshr_transcript".to_owned(),
        provider,
        kex: vec![case.kex],
        ciphers: vec![case.cipher],
        macs: vec![case.mac.unwrap_or(MacAlg::HmacSha256Etm)],
        host_key_algs: vec![SigAlg::Ed25519],
        server_sig_algs: vec![SigAlg::Ed25519],
        strict_kex: true,
        ..Config::default()
    }
}

fn path(case: &Case) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kex")
        .join(format!(
            "openssh-{}.txt",
            case.kex.name().replace('@', "-at-")
        ))
}

/// The providers that draw every random value of this case from the seed.
fn deterministic_providers(case: &Case) -> Vec<&'static CryptoProvider> {
    crypto::providers()
        .into_iter()
        .filter(|p| case.any_provider || p.name == "rustcrypto")
        .collect()
}

struct Transcript {
    session_id: Vec<u8>,
    client: Vec<u8>,
}

fn read_transcript(case: &Case) -> Transcript {
    let p = path(case);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let field = |name: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{}: no {name}", p.display()))
    };
    assert_eq!(field("kex"), case.kex.name());
    assert_eq!(field("cipher"), case.cipher.name());
    assert_eq!(field("mac"), case.mac.map_or("-", MacAlg::name));
    Transcript {
        session_id: hex::decode(field("session_id")).unwrap(),
        client: hex::decode(field("client")).unwrap(),
    }
}

/// Feed the client's bytes to a fresh server, as `read` wants them (a packet at a time).
/// Returns the server's events and session id. Stops at the first packet for the layers
/// above (there is none in a transcript: it ends with the SERVICE_REQUEST).
fn replay(case: &Case, provider: &'static CryptoProvider, client: &[u8]) -> (Vec<Event>, Vec<u8>) {
    let what = format!("{} with {provider:?}", case.kex.name());
    let mut t = Transport::server(
        Arc::new(config(case, provider)),
        host_keys(),
        SEED,
        Instant::now(),
    );
    let mut rx = client.to_vec();
    let mut at = 0;
    let mut events = Vec::new();
    // Bounded: every step consumes at least one byte.
    while at < rx.len() {
        match t.read(&mut rx[at..], Instant::now()) {
            Ok(Input::Consumed(n)) => at += n,
            Ok(other) => panic!("{what}: {other:?} at byte {at}"),
            Err(e) => panic!("{what}: {e} at byte {at}"),
        }
        t.take_transmit(Vec::new());
        events.extend(std::iter::from_fn(|| t.poll_event()));
    }
    let sid = t
        .session_id()
        .unwrap_or_else(|| panic!("{what}: no kex"))
        .to_vec();
    (events, sid)
}

#[test]
fn replay_exchanges_captured_from_openssh() {
    let mut replayed = 0;
    for case in CASES {
        let transcript = read_transcript(case);
        for provider in deterministic_providers(case) {
            let what = format!("{} with {provider:?}", case.kex.name());
            let (events, sid) = replay(case, provider, &transcript.client);
            assert_eq!(
                hex::encode(&sid),
                hex::encode(&transcript.session_id),
                "{what}: exchange hash"
            );
            assert_eq!(sid.len(), case.kex.hash().output_len());
            let done = events.iter().find_map(|e| match e {
                Event::KexDone { algorithms, .. } => Some(*algorithms),
                _ => None,
            });
            let algs = done.unwrap_or_else(|| panic!("{what}: {events:?}"));
            assert_eq!(
                (algs.kex, algs.cipher_c2s, algs.mac_c2s),
                (case.kex, case.cipher, case.mac),
                "{what}"
            );
            // The client's first encrypted packet opened under the keys we derived.
            assert!(
                events.contains(&Event::ServiceAccepted("ssh-userauth".to_owned())),
                "{what}: {events:?}"
            );
            replayed += 1;
        }
    }
    // Every case at least once, whichever providers are built.
    assert!(replayed >= CASES.iter().filter(|c| c.any_provider).count());
}

/// A transcript whose client value was changed no longer replays: the test above does
/// depend on what the client sent.
#[test]
fn a_changed_transcript_does_not_replay() {
    let case = &CASES[0];
    let mut client = read_transcript(case).client;
    // The last byte is in the MAC of the SERVICE_REQUEST.
    *client.last_mut().unwrap() ^= 1;
    let provider = deterministic_providers(case)[0];
    let mut t = Transport::server(
        Arc::new(config(case, provider)),
        host_keys(),
        SEED,
        Instant::now(),
    );
    let mut at = 0;
    let err = loop {
        match t.read(&mut client[at..], Instant::now()) {
            Ok(Input::Consumed(n)) => at += n,
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
        assert!(at < client.len(), "the changed byte went unnoticed");
    };
    assert_eq!(
        err,
        sshr_protocol::Error::Peer(sshr_protocol::PeerMisbehaved::BadMac)
    );
}

/// Record a real `ssh` client talking to our server, for every case (needs OpenSSH and the
/// RustCrypto provider): writes the transcripts the test above replays.
#[test]
#[ignore = "writes protocol/tests/data/kex; run by hand to capture new transcripts"]
fn capture_openssh_transcripts() {
    let version = Command::new("ssh").arg("-V").output().unwrap();
    let version = String::from_utf8_lossy(&version.stderr).trim().to_owned();
    for case in CASES {
        let provider = deterministic_providers(case)
            .into_iter()
            .find(|p| p.name == "rustcrypto")
            .expect("capture with --features rustcrypto");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server_config = config(case, provider);
        let server = std::thread::spawn(move || record(listener, server_config));
        let mut cmd: Command = ssh_command("ssh", port, None);
        cmd.args(["-o", &format!("KexAlgorithms={}", case.kex.name())])
            .args(["-o", &format!("Ciphers={}", case.cipher.name())])
            .args(["-o", "HostKeyAlgorithms=ssh-ed25519"])
            .args(["-o", "PreferredAuthentications=none"]);
        if let Some(mac) = case.mac {
            cmd.args(["-o", &format!("MACs={}", mac.name())]);
        }
        cmd.args(["capture@127.0.0.1", "true"]);
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        let (sid, client) = server.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = format!(
            "# The client's bytes to our server, up to its SERVICE_REQUEST, recorded by\n\
             # capture_openssh_transcripts (protocol/tests/openssh_transcripts.rs) from\n\
             # {version}.\n\
             kex {}\ncipher {}\nmac {}\nsession_id {}\nclient {}\n",
            case.kex.name(),
            case.cipher.name(),
            case.mac.map_or("-", MacAlg::name),
            hex::encode(sid),
            hex::encode(client),
        );
        std::fs::write(path(case), text).unwrap();
        eprintln!("{}: captured; ssh said: {}", case.kex.name(), stderr.trim());
    }
}

/// Serve one connection, recording what the client sent until its first packet past the
/// SERVICE_REQUEST (its first USERAUTH_REQUEST, not recorded); then hang up.
fn record(listener: TcpListener, config: Config) -> (Vec<u8>, Vec<u8>) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut t = Transport::server(Arc::new(config), host_keys(), SEED, Instant::now());
    let mut rx: Vec<u8> = Vec::new();
    let mut recorded = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "capture timed out");
        s.write_all(&t.take_transmit(Vec::new())).unwrap();
        let pristine = rx.clone();
        let step = if rx.is_empty() {
            Input::NeedMore(1)
        } else {
            t.read(&mut rx, Instant::now())
                .expect("server side of the capture")
        };
        match step {
            Input::Consumed(n) => {
                recorded.extend_from_slice(&pristine[..n]);
                rx.drain(..n);
            }
            Input::Packet { .. } => {
                let sid = t.session_id().unwrap().to_vec();
                return (sid, recorded);
            }
            Input::NeedMore(_) => {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client hung up; recorded {} bytes", recorded.len());
                rx.extend_from_slice(&buf[..n]);
            }
        }
    }
}
