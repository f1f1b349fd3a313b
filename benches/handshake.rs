//! CPU time of one complete proxied session set-up, on the proxy, in memory.
//!
//! Four transports per iteration, driven back to back in memory (the test support crate's
//! `pair` module, as protocol/tests/pair.rs):
//!
//! ```text
//! client (client role) <-> proxy_srv (server role, proxy host key of the case)
//! proxy_cli (client role) <-> upstream (server role, ed25519 host key)
//! ```
//!
//! and the messages `src/proxy/session.rs` exchanges: the client's key exchange and
//! `ssh-userauth` service request, its `none` attempt (answered FAILURE), its publickey
//! query (answered PK_OK) and its signed request (checked against the authorized key and
//! verified with `auth::verify_publickey`); the upstream key exchange, service request,
//! `auth::signed_publickey_request` with the proxy's ed25519 upstream key, the upstream's
//! USERAUTH_SUCCESS, and USERAUTH_SUCCESS to the client.
//!
//! Every call is timed separately and charged to the party that makes it, so the figure
//! is the proxy's own CPU time (transport construction with its KEXINIT, the key exchange on both legs,
//! the host key signature, the upstream host key verification, the client signature
//! verification, the upstream auth signature, packet sealing/opening, parsing); the
//! simulated client's and upstream's work is measured too and printed in the summary.
//! Every party offers only the key exchange of the group, so it runs on both legs:
//! mlkem768x25519-sha256 (the default) and curve25519-sha256; the case is the proxy's
//! host key type.
//!
//! `cargo bench --bench handshake -- --warm-up-time 1 --measurement-time 2`;
//! `SSHR_HANDSHAKE_SUMMARY_ITERS` (default 50) sets the summary's iteration count,
//! `SSHR_HANDSHAKE_SUMMARY=0` skips it.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use rand_core::{RngCore, SeedableRng};
use sshr_protocol::auth::{self, Method, Request};
use sshr_protocol::hostkey::{PrivateKey, PublicKey, SigAlg};
use sshr_protocol::kex::KexAlg;
use sshr_protocol::msg;
use sshr_protocol::transport::{ClientOptions, Config, Event, Transport};
use sshr_testsupport::pair::{exchange, until_quiet, Clock, Endpoint};

/// Move bytes both ways until nothing changes; every call is charged to the endpoint
/// that makes it.
fn drive(a: &mut Endpoint, b: &mut Endpoint, clock: Clock) {
    until_quiet(|| exchange(a, b, clock.now()));
    assert!(
        a.error.is_none() && b.error.is_none(),
        "read failed: {:?} {:?}",
        a.error,
        b.error
    );
}

fn seed(rng: &mut impl RngCore) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

struct Keys {
    proxy_host: Arc<[PrivateKey]>,
    upstream_host: Arc<[PrivateKey]>,
    client_user: PrivateKey,
    /// The client's authorized keys at the proxy.
    authorized: Vec<PublicKey>,
    /// The key the proxy logs in upstream with.
    proxy_upstream: PrivateKey,
    upstream_authorized: PublicKey,
}

