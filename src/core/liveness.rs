//! Whether a relayed session is still alive: the decisions behind the relay's watchdog
//! (`proxy::relay`), with the time passed in.
//!
//! - Keepalives, per leg, like sshd's ClientAliveInterval and ClientAliveCountMax: after
//!   `keepalive_interval` without a byte from a peer the proxy asks it for an answer
//!   (`keepalive@openssh.com`, want-reply); anything heard from it resets the count; one
//!   more silent interval after `keepalive_count_max` unanswered requests, the peer is
//!   gone.
//! - The idle timeout: no channel data either way for `idle_timeout`. Keepalives and
//!   their answers are not activity.
//! - The stall timeout, per leg: a packet whose first bytes arrived must be complete
//!   within `packet_timeout` of waiting for it (the pumps publish the deadline only
//!   while they wait in a read, so time the proxy spends writing is not counted).
//!
//! The pumps record what they hear (one timestamp per read) and the watchdog asks
//! [`Watch::check`] what to do and when to look again.

use std::time::{Duration, Instant};

use crate::core::values::Side;

/// The settings the watchdog runs with (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    /// `None`: no keepalives.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_count_max: u32,
    /// `None`: no idle timeout.
    pub idle_timeout: Option<Duration>,
    pub packet_timeout: Duration,
}

/// What the pumps have seen, as the watchdog reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// When each leg (indexed by [`index`]) last delivered bytes.
    pub heard: [Instant; 2],
    /// When channel data last passed, either way.
    pub last_data: Instant,
    /// Each leg's stall deadline, while its pump waits for the rest of a packet.
    pub stall_deadline: [Option<Instant>; 2],
}

/// Why the watchdog ends a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The peer on this side left `keepalive_count_max` keepalives unanswered and then
    /// stayed silent for one more interval.
    Gone(Side),
    /// No channel data either way for `idle_timeout`.
    Idle,
    /// A packet from this side started and did not complete in time.
    Stalled(Side),
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expired::Gone(side) => write!(f, "the {side} stopped answering keepalives"),
            Expired::Idle => f.write_str("idle timeout (no channel data either way)"),
            Expired::Stalled(side) => write!(f, "a packet from the {side} stalled half-way"),
        }
    }
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Send a keepalive to the peers marked (indexed by [`index`]), then look again at
    /// `next`.
    Wait {
        probe: [bool; 2],
        next: Instant,
    },
    End(Expired),
}

/// The array index of a side in [`Seen`] and [`Check::Wait`].
pub fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Upstream => 1,
    }
}

const SIDES: [Side; 2] = [Side::Client, Side::Upstream];

/// One leg's keepalive state.
#[derive(Clone, Copy, Debug)]
struct Probing {
    /// The last time the peer was heard, as of the last check.
    heard: Instant,
    /// Keepalives sent since then.
    unanswered: u32,
    /// When the next keepalive (or the verdict) is due.
    due: Instant,
}

/// The watchdog's state for one session.
#[derive(Debug)]
pub struct Watch {
    settings: WatchSettings,
    legs: [Probing; 2],
}

impl Watch {
    /// A session whose relay starts at `now`.
    pub fn new(settings: WatchSettings, now: Instant) -> Watch {
        let interval = settings.keepalive_interval.unwrap_or(Duration::MAX);
        let leg = Probing {
            heard: now,
            unanswered: 0,
            due: now.checked_add(interval).unwrap_or(far(now)),
        };
        Watch {
            settings,
            legs: [leg; 2],
        }
    }

    /// Decides at `now` from what the pumps have `seen`.
    pub fn check(&mut self, now: Instant, seen: &Seen) -> Check {
        for side in SIDES {
            if let Some(deadline) = seen.stall_deadline[index(side)] {
                if now >= deadline {
                    return Check::End(Expired::Stalled(side));
                }
            }
        }
        if let Some(idle) = self.settings.idle_timeout {
            if now >= seen.last_data.checked_add(idle).unwrap_or(far(now)) {
                return Check::End(Expired::Idle);
            }
        }
        let mut probe = [false; 2];
        if let Some(interval) = self.settings.keepalive_interval {
            for side in SIDES {
                let leg = &mut self.legs[index(side)];
                let heard = seen.heard[index(side)];
                if heard > leg.heard {
                    leg.heard = heard;
                    leg.unanswered = 0;
                    leg.due = heard + interval;
                }
                if now >= leg.due {
                    if leg.unanswered >= self.settings.keepalive_count_max {
                        return Check::End(Expired::Gone(side));
                    }
                    leg.unanswered += 1;
                    leg.due = now + interval;
                    probe[index(side)] = true;
                }
            }
        }
        Check::Wait {
            probe,
            next: self.next(now, seen),
        }
    }

    /// When to look again: the earliest deadline. A stall may begin at any moment
    /// without waking the watchdog, so it looks at least every `packet_timeout` (a
    /// stalled packet is noticed within twice that).
    fn next(&self, now: Instant, seen: &Seen) -> Instant {
        let mut next = now + self.settings.packet_timeout;
        for deadline in seen.stall_deadline.into_iter().flatten() {
            next = next.min(deadline);
        }
        if let Some(idle) = self.settings.idle_timeout {
            next = next.min(seen.last_data + idle);
        }
        if self.settings.keepalive_interval.is_some() {
            for leg in &self.legs {
                next = next.min(leg.due);
            }
        }
        next.max(now)
    }
}

