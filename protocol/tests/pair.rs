//! Two transports wired back to back in memory: every cipher pair, rekeys in the middle
//! of a transfer from either side, strict-kex violations, tampering, oversized packets.

use std::sync::Arc;
use std::time::Duration;

use rand_core::SeedableRng;
use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::crypto;
use sshr_protocol::error::{AlgorithmList, PeerMisbehaved};
use sshr_protocol::hostkey::{PrivateKey, SigAlg};
use sshr_protocol::kex::KexAlg;
use sshr_protocol::packet::Sealer;
use sshr_protocol::transport::{Config, Event, HostKeyCheck};
use sshr_protocol::{msg, Error};
use sshr_testsupport::pair::Pair;

fn host_key() -> PrivateKey {
    PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([3; 32]))
}

fn keys(k: PrivateKey) -> Arc<[PrivateKey]> {
    Arc::from(vec![k])
}

fn default_pair() -> Pair {
    Pair::with_configs(
        Config::default(),
        Config::default(),
        keys(host_key()),
        HostKeyCheck::AcceptAny,
    )
}

fn data_payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = vec![msg::CHANNEL_DATA];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..len).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

#[test]
fn handshake_and_data_for_every_cipher_and_mac() {
    for cipher in CipherAlg::ALL {
        let macs: Vec<Option<MacAlg>> = if cipher.is_aead() {
            vec![None]
        } else {
            MacAlg::ALL.iter().copied().map(Some).collect()
        };
        for mac in macs {
            let server_cfg = Config {
                ciphers: vec![cipher],
                macs: mac.map_or_else(|| MacAlg::ALL.to_vec(), |m| vec![m]),
                ..Config::default()
            };
            let mut pair = Pair::with_configs(
                Config::default(),
                server_cfg,
                keys(host_key()),
                HostKeyCheck::AcceptAny,
            );
            pair.drive();
            assert!(
                pair.established(),
                "{cipher:?}/{mac:?}: {:?} {:?}",
                pair.client.error,
                pair.server.error
            );
            assert!(pair.client.t.strict_kex() && pair.server.t.strict_kex());
            assert_eq!(pair.client.t.session_id(), pair.server.t.session_id());
            let done = pair.client.events.iter().find_map(|e| match e {
                Event::KexDone {
                    first: true,
                    algorithms,
                } => Some(*algorithms),
                _ => None,
            });
            let algs = done.expect("KexDone event");
            assert_eq!((algs.cipher_c2s, algs.cipher_s2c), (cipher, cipher));
            assert_eq!(algs.mac_c2s, mac);
            assert!(pair
                .client
                .events
                .iter()
                .any(|e| matches!(e, Event::HostKey(_))));
            // The client announced ext-info-c: the server's EXT_INFO arrived.
            assert!(pair.client.events.iter().any(|e| matches!(e,
                Event::ExtInfo(i) if i.server_sig_algs.as_ref().is_some_and(|l| l.iter().any(|a| a == "ssh-ed25519")))));
            for (i, len) in [1usize, 15, 16, 17, 1000, 32 * 1024, 200_000]
                .into_iter()
                .enumerate()
            {
                pair.client.t.send(&data_payload(i as u32, len)).unwrap();
                pair.server
                    .t
                    .send(&data_payload(i as u32 + 100, len))
                    .unwrap();
            }
            pair.drive();
            assert!(pair.client.error.is_none() && pair.server.error.is_none());
            assert_eq!(pair.server.got.len(), 7, "{cipher:?}/{mac:?}");
            for (i, len) in [1usize, 15, 16, 17, 1000, 32 * 1024, 200_000]
                .into_iter()
                .enumerate()
            {
                assert_eq!(pair.server.got[i], data_payload(i as u32, len));
                assert_eq!(pair.client.got[i], data_payload(i as u32 + 100, len));
            }
        }
    }
}