fn hostkey_fixture(name: &str) -> PrivateKey {
    let path = format!(
        "{}/protocol/tests/data/hostkey/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    PrivateKey::from_openssh(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

impl Keys {
    fn new(proxy_host: PrivateKey) -> Keys {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
        let client_user = PrivateKey::generate_ed25519(&mut rng);
        let proxy_upstream = PrivateKey::generate_ed25519(&mut rng);
        // Other users' keys in the list, as a small static table would have.
        let mut authorized: Vec<PublicKey> = (0..3)
            .map(|_| PrivateKey::generate_ed25519(&mut rng).public())
            .collect();
        authorized.push(client_user.public());
        Keys {
            proxy_host: Arc::from(vec![proxy_host]),
            upstream_host: Arc::from(vec![PrivateKey::generate_ed25519(&mut rng)]),
            upstream_authorized: proxy_upstream.public(),
            client_user,
            authorized,
            proxy_upstream,
        }
    }
}

/// Time spent by the proxy and by the simulated peers in one session set-up.
#[derive(Default, Clone, Copy)]
struct Spent {
    proxy: Duration,
    client: Duration,
    upstream: Duration,
}

const USER: &str = "alice";
const UPSTREAM_USER: &str = "root";

fn session(keys: &Keys, config: &Arc<Config>, rng: &mut impl RngCore) -> Spent {
    let clock = Clock::new();
    let now = clock.now();
    let (s_client, s_upstream) = (seed(rng), seed(rng));
    let mut client = Endpoint::timed(|| {
        Transport::client(config.clone(), ClientOptions::default(), s_client, now)
    });
    // The proxy draws its seeds from the OS, as session.rs does.
    let mut proxy_srv = Endpoint::timed(|| {
        let mut s = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut s);
        Transport::server(config.clone(), keys.proxy_host.clone(), s, now)
    });
    let mut upstream = Endpoint::timed(|| {
        Transport::server(config.clone(), keys.upstream_host.clone(), s_upstream, now)
    });

    // Client leg: key exchange, service request.
    client.run(|c| c.t.request_service(auth::SERVICE).expect("service request"));
    drive(&mut client, &mut proxy_srv, clock);
    assert!(client.t.is_established() && proxy_srv.t.is_established());
    assert!(client
        .events
        .contains(&Event::ServiceAccepted(auth::SERVICE.into())));
    let client_sid = client.t.session_id().expect("session id").to_vec();

    // 1. "none": the proxy learns the user name (and would start the upstream now).
    let none = Request {
        user: USER,
        service: auth::CONNECTION_SERVICE,
        method: Method::None,
    }
    .encode();
    client.send(&none);
    drive(&mut client, &mut proxy_srv, clock);
    let req = proxy_srv.take();
    proxy_srv.run(|p| {
        let r = Request::parse(&req).expect("request");
        assert_eq!(r.method, Method::None);
        p.t.send(&auth::encode_failure(
            ["publickey", "password", "keyboard-interactive"],
            false,
        ))
        .expect("send");
    });

    // The upstream leg starts in parallel in the daemon; here, in sequence.
    let mut proxy_cli = Endpoint::timed(|| {
        let mut s = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut s);
        let negotiated = proxy_srv.t.negotiated();
        Transport::client(
            config.clone(),
            ClientOptions {
                prefer_cipher: negotiated.map(|n| n.cipher_c2s),
                prefer_mac: negotiated.and_then(|n| n.mac_c2s),
                ..ClientOptions::default()
            },
            s,
            now,
        )
    });
    proxy_cli.run(|p| p.t.request_service(auth::SERVICE).expect("service request"));

    // 2. The publickey query, answered PK_OK.
    drive(&mut client, &mut proxy_srv, clock);
    assert_eq!(client.take()[0], msg::USERAUTH_FAILURE);
    let blob = keys.client_user.public().to_blob();
    let alg = SigAlg::Ed25519;
    let query = Request {
        user: USER,
        service: auth::CONNECTION_SERVICE,
        method: Method::PublicKey {
            algorithm: alg.name(),
            key_blob: &blob,
            signature: None,
        },
    }
    .encode();
    client.send(&query);
    drive(&mut client, &mut proxy_srv, clock);
    let req = proxy_srv.take();
    proxy_srv.run(|p| {
        let r = Request::parse(&req).expect("request");
        let Method::PublicKey {
            algorithm,
            key_blob,
            signature: None,
        } = r.method
        else {
            panic!("expected a query")
        };
        let ok = auth::check_publickey(algorithm, key_blob)
            .is_ok_and(|(k, _)| keys.authorized.contains(&k));
        assert!(ok);
        p.t.send(&auth::encode_pk_ok(algorithm, key_blob))
            .expect("send");
    });
    drive(&mut client, &mut proxy_srv, clock);
    assert_eq!(client.take()[0], msg::USERAUTH_PK_OK);

    // 3. The signed request: the client signs, the proxy verifies.
    let signed = client.run(|_| {
        auth::signed_publickey_request(
            sshr_protocol::crypto::default_provider(),
            &client_sid,
            USER,
            auth::CONNECTION_SERVICE,
            &keys.client_user,
            alg,
        )
        .expect("sign")
    });
    client.send(&signed);
    drive(&mut client, &mut proxy_srv, clock);
    let req = proxy_srv.take();
    proxy_srv.run(|p| {
        let r = Request::parse(&req).expect("request");
        let Method::PublicKey {
            algorithm,
            key_blob,
            signature: Some(sig),
        } = r.method
        else {
            panic!("expected a signed request")
        };
        let sid = p.t.session_id().expect("session id").to_vec();
        let verified = auth::check_publickey(algorithm, key_blob)
            .is_ok_and(|(k, _)| keys.authorized.contains(&k))
            && auth::verify_publickey(
                sshr_protocol::crypto::default_provider(),
                &sid,
                r.user,
                r.service,
                algorithm,
                key_blob,
                sig,
            )
            .is_ok();
        assert!(verified);
    });

    // 4. Upstream leg: key exchange and service request, then the proxy's login.
    drive(&mut proxy_cli, &mut upstream, clock);
    assert!(proxy_cli.t.is_established());
    assert!(proxy_cli
        .events
        .contains(&Event::ServiceAccepted(auth::SERVICE.into())));
    proxy_cli.run(|p| {
        let sid = p.t.session_id().expect("session id").to_vec();
        let alg = p
            .events
            .iter()
            .find_map(|e| match e {
                Event::ExtInfo(info) => info.server_sig_algs.clone(),
                _ => None,
            })
            .and_then(|list| {
                keys.proxy_upstream
                    .sig_algs()
                    .iter()
                    .copied()
                    .find(|a| list.iter().any(|n| n == a.name()))
            })
            .unwrap_or(keys.proxy_upstream.sig_algs()[0]);
        let req = auth::signed_publickey_request(
            sshr_protocol::crypto::default_provider(),
            &sid,
            UPSTREAM_USER,
            auth::CONNECTION_SERVICE,
            &keys.proxy_upstream,
            alg,
        )
        .expect("sign");
        p.t.send(&req).expect("send");
    });
    drive(&mut proxy_cli, &mut upstream, clock);
    // The upstream checks the proxy's signature (its cost, not the proxy's).
    let req = upstream.take();
    upstream.run(|u| {
        let r = Request::parse(&req).expect("request");
        let Method::PublicKey {
            algorithm,
            key_blob,
            signature: Some(sig),
        } = r.method
        else {
            panic!("expected a signed request")
        };
        let sid = u.t.session_id().expect("session id").to_vec();
        let key = auth::verify_publickey(
            sshr_protocol::crypto::default_provider(),
            &sid,
            r.user,
            r.service,
            algorithm,
            key_blob,
            sig,
        )
        .expect("upstream verifies the proxy's signature");
        assert_eq!(key, keys.upstream_authorized);
        u.t.send(&auth::encode_success()).expect("send");
    });
    drive(&mut proxy_cli, &mut upstream, clock);
    assert_eq!(proxy_cli.take()[0], msg::USERAUTH_SUCCESS);

    // 5. Success to the client: the relay starts.
    proxy_srv.send(&auth::encode_success());
    drive(&mut client, &mut proxy_srv, clock);
    assert_eq!(client.take()[0], msg::USERAUTH_SUCCESS);

    Spent {
        proxy: proxy_srv.spent + proxy_cli.spent,
        client: client.spent,
        upstream: upstream.spent,
    }
}

