//! Relay throughput through one core, no network: the proxy's per-packet work, through
//! the same core functions the relay's pumps call (`sshr::core::relay::classify` and
//! `forward_step`).
//!
//! Two in-memory transport pairs (`sshr_testsupport::pair`) are set up back to back:
//!
//! ```text
//! client (client role) <-> proxy_srv (server role)      client leg, cipher A
//! proxy_cli (client role) <-> upstream (server role)    upstream leg, cipher B
//! ```
//!
//! The client seals a chunk of CHANNEL_DATA packets into one receive buffer, back to
//! back as a socket read would leave them (untimed). The timed region is the relay's
//! loop over that buffer: `proxy_srv.read` (check length, verify and decrypt in place),
//! `classify` (the message number, tunnel bookkeeping), and `forward_step`
//! (`padding_to_fit` and `proxy_cli.seal_in_place` in the same bytes). Sequence numbers stay consistent because
//! every sealed packet is read exactly once, in order (`iter_custom`, chunks of K
//! packets). The upstream never needs to open the packets for the measurement; a check
//! before each case relays a few packets through and has the upstream open them, and
//! the client's sealing cost is measured separately (reported in the summary, not
//! included in the relay figure).
//!
//! A counting global allocator checks that relaying allocates nothing: the summary at the
//! end prints allocations per relayed packet (target 0) next to packets/s and bytes/s.
//! Its last row is the mixed pair at 32759 bytes of data, a size where the AES-GCM
//! framing (16-byte blocks) does not fit in the chacha20-poly1305 packet (8-byte blocks):
//! every packet takes the relay's copying path (`send` + transmit-buffer swap as
//! `Leg::flush_locked` does), which the daemon also writes one packet at a time.
//!
//! `cargo bench --bench relay -- --warm-up-time 1 --measurement-time 2` for a short run;
//! `SSHR_RELAY_SUMMARY_MS` (default 300) sets the timed span of each summary row;
//! `SSHR_RELAY_SUMMARY=0` skips the summary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand_core::SeedableRng;
use sshr::core::relay::{classify, forward_step, Step, Verdict};
use sshr::core::tunnel::Tunnels;
use sshr::core::values::{Side, TunnelPolicy, TunnelSettings};
use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::hostkey::PrivateKey;
use sshr_protocol::msg;
use sshr_protocol::packet::PAYLOAD_OFFSET;
use sshr_protocol::transport::{ClientOptions, Config, Input, Transport};
use sshr_testsupport::pair::{Clock, Pair};

// ---------------------------------------------------------------------------------------
// Allocation counter.

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// The two ends of one leg through their handshake (the test support crate's pair).
fn establish(client: Transport, server: Transport) -> (Transport, Transport) {
    let mut pair = Pair::new(client, server, Clock::new());
    pair.handshake();
    assert!(pair.client.t.can_seal() && pair.server.t.can_seal());
    (pair.client.t, pair.server.t)
}

fn leg_config(cipher: CipherAlg, mac: Option<MacAlg>) -> Arc<Config> {
    Arc::new(Config {
        ciphers: vec![cipher],
        macs: mac.map_or_else(|| MacAlg::ALL.to_vec(), |m| vec![m]),
        // No rekey may start in the middle of a measurement.
        rekey_bytes: u64::MAX,
        rekey_interval: Duration::from_secs(10 * 365 * 24 * 3600),
        ..Config::default()
    })
}

/// One cipher pair: the client leg's cipher (client <-> proxy) and the upstream leg's.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    client_leg: (CipherAlg, Option<MacAlg>),
    upstream_leg: (CipherAlg, Option<MacAlg>),
}

