//! Counting authentication attempts the way sshd does (`auth2.c`, `userauth_finish`):
//!
//! - every request that is answered with USERAUTH_FAILURE counts, whatever its method
//!   (a public-key query for a key that is not allowed, an unknown method, a wrong
//!   password), except a first `none` request, which clients send to learn the methods,
//!   and a failure with partial success;
//! - a request that is answered with something else (PK_OK for an allowed key, a
//!   keyboard-interactive prompt) does not count: it is not a failure yet;
//! - at `max_tries` failures the server hangs up instead of sending the failure.
//!
//! sshd relies on LoginGraceTime to end a client that repeats uncounted requests forever
//! (asking about an allowed key over and over). The proxy also caps the number of
//! requests of any kind at [`MAX_REQUESTS_PER_TRY`] times `max_tries`: a client that
//! really tries needs one or two per attempt.

/// Why an authentication attempt failed, for the log line each failure gets (the client
/// only ever sees the uniform USERAUTH_FAILURE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedBecause {
    /// The name is not known to the hooks.
    UnknownUser,
    /// A public-key query ("may I use this key?") for a key not authorized for the user.
    KeyNotAuthorized,
    /// A signed public-key request with a key not authorized for the user, or a
    /// signature that does not verify.
    KeyRefused,
    /// The upstream refused the password or keyboard-interactive answers.
    UpstreamRefused,
    /// The user's server could not be reached, or broke off the exchange.
    UpstreamUnavailable,
    /// A method the proxy does not offer (`none`, host-based, GSSAPI, ...).
    MethodNotOffered,
    /// An RSA key smaller than `required_rsa_size` (refused even when listed).
    RsaKeyTooSmall,
}

impl FailedBecause {
    pub fn label(self) -> &'static str {
        match self {
            FailedBecause::UnknownUser => "unknown user",
            FailedBecause::KeyNotAuthorized => "key not authorized (query)",
            FailedBecause::KeyRefused => "key not authorized or bad signature",
            FailedBecause::UpstreamRefused => "upstream refused",
            FailedBecause::UpstreamUnavailable => "upstream unreachable or broke off",
            FailedBecause::MethodNotOffered => "method not offered",
            FailedBecause::RsaKeyTooSmall => "RSA key smaller than required_rsa_size",
        }
    }
}

/// Requests of any kind allowed per counted attempt.
pub const MAX_REQUESTS_PER_TRY: u32 = 8;

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Answer and wait for the next request.
    Continue,
    /// Hang up: the limit is reached (do not send the failure).
    HangUp,
}

/// One connection's attempts.
#[derive(Clone, Debug)]
pub struct AuthAttempts {
    max_tries: u32,
    requests: u32,
    failures: u32,
}

impl AuthAttempts {
    pub fn new(max_tries: u32) -> Self {
        AuthAttempts {
            max_tries: max_tries.max(1),
            requests: 0,
            failures: 0,
        }
    }

    /// A request arrived. `HangUp` when the client sent more requests than any client
    /// that really tries would.
    pub fn request(&mut self) -> Next {
        self.requests += 1;
        if self.requests > self.max_tries.saturating_mul(MAX_REQUESTS_PER_TRY) {
            Next::HangUp
        } else {
            Next::Continue
        }
    }

    /// The current request failed. `none`: it was a `none` request; `partial`: the
    /// failure carries partial success.
    pub fn failed(&mut self, none: bool, partial: bool) -> Next {
        let free_first_none = none && self.requests <= 1;
        if !partial && !free_first_none {
            self.failures += 1;
        }
        if self.failures >= self.max_tries {
            Next::HangUp
        } else {
            Next::Continue
        }
    }

    /// Failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_none_is_free_and_every_other_failure_counts() {
        let mut a = AuthAttempts::new(6);
        assert_eq!(a.request(), Next::Continue);
        assert_eq!(a.failed(true, false), Next::Continue);
        assert_eq!(a.failures(), 0, "the first none is free");
        for i in 1..6 {
            a.request();
            // A query for a key that is not allowed, an unknown method, `none` again...
            assert_eq!(a.failed(i % 2 == 0, false), Next::Continue);
            assert_eq!(a.failures(), i);
        }
        a.request();
        assert_eq!(a.failed(false, false), Next::HangUp, "the sixth failure");
    }

    #[test]
    fn partial_success_and_postponed_answers_do_not_count() {
        let mut a = AuthAttempts::new(2);
        a.request();
        assert_eq!(a.failed(false, true), Next::Continue);
        // PK_OK or a keyboard-interactive prompt: a request, no failure.
        a.request();
        a.request();
        assert_eq!(a.failures(), 0);
        a.request();
        assert_eq!(a.failed(false, false), Next::Continue);
        a.request();
        assert_eq!(a.failed(false, false), Next::HangUp);
    }

    #[test]
    fn endless_uncounted_requests_are_cut_off() {
        // Asking "is this key allowed?" about an allowed key, again and again.
        let mut a = AuthAttempts::new(6);
        let allowed = (0..1000)
            .take_while(|_| a.request() == Next::Continue)
            .count();
        assert_eq!(allowed as u32, 6 * MAX_REQUESTS_PER_TRY);
        assert_eq!(
            AuthAttempts::new(0).max_tries,
            1,
            "0 would hang up before any try"
        );
    }
}
