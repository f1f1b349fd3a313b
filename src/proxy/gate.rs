//! The door of each shard: which accepted connections become sessions, and what the
//! others are told.
//!
//! A connection is refused at accept when the shard serves
//! `limits.max_sessions_per_shard` sessions, when its source is penalised, or by early
//! drop (`limits.max_startups`, see [`crate::core::penalty`]). A refused client gets our
//! identification line and a plaintext DISCONNECT, which SSH allows before key
//! exchange: OpenSSH prints "Received disconnect from ...: sshr: too many sessions ...".
//! No key exchange and no crypto: this runs when the shard is busiest or under a flood.
//!
//! On `proxy_protocol.listen` addresses the connection comes from a load balancer and
//! starts with a PROXY header naming the real client. A source outside
//! `proxy_protocol.trusted` is closed at once, without a byte: it is not an SSH client,
//! and a header from it would let it claim any address. Otherwise the header is read in
//! the connection's own task, and the client it names is what admission, penalties,
//! hooks, logs and metrics see from then on; the balancer's address is only in the
//! session's log span (`proxied{via=...}`). A bad header is logged with the balancer's
//! address and counted in `sshr_proxy_protocol_errors_total{reason}`; health checks
//! (a `LOCAL` header, or a connection closed before its first byte) only at debug level.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::core::refusal::Refusal;
use crate::io::listener::{self, ListenerKind, Refusing};
use crate::io::proxy_protocol::{self, HeaderError, ProxyHeader};
use crate::proxy::session;
use crate::proxy::shard::{SessionGuard, ShardContext};

/// Accepts on `listener` until the task is dropped, starting one session task per
/// admitted connection.
pub async fn run(listener: TcpListener, kind: ListenerKind, ctx: Rc<ShardContext>) {
    match kind {
        ListenerKind::Ssh => run_ssh(listener, ctx).await,
        ListenerKind::ProxyProtocol => run_proxied(listener, ctx).await,
    }
}

/// `listen`: the connection's source is the client.
async fn run_ssh(listener: TcpListener, ctx: Rc<ShardContext>) {
    let mut refusals = RefusalLog::default();
    let refusing = Refusing::default();
    let mut dice = EarlyDropDice::new();
    let index = ctx.index;
    listener::accept_loop(listener, index, |stream, peer| {
        match admit(&ctx, peer, dice.roll()) {
            Ok(()) => start_session(&ctx, stream, peer, None),
            Err(reason) => {
                ctx.metrics.session_refused(reason);
                refusals.refused(index, peer, reason);
                refusing.tell(stream, || plaintext_refusal(&ctx, reason));
            }
        }
    })
    .await
}

/// What the accept loop of a PROXY-protocol listener shares with the tasks reading
/// headers.
#[derive(Default)]
struct ProxiedDoor {
    /// Refusals of admission (the client named in the header).
    refusals: RefCell<RefusalLog>,
    /// Untrusted sources and bad headers (the balancer's address).
    header_errors: RefCell<RefusalLog>,
    refusing: Refusing,
    /// Headers being read now.
    pending: Cell<usize>,
}

/// Why a connection to a PROXY-protocol listener is closed before it has a client.
#[derive(Debug)]
enum NotProxied {
    /// Its source is not in `proxy_protocol.trusted`.
    Untrusted,
    /// The shard reads as many headers at once as it may serve sessions.
    Busy,
    Header(HeaderError),
}

impl NotProxied {
    /// The `reason` label of `sshr_proxy_protocol_errors_total`.
    fn label(&self) -> &'static str {
        match self {
            NotProxied::Untrusted => "untrusted",
            NotProxied::Busy => "busy",
            NotProxied::Header(e) => e.label(),
        }
    }
}

impl std::fmt::Display for NotProxied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotProxied::Untrusted => f.write_str("source not in proxy_protocol.trusted"),
            NotProxied::Busy => f.write_str(
                "as many PROXY headers pending as max_sessions_per_shard allows sessions",
            ),
            NotProxied::Header(e) => e.fmt(f),
        }
    }
}

/// Whether a connection from the balancer at `via` may send a header now, with
/// `pending` headers being read already.
fn may_send_header(
    config: &crate::config::Config,
    via: SocketAddr,
    pending: usize,
) -> Result<(), NotProxied> {
    if !config.proxy_protocol.trusts(via.ip()) {
        return Err(NotProxied::Untrusted);
    }
    if pending >= config.limits.max_sessions_per_shard {
        return Err(NotProxied::Busy);
    }
    Ok(())
}

