//! Warm upstream connections: connected, key exchange done, `ssh-userauth` accepted, not
//! logged in, kept per shard for the next login to the same server.
//!
//! Most of a proxied login's wait is the upstream's own connection set-up (sshd forks and
//! re-executes itself for every connection, then runs its key exchange): 20 to 60 ms on
//! loopback. A warm connection has done all of that before the user arrives, and no user
//! has been named on it yet, so it serves any account on that server.
//!
//! The pool fills on demand: after a login to a server, one connection (per
//! `[warm_upstreams] per_upstream`) is made ready for the next login to it. An unused
//! connection is closed after `idle_secs`, well within sshd's LoginGraceTime (120 s by
//! default); until then it is one of the server's unauthenticated connections, which
//! count toward its MaxStartups (10 by default before it starts dropping). A connection
//! the server has closed meanwhile is noticed when it is taken and never handed out.
//!
//! A connection is only reused for the same address, host-key policy and cipher
//! preference it was made with: the host key was checked under that policy, and the
//! cipher matches the client leg so that the relay re-seals packets in place.
//!
//! Each warm connection holds one of its server's slots of
//! `limits.preauth_upstream_connections` (`src/proxy/preauth.rs`), taken as a spare claim: at
//! most half of the slots unproven clients may use, never the ones kept for proven
//! logins, so the proxy as a whole never holds more unauthenticated connections to a
//! server than that cap and clients on every shard still find slots. The slot goes with
//! the connection to the login that takes it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use glommio::timer::sleep;
use sshr_protocol::transport::Config as TransportConfig;
use tracing::{debug, Instrument};

use crate::config::WarmUpstreams;
use crate::core::refusal::Refusal;
use crate::core::values::CipherPreference;
use crate::hooks::{HostKeyPolicy, Upstream};
use crate::proxy::preauth::{Claim, PreauthCounts, PreauthSlot};
use crate::proxy::upstream::{self, UpstreamConn};

struct Warm {
    id: u64,
    host_key: HostKeyPolicy,
    prefer: CipherPreference,
    conn: UpstreamConn,
    slot: Option<PreauthSlot>,
}

/// A warm connection handed to a login, with the slot it holds (`None` when the cap is
/// off: `preauth_upstream_connections = 0`).
pub struct Taken {
    pub conn: UpstreamConn,
    pub slot: Option<PreauthSlot>,
}

struct Making {
    id: u64,
    addr: String,
    prefer: CipherPreference,
    host_key: HostKeyPolicy,
}