fn cases() -> Vec<(&'static str, PrivateKey)> {
    vec![
        (
            "ed25519",
            PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([3; 32])),
        ),
        ("ecdsa-p256", hostkey_fixture("ecdsa256")),
        ("rsa2048", hostkey_fixture("rsa2048")),
    ]
}

/// The key exchanges measured, each alone on both legs.
const KEX: [KexAlg; 2] = [KexAlg::MlKem768X25519Sha256, KexAlg::Curve25519Sha256];

fn config(kex: KexAlg) -> Arc<Config> {
    Arc::new(Config {
        kex: vec![kex],
        ..Config::default()
    })
}

fn bench_handshake(crit: &mut Criterion) {
    for kex in KEX {
        let mut group = crit.benchmark_group(format!("proxied-setup/{}", kex.name()));
        let config = config(kex);
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        for (name, host) in cases() {
            let keys = Keys::new(host);
            group.bench_function(BenchmarkId::new("proxy-cpu", name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += session(&keys, &config, &mut rng).proxy;
                    }
                    total
                })
            });
        }
        group.finish();
    }
}

fn summary() {
    if std::env::var("SSHR_HANDSHAKE_SUMMARY").is_ok_and(|v| v == "0") {
        return;
    }
    let iters: usize = std::env::var("SSHR_HANDSHAKE_SUMMARY_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(1);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([8; 32]);
    println!();
    println!("## proxied session set-up, CPU time (median of {iters})");
    println!();
    println!("| key exchange (both legs) | proxy host key | proxy µs | set-ups/s per core (proxy only) | simulated client µs | simulated upstream µs |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (kex, (name, host)) in KEX
        .iter()
        .flat_map(|&kex| cases().into_iter().map(move |case| (kex, case)))
    {
        let config = config(kex);
        let keys = Keys::new(host);
        let mut runs: Vec<Spent> = (0..iters)
            .map(|_| session(&keys, &config, &mut rng))
            .collect();
        let median = |runs: &mut Vec<Spent>, f: fn(&Spent) -> Duration| {
            runs.sort_by_key(f);
            f(&runs[runs.len() / 2]).as_secs_f64() * 1e6
        };
        let proxy = median(&mut runs, |s| s.proxy);
        let client = median(&mut runs, |s| s.client);
        let upstream = median(&mut runs, |s| s.upstream);
        println!(
            "| {} | {name} | {proxy:.0} | {:.0} | {client:.0} | {upstream:.0} |",
            kex.name(),
            1e6 / proxy
        );
    }
    println!();
}

criterion_group!(benches, bench_handshake);

fn main() {
    benches();
    // Only under `cargo bench` (which passes --bench), not `cargo test --benches`.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