const CASES: [Case; 5] = [
    Case {
        name: "aes128-gcm",
        client_leg: (CipherAlg::Aes128Gcm, None),
        upstream_leg: (CipherAlg::Aes128Gcm, None),
    },
    Case {
        name: "chacha20-poly1305",
        client_leg: (CipherAlg::ChaCha20Poly1305, None),
        upstream_leg: (CipherAlg::ChaCha20Poly1305, None),
    },
    Case {
        name: "aes256-gcm",
        client_leg: (CipherAlg::Aes256Gcm, None),
        upstream_leg: (CipherAlg::Aes256Gcm, None),
    },
    Case {
        name: "aes128-ctr+hmac-sha2-256-etm",
        client_leg: (CipherAlg::Aes128Ctr, Some(MacAlg::HmacSha256Etm)),
        upstream_leg: (CipherAlg::Aes128Ctr, Some(MacAlg::HmacSha256Etm)),
    },
    Case {
        name: "chacha20-poly1305->aes128-gcm",
        client_leg: (CipherAlg::ChaCha20Poly1305, None),
        upstream_leg: (CipherAlg::Aes128Gcm, None),
    },
];

/// Channel data per packet: 32 KiB (what OpenSSH puts in a CHANNEL_DATA packet during
/// bulk transfers) and 1 KiB. The SSH payload adds 9 bytes (message number, channel,
/// data length); throughput counts the channel data only.
const SIZES: [usize; 2] = [32 * 1024, 1024];
/// CHANNEL_DATA header: byte, uint32 channel, uint32 length.
const DATA_HEADER: usize = 9;

/// Packets per chunk (one simulated socket read's worth).
fn chunk_packets(payload_len: usize) -> usize {
    if payload_len >= 16 * 1024 {
        16
    } else {
        256
    }
}

struct Rig {
    client: Transport,
    proxy_srv: Transport,
    proxy_cli: Transport,
    upstream: Transport,
    payload_len: usize,
    /// The receive buffer of the client leg: K sealed packets back to back.
    buf: Vec<u8>,
    filled: usize,
    /// Packets the relay had to copy because the upstream leg's framing did not fit.
    fallbacks: u64,
    /// `check` only: every relayed packet's bytes for the upstream, in order.
    capture: Option<Vec<u8>>,
    /// The copying path's spare transmit buffer (as `Leg::spare`).
    spare: Vec<u8>,
    /// The session's tunnel record, as the relay keeps it (no tunnels open).
    tunnels: Tunnels,
}

