//! The door of each shard: which accepted connections become sessions, and what the
//! others are told.
//!
//! A connection is refused at accept when the shard serves
//! `limits.max_sessions_per_shard` sessions, when its source is penalised, or by early
//! drop (`limits.max_startups`, see [`crate::core::penalty`]). A refused client gets our
//! identification line and a plaintext DISCONNECT, which SSH allows before key
//! exchange: OpenSSH prints "Received disconnect from ...: sshr: too many sessions ...".
//! No key exchange and no crypto: this runs when the shard is busiest or under a flood.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};

use crate::core::refusal::Refusal;
use crate::io::listener::{self, ListenerKind, Refusing};
use crate::proxy::session;
use crate::proxy::shard::{SessionGuard, ShardContext};

/// Accepts on `listener` until the task is dropped, starting one session task per
/// admitted connection.
pub async fn run(listener: TcpListener, kind: ListenerKind, ctx: Rc<ShardContext>) {
    // TODO(issue 13): PROXY protocol listeners.
    let _ = kind;
    let mut refusals = RefusalLog::default();
    let refusing = Refusing::default();
    let mut dice = EarlyDropDice::new();
    let index = ctx.index;
    listener::accept_loop(listener, index, |stream, peer| {
        match admit(&ctx, peer, dice.roll()) {
            Ok(()) => start_session(&ctx, stream, peer),
            Err(reason) => {
                ctx.metrics.session_refused(reason);
                refusals.refused(index, peer, reason);
                refusing.tell(stream, || plaintext_refusal(&ctx, reason));
            }
        }
    })
    .await
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

fn start_session(ctx: &Rc<ShardContext>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let guard = SessionGuard::new(ctx);
    let session_ctx = ctx.clone();
    glommio::spawn_local(async move {
        let _guard = guard;
        let session = session::serve(stream, peer, session_ctx);
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
        ctx.host_keys.clone(),
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
    fn a_refusal_is_a_version_line_and_a_plaintext_disconnect() {
        let ctx = crate::proxy::shard::tests::context(0);
        let bytes = plaintext_refusal(&ctx, Refusal::Startups);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("SSH-2.0-"), "{text}");
        assert!(text.contains(Refusal::Startups.message()), "{text}");
    }
}
