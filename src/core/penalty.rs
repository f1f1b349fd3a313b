//! Per-source penalties and early drop of unauthenticated connections, after sshd's
//! `PerSourcePenalties` (OpenSSH 9.8) and `MaxStartups`.
//!
//! **Penalties.** A connection that ends without a login earns its source address a
//! penalty: failed authentication attempts (`authfail`), no attempt at all (`noauth`,
//! the pattern of scanners and of key-exchange floods such as DHEat), or running out the
//! login grace time (`grace_exceeded`). Penalties of one source add up (capped at `max`);
//! once they exceed `min`, new connections from that source are refused until the
//! penalty has run out. An address is the whole IPv4 address, or the /64 of an IPv6 one.
//! Addresses on the `exempt` list (a load balancer, a monitoring host) are never
//! penalised.
//!
//! **Early drop.** Beyond `start` unauthenticated connections in the whole proxy, a new
//! connection is refused with probability `rate` %, rising linearly to 100 % at `full`.
//!
//! Both are plain values here; the accept loop asks them and the session reports how it
//! ended.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How a connection without a login ended, as far as penalties go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offence {
    /// At least one authentication attempt failed.
    AuthFail,
    /// The client left (or broke the protocol) without trying to authenticate.
    NoAuth,
    /// The client did not log in within `limits.auth_timeout_secs`.
    GraceExceeded,
}

/// `[penalties]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PenaltySettings {
    pub enabled: bool,
    pub authfail: Duration,
    pub noauth: Duration,
    pub grace_exceeded: Duration,
    /// Penalties of a source are refused only once they add up to more than this.
    pub min: Duration,
    /// The longest a source is refused.
    pub max: Duration,
    /// Sources tracked at once; beyond, new sources are not penalised (OpenSSH's
    /// "permissive" overflow), so that the table cannot grow without bound.
    pub max_sources: usize,
    /// Networks never penalised.
    pub exempt: Vec<IpNet>,
}

impl Default for PenaltySettings {
    fn default() -> Self {
        PenaltySettings {
            enabled: true,
            authfail: Duration::from_secs(5),
            noauth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            min: Duration::from_secs(15),
            max: Duration::from_secs(600),
            max_sources: 65536,
            exempt: Vec::new(),
        }
    }
}

impl PenaltySettings {
    fn cost(&self, offence: Offence) -> Duration {
        match offence {
            Offence::AuthFail => self.authfail,
            Offence::NoAuth => self.noauth,
            Offence::GraceExceeded => self.grace_exceeded,
        }
    }

    pub fn is_exempt(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.exempt.iter().any(|net| net.contains(&addr))
    }
}

#[derive(Clone, Copy, Debug)]
struct Penalty {
    expires: Instant,
    active: bool,
}

/// The penalty table of the whole proxy.
#[derive(Debug, Default)]
pub struct Penalties {
    by_source: HashMap<IpAddr, Penalty>,
    /// When penalties that ran out were last forgotten.
    last_expired: Option<Instant>,
}

/// How often [`Penalties::penalise`] forgets penalties that ran out.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

use crate::core::values::canonical_ip as canonical;

/// The key of a source: the IPv4 address, or the /64 of an IPv6 address (one host
/// usually holds a whole /64).
fn source(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Penalties {
    /// How long `addr` is still refused, if it is.
    pub fn refused_for(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let p = self.by_source.get(&source(addr))?;
        (p.active && p.expires > now).then(|| p.expires - now)
    }

    /// A connection from `addr` ended with `offence`. Returns true when this made the
    /// source refused (for one log line per source, not per connection).
    pub fn penalise(
        &mut self,
        addr: IpAddr,
        offence: Offence,
        now: Instant,
        settings: &PenaltySettings,
    ) -> bool {
        if !settings.enabled || settings.is_exempt(addr) {
            return false;
        }
        let cost = settings.cost(offence);
        if cost.is_zero() {
            return false;
        }
        if self
            .last_expired
            .is_none_or(|t| now.saturating_duration_since(t) >= EXPIRE_EVERY)
        {
            self.expire(now);
        }
        let key = source(addr);
        if !self.by_source.contains_key(&key) && self.by_source.len() >= settings.max_sources {
            self.expire(now);
            if self.by_source.len() >= settings.max_sources {
                return false;
            }
        }
        let p = self.by_source.entry(key).or_insert(Penalty {
            expires: now,
            active: false,
        });
        let was_active = p.active && p.expires > now;
        // A penalty that ran out starts again from now.
        let base = p.expires.max(now);
        p.expires = (base + cost).min(now + settings.max);
        p.active = p.expires - now > settings.min;
        p.active && !was_active
    }

    /// Forget penalties that have run out.
    pub fn expire(&mut self, now: Instant) {
        self.by_source.retain(|_, p| p.expires > now);
        self.last_expired = Some(now);
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }
}

/// `limits.max_startups`: `start:rate:full` (or one number, `full`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupLimit {
    pub start: usize,
    /// Percent refused at `start`.
    pub rate: u32,
    pub full: usize,
}

impl Default for StartupLimit {
    fn default() -> Self {
        StartupLimit {
            start: 1000,
            rate: 30,
            full: 4000,
        }
    }
}

impl StartupLimit {
    /// Whether to refuse a new connection while `unauthenticated` are in progress;
    /// `random` is uniform in `0..100`.
    pub fn should_drop(&self, unauthenticated: usize, random: u32) -> bool {
        if unauthenticated >= self.full {
            return true;
        }
        if unauthenticated < self.start {
            return false;
        }
        // sshd's formula: rate % at start, rising linearly to 100 % at full.
        let span = (self.full - self.start) as u64;
        let p = (100 - self.rate) as u64 * (unauthenticated - self.start) as u64 / span
            + self.rate as u64;
        (random as u64) < p
    }
}

