//! The proxy's state on one shard: what every session of the shard shares (buffer
//! pool, counters, warm connections, admission) and the bookkeeping of live sessions.
//! Built by the server (`src/server.rs`) once per shard; never crosses threads.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use sshr_protocol::hostkey::PrivateKey;

use crate::audit::Audit;
use crate::config::Config;
use crate::core::algorithms::CpuCrypto;
use crate::hooks::Hooks;
use crate::io::pool::{BufferPool, HandshakeBudget, RELAY_BUFFER_SIZE};
use crate::metrics::ShardMetrics;
use crate::proxy::admission::Admission;
use crate::proxy::warm::WarmPool;
use crate::rt::StopSignal;

/// Everything a session needs from its shard. Shared by the sessions of one shard as an
/// `Rc`; never crosses threads.
pub struct ShardContext {
    /// This shard's index.
    pub index: usize,
    /// Relay buffers of this shard, capped at `limits.buffer_pool_bytes_per_shard`.
    pub pool: BufferPool,
    /// This shard's counters (plain cells, published about once a second).
    pub metrics: ShardMetrics,
    /// Upstream connections made ready for the next login (`[warm_upstreams]`).
    pub warm: Rc<WarmPool>,
    /// Receive buffer memory that this shard's unauthenticated connections hold beyond
    /// their inline buffers, capped at `limits.preauth_buffer_bytes_per_shard`.
    pub handshake_budget: HandshakeBudget,
    /// What the whole proxy knows about unauthenticated connections (all shards).
    pub admission: Arc<Admission>,
    /// The audit log (`audit_log`), shared by all shards; `None` when it is off.
    pub audit: Option<Arc<Audit>>,
    /// The CPU's crypto instructions, which decide the upstream leg's cipher.
    pub cpu: CpuCrypto,
    /// The keys of `upstream_key`, in order: offered upstream after the key the
    /// `fetch_private_key` hook gives (shared by all shards; fixed until a restart).
    pub upstream_keys: Arc<[PrivateKey]>,
    /// One stop signal per running session (see [`ShardContext::stop_sessions`]).
    stop_signals: RefCell<Vec<Weak<StopSignal>>>,
    config: RefCell<Arc<Config>>,
    hooks: RefCell<Rc<dyn Hooks>>,
    /// The proxy's host keys, in order of preference (shared by all shards, swapped on
    /// reload).
    host_keys: RefCell<Arc<[PrivateKey]>>,
    live_sessions: Cell<usize>,
    next_session: Cell<u64>,
    sessions_stopped: Cell<bool>,
}

/// Session ids carry the shard index in their high 16 bits, so they are unique in the
/// process without any coordination between shards.
const SESSION_ID_SHARD_SHIFT: u32 = 48;

impl ShardContext {
    /// A context with everything given; the runtime builds one per shard. Public so that
    /// session code can be tested on a single executor without the whole server.
    pub fn new(
        index: usize,
        config: Arc<Config>,
        hooks: Rc<dyn Hooks>,
        host_keys: Arc<[PrivateKey]>,
        admission: Arc<Admission>,
    ) -> Self {
        let pool = BufferPool::new(RELAY_BUFFER_SIZE, config.limits.buffer_pool_bytes_per_shard);
        let handshake_budget = HandshakeBudget::new(config.limits.preauth_buffer_bytes_per_shard);
        ShardContext {
            index,
            host_keys: RefCell::new(host_keys),
            pool,
            metrics: ShardMetrics::new(index),
            warm: WarmPool::new(),
            handshake_budget,
            admission,
            audit: None,
            cpu: CpuCrypto::detect(),
            upstream_keys: Arc::from(Vec::new()),
            stop_signals: RefCell::new(Vec::new()),
            config: RefCell::new(config),
            hooks: RefCell::new(hooks),
            live_sessions: Cell::new(0),
            // A random start: ids of different processes (a fleet's audit logs, a restart)
            // rarely meet.
            next_session: Cell::new(rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u64),
            sessions_stopped: Cell::new(false),
        }
    }

    /// Sessions of this shard write to `audit` (the server opens it once for all shards).
    pub fn with_audit(mut self, audit: Option<Arc<Audit>>) -> Self {
        self.audit = audit;
        self
    }

    /// Sessions of this shard offer `keys` upstream after the hook's (see
    /// [`ShardContext::upstream_keys`]).
    pub fn with_upstream_keys(mut self, keys: Arc<[PrivateKey]>) -> Self {
        self.upstream_keys = keys;
        self
    }

    /// The current configuration. A session should take it once at its start and keep
    /// that snapshot: a reload swaps the shard's copy but never changes a snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The current hooks (rebuilt by the factory on reload; take it once per session).
    pub fn hooks(&self) -> Rc<dyn Hooks> {
        self.hooks.borrow().clone()
    }

    /// The current host keys (take them once per connection).
    pub fn host_keys(&self) -> Arc<[PrivateKey]> {
        self.host_keys.borrow().clone()
    }

    /// Sessions running on this shard right now.
    pub fn live_sessions(&self) -> usize {
        self.live_sessions.get()
    }

    /// A new id for logs: unique in the process, shard index in the high 16 bits.
    pub fn next_session_id(&self) -> u64 {
        let n = self.next_session.get().wrapping_add(1) & ((1 << SESSION_ID_SHARD_SHIFT) - 1);
        self.next_session.set(n);
        ((self.index as u64) << SESSION_ID_SHARD_SHIFT) | n
    }

    /// Tell every session still running to say why to both peers and end (the
    /// shutdown grace period is over).
    pub fn stop_sessions(&self) {
        self.sessions_stopped.set(true);
        let signals = std::mem::take(&mut *self.stop_signals.borrow_mut());
        for signal in signals.iter().filter_map(Weak::upgrade) {
            signal.stop();
        }
    }

