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

/// Which answer of the upstream was timed. Each is remembered apart: a PAM upstream
/// refuses a password slowly but may refuse keyboard-interactive at once, and mixing the
/// two would make decoys stand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// From the client's password to the upstream's refusal.
    PasswordRefusal,
    /// From the client's last keyboard-interactive response to the upstream's refusal.
    KeyboardRefusal,
    /// From a keyboard-interactive request to the upstream's first prompt.
    Prompt,
    /// From the first failure of a login that is not a password or keyboard-interactive
    /// one (`none`, a public key) to the list of methods of the user's server (its answer
    /// to the proxy's `none` probe, `core::methods`): mostly the upstream connection's
    /// own set-up.
    Methods,
}

/// Recent answer times (see the module documentation).
#[derive(Debug, Default)]
pub struct FailureTimes {
    password_refusals: VecDeque<Duration>,
    keyboard_refusals: VecDeque<Duration>,
    prompts: VecDeque<Duration>,
    methods: VecDeque<Duration>,
    /// Whether recent keyboard-interactive requests got a prompt (true) or an immediate
    /// refusal (false: the upstream does not offer it, e.g. sshd's default
    /// `KbdInteractiveAuthentication no`).
    prompted: VecDeque<bool>,
}

fn push<T>(window: &mut VecDeque<T>, value: T) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(value);
}

impl FailureTimes {
    fn window(&mut self, answer: Answer) -> &mut VecDeque<Duration> {
        match answer {
            Answer::PasswordRefusal => &mut self.password_refusals,
            Answer::KeyboardRefusal => &mut self.keyboard_refusals,
            Answer::Prompt => &mut self.prompts,
            Answer::Methods => &mut self.methods,
        }
    }

    /// A real upstream took `took` to give `answer`.
    pub fn record(&mut self, answer: Answer, took: Duration) {
        push(self.window(answer), took.min(MAX_DECOY_TIME));
    }

    /// A real upstream answered a keyboard-interactive request with a prompt (`true`) or
    /// refused it at once (`false`).
    pub fn record_prompted(&mut self, prompted: bool) {
        push(&mut self.prompted, prompted);
    }

    /// Whether a decoy should prompt for keyboard-interactive: as most recent real
    /// upstreams did (yes, until one is known).
    pub fn decoy_prompts(&self) -> bool {
        let yes = self.prompted.iter().filter(|p| **p).count();
        yes * 2 >= self.prompted.len()
    }

    /// How long the decoy takes for `answer`: one of the middle half of the recent
    /// times, chosen by `pick` (a random number), so that decoys vary like real answers.
    /// A refusal takes at least [`MIN_FAILURE_TIME`]; with nothing recorded yet, a
    /// refusal takes that and a prompt or a list of methods comes at once.
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
            Answer::PasswordRefusal | Answer::KeyboardRefusal => typical.max(MIN_FAILURE_TIME),
            Answer::Prompt | Answer::Methods => typical,
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
        let password = Answer::PasswordRefusal;
        assert_eq!(t.decoy(password, 7), MIN_FAILURE_TIME, "nothing known yet");
        assert_eq!(t.decoy(Answer::Prompt, 7), Duration::ZERO);
        // A PAM upstream: about 3 s, with one fast outlier and one hung answer.
        for took in [2900, 2950, 3000, 3050, 2980, 20, 60_000, 2990] {
            t.record(password, ms(took));
        }
        for pick in 0..20 {
            let d = t.decoy(password, pick);
            assert!(d >= ms(2900) && d <= ms(3050), "{d:?}");
        }
        t.record(Answer::Prompt, ms(12));
        assert_eq!(t.decoy(Answer::Prompt, 3), ms(12));
        // Keyboard-interactive refusals are their own: none known yet.
        assert_eq!(t.decoy(Answer::KeyboardRefusal, 3), MIN_FAILURE_TIME);
        // So is the time to a server's list of methods, with no minimum.
        assert_eq!(t.decoy(Answer::Methods, 3), Duration::ZERO);
        t.record(Answer::Methods, ms(25));
        assert_eq!(t.decoy(Answer::Methods, 3), ms(25));
    }

    #[test]
    fn decoys_prompt_as_most_real_upstreams_do() {
        let mut t = FailureTimes::default();
        assert!(t.decoy_prompts(), "until known");
        t.record_prompted(false);
        t.record_prompted(false);
        t.record_prompted(true);
        assert!(!t.decoy_prompts());
        t.record_prompted(true);
        assert!(t.decoy_prompts());
    }

    #[test]
    fn fast_upstreams_still_take_the_minimum_and_old_times_age_out() {
        let mut t = FailureTimes::default();
        let password = Answer::PasswordRefusal;
        for _ in 0..WINDOW {
            t.record(password, ms(3000));
        }
        for _ in 0..WINDOW {
            t.record(password, ms(5));
        }
        assert_eq!(t.decoy(password, 1), MIN_FAILURE_TIME);
        assert_eq!(t.password_refusals.len(), WINDOW);
        t.record(password, Duration::from_secs(3600));
        assert!(t.password_refusals.iter().all(|d| *d <= MAX_DECOY_TIME));
    }
}