impl Rig {
    fn new(case: Case, data_len: usize) -> Rig {
        let payload_len = data_len + DATA_HEADER;
        let host = PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([3; 32]));
        let host_keys: Arc<[PrivateKey]> = Arc::from(vec![host]);
        let now = Instant::now();
        let c1 = leg_config(case.client_leg.0, case.client_leg.1);
        let c2 = leg_config(case.upstream_leg.0, case.upstream_leg.1);
        let (client, proxy_srv) = establish(
            Transport::client(c1.clone(), ClientOptions::default(), [1; 32], now),
            Transport::server(c1, host_keys.clone(), [2; 32], now),
        );
        let (proxy_cli, upstream) = establish(
            Transport::client(c2.clone(), ClientOptions::default(), [4; 32], now),
            Transport::server(c2, host_keys, [5; 32], now),
        );
        let k = chunk_packets(payload_len);
        // Room for K packets with maximal framing overhead.
        let buf = vec![0u8; k * (payload_len + PAYLOAD_OFFSET + 255 + 64)];
        Rig {
            client,
            proxy_srv,
            proxy_cli,
            upstream,
            payload_len,
            buf,
            filled: 0,
            fallbacks: 0,
            capture: None,
            spare: Vec::new(),
            tunnels: Tunnels::new("bench", TunnelPolicy::Deny, &TunnelSettings::default()),
        }
    }

    /// The client seals `k` CHANNEL_DATA packets into the buffer (not timed).
    fn client_seal(&mut self, k: usize) {
        let len = self.payload_len;
        let mut off = 0;
        for i in 0..k {
            let padding = self.client.sealer().min_padding(len);
            let p = &mut self.buf[off + PAYLOAD_OFFSET..off + PAYLOAD_OFFSET + len];
            p[0] = msg::CHANNEL_DATA;
            p[1..5].copy_from_slice(&0u32.to_be_bytes());
            p[5..9].copy_from_slice(&((len - DATA_HEADER) as u32).to_be_bytes());
            p[9] = i as u8;
            let n = self
                .client
                .seal_in_place(&mut self.buf[off..], len, padding, padding)
                .expect("client seal");
            off += n;
        }
        self.filled = off;
    }

    /// The proxy's work on the buffer: open each packet in place, look at the message
    /// number, re-seal it in place for the upstream leg. Returns packets relayed.
    #[inline(never)]
    fn relay(&mut self) -> usize {
        let mut start = 0;
        let mut relayed = 0;
        while start < self.filled {
            let read = self
                .proxy_srv
                .read(&mut self.buf[start..self.filled], Instant::now());
            let (len, payload) = match read {
                Ok(Input::Packet { len, payload }) => (len, payload),
                other => panic!("relay read: {other:?}"),
            };
            let payload = start + payload.start..start + payload.end;
            debug_assert_eq!(payload.start, start + PAYLOAD_OFFSET);
            let verdict = classify(
                Side::Client,
                &self.buf[payload.clone()],
                &mut self.tunnels,
                Instant::now,
            );
            assert_eq!(verdict, Verdict::Forward);
            match forward_step(
                &mut self.proxy_cli,
                &mut self.buf,
                start,
                len,
                payload.clone(),
                false,
            ) {
                Step::Sealed(sealed) => {
                    let n = sealed.expect("relay seal");
                    if let Some(c) = &mut self.capture {
                        c.extend_from_slice(&self.buf[start..start + n]);
                    }
                }
                Step::Copy => {
                    // As the relay: the upstream leg's framing needs more room than the
                    // packet had (e.g. a larger block): seal a copy, then "write" it.
                    self.fallbacks += 1;
                    self.proxy_cli.send(&self.buf[payload]).expect("relay send");
                    // As `Leg::flush_locked`: swap the transmit buffer with a spare.
                    let out = self
                        .proxy_cli
                        .take_transmit(std::mem::take(&mut self.spare));
                    if let Some(c) = &mut self.capture {
                        c.extend_from_slice(&out);
                    }
                    self.spare = out;
                }
                other => panic!("relay step: {other:?}"),
            }
            start += len;
            relayed += 1;
        }
        relayed
    }

    /// Relay a few packets and have the upstream open them: the measured path produces
    /// valid packets for the other leg.
    fn check(&mut self) {
        let k = 4;
        let fallbacks = self.fallbacks;
        self.client_seal(k);
        self.capture = Some(Vec::new());
        assert_eq!(self.relay(), k);
        let mut wire = self.capture.take().unwrap_or_default();
        self.fallbacks = fallbacks;
        // The 10th payload byte carries the packet's index: enough to check the order.
        let mut seen = Vec::new();
        let mut off = 0;
        let now = Instant::now();
        while off < wire.len() {
            match self
                .upstream
                .read(&mut wire[off..], now)
                .expect("upstream open")
            {
                Input::Packet { len, payload } => {
                    let p = &wire[off + payload.start..off + payload.end];
                    assert_eq!(p.len(), self.payload_len);
                    assert_eq!(p[0], msg::CHANNEL_DATA);
                    seen.push(p[9]);
                    off += len;
                }
                other => panic!("upstream read: {other:?}"),
            }
        }
        assert_eq!(seen, (0..k as u8).collect::<Vec<_>>());
    }
}