/// One shard's warm connections, by upstream address. Shard-local: no locks.
#[derive(Default)]
pub struct WarmPool {
    by_addr: RefCell<HashMap<String, Vec<Warm>>>,
    /// Connections being made (address, cipher preference, host-key policy), so that a
    /// burst of logins does not make one each.
    making: RefCell<Vec<Making>>,
    /// Set at shutdown: nothing is held any more.
    closed: Cell<bool>,
    held: Cell<usize>,
    next_id: Cell<u64>,
    /// Taken warm (a login did not wait for the upstream's set-up) and not.
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl WarmPool {
    pub fn new() -> Rc<Self> {
        Rc::new(WarmPool::default())
    }

    /// A ready connection to `upstream` asked for `prefer`, if one is held and still open.
    pub fn take(&self, upstream: &Upstream, prefer: CipherPreference) -> Option<Taken> {
        let found = self.take_open(upstream, prefer);
        match found {
            Some(_) => self.hits.set(self.hits.get() + 1),
            None => self.misses.set(self.misses.get() + 1),
        }
        found
    }

    fn take_open(&self, upstream: &Upstream, prefer: CipherPreference) -> Option<Taken> {
        let mut by_addr = self.by_addr.borrow_mut();
        let list = by_addr.get_mut(&upstream.addr)?;
        let mut found = None;
        while let Some(i) = list
            .iter()
            .position(|w| w.prefer == prefer && same_policy(&w.host_key, &upstream.host_key))
        {
            let w = list.swap_remove(i);
            self.held.set(self.held.get() - 1);
            // The server may have closed it (LoginGraceTime, a restart): then the socket
            // reads end-of-file, or has its DISCONNECT waiting.
            if w.conn.rx.is_empty() && w.conn.leg.is_idle_and_open() {
                found = Some(Taken {
                    conn: w.conn,
                    slot: w.slot,
                });
                break;
            }
            debug!(upstream = %upstream.addr, "warm upstream connection was closed by the server");
        }
        if list.is_empty() {
            by_addr.remove(&upstream.addr);
        }
        found
    }

    /// Make connections to `upstream` until `per_upstream` are held or being made (at most
    /// `max_per_shard` in all), in the background; none when the server has no
    /// unproven slot free (`slot_limit`: `limits.preauth_upstream_connections`).
    #[allow(clippy::too_many_arguments)]
    pub fn refill(
        self: &Rc<Self>,
        settings: &WarmUpstreams,
        upstream: &Upstream,
        config: Arc<TransportConfig>,
        prefer: CipherPreference,
        connect_timeout: Duration,
        slots: &Arc<PreauthCounts>,
        slot_limit: usize,
    ) {
        if self.closed.get() {
            return;
        }
        let held_here = self.by_addr.borrow().get(&upstream.addr).map_or(0, |list| {
            list.iter()
                .filter(|w| w.prefer == prefer && same_policy(&w.host_key, &upstream.host_key))
                .count()
        });
        let making_here = self
            .making
            .borrow()
            .iter()
            .filter(|m| {
                m.addr == upstream.addr
                    && m.prefer == prefer
                    && same_policy(&m.host_key, &upstream.host_key)
            })
            .count();
        let in_flight = self.making.borrow().len();
        if held_here + making_here >= settings.per_upstream
            || self.held.get() + in_flight >= settings.max_per_shard
        {
            return;
        }
        let slot = match slot_limit {
            0 => None,
            _ => match slots.try_take(&upstream.addr, Claim::Spare, slot_limit) {
                Some(slot) => Some(slot),
                None => return,
            },
        };
        let making_id = self.next_id.get();
        self.next_id.set(making_id + 1);
        self.making.borrow_mut().push(Making {
            id: making_id,
            addr: upstream.addr.clone(),
            prefer,
            host_key: upstream.host_key.clone(),
        });
        let pool = Rc::downgrade(self);
        let upstream = upstream.clone();
        let idle = settings.idle;
        // Not inside the session's span: the connection outlives the session that asked.
        let span = tracing::debug_span!(parent: None, "warm", upstream = %upstream.addr);
        glommio::spawn_local(
            async move {
                let made = upstream::connect(
                    &upstream,
                    config,
                    prefer,
                    crate::rt::seed(),
                    connect_timeout,
                )
                .await;
                let Some(pool) = pool.upgrade() else { return };
                pool.making.borrow_mut().retain(|m| m.id != making_id);
                match made {
                    Ok(_) if pool.closed.get() => {}
                    Ok(conn) => pool.hold(upstream, prefer, conn, slot, idle),
                    Err(e) => debug!(error = %e, "warm upstream connection failed"),
                }
            }
            .instrument(span),
        )
        .detach();
    }

    fn hold(
        self: Rc<Self>,
        upstream: Upstream,
        prefer: CipherPreference,
        conn: UpstreamConn,
        slot: Option<PreauthSlot>,
        idle: Duration,
    ) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.by_addr
            .borrow_mut()
            .entry(upstream.addr.clone())
            .or_default()
            .push(Warm {
                id,
                host_key: upstream.host_key,
                prefer,
                conn,
                slot,
            });
        self.held.set(self.held.get() + 1);
        debug!("warm upstream connection ready");
        // Close it if nobody took it in time.
        let pool: Weak<WarmPool> = Rc::downgrade(&self);
        let addr = upstream.addr;
        glommio::spawn_local(async move {
            sleep(idle).await;
            let Some(pool) = pool.upgrade() else { return };
            let expired = pool.remove(&addr, id);
            if let Some(w) = expired {
                debug!(upstream = %addr, "closing unused warm upstream connection");
                w.conn.leg.refuse(Refusal::Idle).await;
            }
        })
        .detach();
    }

    fn remove(&self, addr: &str, id: u64) -> Option<Warm> {
        let mut by_addr = self.by_addr.borrow_mut();
        let list = by_addr.get_mut(addr)?;
        let i = list.iter().position(|w| w.id == id)?;
        let w = list.swap_remove(i);
        if list.is_empty() {
            by_addr.remove(addr);
        }
        self.held.set(self.held.get() - 1);
        Some(w)
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// (taken warm, not available) so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Close every held connection and hold none from now on (shutdown).
    pub fn close(&self) {
        self.closed.set(true);
        self.clear();
    }

    /// Close every held connection (a reload: they were made under the old settings).
    pub fn clear(&self) {
        let all: Vec<Warm> = self
            .by_addr
            .borrow_mut()
            .drain()
            .flat_map(|(_, list)| list)
            .collect();
        self.held.set(0);
        drop(all);
    }
}

fn same_policy(a: &HostKeyPolicy, b: &HostKeyPolicy) -> bool {
    match (a, b) {
        (HostKeyPolicy::Unpinned, HostKeyPolicy::Unpinned) => true,
        (HostKeyPolicy::Pinned(a), HostKeyPolicy::Pinned(b)) => a == b,
        _ => false,
    }
}
