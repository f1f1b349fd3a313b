//! Upstream connections the proxy holds for clients that have not authenticated yet,
//! counted per upstream server across the whole process, under one cap.
//!
//! Every such connection is one of the server's unauthenticated connections, which sshd
//! caps (`MaxStartups`, 10:30:100 by default: beyond 10 it starts dropping new ones).
//! Clients that name a real user and then stall (a wrong password and silence, a prompt
//! never answered) would otherwise take those slots from everyone. So the proxy holds at
//! most `limits.preauth_upstream_connections` of them per server, for every method:
//!
//! - a public-key login whose signature has been checked ([`Claim::Proven`]) may use
//!   any slot, and is served first when it has to wait;
//! - password and keyboard-interactive logins and the early connection of a public-key
//!   login that has not signed yet ([`Claim::Unproven`]) may use all but [`reserved`] of
//!   them. So whatever unproven clients do, a proven login finds a slot as soon as
//!   another proven login's upstream login is done (milliseconds);
//! - warm connections ([`Claim::Spare`]) may use half of the unproven ones.
//!
//! A slot is a [`PreauthSlot`] value: dropping it (the login ended, either way, or the
//! upstream login succeeded) frees it and hands it to the next waiter. Waiting is
//! cancel-safe, and works across shards: the state is behind one short mutex and waiters
//! are woken by their task's waker, which glommio delivers across threads.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

/// Who asks for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The client proved who it is (a checked public-key signature).
    Proven,
    /// The client proved nothing yet.
    Unproven,
    /// No client at all: a warm connection (`src/proxy/warm.rs`). It may only use half of the
    /// unproven slots, so that clients always find some, on every shard.
    Spare,
}

/// Slots of `limit` that only proven logins may use: a quarter, at least one (none when
/// the limit is 1: then password logins could never connect).
pub fn reserved(limit: usize) -> usize {
    match limit {
        0 | 1 => 0,
        _ => (limit / 4).max(1),
    }
}

/// The slots of every upstream server, shared by all shards.
#[derive(Default)]
pub struct PreauthCounts(Mutex<HashMap<String, Server>>);

#[derive(Default)]
struct Server {
    /// The cap as last asked with (a reload may change it).
    limit: usize,
    held: usize,
    /// Waiting claims, oldest first; proven ones are served before any unproven one.
    waiters: VecDeque<Arc<Waiter>>,
}

struct Waiter {
    claim: Claim,
    state: Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    granted: bool,
    waker: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Server {
    fn room(&self, claim: Claim) -> bool {
        let limit = self.limit;
        let cap = match claim {
            Claim::Proven => limit,
            Claim::Unproven => limit - reserved(limit),
            Claim::Spare => (limit - reserved(limit)) / 2,
        };
        self.held < cap
    }

    /// Grants waiting claims while there is room, proven ones first. Returns the wakers
    /// to wake once the lock is released.
    fn grant_waiters(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        loop {
            let next = self
                .waiters
                .iter()
                .position(|w| w.claim == Claim::Proven)
                .or(if self.waiters.is_empty() {
                    None
                } else {
                    Some(0)
                });
            let Some(i) = next else { break };
            if !self.room(self.waiters[i].claim) {
                break;
            }
            let Some(w) = self.waiters.remove(i) else {
                break;
            };
            self.held += 1;
            let mut st = lock(&w.state);
            st.granted = true;
            wake.extend(st.waker.take());
        }
        wake
    }

    fn has_waiting(&self, claim: Claim) -> bool {
        match claim {
            // A proven claim only queues behind other proven ones.
            Claim::Proven => self.waiters.iter().any(|w| w.claim == Claim::Proven),
            Claim::Unproven | Claim::Spare => !self.waiters.is_empty(),
        }
    }
}

impl PreauthCounts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A slot for `addr` now, if there is room for `claim` under `limit` and no earlier
    /// claim of the same rank is waiting (a try never jumps the queue).
    pub fn try_take(
        self: &Arc<Self>,
        addr: &str,
        claim: Claim,
        limit: usize,
    ) -> Option<PreauthSlot> {
        let mut servers = lock(&self.0);
        let server = servers.entry(addr.to_owned()).or_default();
        server.limit = limit;
        if server.has_waiting(claim) || !server.room(claim) {
            if server.held == 0 && server.waiters.is_empty() {
                servers.remove(addr);
            }
            return None;
        }
        server.held += 1;
        Some(self.slot(addr))
    }