/// A time that never comes in practice (a year on).
fn far(now: Instant) -> Instant {
    now + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn settings() -> WatchSettings {
        WatchSettings {
            keepalive_interval: Some(S),
            keepalive_count_max: 2,
            idle_timeout: None,
            packet_timeout: 10 * S,
        }
    }

    fn seen(t0: Instant) -> Seen {
        Seen {
            heard: [t0; 2],
            last_data: t0,
            stall_deadline: [None; 2],
        }
    }

    fn wait(check: Check) -> ([bool; 2], Instant) {
        match check {
            Check::Wait { probe, next } => (probe, next),
            Check::End(e) => panic!("ended: {e:?}"),
        }
    }

    #[test]
    fn a_silent_peer_is_probed_count_max_times_then_gone() {
        let t0 = Instant::now();
        let mut w = Watch::new(settings(), t0);
        let mut s = seen(t0);
        // The upstream keeps talking; the client says nothing.
        let (probe, next) = wait(w.check(t0, &s));
        assert_eq!((probe, next), ([false; 2], t0 + S));
        s.heard[1] = t0 + S;
        assert_eq!(wait(w.check(t0 + S, &s)), ([true, false], t0 + 2 * S));
        s.heard[1] = t0 + 2 * S;
        assert_eq!(wait(w.check(t0 + 2 * S, &s)).0, [true, false]);
        s.heard[1] = t0 + 3 * S;
        assert_eq!(
            w.check(t0 + 3 * S, &s),
            Check::End(Expired::Gone(Side::Client))
        );
    }

    #[test]
    fn anything_heard_resets_the_count() {
        let t0 = Instant::now();
        let mut w = Watch::new(settings(), t0);
        let mut s = seen(t0);
        assert_eq!(wait(w.check(t0 + S, &s)).0, [true, true]);
        assert_eq!(wait(w.check(t0 + 2 * S, &s)).0, [true, true]);
        // Both answer just before the verdict.
        s.heard = [t0 + 2 * S + S / 2; 2];
        let (probe, next) = wait(w.check(t0 + 3 * S, &s));
        assert_eq!(probe, [false; 2]);
        assert_eq!(next, t0 + 3 * S + S / 2);
        // Silent again: probed again, from a count of zero.
        assert_eq!(wait(w.check(next, &s)).0, [true, true]);
        assert_eq!(wait(w.check(next + S, &s)).0, [true, true]);
        assert_eq!(
            w.check(next + 2 * S, &s),
            Check::End(Expired::Gone(Side::Client))
        );
    }

    #[test]
    fn a_late_check_sends_one_probe_not_a_burst() {
        let t0 = Instant::now();
        let mut w = Watch::new(settings(), t0);
        let s = seen(t0);
        // The shard was busy: the check comes long after it was due.
        assert_eq!(wait(w.check(t0 + 10 * S, &s)), ([true; 2], t0 + 11 * S));
    }

    #[test]
    fn keepalives_off_never_probe() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSettings {
                keepalive_interval: None,
                ..settings()
            },
            t0,
        );
        let s = seen(t0);
        for i in 1..100 {
            let (probe, next) = wait(w.check(t0 + i * 60 * S, &s));
            assert_eq!(probe, [false; 2]);
            assert_eq!(next, t0 + i * 60 * S + 10 * S, "looks every packet_timeout");
        }
    }

    #[test]
    fn idle_counts_only_channel_data() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSettings {
                idle_timeout: Some(5 * S),
                keepalive_interval: Some(2 * S),
                ..settings()
            },
            t0,
        );
        let mut s = seen(t0);
        // Keepalive answers keep both peers heard, but no data passes.
        for t in 1..5 {
            s.heard = [t0 + t * S; 2];
            let (_, next) = wait(w.check(t0 + t * S, &s));
            assert!(next <= t0 + 5 * S);
        }
        s.last_data = t0 + 4 * S;
        // The next keepalive is due first, then the idle deadline.
        assert_eq!(wait(w.check(t0 + 5 * S, &s)).1, t0 + 6 * S);
        s.heard = [t0 + 9 * S; 2];
        assert_eq!(w.check(t0 + 9 * S, &s), Check::End(Expired::Idle));
    }

    #[test]
    fn a_stalled_packet_ends_the_session_at_its_deadline() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSettings {
                keepalive_interval: None,
                ..settings()
            },
            t0,
        );
        let mut s = seen(t0);
        s.stall_deadline[1] = Some(t0 + 3 * S);
        assert_eq!(wait(w.check(t0, &s)).1, t0 + 3 * S);
        assert_eq!(
            w.check(t0 + 3 * S, &s),
            Check::End(Expired::Stalled(Side::Upstream))
        );
        // The rest arrived: no deadline, no stall.
        s.stall_deadline[1] = None;
        assert!(matches!(w.check(t0 + 3 * S, &s), Check::Wait { .. }));
    }
}
