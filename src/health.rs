//! Whether this process should get new connections: what `/healthz` and `/readyz` on
//! the metrics endpoint answer, for load balancers and orchestrators.
//!
//! `/healthz` is 200 while the process runs. `/readyz` is 200 when all of these hold,
//! else 503 with the first reason that does not:
//! - not draining (shutdown, or an upgrade handed the listeners to a new process);
//! - every listener bound and every shard accepting;
//! - every `[[providers]]` backend of the running configuration answered its latest
//!   lookup or probe within its timeout, or failed longer ago than
//!   [`RECENT`](crate::providers::health::RECENT) (see [`crate::providers::health`]).
//!
//! One [`Health`] per process, shared by the main thread, the shards, the providers and
//! the metrics endpoint. Plain atomics and short locks: nothing on a session's path
//! waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Readiness;
use crate::providers::health::ProviderWatch;

/// The process's readiness, written by the server and the providers.
#[derive(Debug, Default)]
pub struct Health {
    listening: AtomicBool,
    draining: AtomicBool,
    /// An upgrade handed the listeners to a new process, which accepts on them now.
    handed_over: AtomicBool,
    providers: Arc<ProviderWatch>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Every listener is bound and every shard accepts.
    pub fn set_listening(&self, yes: bool) {
        self.listening.store(yes, Ordering::Release);
    }

    /// The process stopped accepting (shutdown, or an upgrade handed its listeners to a
    /// new process): load balancers should send new connections elsewhere.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// An upgrade handed the listeners to a new process that accepts on them: this
    /// process drains, but the host's listeners are served. The metrics endpoint stays
    /// this process's until it exits (the new one binds it then), and answers ready
    /// meanwhile, so that a balancer does not take the host out for every upgrade.
    pub fn set_handed_over(&self) {
        self.handed_over.store(true, Ordering::Release);
        self.set_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Where the providers of each configuration report (pass it to
    /// [`crate::providers::chain::factory`], at start and on every reload).
    pub fn providers(&self) -> &Arc<ProviderWatch> {
        &self.providers
    }

    /// `Ok` when new connections are welcome; else why not, in one line.
    pub fn ready(&self) -> Result<(), String> {
        self.ready_at(Instant::now())
    }

    /// `Ok` when new connections are welcome at `now`; else why not, in one line.
    pub fn ready_at(&self, now: Instant) -> Result<(), String> {
        if self.handed_over.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.is_draining() {
            return Err("draining".into());
        }
        if !self.listening.load(Ordering::Acquire) {
            return Err("not listening yet".into());
        }
        self.providers.check(now)
    }
}

impl Readiness for Health {
    fn ready(&self) -> Result<(), String> {
        Health::ready(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::health::{Outcome, ProviderHealth, RECENT};
    use std::time::Duration;

    #[test]
    fn draining_wins_then_listening_then_providers() {
        let t = Instant::now();
        let health = Health::new();
        assert_eq!(health.ready_at(t), Err("not listening yet".into()));
        health.set_listening(true);
        assert_eq!(health.ready_at(t), Ok(()));

        let db = ProviderHealth::new("sqlite#1 (/x.db)".into(), Duration::from_secs(1));
        health.providers().replace(vec![db.clone()]);
        db.record(t, Outcome::Failed("unable to open database file".into()));
        assert_eq!(
            health.ready_at(t),
            Err("provider sqlite#1 (/x.db) failed: unable to open database file".into())
        );
        assert_eq!(health.ready_at(t + RECENT + Duration::from_secs(1)), Ok(()));

        health.set_draining();
        assert_eq!(health.ready_at(t), Err("draining".into()));
        assert!(health.is_draining());
        // After an upgrade the successor serves the listeners: the host is ready.
        health.set_handed_over();
        assert_eq!(health.ready_at(t), Ok(()));
    }
}