    /// A slot for `addr`, waiting for one in turn. Never resolves while `limit` leaves
    /// no room for `claim` at all (a limit of 0); the caller's deadline ends the wait.
    pub async fn take(self: &Arc<Self>, addr: &str, claim: Claim, limit: usize) -> PreauthSlot {
        if let Some(slot) = self.try_take(addr, claim, limit) {
            return slot;
        }
        let waiter = Arc::new(Waiter {
            claim,
            state: Mutex::default(),
        });
        {
            let mut servers = lock(&self.0);
            let server = servers.entry(addr.to_owned()).or_default();
            server.limit = limit;
            server.waiters.push_back(waiter.clone());
        }
        // Taken out of the queue (or its granted slot handed on) if this future is
        // dropped before it resolves.
        let mut queued = Queued {
            counts: self.clone(),
            addr,
            waiter: Some(waiter.clone()),
        };
        // A slot may have been freed between the try and the queueing.
        self.regrant(addr);
        poll_fn(|cx| {
            let mut st = lock(&waiter.state);
            if st.granted {
                Poll::Ready(())
            } else {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        queued.waiter = None;
        self.slot(addr)
    }

    fn slot(self: &Arc<Self>, addr: &str) -> PreauthSlot {
        PreauthSlot {
            counts: self.clone(),
            addr: addr.to_owned(),
        }
    }

    fn regrant(&self, addr: &str) {
        let wake = match lock(&self.0).get_mut(addr) {
            Some(server) => server.grant_waiters(),
            None => return,
        };
        wake.into_iter().for_each(Waker::wake);
    }

    fn release(&self, addr: &str) {
        let wake = {
            let mut servers = lock(&self.0);
            let Some(server) = servers.get_mut(addr) else {
                return;
            };
            server.held = server.held.saturating_sub(1);
            let wake = server.grant_waiters();
            if server.held == 0 && server.waiters.is_empty() {
                servers.remove(addr);
            }
            wake
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Slots held for `addr` now.
    #[cfg(test)]
    pub fn held(&self, addr: &str) -> usize {
        lock(&self.0).get(addr).map_or(0, |s| s.held)
    }

    /// Claims waiting for a slot for `addr` now.
    #[cfg(test)]
    pub fn waiting(&self, addr: &str) -> usize {
        lock(&self.0).get(addr).map_or(0, |s| s.waiters.len())
    }
}

/// Removes a waiter whose future was dropped; gives back a slot granted meanwhile.
struct Queued<'a> {
    counts: Arc<PreauthCounts>,
    addr: &'a str,
    waiter: Option<Arc<Waiter>>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let granted = {
            let mut servers = lock(&self.counts.0);
            if let Some(server) = servers.get_mut(self.addr) {
                server.waiters.retain(|w| !Arc::ptr_eq(w, &waiter));
            }
            lock(&waiter.state).granted
        };
        if granted {
            self.counts.release(self.addr);
        } else {
            // The queue head may have been what held the others back.
            self.counts.regrant(self.addr);
            let mut servers = lock(&self.counts.0);
            if servers
                .get(self.addr)
                .is_some_and(|s| s.held == 0 && s.waiters.is_empty())
            {
                servers.remove(self.addr);
            }
        }
    }
}

/// One counted connection; released when dropped.
pub struct PreauthSlot {
    counts: Arc<PreauthCounts>,
    addr: String,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        self.counts.release(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_are_capped_per_server_and_released_on_drop() {
        let counts = PreauthCounts::new();
        let a1 = counts.try_take("a:22", Claim::Proven, 2).expect("first");
        let a2 = counts.try_take("a:22", Claim::Proven, 2).expect("second");
        assert!(counts.try_take("a:22", Claim::Proven, 2).is_none());
        let b = counts
            .try_take("b:22", Claim::Proven, 2)
            .expect("another server has its own");
        assert_eq!(counts.held("a:22"), 2);
        drop(a1);
        assert_eq!(counts.held("a:22"), 1);
        let a3 = counts
            .try_take("a:22", Claim::Proven, 2)
            .expect("a released slot is free again");
        drop((a2, a3, b));
        assert_eq!(counts.held("a:22"), 0);
        assert!(lock(&counts.0).is_empty());
        assert!(
            counts.try_take("a:22", Claim::Proven, 0).is_none(),
            "limit 0: never"
        );
        assert!(lock(&counts.0).is_empty());
    }

    #[test]
    fn unproven_claims_leave_the_reserve_to_proven_ones() {
        let counts = PreauthCounts::new();
        assert_eq!(reserved(8), 2);
        let unproven: Vec<_> = (0..6)
            .map(|_| counts.try_take("a:22", Claim::Unproven, 8).expect("room"))
            .collect();
        assert!(counts.try_take("a:22", Claim::Unproven, 8).is_none());
        let p1 = counts.try_take("a:22", Claim::Proven, 8).expect("reserved");
        let p2 = counts.try_take("a:22", Claim::Proven, 8).expect("reserved");
        assert!(
            counts.try_take("a:22", Claim::Proven, 8).is_none(),
            "cap holds"
        );
        assert_eq!(counts.held("a:22"), 8);
        drop((unproven, p1, p2));
        assert_eq!((reserved(2), reserved(3), reserved(7)), (1, 1, 1));
        // Warm connections take at most half of the unproven slots.
        let spare: Vec<_> = (0..3)
            .map(|_| counts.try_take("b:22", Claim::Spare, 8).expect("room"))
            .collect();
        assert!(counts.try_take("b:22", Claim::Spare, 8).is_none());
        assert!(counts.try_take("b:22", Claim::Unproven, 8).is_some());
        drop(spare);
        // A cap of 1 has no reserve: a password login still gets the only slot.
        assert_eq!(reserved(1), 0);
        assert!(counts.try_take("a:22", Claim::Unproven, 1).is_some());
    }

    /// Runs `f` on a single-threaded glommio executor.
    fn on_shard(f: impl std::future::Future<Output = ()> + 'static) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(f);
    }

    #[test]
    fn waiters_get_freed_slots_proven_first() {
        on_shard(async {
            let counts = PreauthCounts::new();
            let held = counts.try_take("a:22", Claim::Proven, 1).unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for (name, claim) in [
                ("unproven-1", Claim::Unproven),
                ("proven", Claim::Proven),
                ("unproven-2", Claim::Unproven),
            ] {
                let (counts, order) = (counts.clone(), order.clone());
                tasks.push(glommio::spawn_local(async move {
                    let slot = counts.take("a:22", claim, 1).await;
                    lock(&order).push(name);
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    drop(slot);
                }));
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(counts.waiting("a:22"), 3);
            drop(held);
            for t in tasks {
                t.await;
            }
            assert_eq!(*lock(&order), ["proven", "unproven-1", "unproven-2"]);
            assert_eq!(counts.held("a:22"), 0);
            assert!(lock(&counts.0).is_empty());
        });
    }

    #[test]
    fn a_dropped_waiter_leaves_the_queue_and_passes_a_granted_slot_on() {
        on_shard(async {
            let counts = PreauthCounts::new();
            let held = counts.try_take("a:22", Claim::Unproven, 1).unwrap();
            // Gives up before a slot is free.
            let gave_up = glommio::timer::timeout(Duration::from_millis(5), async {
                Ok(counts.take("a:22", Claim::Unproven, 1).await)
            })
            .await;
            assert!(gave_up.is_err());
            assert_eq!(counts.waiting("a:22"), 0);
            // Granted, but dropped before it ran: the slot goes to the next one.
            let first = glommio::spawn_local({
                let counts = counts.clone();
                async move { drop(counts.take("a:22", Claim::Unproven, 1).await) }
            });
            let second = glommio::spawn_local({
                let counts = counts.clone();
                async move { counts.take("a:22", Claim::Unproven, 1).await }
            });
            glommio::timer::sleep(Duration::from_millis(1)).await;
            drop(held);
            first.await;
            let slot = second.await;
            assert_eq!(counts.held("a:22"), 1);
            drop(slot);
            assert!(lock(&counts.0).is_empty());
        });
    }

    #[test]
    fn a_slot_freed_on_another_thread_wakes_the_waiter() {
        let counts = PreauthCounts::new();
        let held = counts.try_take("a:22", Claim::Unproven, 1).unwrap();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let c = counts.clone();
        on_shard(async move {
            let slot = glommio::timer::timeout(Duration::from_secs(5), async {
                Ok(c.take("a:22", Claim::Unproven, 1).await)
            })
            .await
            .expect("woken across threads");
            drop(slot);
        });
        other.join().unwrap();
        assert_eq!(counts.held("a:22"), 0);
    }
}