/// Every key exchange method, for every pairing of the providers built in (a build with
/// both features checks aws-lc-rs against RustCrypto in both roles), then a rekey with
/// the same method and data both ways under the derived keys.
#[test]
fn every_kex_method_between_every_provider_pair() {
    for kex in KexAlg::ALL {
        for client_provider in crypto::providers() {
            for server_provider in crypto::providers() {
                let what = format!("{kex:?} client {client_provider:?} server {server_provider:?}");
                let cfg = |provider| Config {
                    provider,
                    kex: vec![kex],
                    ..Config::default()
                };
                let mut pair = Pair::with_configs(
                    cfg(client_provider),
                    cfg(server_provider),
                    keys(host_key()),
                    HostKeyCheck::AcceptAny,
                );
                pair.drive();
                assert!(
                    pair.established(),
                    "{what}: {:?} {:?}",
                    pair.client.error,
                    pair.server.error
                );
                let done = pair.client.events.iter().find_map(|e| match e {
                    Event::KexDone { algorithms, .. } => Some(*algorithms),
                    _ => None,
                });
                assert_eq!(done.expect("KexDone").kex, kex, "{what}");
                let id = pair.client.t.session_id().unwrap().to_vec();
                assert_eq!(id.len(), kex.hash().output_len(), "{what}");
                assert_eq!(pair.server.t.session_id(), Some(&id[..]), "{what}");
                pair.client.t.rekey();
                pair.client.t.send(&data_payload(1, 3000)).unwrap();
                pair.server.t.send(&data_payload(2, 3000)).unwrap();
                pair.drive();
                assert!(
                    pair.client.error.is_none() && pair.server.error.is_none(),
                    "{what}"
                );
                assert_eq!(pair.client.t.kex_count(), 2, "{what}");
                // The session id stays that of the first exchange (RFC 4253 7.2).
                assert_eq!(pair.client.t.session_id(), Some(&id[..]), "{what}");
                assert_eq!(pair.server.got, vec![data_payload(1, 3000)], "{what}");
                assert_eq!(pair.client.got, vec![data_payload(2, 3000)], "{what}");
            }
        }
    }
}

#[test]
fn mixed_ciphers_per_direction() {
    // The client proposes GCM first for its own direction; server prefers nothing. Each
    // direction is negotiated independently (RFC 4253 7.1).
    let client_cfg = Config {
        ciphers: vec![CipherAlg::Aes256Gcm, CipherAlg::ChaCha20Poly1305],
        ..Config::default()
    };
    let server_cfg = Config {
        ciphers: vec![CipherAlg::ChaCha20Poly1305, CipherAlg::Aes256Gcm],
        ..Config::default()
    };
    let mut pair = Pair::with_configs(
        client_cfg,
        server_cfg,
        keys(host_key()),
        HostKeyCheck::AcceptAny,
    );
    pair.drive();
    assert!(pair.established());
    pair.client.t.send(&data_payload(1, 5000)).unwrap();
    pair.drive();
    assert_eq!(pair.server.got, vec![data_payload(1, 5000)]);
}

/// A transfer of many packets with a rekey started in the middle by `who`; nothing is
/// lost or reordered, and both sides count the extra key exchange.
fn rekey_during_transfer(client_starts: bool) {
    let mut pair = default_pair();
    pair.drive();
    assert!(pair.established());
    let total = 600u32;
    let mut sent = 0u32;
    while sent < total {
        // Interleave: queue a burst from both sides, move some bytes, rekey in the middle.
        for _ in 0..20 {
            pair.client.t.send(&data_payload(sent, 16 * 1024)).unwrap();
            pair.server
                .t
                .send(&data_payload(sent + 1_000_000, 8 * 1024))
                .unwrap();
            sent += 1;
        }
        if sent == 300 {
            if client_starts {
                pair.client.t.rekey();
            } else {
                pair.server.t.rekey();
            }
            // Packets sent now are queued behind the KEXINIT until NEWKEYS.
            pair.client.t.send(&data_payload(sent, 100)).unwrap();
            pair.server
                .t
                .send(&data_payload(sent + 1_000_000, 100))
                .unwrap();
            sent += 1;
        }
        pair.drive();
    }
    assert!(
        pair.client.error.is_none() && pair.server.error.is_none(),
        "{:?} {:?}",
        pair.client.error,
        pair.server.error
    );
    assert_eq!(pair.client.t.kex_count(), 2);
    assert_eq!(pair.server.t.kex_count(), 2);
    assert_eq!(pair.server.got.len(), sent as usize);
    for (i, p) in pair.server.got.iter().enumerate() {
        assert_eq!(
            &p[1..5],
            &(i as u32).to_be_bytes(),
            "client->server packet {i} out of order"
        );
    }
    for (i, p) in pair.client.got.iter().enumerate() {
        assert_eq!(
            &p[1..5],
            &(i as u32 + 1_000_000).to_be_bytes(),
            "server->client packet {i} out of order"
        );
    }
}

