//! Whether this process should get new connections: what `/healthz` and `/readyz` on
//! the metrics endpoint answer, for load balancers and orchestrators.
//!
//! One [`Health`] per process, shared by the main thread, the shards and the providers.
//! Plain atomics: nothing on a session's path waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The process's readiness, written by the server and the providers.
#[derive(Debug, Default)]
pub struct Health {
    listening: AtomicBool,
    draining: AtomicBool,
}

#[allow(dead_code)] // TODO(issue 13): read by /readyz, being written
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

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `Ok` when new connections are welcome; else why not, in one line.
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Acquire) {
            return Err("draining".into());
        }
        if !self.listening.load(Ordering::Acquire) {
            return Err("not listening yet".into());
        }
        Ok(())
    }
}
