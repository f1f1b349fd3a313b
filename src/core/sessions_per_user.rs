//! Relayed sessions per account, whole proxy (`limits.max_sessions_per_user`).
//!
//! Counted by the account name the client logged in with (the part before the target
//! separator), once the client has proven who it is: a refusal here tells nothing about
//! which names exist. An account leaves the map with its last session, so the map holds
//! at most one entry per live session.

use std::collections::HashMap;

/// Live relayed sessions per account.
#[derive(Debug, Default)]
pub struct SessionsPerUser {
    counts: HashMap<String, usize>,
}

impl SessionsPerUser {
    /// Counts one more session of `user` unless it has `cap` already (`None`: no cap).
    /// Returns whether it was counted.
    pub fn try_add(&mut self, user: &str, cap: Option<usize>) -> bool {
        match self.counts.get_mut(user) {
            Some(n) if cap.is_some_and(|cap| *n >= cap) => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if cap == Some(0) => false,
            None => {
                self.counts.insert(user.to_owned(), 1);
                true
            }
        }
    }

    /// One session of `user` ended.
    pub fn remove(&mut self, user: &str) {
        if let Some(n) = self.counts.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(user);
            }
        }
    }

    /// Sessions of `user` now.
    pub fn count(&self, user: &str) -> usize {
        self.counts.get(user).copied().unwrap_or(0)
    }

    /// Accounts with a session now.
    pub fn accounts(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_account_on_its_own() {
        let mut s = SessionsPerUser::default();
        assert!(s.try_add("alice", Some(2)));
        assert!(s.try_add("alice", Some(2)));
        assert!(!s.try_add("alice", Some(2)));
        assert!(s.try_add("bob", Some(2)));
        assert_eq!((s.count("alice"), s.count("bob")), (2, 1));
        s.remove("alice");
        assert!(s.try_add("alice", Some(2)));
        assert!(!s.try_add("alice", Some(2)));
    }

    #[test]
    fn without_a_cap_it_only_counts() {
        let mut s = SessionsPerUser::default();
        for _ in 0..1000 {
            assert!(s.try_add("alice", None));
        }
        assert_eq!(s.count("alice"), 1000);
    }

    #[test]
    fn accounts_leave_with_their_last_session() {
        let mut s = SessionsPerUser::default();
        s.try_add("alice", Some(1));
        s.try_add("bob", Some(1));
        s.remove("alice");
        s.remove("bob");
        assert_eq!(s.accounts(), 0);
        // A stray removal changes nothing.
        s.remove("carol");
        assert_eq!(s.accounts(), 0);
    }
}