/// `proxy_protocol.listen`: each connection's source is a load balancer, and its PROXY
/// header names the client.
async fn run_proxied(listener: TcpListener, ctx: Rc<ShardContext>) {
    let door = Rc::new(ProxiedDoor::default());
    let mut dice = EarlyDropDice::new();
    let index = ctx.index;
    listener::accept_loop(listener, index, |stream, via| {
        let config = ctx.config();
        if let Err(why) = may_send_header(&config, via, door.pending.get()) {
            // Closed with nothing said: not an SSH client, or one we cannot read now.
            drop(stream);
            header_failed(&door, index, via, why);
            return;
        }
        let timeout = config.proxy_protocol.header_timeout;
        let task = proxied_connection(ctx.clone(), door.clone(), stream, via, timeout, dice.roll());
        glommio::spawn_local(task).detach();
    })
    .await
}

/// Reads the header of one connection from the balancer at `via`, then admits the
/// client it names (`roll`: the early-drop dice) and serves it.
async fn proxied_connection(
    ctx: Rc<ShardContext>,
    door: Rc<ProxiedDoor>,
    mut stream: TcpStream,
    via: SocketAddr,
    timeout: Duration,
    roll: u32,
) {
    let pending = Pending::new(&door.pending);
    let header = proxy_protocol::read_header(&mut stream, timeout).await;
    drop(pending);
    let index = ctx.index;
    let client = match header {
        Ok(ProxyHeader::Proxied(client)) => client,
        Ok(ProxyHeader::Local) => {
            tracing::debug!(shard = index, peer = %via, "PROXY LOCAL (health check): closing");
            return;
        }
        Err(e) if e.is_health_check() => {
            tracing::debug!(shard = index, peer = %via, "closed before a byte (health check)");
            return;
        }
        Err(e) => {
            drop(stream);
            header_failed(&door, index, via, NotProxied::Header(e));
            return;
        }
    };
    match admit(&ctx, client, roll) {
        Ok(()) => start_session(&ctx, stream, client, Some(via)),
        Err(reason) => {
            ctx.metrics.session_refused(reason);
            if let Some(also_refused) = door.refusals.borrow_mut().should_log(Instant::now()) {
                tracing::warn!(
                    shard = index,
                    peer = %client,
                    via = %via,
                    also_refused,
                    "refusing connection: {}",
                    reason.log_reason()
                );
            }
            door.refusing
                .tell(stream, || plaintext_refusal(&ctx, reason));
        }
    }
}

/// Counts one header being read while it lives.
struct Pending<'a>(&'a Cell<usize>);

impl<'a> Pending<'a> {
    fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Pending(count)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Counts and logs (at most once a second) a connection from the balancer at `via`
/// closed without a client.
fn header_failed(door: &ProxiedDoor, shard: usize, via: SocketAddr, why: NotProxied) {
    count_proxy_protocol_error(why.label());
    if let Some(also_closed) = door.header_errors.borrow_mut().should_log(Instant::now()) {
        tracing::warn!(
            shard,
            peer = %via,
            also_closed,
            "closing PROXY protocol connection: {why}"
        );
    }
}

/// `sshr_proxy_protocol_errors_total{reason}`: connections to `proxy_protocol.listen`
/// closed before they named a client (`reason` from a fixed set).
fn count_proxy_protocol_error(reason: &'static str) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "sshr_proxy_protocol_errors_total",
            "Connections to proxy_protocol.listen closed without a usable PROXY header, by reason (untrusted, busy, timeout, closed, missing, too_long, malformed, unsupported, io)"
        )
    });
    metrics::counter!("sshr_proxy_protocol_errors_total", "reason" => reason).increment(1);
}

/// Whether a connection from `peer` may start a session now; `roll` is the early-drop
/// dice, uniform in `0..100`.
fn admit(ctx: &ShardContext, peer: SocketAddr, roll: u32) -> Result<(), Refusal> {
    let config = ctx.config();
    if ctx.live_sessions() >= config.limits.max_sessions_per_shard {
        return Err(Refusal::SessionLimit);
    }
    ctx.admission
        .admit(peer.ip(), &config, Instant::now(), roll)
        .map_err(|e| e.refusal())
}

