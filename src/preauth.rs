//! Upstream connections made for clients that have not authenticated yet, counted per
//! upstream server across the whole process.
//!
//! The proxy connects to the user's server as soon as the client names the user, so that
//! the server's connection set-up overlaps the client's authentication. Each such
//! connection is one of the server's unauthenticated connections, which sshd caps
//! (`MaxStartups`, 10:30:100 by default: beyond 10 it starts dropping new ones). Clients
//! that name a real user and then never authenticate would otherwise take those slots
//! from everyone. Beyond `limits.preauth_upstream_connections` for a server, a public-key
//! login connects after the client's signature has been checked instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The counts, shared by all shards (one short lock per login).
#[derive(Default)]
pub struct PreauthCounts(Mutex<HashMap<String, usize>>);

impl PreauthCounts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A slot for one more connection to `addr`, if fewer than `limit` are held.
    pub fn try_take(self: &Arc<Self>, addr: &str, limit: usize) -> Option<PreauthSlot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(addr.to_owned()).or_default();
        if *n >= limit {
            if *n == 0 {
                counts.remove(addr);
            }
            return None;
        }
        *n += 1;
        Some(PreauthSlot {
            counts: self.clone(),
            addr: addr.to_owned(),
        })
    }

    /// Slots held for `addr` now.
    pub fn held(&self, addr: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(addr).copied().unwrap_or(0)
    }
}

/// One counted connection; released when dropped (the login ended, either way).
pub struct PreauthSlot {
    counts: Arc<PreauthCounts>,
    addr: String,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_server_and_released_on_drop() {
        let counts = PreauthCounts::new();
        let a1 = counts.try_take("a:22", 2).expect("first");
        let a2 = counts.try_take("a:22", 2).expect("second");
        assert!(counts.try_take("a:22", 2).is_none());
        let b = counts
            .try_take("b:22", 2)
            .expect("another server has its own");
        assert_eq!(counts.held("a:22"), 2);
        drop(a1);
        assert_eq!(counts.held("a:22"), 1);
        let a3 = counts
            .try_take("a:22", 2)
            .expect("a released slot is free again");
        drop((a2, a3, b));
        assert_eq!(counts.held("a:22"), 0);
        assert!(counts.0.lock().unwrap().is_empty());
        assert!(counts.try_take("a:22", 0).is_none(), "limit 0: never");
        assert!(counts.0.lock().unwrap().is_empty());
    }
}