fn bench_relay(crit: &mut Criterion) {
    for data_len in SIZES {
        let mut group = crit.benchmark_group(format!("relay/{}B", data_len));
        group.throughput(Throughput::Bytes(data_len as u64));
        for case in CASES {
            let mut rig = Rig::new(case, data_len);
            rig.check();
            let k = chunk_packets(data_len);
            group.bench_function(BenchmarkId::from_parameter(case.name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let n = left.min(k);
                        rig.client_seal(n);
                        let t = Instant::now();
                        let done = rig.relay();
                        total += t.elapsed();
                        debug_assert_eq!(done, n);
                        left -= n;
                    }
                    total
                })
            });
        }
        group.finish();
    }
}

/// Own timing for the table: packets/s, bytes/s, allocations per packet, and the client's
/// sealing cost (what the measurement excludes).
fn summary() {
    if std::env::var("SSHR_RELAY_SUMMARY").is_ok_and(|v| v == "0") {
        return;
    }
    let filter = criterion_filter();
    let span = Duration::from_millis(
        std::env::var("SSHR_RELAY_SUMMARY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    println!();
    println!("## relay summary (one core, in memory, {span:?} per row, median of 3)");
    println!();
    println!("| cipher pair | channel data/packet | relay MB/s (data) | relay packets/s | ns/packet | client seal ns/packet (excluded) | allocations/packet | packets copied (no in-place fit) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Every case at every size, then the mixed pair at a size where the upstream leg's
    // framing does not fit in the received packet (chacha20-poly1305 pads to 8 bytes,
    // AES-GCM to 16): the relay's copying fallback, for its cost and allocations.
    let rows = SIZES
        .iter()
        .flat_map(|&size| CASES.iter().map(move |&case| (size, case)))
        .chain(std::iter::once((32 * 1024 - 9, CASES[4])));
    for (data_len, case) in rows {
        let id = format!("relay/{}B/{}", data_len, case.name);
        if filter.as_ref().is_some_and(|f| !id.contains(f.as_str())) {
            continue;
        }
        let mut rig = Rig::new(case, data_len);
        rig.check();
        let k = chunk_packets(data_len);
        let mut rounds = Vec::new();
        let mut seal_rounds = Vec::new();
        let mut alloc_count = 0u64;
        let mut packets_total = 0u64;
        for _ in 0..3 {
            let mut relay_time = Duration::ZERO;
            let mut seal_time = Duration::ZERO;
            let mut packets = 0u64;
            let deadline = Instant::now() + span;
            while Instant::now() < deadline {
                let t = Instant::now();
                rig.client_seal(k);
                seal_time += t.elapsed();
                let a = allocs();
                let t = Instant::now();
                let n = rig.relay();
                relay_time += t.elapsed();
                alloc_count += allocs() - a;
                packets += n as u64;
            }
            packets_total += packets;
            rounds.push(relay_time.as_nanos() as f64 / packets as f64);
            seal_rounds.push(seal_time.as_nanos() as f64 / packets as f64);
        }
        rounds.sort_by(|a, b| a.total_cmp(b));
        seal_rounds.sort_by(|a, b| a.total_cmp(b));
        let ns = rounds[1];
        let pps = 1e9 / ns;
        let allocs_per_packet = alloc_count as f64 / packets_total as f64;
        println!(
            "| {} | {} B | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            case.name,
            data_len,
            pps * data_len as f64 / 1e6,
            pps,
            ns,
            seal_rounds[1],
            if alloc_count == 0 {
                "0".to_owned()
            } else {
                format!("{allocs_per_packet:.3}")
            },
            if rig.fallbacks == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{:.0} %",
                    100.0 * rig.fallbacks as f64 / packets_total as f64
                )
            },
        );
        if alloc_count != 0 {
            eprintln!("WARNING: {id}: {alloc_count} allocations in {packets_total} relayed packets (target 0)");
        }
    }
    println!();
}

/// Criterion's positional filter argument, if any (it also filters the summary).
fn criterion_filter() -> Option<String> {
    const WITH_VALUE: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--plotting-backend",
        "--color",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

criterion_group!(benches, bench_relay);

fn main() {
    benches();
    // Only under `cargo bench` (which passes --bench), not `cargo test --benches`.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