/// Why a `max_startups` value was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadStartupLimit(&'static str);

impl fmt::Display for BadStartupLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for StartupLimit {
    type Err = BadStartupLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |t: &str| {
            t.trim().parse::<usize>().map_err(|_| {
                BadStartupLimit("use start:rate:full, e.g. \"1000:30:4000\", or one number")
            })
        };
        let parts: Vec<&str> = s.split(':').collect();
        let limit = match parts.as_slice() {
            [full] => {
                let full = number(full)?;
                StartupLimit {
                    start: full,
                    rate: 100,
                    full,
                }
            }
            [start, rate, full] => StartupLimit {
                start: number(start)?,
                rate: number(rate)? as u32,
                full: number(full)?,
            },
            _ => {
                return Err(BadStartupLimit(
                    "use start:rate:full, e.g. \"1000:30:4000\", or one number",
                ))
            }
        };
        if limit.full == 0 {
            return Err(BadStartupLimit("full must be at least 1"));
        }
        if limit.start > limit.full {
            return Err(BadStartupLimit("start must not exceed full"));
        }
        if limit.rate > 100 {
            return Err(BadStartupLimit("rate is a percentage, 0 to 100"));
        }
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn penalties_add_up_and_refuse_only_past_the_minimum() {
        let s = PenaltySettings::default();
        let mut p = Penalties::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        // Three failed logins: 15 s, not more than min.
        for _ in 0..3 {
            assert!(!p.penalise(a, Offence::AuthFail, t0, &s));
        }
        assert_eq!(p.refused_for(a, t0), None);
        assert!(p.penalise(a, Offence::NoAuth, t0, &s), "16 s > 15 s");
        assert_eq!(p.refused_for(a, t0), Some(secs(16)));
        assert!(!p.penalise(a, Offence::AuthFail, t0, &s), "already refused");
        assert_eq!(p.refused_for(a, t0 + secs(20)), Some(secs(1)));
        assert_eq!(p.refused_for(a, t0 + secs(21)), None, "runs out");
        // Others are not affected.
        assert_eq!(p.refused_for("192.0.2.8".parse().unwrap(), t0), None);
        // Capped at max.
        for _ in 0..1000 {
            p.penalise(a, Offence::GraceExceeded, t0, &s);
        }
        assert_eq!(p.refused_for(a, t0), Some(s.max));
        p.expire(t0 + s.max);
        assert!(p.is_empty());
    }

    #[test]
    fn penalties_that_ran_out_are_forgotten_as_new_ones_come() {
        let s = PenaltySettings::default();
        let mut p = Penalties::default();
        let t0 = Instant::now();
        for i in 0..100u8 {
            p.penalise(IpAddr::from([192, 0, 2, i]), Offence::NoAuth, t0, &s);
        }
        assert_eq!(p.len(), 100);
        p.penalise(
            "198.51.100.1".parse().unwrap(),
            Offence::NoAuth,
            t0 + secs(30),
            &s,
        );
        assert_eq!(p.len(), 1, "the others ran out after 1 s");
    }

    #[test]
    fn a_penalty_that_ran_out_starts_again() {
        let s = PenaltySettings::default();
        let mut p = Penalties::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            p.penalise(a, Offence::AuthFail, t0, &s);
        }
        // Long after: one more failure is not enough to be refused.
        assert!(!p.penalise(a, Offence::AuthFail, t0 + secs(100), &s));
        assert_eq!(p.refused_for(a, t0 + secs(100)), None);
    }

    #[test]
    fn exempt_networks_ipv6_prefixes_and_the_table_bound() {
        let mut s = PenaltySettings {
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            max_sources: 2,
            ..Default::default()
        };
        let mut p = Penalties::default();
        let t0 = Instant::now();
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        for _ in 0..10 {
            assert!(!p.penalise(lb, Offence::GraceExceeded, t0, &s));
            assert!(!p.penalise(mapped, Offence::GraceExceeded, t0, &s));
        }
        assert!(p.is_empty());
        // Two addresses of one /64 are one source.
        let (x, y): (IpAddr, IpAddr) = (
            "2001:db8:1:2::1".parse().unwrap(),
            "2001:db8:1:2:ffff::9".parse().unwrap(),
        );
        for _ in 0..2 {
            p.penalise(x, Offence::GraceExceeded, t0, &s);
        }
        assert!(p.refused_for(y, t0).is_some());
        p.penalise("192.0.2.1".parse().unwrap(), Offence::AuthFail, t0, &s);
        assert_eq!(p.len(), 2);
        p.penalise("192.0.2.2".parse().unwrap(), Offence::AuthFail, t0, &s);
        assert_eq!(p.len(), 2, "full: new sources are not tracked");
        s.enabled = false;
        assert!(!p.penalise(x, Offence::AuthFail, t0, &s));
    }

    #[test]
    fn early_drop_follows_sshds_formula() {
        let l: StartupLimit = "10:30:100".parse().unwrap();
        assert!(!l.should_drop(9, 0));
        assert!(
            l.should_drop(10, 29) && !l.should_drop(10, 30),
            "30 % at start"
        );
        // Half way: 30 + 70 / 2 = 65 %.
        assert!(l.should_drop(55, 64) && !l.should_drop(55, 65));
        assert!(l.should_drop(100, 99), "all at full");
        let one: StartupLimit = "20".parse().unwrap();
        assert!(!one.should_drop(19, 0) && one.should_drop(20, 99));
        for bad in ["", "a:b:c", "1:2", "10:101:20", "30:30:20", "0"] {
            assert!(bad.parse::<StartupLimit>().is_err(), "{bad}");
        }
    }
}
