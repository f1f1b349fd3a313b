//! What the whole proxy knows about connections that have not authenticated yet, shared
//! by every shard: how many there are (early drop, `limits.max_startups`), which sources
//! are penalised (`[penalties]`), the upstream connections held for them
//! ([`crate::proxy::preauth`]), how long real password refusals take
//! ([`crate::core::failure_times`]) and which methods real servers list
//! ([`crate::core::methods`]); and the relayed sessions of each account
//! ([`crate::core::sessions_per_user`]).
//!
//! Each of these is touched a few times per login, never per relayed packet, so short
//! mutexes and one atomic counter are cheap enough.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::config::Config;
use crate::core::failure_times::{Answer, FailureTimes};
use crate::core::login::Timings;
use crate::core::methods::{Methods, SeenMethods};
use crate::core::penalty::{Offence, Penalties};
use crate::core::refusal::Refusal;
use crate::core::sessions_per_user::SessionsPerUser;
use crate::proxy::preauth::PreauthCounts;

/// Process-wide state about unauthenticated connections.
#[derive(Default)]
pub struct Admission {
    /// Upstream connections held for unauthenticated clients, per server.
    pub slots: Arc<PreauthCounts>,
    failure_times: Mutex<FailureTimes>,
    seen_methods: Mutex<SeenMethods>,
    penalties: Mutex<Penalties>,
    unauthenticated: AtomicUsize,
    sessions_per_user: Mutex<SessionsPerUser>,
}

/// Why a new connection is refused before anything else happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAdmitted {
    /// Its source address is penalised for this long.
    Penalised(Duration),
    /// Too many unauthenticated connections (early drop).
    Startups,
}

