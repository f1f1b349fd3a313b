//! Seal + open throughput per cipher and crypto provider on 32 KiB packets, in place, as
//! the relay does it, and the time of one signature and one verification per key type
//! and provider, as a login makes them (build with `--features sshr-protocol/rustcrypto`
//! to compare both providers).
//! `cargo bench --bench cipher`; figures go to perf/RESULTS.md beside
//! `openssl speed -evp aes-128-gcm` measured on the same machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand_core::SeedableRng;
use sshr_protocol::cipher::{CipherAlg, MacAlg, PacketCipher};
use sshr_protocol::crypto::{self, CryptoProvider};
use sshr_protocol::hostkey::PrivateKey;
use sshr_protocol::packet::{Opened, Opener, Sealer, PAYLOAD_OFFSET};

fn keyed(provider: &CryptoProvider, c: CipherAlg, mac: Option<MacAlg>) -> PacketCipher {
    let key = vec![0x42; c.key_len()];
    let iv = vec![0x24; c.iv_len()];
    let mac_key = vec![0x11; mac.map_or(0, |m| m.key_len())];
    PacketCipher::new(provider, c, mac, &key, &iv, &mac_key)
}

fn seal_open(crit: &mut Criterion) {
    for payload_len in [32 * 1024usize, 1024] {
        let mut group = crit.benchmark_group(format!("seal+open/{payload_len}B"));
        group.throughput(Throughput::Bytes(payload_len as u64));
        let cases: Vec<(CipherAlg, Option<MacAlg>)> = vec![
            (CipherAlg::Aes128Gcm, None),
            (CipherAlg::Aes256Gcm, None),
            (CipherAlg::ChaCha20Poly1305, None),
            (CipherAlg::Aes128Ctr, Some(MacAlg::HmacSha256Etm)),
            (CipherAlg::Aes256Ctr, Some(MacAlg::HmacSha512Etm)),
        ];
        for (provider, (c, mac)) in crypto::providers()
            .into_iter()
            .flat_map(|p| cases.iter().map(move |case| (p, *case)))
        {
            let name = match mac {
                Some(m) => format!("{}+{}/{}", c.name(), m.name(), provider.name),
                None => format!("{}/{}", c.name(), provider.name),
            };
            let mut sealer = Sealer::new();
            sealer.set_cipher(keyed(provider, c, mac));
            let mut opener = Opener::new();
            opener.set_cipher(keyed(provider, c, mac));
            let mut rng = rand_chacha::ChaCha20Rng::from_seed([0; 32]);
            let padding = sealer.min_padding(payload_len);
            let mut buf = vec![0x5au8; sealer.sealed_len(payload_len, padding)];
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let n = sealer.seal(&mut buf, payload_len, padding, 0, &mut rng);
                    match opener.open(&mut buf[..n]) {
                        Ok(Opened::Packet { payload, .. }) => {
                            assert_eq!(payload.start, PAYLOAD_OFFSET);
                        }
                        other => panic!("{other:?}"),
                    }
                })
            });
        }
        group.finish();
    }
}

/// Sign and verify a 32-byte exchange hash (what a host key and a user key sign) with the
/// OpenSSH-made keys of the protocol's test data.
fn signatures(crit: &mut Criterion) {
    let keys = [
        (
            "ed25519",
            include_str!("../protocol/tests/data/hostkey/ed25519"),
        ),
        (
            "ecdsa256",
            include_str!("../protocol/tests/data/hostkey/ecdsa256"),
        ),
        (
            "ecdsa384",
            include_str!("../protocol/tests/data/hostkey/ecdsa384"),
        ),
        (
            "ecdsa521",
            include_str!("../protocol/tests/data/hostkey/ecdsa521"),
        ),
        (
            "rsa2048",
            include_str!("../protocol/tests/data/hostkey/rsa2048"),
        ),
    ];
    let hash = [0x5a; 32];
    let mut group = crit.benchmark_group("signature");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(2));
    for (name, text) in keys {
        let key = PrivateKey::from_openssh(text).expect("test key");
        let public = key.public();
        let alg = key.sig_algs()[0];
        for provider in crypto::providers() {
            let blob = key.sign(provider, alg, &hash).expect("signs");
            group.bench_function(
                BenchmarkId::new(format!("sign/{name}"), provider.name),
                |b| b.iter(|| key.sign(provider, alg, &hash).expect("signs")),
            );
            group.bench_function(
                BenchmarkId::new(format!("verify/{name}"), provider.name),
                |b| {
                    b.iter(|| {
                        public
                            .verify(provider, Some(alg), &hash, &blob)
                            .expect("verifies")
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, seal_open, signatures);
criterion_main!(benches);