#[test]
fn rekey_started_by_client_mid_transfer() {
    rekey_during_transfer(true);
}

#[test]
fn rekey_started_by_server_mid_transfer() {
    rekey_during_transfer(false);
}

#[test]
fn automatic_rekey_after_byte_and_time_limits() {
    let small = Config {
        rekey_bytes: 256 * 1024,
        ..Config::default()
    };
    let mut pair = Pair::with_configs(
        small.clone(),
        Config::default(),
        keys(host_key()),
        HostKeyCheck::AcceptAny,
    );
    pair.drive();
    for i in 0..64 {
        pair.client.t.send(&data_payload(i, 32 * 1024)).unwrap();
        pair.drive();
    }
    assert_eq!(pair.server.got.len(), 64);
    assert!(
        pair.client.t.kex_count() >= 6,
        "kex count {}",
        pair.client.t.kex_count()
    );
    assert_eq!(pair.client.t.kex_count(), pair.server.t.kex_count());

    let mut pair = default_pair();
    pair.drive();
    let deadline = pair.server.t.poll_timeout().expect("rekey deadline");
    assert!(deadline >= pair.clock.now() + Duration::from_secs(3599));
    pair.server
        .t
        .handle_timeout(pair.clock.now() + Duration::from_secs(10));
    pair.drive();
    assert_eq!(pair.server.t.kex_count(), 1);
    pair.server.t.handle_timeout(deadline);
    pair.drive();
    assert_eq!(pair.server.t.kex_count(), 2);
}

#[test]
fn strict_kex_refuses_ignore_before_newkeys() {
    let mut pair = default_pair();
    // Move the identification lines and KEXINITs, then inject an unauthenticated
    // IGNORE into the client->server stream as a Terrapin-style attacker would.
    let client_out = pair.client.take_output();
    pair.server.deliver(&client_out);
    pair.server.read_all(pair.clock.now());
    assert!(pair.server.error.is_none());
    let mut ignore = Vec::new();
    Sealer::new().seal_into(
        &mut ignore,
        &[msg::IGNORE, 0, 0, 0, 0],
        &mut rand_chacha::ChaCha20Rng::from_seed([0; 32]),
    );
    pair.server.deliver(&ignore);
    pair.server.read_all(pair.clock.now());
    match &pair.server.error {
        Some(Error::Peer(PeerMisbehaved::StrictKex { msg })) => assert_eq!(*msg, msg::IGNORE),
        other => panic!("expected a strict kex violation, got {other:?}"),
    }
    // The server tells the client why before closing.
    assert!(pair.server.t.is_closed());
    assert!(!pair.server.t.transmit().is_empty());
}