/// Serves `peer` on `stream` in a task of its own; `via`: the load balancer it came
/// through, if any (named in the session's log span).
fn start_session(
    ctx: &Rc<ShardContext>,
    stream: TcpStream,
    peer: SocketAddr,
    via: Option<SocketAddr>,
) {
    // TCP_NODELAY and keepalive come from the listening socket (`io::listener`).
    let guard = SessionGuard::new(ctx);
    let session_ctx = ctx.clone();
    let span = match via {
        Some(via) => tracing::info_span!("proxied", %via),
        None => tracing::Span::none(),
    };
    glommio::spawn_local(async move {
        let _guard = guard;
        let session = session::serve(stream, peer, session_ctx).instrument(span);
        // One misbehaving session must not take the other sessions of its shard down
        // with it. The guard still runs on unwind.
        if let Err(panic) = std::panic::AssertUnwindSafe(session).catch_unwind().await {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%peer, panic = %what, "session task panicked");
        }
    })
    .detach();
}

/// Our identification line and a DISCONNECT saying why, in plaintext.
fn plaintext_refusal(ctx: &ShardContext, reason: Refusal) -> Vec<u8> {
    let mut t = sshr_protocol::transport::Transport::server(
        session::transport_config(&ctx.config()),
        ctx.host_keys(),
        crate::rt::seed(),
        Instant::now(),
    );
    t.disconnect(reason.code(), reason.message());
    t.transmit().to_vec()
}

/// Logs refusals at most once a second so an overload does not also flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether this refusal gets a log line (the others are counted in the next one).
    fn should_log(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    fn refused(&mut self, shard: usize, peer: SocketAddr, reason: Refusal) {
        if let Some(also_refused) = self.should_log(Instant::now()) {
            tracing::warn!(
                shard,
                %peer,
                also_refused,
                "refusing connection: {}",
                reason.log_reason()
            );
        }
    }
}

/// Dice for early drop: uniform in `0..100`, a xorshift seeded once per accept loop (no
/// system call per connection; nothing secret depends on it).
struct EarlyDropDice(u64);

impl EarlyDropDice {
    fn new() -> Self {
        EarlyDropDice(rand_core::RngCore::next_u64(&mut rand_core::OsRng) | 1)
    }

    fn roll(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % 100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_a_second_with_a_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.should_log(t0), Some(0));
        assert_eq!(log.should_log(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.should_log(t0 + Duration::from_millis(900)), None);
        assert_eq!(log.should_log(t0 + Duration::from_millis(1001)), Some(2));
        assert_eq!(log.should_log(t0 + Duration::from_millis(1002)), None);
    }

