//! Whether each `[[providers]]` backend answers: what `/readyz` reports about them.
//!
//! Every lookup, a login's or a probe's, leaves its outcome in the provider's
//! [`ProviderHealth`]: answered in time (a user found or unknown, or data the provider
//! could not use for that one user: the backend itself works), failed (unreachable,
//! erroring), or no answer within the provider's `timeout_secs`.
//!
//! A provider holds the proxy unready while its latest outcome is a failure at most
//! [`RECENT`] old, while a probe has been waiting longer than its timeout, and until it
//! has answered once. An operator wants a proxy that cannot reach its PostgreSQL out of
//! the balancer (other proxies may reach it) and back in once it recovers; so with
//! `metrics_listen` set, each provider is also asked every [`PROBE_INTERVAL`] for
//! [`probe_user`], a name no login can carry: a quiet proxy learns about an outage
//! before its next login, and learns that it is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sshr_protocol::text::printable;

use super::Backend;
use crate::core::login::MAX_USER_NAME;
use crate::hooks::{HookContext, HookError, Lookup};

/// How long a provider's failure keeps the proxy unready when nothing newer is known.
/// Twice [`PROBE_INTERVAL`]: a provider that keeps failing is unready without a gap.
pub const RECENT: Duration = Duration::from_secs(10);
/// How often each provider is asked for [`probe_user`] (only with `metrics_listen`).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The start of [`probe_user`], so that the backend's own logs show what asks.
pub const PROBE_USER_PREFIX: &str = "sshr-readiness-probe";
/// Characters of a backend's error quoted in `/readyz`.
const MAX_REASON_CHARS: usize = 160;

/// The name the probes look up: [`PROBE_USER_PREFIX`] padded with `_` to one byte more
/// than [`MAX_USER_NAME`], the longest name a login hands to the hooks; so no real
/// account can be asked for. A backend should answer "unknown", which is healthy.
pub fn probe_user() -> String {
    let mut name = String::from(PROBE_USER_PREFIX);
    while name.len() <= MAX_USER_NAME {
        name.push('_');
    }
    name
}

/// How one lookup went, for readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered within its timeout.
    Answered,
    /// The backend is unreachable or failing (its error, in one line).
    Failed(String),
    /// No answer within the timeout.
    TimedOut,
    /// An answer came, but later than the timeout allows (how long it took).
    Slow(Duration),
}

impl Outcome {
    /// The outcome of one backend call that took `took`, given its `timeout`.
    pub fn of(result: &Result<Lookup, HookError>, took: Duration, timeout: Duration) -> Outcome {
        match result {
            // The backend gave up at its own deadline (a killed command, a statement
            // timeout), maybe a little after it.
            Err(HookError::Timeout) => Outcome::TimedOut,
            _ if took > timeout => Outcome::Slow(took),
            // A bad row of one user (or a refusal) says nothing about the backend: one
            // broken account must not take every proxy out of the balancer.
            Ok(_) | Err(HookError::InvalidData(_)) | Err(HookError::Denied(_)) => Outcome::Answered,
            Err(HookError::Unavailable(why)) => Outcome::Failed(why.clone()),
        }
    }
}

/// One provider's recent outcomes. Shared by the shards and the probe thread; every
/// access is a short lock.
#[derive(Debug)]
pub struct ProviderHealth {
    /// `sqlite#1 (/var/lib/sshr/sshr.db)`: the kind, its place in the list, where.
    label: String,
    timeout: Duration,
    state: Mutex<State>,
    /// Whether the last probe answered (starts `true`: a first failure is logged).
    probe_answered: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    last: Option<(Instant, Outcome)>,
    /// When the probe running now started.
    probing_since: Option<Instant>,
}