#[test]
fn ignore_before_kexinit_without_strict_kex_is_fine_but_not_with_it() {
    // Without strict kex on either side an IGNORE first is legal.
    let lax = Config {
        strict_kex: false,
        ..Config::default()
    };
    let mut pair = Pair::with_configs(lax.clone(), lax, keys(host_key()), HostKeyCheck::AcceptAny);
    let mut out = pair.client.take_output();
    let line_end = out.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut ignore = Vec::new();
    Sealer::new().seal_into(
        &mut ignore,
        &[msg::IGNORE, 0, 0, 0, 0],
        &mut rand_chacha::ChaCha20Rng::from_seed([0; 32]),
    );
    out.splice(line_end..line_end, ignore.iter().copied());
    pair.server.deliver(&out);
    pair.drive();
    assert!(pair.established(), "{:?}", pair.server.error);

    // With strict kex, the same IGNORE before KEXINIT is refused once the KEXINIT shows
    // that the client asked for strict kex.
    let mut pair = default_pair();
    let mut out = pair.client.take_output();
    out.splice(line_end..line_end, ignore.iter().copied());
    pair.server.deliver(&out);
    pair.drive();
    assert!(
        matches!(
            pair.server.error,
            Some(Error::Peer(PeerMisbehaved::StrictKex { .. }))
        ),
        "{:?}",
        pair.server.error
    );
}

#[test]
fn tampered_ciphertext_is_rejected() {
    for cipher in CipherAlg::ALL {
        let cfg = Config {
            ciphers: vec![cipher],
            ..Config::default()
        };
        let mut pair =
            Pair::with_configs(cfg.clone(), cfg, keys(host_key()), HostKeyCheck::AcceptAny);
        pair.drive();
        pair.client.t.send(&data_payload(7, 100)).unwrap();
        let mut wire = pair.client.take_output();
        wire[20] ^= 0x01;
        pair.server.deliver(&wire);
        pair.server.read_all(pair.clock.now());
        assert_eq!(
            pair.server.error,
            Some(Error::Peer(PeerMisbehaved::BadMac)),
            "{cipher:?}"
        );
        assert!(pair.server.got.is_empty());
    }
}

#[test]
fn oversized_length_is_rejected_before_buffering() {
    // Before kex (clear text) and after kex with a clear length field (GCM).
    let mut pair = default_pair();
    let line = pair.client.t.our_version().len() + 2;
    let mut out = pair.client.t.transmit()[..line].to_vec();
    out.extend_from_slice(&(16 * 1024 * 1024u32).to_be_bytes());
    out.extend_from_slice(&[0; 12]);
    pair.server.deliver(&out);
    pair.server.read_all(pair.clock.now());
    assert!(
        matches!(
            pair.server.error,
            Some(Error::Peer(PeerMisbehaved::PacketLength(_)))
        ),
        "{:?}",
        pair.server.error
    );

    let cfg = Config {
        ciphers: vec![CipherAlg::Aes128Gcm],
        ..Config::default()
    };
    let mut pair = Pair::with_configs(cfg.clone(), cfg, keys(host_key()), HostKeyCheck::AcceptAny);
    pair.drive();
    let mut huge = (1u32 << 30).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 16]);
    pair.server.deliver(&huge);
    pair.server.read_all(pair.clock.now());
    assert!(matches!(
        pair.server.error,
        Some(Error::Peer(PeerMisbehaved::PacketLength(_)))
    ));
}

#[test]
fn pinned_host_key_is_enforced() {
    let key = host_key();
    let other = PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([4; 32]));
    let mut pair = Pair::with_configs(
        Config::default(),
        Config::default(),
        keys(host_key()),
        HostKeyCheck::Pinned(vec![key.public()]),
    );
    pair.drive();
    assert!(pair.established());
    let mut pair = Pair::with_configs(
        Config::default(),
        Config::default(),
        keys(key),
        HostKeyCheck::Pinned(vec![other.public()]),
    );
    pair.drive();
    assert!(
        matches!(pair.client.error, Some(Error::HostKeyMismatch { .. })),
        "{:?}",
        pair.client.error
    );
    assert!(!pair.server.t.is_established());
    // The server learns why: the client sent DISCONNECT (host key not verifiable).
    assert!(
        matches!(
            pair.server.error,
            Some(Error::PeerDisconnected { reason: 9, .. })
        ),
        "{:?}",
        pair.server.error
    );
}