impl NotAdmitted {
    /// What the client is told.
    pub fn refusal(&self) -> Refusal {
        match self {
            NotAdmitted::Penalised(_) => Refusal::Penalised,
            NotAdmitted::Startups => Refusal::Startups,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    pub fn new() -> Arc<Self> {
        Arc::new(Admission {
            slots: PreauthCounts::new(),
            ..Default::default()
        })
    }

    /// Whether a connection from `addr` may start. `random` is uniform in `0..100`.
    pub fn admit(
        &self,
        addr: IpAddr,
        config: &Config,
        now: Instant,
        random: u32,
    ) -> Result<(), NotAdmitted> {
        if let Some(left) = lock(&self.penalties).refused_for(addr, now) {
            return Err(NotAdmitted::Penalised(left));
        }
        let unauthenticated = self.unauthenticated.load(Ordering::Relaxed);
        if config
            .limits
            .max_startups
            .should_drop(unauthenticated, random)
        {
            return Err(NotAdmitted::Startups);
        }
        Ok(())
    }

    /// Counts one unauthenticated connection until the guard is dropped (or
    /// [`Unauthenticated::authenticated`] is called).
    pub fn unauthenticated(self: &Arc<Self>) -> Unauthenticated {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Unauthenticated {
            admission: Some(self.clone()),
        }
    }

    /// Unauthenticated connections now.
    pub fn unauthenticated_count(&self) -> usize {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// A connection from `addr` ended without a login. Returns true when this made the
    /// source refused.
    pub fn penalise(&self, addr: IpAddr, offence: Offence, config: &Config, now: Instant) -> bool {
        lock(&self.penalties).penalise(addr, offence, now, &config.penalties)
    }
}

impl Admission {
    /// Counts one relayed session of `user` (an account name, without a target) until
    /// the guard is dropped, unless it has `cap` already (`None`: no cap).
    pub fn user_session(self: &Arc<Self>, user: &str, cap: Option<usize>) -> Option<UserSession> {
        if !lock(&self.sessions_per_user).try_add(user, cap) {
            return None;
        }
        Some(UserSession {
            admission: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Relayed sessions of `user` now.
    #[cfg(test)]
    pub fn user_sessions(&self, user: &str) -> usize {
        lock(&self.sessions_per_user).count(user)
    }
}

/// One relayed session of an account, counted while it lives (dropped on every way out
/// of the session, unwinding included).
pub struct UserSession {
    admission: Arc<Admission>,
    user: String,
}

impl Drop for UserSession {
    fn drop(&mut self) {
        lock(&self.admission.sessions_per_user).remove(&self.user);
    }
}

/// The process-wide failure times, as the login state machine asks for them.
impl Timings for Admission {
    fn decoy_time(&self, answer: Answer) -> Duration {
        lock(&self.failure_times).decoy(answer, rand_core::OsRng.next_u64())
    }

    fn decoy_prompts(&self) -> bool {
        lock(&self.failure_times).decoy_prompts()
    }

    fn record_answer(&self, answer: Answer, took: Duration) {
        lock(&self.failure_times).record(answer, took);
    }

    fn record_prompted(&self, prompted: bool) {
        lock(&self.failure_times).record_prompted(prompted);
    }

    fn decoy_methods(&self) -> Methods {
        lock(&self.seen_methods).decoy()
    }

    fn record_methods(&self, methods: Methods) {
        lock(&self.seen_methods).record(methods);
    }
}

/// One unauthenticated connection, counted while it lives.
pub struct Unauthenticated {
    admission: Option<Arc<Admission>>,
}

impl Unauthenticated {
    /// The client logged in: it no longer counts.
    pub fn authenticated(&mut self) {
        if let Some(a) = self.admission.take() {
            a.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.authenticated();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unauthenticated_connections_and_drops_early() {
        let admission = Admission::new();
        let mut config = Config::builtin().unwrap();
        config.limits.max_startups = "2:50:4".parse().unwrap();
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let a = admission.unauthenticated();
        let mut b = admission.unauthenticated();
        assert_eq!(admission.unauthenticated_count(), 2);
        assert_eq!(
            admission.admit(addr, &config, now, 49),
            Err(NotAdmitted::Startups)
        );
        assert_eq!(admission.admit(addr, &config, now, 50), Ok(()));
        b.authenticated();
        assert_eq!(admission.unauthenticated_count(), 1);
        assert_eq!(admission.admit(addr, &config, now, 0), Ok(()));
        drop((a, b));
        assert_eq!(admission.unauthenticated_count(), 0);
    }

    #[test]
    fn sessions_per_user_are_counted_across_shards_until_dropped() {
        let admission = Admission::new();
        let a = admission.user_session("alice", Some(1)).expect("first");
        // Another shard, the same process-wide count.
        let other_shard = admission.clone();
        let t = std::thread::spawn(move || other_shard.user_session("alice", Some(1)).is_none());
        assert!(t.join().unwrap(), "refused on another thread");
        assert!(admission.user_session("bob", Some(1)).is_some());
        drop(a);
        assert_eq!(admission.user_sessions("alice"), 0);
        let b = admission.user_session("alice", Some(1));
        assert!(b.is_some());
        // A panic on the session's way out still gives the slot back.
        let held = admission.clone();
        let r = std::thread::spawn(move || {
            let _s = held.user_session("carol", Some(1)).unwrap();
            panic!("the session panicked");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(admission.user_sessions("carol"), 0);
    }

    #[test]
    fn penalised_sources_are_refused() {
        let admission = Admission::new();
        let config = Config::builtin().unwrap();
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let turned = (0..4)
            .map(|_| admission.penalise(addr, Offence::AuthFail, &config, now))
            .collect::<Vec<_>>();
        assert_eq!(turned, [false, false, false, true]);
        assert_eq!(
            admission.admit(addr, &config, now, 99),
            Err(NotAdmitted::Penalised(Duration::from_secs(20)))
        );
        lock(&admission.penalties).expire(now + Duration::from_secs(21));
        assert_eq!(admission.admit(addr, &config, now, 99), Ok(()));
    }
}
