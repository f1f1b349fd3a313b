//! How long the upstreams take to answer password and keyboard-interactive logins, so
//! that the proxy's own answer to a name it does not know takes as long.
//!
//! A wrong password for a real account is decided by its server: with PAM (Debian's
//! default) that takes about 3 s, because `pam_unix` delays every failure. A name the
//! proxy does not know is refused by the proxy itself, at once. Padding both to a fixed
//! 300 ms is not enough: one try would tell the two apart. So the proxy remembers how
//! long recent real answers took, across all upstreams, and makes its decoy wait a time
//! drawn from the middle half of those: the unknown name then fails like a typical known
//! one.

use std::collections::VecDeque;
use std::time::Duration;

/// Answers remembered per kind: the most recent ones, across all upstreams.
pub const WINDOW: usize = 64;
/// No failure is answered faster than this, known or not.
pub const MIN_FAILURE_TIME: Duration = Duration::from_millis(300);
/// Longest decoy wait (an upstream that hung does not make every decoy hang).
pub const MAX_DECOY_TIME: Duration = Duration::from_secs(10);

/// Which answer of the upstream was timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// From the client's password (or its last keyboard-interactive response) to the
    /// upstream's refusal.
    Refusal,
    /// From a keyboard-interactive request to the upstream's first prompt.
    Prompt,
}

/// Recent answer times (see the module documentation).
#[derive(Debug, Default)]
pub struct FailureTimes {
    refusals: VecDeque<Duration>,
    prompts: VecDeque<Duration>,
}

impl FailureTimes {
    fn window(&mut self, answer: Answer) -> &mut VecDeque<Duration> {
        match answer {
            Answer::Refusal => &mut self.refusals,
            Answer::Prompt => &mut self.prompts,
        }
    }

    /// A real upstream took `took` to give `answer`.
    pub fn record(&mut self, answer: Answer, took: Duration) {
        let w = self.window(answer);
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(took.min(MAX_DECOY_TIME));
    }

    /// How long the decoy takes for `answer`: one of the middle half of the recent
    /// times, chosen by `pick` (a random number), so that decoys vary like real answers.
    /// A refusal takes at least [`MIN_FAILURE_TIME`]; with nothing recorded yet, a
    /// refusal takes that and a prompt comes at once.
    pub fn decoy(&mut self, answer: Answer, pick: u64) -> Duration {
        let mut sorted: Vec<Duration> = self.window(answer).iter().copied().collect();
        sorted.sort_unstable();
        let typical = if sorted.is_empty() {
            Duration::ZERO
        } else {
            let (q1, q3) = (sorted.len() / 4, (sorted.len() * 3).div_ceil(4).max(1) - 1);
            let q3 = q3.max(q1);
            sorted[q1 + (pick % (q3 - q1 + 1) as u64) as usize]
        };
        match answer {
            Answer::Refusal => typical.max(MIN_FAILURE_TIME),
            Answer::Prompt => typical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn decoys_take_as_long_as_typical_real_refusals() {
        let mut t = FailureTimes::default();
        assert_eq!(
            t.decoy(Answer::Refusal, 7),
            MIN_FAILURE_TIME,
            "nothing known yet"
        );
        assert_eq!(t.decoy(Answer::Prompt, 7), Duration::ZERO);
        // A PAM upstream: about 3 s, with one fast outlier and one hung answer.
        for took in [2900, 2950, 3000, 3050, 2980, 20, 60_000, 2990] {
            t.record(Answer::Refusal, ms(took));
        }
        for pick in 0..20 {
            let d = t.decoy(Answer::Refusal, pick);
            assert!(d >= ms(2900) && d <= ms(3050), "{d:?}");
        }
        t.record(Answer::Prompt, ms(12));
        assert_eq!(t.decoy(Answer::Prompt, 3), ms(12));
    }

    #[test]
    fn fast_upstreams_still_take_the_minimum_and_old_times_age_out() {
        let mut t = FailureTimes::default();
        for _ in 0..WINDOW {
            t.record(Answer::Refusal, ms(3000));
        }
        for _ in 0..WINDOW {
            t.record(Answer::Refusal, ms(5));
        }
        assert_eq!(t.decoy(Answer::Refusal, 1), MIN_FAILURE_TIME);
        assert_eq!(t.refusals.len(), WINDOW);
        t.record(Answer::Refusal, Duration::from_secs(3600));
        assert!(t.refusals.iter().all(|d| *d <= MAX_DECOY_TIME));
    }
}