#[test]
fn no_common_algorithm_is_reported_with_both_lists() {
    let client_cfg = Config {
        ciphers: vec![CipherAlg::Aes128Ctr],
        ..Config::default()
    };
    let server_cfg = Config {
        ciphers: vec![CipherAlg::ChaCha20Poly1305],
        ..Config::default()
    };
    let mut pair = Pair::with_configs(
        client_cfg,
        server_cfg,
        keys(host_key()),
        HostKeyCheck::AcceptAny,
    );
    pair.drive();
    match &pair.server.error {
        Some(Error::NoCommonAlgorithm { list, ours, theirs }) => {
            assert_eq!(*list, AlgorithmList::CipherClientToServer);
            assert_eq!(ours, "chacha20-poly1305@openssh.com");
            assert_eq!(theirs, "aes128-ctr");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn service_request_is_accepted_after_kex() {
    let mut pair = default_pair();
    pair.client.t.request_service("ssh-userauth").unwrap();
    pair.drive();
    assert!(pair
        .client
        .events
        .contains(&Event::ServiceAccepted("ssh-userauth".into())));
    assert!(pair
        .server
        .events
        .contains(&Event::ServiceAccepted("ssh-userauth".into())));
    pair.client.t.request_service("ssh-nonsense").unwrap();
    pair.drive();
    assert!(matches!(
        pair.server.error,
        Some(Error::Peer(PeerMisbehaved::UnknownService(_)))
    ));
    assert!(matches!(
        pair.client.error,
        Some(Error::PeerDisconnected { reason: 7, .. })
    ));
}

#[test]
fn host_key_types_from_fixtures() {
    // RSA and ECDSA host keys, when the fixtures are present: each negotiates its own
    // signature algorithm.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostkey");
    let mut seen = 0;
    for (file, alg) in [
        ("rsa2048", SigAlg::RsaSha2_512),
        ("ecdsa256", SigAlg::EcdsaP256),
        ("ecdsa384", SigAlg::EcdsaP384),
        ("ecdsa521", SigAlg::EcdsaP521),
        ("rsa1024", SigAlg::RsaSha2_512),
        ("ed25519", SigAlg::Ed25519),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}")) else {
            continue;
        };
        seen += 1;
        let key = PrivateKey::from_openssh(&text).unwrap();
        let mut pair = Pair::with_configs(
            Config::default(),
            Config::default(),
            keys(key),
            HostKeyCheck::AcceptAny,
        );
        pair.drive();
        assert!(
            pair.established(),
            "{file}: {:?} {:?}",
            pair.client.error,
            pair.server.error
        );
        let algs = pair.client.events.iter().find_map(|e| match e {
            Event::KexDone { algorithms, .. } => Some(*algorithms),
            _ => None,
        });
        assert_eq!(algs.unwrap().host_key, alg);
    }
    assert_eq!(seen, 6, "host key fixtures missing in {dir}");
}

#[test]
fn client_refuses_rsa_host_keys_under_its_minimum() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostkey");
    let text = std::fs::read_to_string(format!("{dir}/rsa1024")).unwrap();
    let key = PrivateKey::from_openssh(&text).unwrap();
    // The default (OpenSSH's 1024) takes it: `host_key_types_from_fixtures`. Asked for
    // 2048 bits, the client refuses it before using the exchange.
    let client = Config {
        min_rsa_bits: 2048,
        ..Config::default()
    };
    let mut pair = Pair::with_configs(
        client,
        Config::default(),
        keys(key),
        HostKeyCheck::AcceptAny,
    );
    pair.drive();
    assert!(!pair.established());
    match &pair.client.error {
        Some(Error::Peer(PeerMisbehaved::BadKexSignature(reason))) => assert_eq!(
            reason,
            "host key: RSA key of 1024 bits is smaller than the required 2048 bits"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!pair
        .client
        .events
        .iter()
        .any(|e| matches!(e, Event::HostKey(_))));
}