impl ProviderHealth {
    pub fn new(label: String, timeout: Duration) -> Arc<ProviderHealth> {
        Arc::new(ProviderHealth {
            label,
            timeout,
            state: Mutex::new(State::default()),
            probe_answered: AtomicBool::new(true),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes how a lookup that ended `at` went. An outcome older than the one kept is
    /// dropped: the latest says how the backend is.
    pub fn record(&self, at: Instant, outcome: Outcome) {
        let mut state = self.state();
        if state.last.as_ref().is_none_or(|(when, _)| *when <= at) {
            state.last = Some((at, outcome));
        }
    }

    /// `Ok` when this provider lets the proxy be ready at `now`; else why not, in one
    /// line.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        let timeout = secs(self.timeout);
        if let Some(since) = state.probing_since {
            let waited = now.saturating_duration_since(since);
            if waited > self.timeout {
                return Err(format!(
                    "provider {} slow: no answer for {} > {timeout} timeout",
                    self.label,
                    secs(waited)
                ));
            }
        }
        let Some((at, outcome)) = &state.last else {
            return Err(format!("provider {} has not answered yet", self.label));
        };
        if now.saturating_duration_since(*at) > RECENT {
            return Ok(());
        }
        match outcome {
            Outcome::Answered => Ok(()),
            Outcome::Failed(why) => Err(format!(
                "provider {} failed: {}",
                self.label,
                printable(why.lines().next().unwrap_or_default(), MAX_REASON_CHARS)
            )),
            Outcome::TimedOut => Err(format!(
                "provider {} slow: no answer within {timeout} timeout",
                self.label
            )),
            Outcome::Slow(took) => Err(format!(
                "provider {} slow: {} > {timeout} timeout",
                self.label,
                secs(*took)
            )),
        }
    }

    /// Marks a probe as started at `now`; `false` if one is still running (at most one
    /// per provider, however long a backend hangs).
    fn start_probe(&self, now: Instant) -> bool {
        let mut state = self.state();
        if state.probing_since.is_some() {
            return false;
        }
        state.probing_since = Some(now);
        true
    }

    /// Ends the running probe with its outcome; logs when the probes start failing or
    /// answer again, so the log shows an outage once, not every probe.
    fn end_probe(&self, at: Instant, outcome: Option<Outcome>) {
        self.state().probing_since = None;
        let Some(outcome) = outcome else { return };
        let answered = outcome == Outcome::Answered;
        self.record(at, outcome);
        match (
            self.probe_answered.swap(answered, Ordering::Relaxed),
            answered,
        ) {
            (true, false) => {
                if let Err(why) = self.check(at) {
                    tracing::warn!(reason = %why, "provider probe failed: /readyz answers 503");
                }
            }
            (false, true) => {
                tracing::info!(provider = %self.label, "provider answers its probe again")
            }
            _ => {}
        }
    }
}

/// `2.1 s`, `1 s`.
fn secs(d: Duration) -> String {
    let tenths = (d.as_millis() + 50) / 100;
    if tenths.is_multiple_of(10) {
        format!("{} s", tenths / 10)
    } else {
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

/// The providers of the running configuration. One per process, kept across reloads:
/// a reload puts its new providers in (see [`crate::providers::chain::factory`]), and
/// the old ones, still answering sessions that started before, no longer count.
#[derive(Debug, Default)]
pub struct ProviderWatch {
    current: Mutex<Current>,
}

#[derive(Debug, Default)]
struct Current {
    /// Bumped by every [`ProviderWatch::replace`]: a probe thread of an older
    /// configuration sees that it is over.
    generation: u64,
    providers: Vec<Arc<ProviderHealth>>,
}

impl ProviderWatch {
    pub fn new() -> Arc<ProviderWatch> {
        Arc::new(ProviderWatch::default())
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `providers` the ones that count; returns their generation.
    pub fn replace(&self, providers: Vec<Arc<ProviderHealth>>) -> u64 {
        let mut current = self.current();
        current.generation += 1;
        current.providers = providers;
        current.generation
    }

    fn generation(&self) -> u64 {
        self.current().generation
    }

    /// `Ok` when every current provider lets the proxy be ready at `now`; else the
    /// first reason.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let providers = self.current().providers.clone();
        providers.iter().try_for_each(|p| p.check(now))
    }
}

/// Starts the thread that probes `providers` every [`PROBE_INTERVAL`] while they are
/// `generation` of `watch`. Each probe runs on a short-lived thread of its own, so a
/// backend that hangs delays nothing but its own next probe.
pub(super) fn start_probes(
    watch: &Arc<ProviderWatch>,
    generation: u64,
    providers: Vec<(Arc<dyn Backend>, Arc<ProviderHealth>)>,
) {
    let watch = Arc::downgrade(watch);
    let started = std::thread::Builder::new()
        .name("sshr-probe".into())
        .spawn(move || probe_loop(watch, generation, providers));
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the provider probes: /readyz sees only logins");
    }
}

fn probe_loop(
    watch: Weak<ProviderWatch>,
    generation: u64,
    providers: Vec<(Arc<dyn Backend>, Arc<ProviderHealth>)>,
) {
    let ctx = HookContext::new(
        probe_user(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        0,
        "SSH-2.0-sshr_readiness_probe",
    );
    // Ends when the configuration is replaced or the server is gone.
    while watch
        .upgrade()
        .is_some_and(|w| w.generation() == generation)
    {
        for (backend, health) in &providers {
            if !health.start_probe(Instant::now()) {
                continue;
            }
            let (backend, health2, ctx) = (backend.clone(), health.clone(), ctx.clone());
            let spawned = std::thread::Builder::new()
                .name("sshr-probe-call".into())
                .spawn(move || {
                    let started = Instant::now();
                    let result = backend.look_up(&ctx);
                    let outcome = Outcome::of(&result, started.elapsed(), health2.timeout);
                    health2.end_probe(Instant::now(), Some(outcome));
                });
            if let Err(e) = spawned {
                tracing::warn!(provider = %health.label, error = %e, "cannot start a provider probe");
                health.end_probe(Instant::now(), None);
            }
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn provider() -> Arc<ProviderHealth> {
        ProviderHealth::new("postgres#2 (db:5432/users)".into(), Duration::from_secs(1))
    }

    #[test]
    fn a_provider_is_ready_once_it_answered_and_while_its_last_failure_is_old() {
        let t = Instant::now();
        let p = provider();
        assert_eq!(
            p.check(t),
            Err("provider postgres#2 (db:5432/users) has not answered yet".into())
        );
        p.record(at(t, 0), Outcome::Answered);
        assert_eq!(p.check(at(t, 100)), Ok(()));

        p.record(
            at(t, 1_000),
            Outcome::Failed("connection refused\nline 2".into()),
        );
        assert_eq!(
            p.check(at(t, 1_000)),
            Err("provider postgres#2 (db:5432/users) failed: connection refused".into())
        );
        assert!(p.check(at(t, 1_000) + RECENT).is_err());
        // Nothing newer for longer than RECENT: no longer held against it.
        assert_eq!(p.check(at(t, 1_001) + RECENT), Ok(()));

        // A later answer clears it at once; an older one arriving late does not count.
        p.record(at(t, 20_000), Outcome::Slow(Duration::from_millis(2_100)));
        assert_eq!(
            p.check(at(t, 20_000)),
            Err("provider postgres#2 (db:5432/users) slow: 2.1 s > 1 s timeout".into())
        );
        p.record(at(t, 19_000), Outcome::Answered);
        assert!(p.check(at(t, 20_001)).is_err());
        p.record(at(t, 21_000), Outcome::Answered);
        assert_eq!(p.check(at(t, 21_000)), Ok(()));

        p.record(at(t, 22_000), Outcome::TimedOut);
        assert_eq!(
            p.check(at(t, 22_000)),
            Err("provider postgres#2 (db:5432/users) slow: no answer within 1 s timeout".into())
        );
    }

    #[test]
    fn a_hung_probe_keeps_the_proxy_unready() {
        let t = Instant::now();
        let p = provider();
        p.record(t, Outcome::Answered);
        assert!(p.start_probe(at(t, 1_000)));
        assert!(!p.start_probe(at(t, 6_000)), "one probe at a time");
        assert_eq!(p.check(at(t, 2_000)), Ok(()), "within its timeout");
        assert_eq!(
            p.check(at(t, 60_000)),
            Err(
                "provider postgres#2 (db:5432/users) slow: no answer for 59 s > 1 s timeout".into()
            )
        );
        p.end_probe(
            at(t, 60_500),
            Some(Outcome::Slow(Duration::from_millis(59_500))),
        );
        assert!(p.check(at(t, 61_000)).is_err());
        assert!(p.start_probe(at(t, 61_000)));
        p.end_probe(at(t, 61_010), Some(Outcome::Answered));
        assert_eq!(p.check(at(t, 61_010)), Ok(()));
    }

    #[test]
    fn outcomes_of_lookups() {
        let (fast, slow, limit) = (
            Duration::from_millis(10),
            Duration::from_millis(1_500),
            Duration::from_secs(1),
        );
        assert_eq!(
            Outcome::of(&Ok(Lookup::Unknown), fast, limit),
            Outcome::Answered
        );
        assert_eq!(
            Outcome::of(&Ok(Lookup::Unknown), slow, limit),
            Outcome::Slow(slow)
        );
        assert_eq!(
            Outcome::of(&Err(HookError::InvalidData("bad key".into())), fast, limit),
            Outcome::Answered,
            "one user's bad row is not an outage"
        );
        assert_eq!(
            Outcome::of(&Err(HookError::Unavailable("down".into())), fast, limit),
            Outcome::Failed("down".into())
        );
        assert_eq!(
            Outcome::of(&Err(HookError::Timeout), fast, limit),
            Outcome::TimedOut
        );
        assert_eq!(
            Outcome::of(&Err(HookError::Timeout), slow, limit),
            Outcome::TimedOut,
            "the backend's own timeout, a little late"
        );
    }

    #[test]
    fn the_watch_counts_only_the_current_providers() {
        let t = Instant::now();
        let watch = ProviderWatch::new();
        assert_eq!(watch.check(t), Ok(()), "no providers");
        let (a, b) = (provider(), provider());
        a.record(t, Outcome::Answered);
        b.record(t, Outcome::Failed("down".into()));
        let first = watch.replace(vec![a.clone(), b]);
        assert!(watch.check(t).is_err());
        let second = watch.replace(vec![a]);
        assert_ne!(first, second);
        assert_eq!(watch.generation(), second);
        assert_eq!(watch.check(t), Ok(()));
    }

    #[test]
    fn the_probe_name_is_one_no_login_hands_to_the_hooks() {
        let name = probe_user();
        assert_eq!(name.len(), MAX_USER_NAME + 1);
        assert!(name.starts_with(PROBE_USER_PREFIX));
        assert_eq!(secs(Duration::from_millis(2_100)), "2.1 s");
        assert_eq!(secs(Duration::from_millis(999)), "1 s");
    }
}