    #[test]
    fn early_drop_dice_are_roughly_uniform() {
        let mut dice = EarlyDropDice::new();
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let r = dice.roll();
            assert!(r < 100);
            buckets[(r / 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (700..1300).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn only_trusted_balancers_may_send_headers_and_only_so_many_at_once() {
        let mut config = crate::config::Config::builtin().unwrap();
        config.proxy_protocol.trusted = vec!["10.0.0.0/8".parse().unwrap()];
        config.limits.max_sessions_per_shard = 2;
        let balancer: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:40000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert!(may_send_header(&config, balancer, 0).is_ok());
        assert!(may_send_header(&config, mapped, 1).is_ok());
        let label = |r: Result<(), NotProxied>| r.unwrap_err().label();
        assert_eq!(label(may_send_header(&config, stranger, 0)), "untrusted");
        assert_eq!(label(may_send_header(&config, balancer, 2)), "busy");
    }

    /// A v2 PROXY header from `client` (IPv4).
    fn v2_header(client: SocketAddr) -> Vec<u8> {
        let (SocketAddr::V4(c), local) = (client, [127, 0, 0, 1]) else {
            panic!("IPv4 only");
        };
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]);
        h.extend_from_slice(&c.ip().octets());
        h.extend_from_slice(&local);
        h.extend_from_slice(&c.port().to_be_bytes());
        h.extend_from_slice(&22u16.to_be_bytes());
        h
    }

    /// Connects to `addr`, sends `bytes`, and returns what came back before the
    /// connection closed (or, with `first_line`, before the first line ended), waiting
    /// at most 10 s for each read.
    fn exchange(addr: SocketAddr, bytes: Vec<u8>, first_line: bool) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&bytes);
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // Bounded: each round reads at least a byte, and each read at most 10 s.
        while got.len() < 64 * 1024 {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            // A served session says its identification line, then waits for ours.
            if first_line && got.contains(&b'\n') {
                break;
            }
        }
        got
    }

    #[test]
    fn the_header_names_the_client_that_admission_sees() {
        let mut config = crate::config::Config::builtin().unwrap();
        config.proxy_protocol.trusted = vec!["127.0.0.1/32".parse().unwrap()];
        let config = std::sync::Arc::new(config);
        let key = sshr_protocol::hostkey::PrivateKey::generate_ed25519(&mut rand_core::OsRng);
        let ctx = Rc::new(ShardContext::new(
            0,
            config.clone(),
            Rc::new(crate::proxy::shard::tests::NoUsers),
            vec![key].into(),
            crate::proxy::admission::Admission::new(),
        ));
        // One client is penalised; the balancer's own address is too, which must not
        // matter: it is not the client.
        let penalised: SocketAddr = "192.0.2.66:5000".parse().unwrap();
        let welcome: SocketAddr = "192.0.2.77:5000".parse().unwrap();
        let now = Instant::now();
        for ip in [penalised.ip(), "127.0.0.1".parse().unwrap()] {
            for _ in 0..4 {
                ctx.admission
                    .penalise(ip, crate::core::penalty::Offence::AuthFail, &config, now);
            }
        }
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let gate = glommio::spawn_local(run(listener, ListenerKind::ProxyProtocol, ctx));
            let talk =
                |bytes: Vec<u8>| crate::rt::run_blocking(move || exchange(addr, bytes, false));

            let mut hello = v2_header(penalised);
            hello.extend_from_slice(b"SSH-2.0-test\r\n");
            let refused = String::from_utf8_lossy(&talk(hello).await).into_owned();
            assert!(refused.starts_with("SSH-2.0-"), "{refused:?}");
            assert!(
                refused.contains(Refusal::Penalised.message()),
                "{refused:?}"
            );

            let mut hello = v2_header(welcome);
            hello.extend_from_slice(b"SSH-2.0-test\r\n");
            let served = crate::rt::run_blocking(move || exchange(addr, hello, true)).await;
            let served = String::from_utf8_lossy(&served).into_owned();
            assert!(served.starts_with("SSH-2.0-"), "{served:?}");
            assert!(!served.contains(Refusal::Penalised.message()), "{served:?}");

            // Health checks, garbage and SSH without a header: closed, nothing said.
            let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
            assert_eq!(talk(local).await, b"");
            assert_eq!(talk(b"PROXY UNKNOWN\r\n".to_vec()).await, b"");
            assert_eq!(talk(b"SSH-2.0-test\r\n".to_vec()).await, b"");
            assert_eq!(talk(b"PROXY TCP4 1.2.3.4\r\n".to_vec()).await, b"");
            gate.cancel().await;
        });
    }

    #[test]
    fn untrusted_sources_are_closed_without_a_byte() {
        let mut config = crate::config::Config::builtin().unwrap();
        config.proxy_protocol.trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let key = sshr_protocol::hostkey::PrivateKey::generate_ed25519(&mut rand_core::OsRng);
        let ctx = Rc::new(ShardContext::new(
            0,
            std::sync::Arc::new(config),
            Rc::new(crate::proxy::shard::tests::NoUsers),
            vec![key].into(),
            crate::proxy::admission::Admission::new(),
        ));
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let gate = glommio::spawn_local(run(listener, ListenerKind::ProxyProtocol, ctx));
            let mut forged = v2_header("192.0.2.1:5000".parse().unwrap());
            forged.extend_from_slice(b"SSH-2.0-test\r\n");
            let got = crate::rt::run_blocking(move || exchange(addr, forged, false)).await;
            assert_eq!(got, b"");
            gate.cancel().await;
        });
    }

    #[test]
    fn a_refusal_is_a_version_line_and_a_plaintext_disconnect() {
        let ctx = crate::proxy::shard::tests::context(0);
        let bytes = plaintext_refusal(&ctx, Refusal::Startups);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("SSH-2.0-"), "{text}");
        assert!(text.contains(Refusal::Startups.message()), "{text}");
    }
}