    /// A stop signal for a new session: it fires when [`ShardContext::stop_sessions`] is
    /// called (at once if it already was).
    pub fn stop_signal(&self) -> Rc<StopSignal> {
        let signal = Rc::new(StopSignal::default());
        if self.sessions_stopped.get() {
            signal.stop();
            return signal;
        }
        let mut signals = self.stop_signals.borrow_mut();
        // Forget the signals of sessions that ended, now and then (amortised O(1)).
        if signals.len() >= 64 && signals.len() >= 2 * self.live_sessions() {
            signals.retain(|w| w.strong_count() > 0);
        }
        signals.push(Rc::downgrade(&signal));
        signal
    }

    pub(crate) fn reload(
        &self,
        config: Arc<Config>,
        hooks: Rc<dyn Hooks>,
        host_keys: Arc<[PrivateKey]>,
    ) {
        *self.config.borrow_mut() = config;
        *self.hooks.borrow_mut() = hooks;
        *self.host_keys.borrow_mut() = host_keys;
    }
}

/// Counts a session as live for as long as it exists: created at accept, moved into the
/// session task, dropped however the session ends (return, error, panic, cancellation
/// at shutdown).
pub struct SessionGuard {
    ctx: Rc<ShardContext>,
}

impl SessionGuard {
    pub fn new(ctx: &Rc<ShardContext>) -> Self {
        ctx.live_sessions.set(ctx.live_sessions.get() + 1);
        ctx.metrics.session_started();
        SessionGuard { ctx: ctx.clone() }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let live = &self.ctx.live_sessions;
        live.set(live.get().saturating_sub(1));
        self.ctx.metrics.session_ended();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hooks::{HookContext, HookError, Upstream};
    use crate::rt::{sleep, timeout};
    use sshr_protocol::hostkey::PublicKey;

    pub(crate) struct NoUsers;

    #[async_trait::async_trait(?Send)]
    impl Hooks for NoUsers {
        async fn find_upstream(&self, _: &HookContext) -> Result<Option<Upstream>, HookError> {
            Ok(None)
        }
        async fn fetch_authorized_keys(
            &self,
            _: &HookContext,
        ) -> Result<Vec<PublicKey>, HookError> {
            Ok(Vec::new())
        }
        async fn fetch_private_key(
            &self,
            _: &HookContext,
            _: &Upstream,
        ) -> Result<Rc<PrivateKey>, HookError> {
            Err(HookError::Unavailable("none".into()))
        }
    }

    pub(crate) fn context(index: usize) -> Rc<ShardContext> {
        let key = || PrivateKey::generate_ed25519(&mut rand_core::OsRng);
        Rc::new(ShardContext::new(
            index,
            Arc::new(Config::builtin().unwrap()),
            Rc::new(NoUsers),
            vec![key()].into(),
            Admission::new(),
        ))
    }

    #[test]
    fn session_ids_carry_the_shard_and_are_unique() {
        let (a, b) = (context(2), context(3));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (x, y) = (a.next_session_id(), b.next_session_id());
            assert_eq!(x >> SESSION_ID_SHARD_SHIFT, 2);
            assert_eq!(y >> SESSION_ID_SHARD_SHIFT, 3);
            assert!(seen.insert(x) && seen.insert(y));
        }
    }

    #[test]
    fn stop_signals_reach_every_running_session_and_later_ones() {
        let ctx = context(0);
        let guards: Vec<_> = (0..100).map(|_| SessionGuard::new(&ctx)).collect();
        let signals: Vec<_> = (0..100).map(|_| ctx.stop_signal()).collect();
        // Sessions that ended leave no signal behind for long.
        for _ in 0..1000 {
            drop(ctx.stop_signal());
        }
        assert!(ctx.stop_signals.borrow().len() <= 300);
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        let first = signals[0].clone();
        ex.run(async move {
            let waiting = glommio::spawn_local(async move { first.stopped().await });
            sleep(Duration::from_millis(5)).await;
            ctx.stop_sessions();
            timeout(Duration::from_secs(5), waiting)
                .await
                .expect("woken");
            assert!(signals.iter().all(|s| s.is_stopped()));
            assert!(
                ctx.stop_signal().is_stopped(),
                "a session started after the stop"
            );
            drop(guards);
        });
    }

    #[test]
    fn session_guard_counts_however_the_session_ends() {
        let ctx = context(0);
        let a = SessionGuard::new(&ctx);
        let b = SessionGuard::new(&ctx);
        assert_eq!(ctx.live_sessions(), 2);
        drop(a);
        assert_eq!(ctx.live_sessions(), 1);
        let panicking = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = b;
            panic!("session bug");
        }));
        assert!(panicking.is_err());
        assert_eq!(ctx.live_sessions(), 0, "unwinding releases the count");
    }

    #[test]
    fn pool_follows_the_configured_cap() {
        let ctx = context(0);
        let cap = ctx.config().limits.buffer_pool_bytes_per_shard;
        assert_eq!(ctx.pool.capacity(), cap / RELAY_BUFFER_SIZE);
        assert_eq!(ctx.pool.buffer_size(), RELAY_BUFFER_SIZE);
    }

    #[test]
    fn reload_swaps_the_snapshot_but_not_earlier_ones() {
        let ctx = context(0);
        let before = ctx.config();
        let mut next = Config::builtin().unwrap();
        next.limits.max_sessions_per_shard = 7;
        let keys = ctx.host_keys();
        ctx.reload(Arc::new(next), Rc::new(NoUsers), keys);
        assert_eq!(ctx.config().limits.max_sessions_per_shard, 7);
        assert_eq!(before.limits.max_sessions_per_shard, 10_000);
    }
}
