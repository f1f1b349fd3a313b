//! Which authentication methods the proxy lists to a client (the name-list of
//! SSH_MSG_USERAUTH_FAILURE, RFC 4252 5.1), and the list a name without a server gets.
//!
//! Clients choose their next method from that list. A client told `password` by a server
//! that only takes keyboard-interactive types a password that can never work, and one
//! not told `keyboard-interactive` never tries it (paramiko's `password=` falls back to
//! keyboard-interactive only when the list leaves `password` out). So the list follows
//! what the user's server offers for that account: its answer to a `none` request (the
//! proxy's probe on the upstream connection), or its refusal of a request passed through.
//! `publickey` is always listed, since the proxy checks public keys itself and then logs
//! in with its own; `password` and `keyboard-interactive` only when the server lists
//! them; nothing else (the proxy passes no other method through).
//!
//! A name the proxy does not know (or whose server does not answer) has no server to
//! ask. Listing something fixed there would tell it apart from real accounts, so it gets
//! the list real servers gave most often recently ([`SeenMethods::decoy`]), after as long
//! as real servers took to give theirs (`core::failure_times`, [`Answer::Methods`]).
//!
//! [`Answer::Methods`]: crate::core::failure_times::Answer::Methods

use std::collections::VecDeque;

/// The methods the proxy lists: `publickey` always, the two passed through when the
/// user's server offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Methods {
    pub password: bool,
    pub keyboard_interactive: bool,
}

impl Methods {
    /// Every method the proxy can serve: what a name gets before any server was heard.
    pub const ALL: Methods = Methods {
        password: true,
        keyboard_interactive: true,
    };

    /// The proxy's list for a server that offers `offered` (its USERAUTH_FAILURE
    /// name-list).
    pub fn from_upstream<'a>(offered: impl IntoIterator<Item = &'a str>) -> Methods {
        let mut m = Methods {
            password: false,
            keyboard_interactive: false,
        };
        for name in offered {
            match name {
                "password" => m.password = true,
                "keyboard-interactive" => m.keyboard_interactive = true,
                _ => {}
            }
        }
        m
    }

    /// The names, in the order sshd lists them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            Some("publickey"),
            self.password.then_some("password"),
            self.keyboard_interactive.then_some("keyboard-interactive"),
        ]
        .into_iter()
        .flatten()
    }
}

/// Lists remembered: the most recent ones, across all upstreams.
pub const WINDOW: usize = 64;

/// The method lists real upstreams gave recently, one per login (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct SeenMethods {
    recent: VecDeque<Methods>,
}

impl SeenMethods {
    /// A real upstream gave `methods`.
    pub fn record(&mut self, methods: Methods) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(methods);
    }

    /// The list for a name without a server: the one real upstreams gave most often
    /// recently (of two as frequent, the one given last); [`Methods::ALL`] until one was
    /// heard.
    pub fn decoy(&self) -> Methods {
        let count = |m: &Methods| self.recent.iter().filter(|r| *r == m).count();
        // Scanning from the newest, the first of the highest count wins.
        let mut best: Option<(usize, Methods)> = None;
        for m in self.recent.iter().rev() {
            let n = count(m);
            if best.is_none_or(|(most, _)| n > most) {
                best = Some((n, *m));
            }
        }
        best.map_or(Methods::ALL, |(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYBOARD_ONLY: Methods = Methods {
        password: false,
        keyboard_interactive: true,
    };
    const PASSWORD_ONLY: Methods = Methods {
        password: true,
        keyboard_interactive: false,
    };

    fn list(m: Methods) -> Vec<&'static str> {
        m.names().collect()
    }

    #[test]
    fn publickey_is_always_listed_and_only_passed_through_methods_follow() {
        let sshd_kbd_only = Methods::from_upstream("publickey,keyboard-interactive".split(','));
        assert_eq!(sshd_kbd_only, KEYBOARD_ONLY);
        assert_eq!(list(sshd_kbd_only), ["publickey", "keyboard-interactive"]);
        // A server without publickey: the proxy still checks keys itself.
        assert_eq!(
            list(Methods::from_upstream(["password", "hostbased"])),
            ["publickey", "password"]
        );
        // GSSAPI and host-based are not passed through; nothing, or garbage, leaves
        // publickey alone.
        assert_eq!(
            list(Methods::from_upstream(["gssapi-with-mic", "hostbased", ""])),
            ["publickey"]
        );
        assert_eq!(
            list(Methods::from_upstream([
                "keyboard-interactive",
                "password",
                "publickey"
            ])),
            ["publickey", "password", "keyboard-interactive"],
            "in sshd's order, whatever the server's"
        );
        assert_eq!(
            list(Methods::ALL),
            ["publickey", "password", "keyboard-interactive"]
        );
    }

    #[test]
    fn the_decoy_is_the_list_real_servers_gave_most_often() {
        let mut seen = SeenMethods::default();
        assert_eq!(seen.decoy(), Methods::ALL, "nothing heard yet");
        seen.record(PASSWORD_ONLY);
        assert_eq!(seen.decoy(), PASSWORD_ONLY);
        seen.record(KEYBOARD_ONLY);
        assert_eq!(seen.decoy(), KEYBOARD_ONLY, "a tie goes to the latest");
        seen.record(PASSWORD_ONLY);
        seen.record(KEYBOARD_ONLY);
        seen.record(PASSWORD_ONLY);
        assert_eq!(seen.decoy(), PASSWORD_ONLY, "three to two");
    }

    #[test]
    fn old_lists_age_out() {
        let mut seen = SeenMethods::default();
        for _ in 0..WINDOW {
            seen.record(PASSWORD_ONLY);
        }
        for _ in 0..WINDOW / 2 + 1 {
            seen.record(KEYBOARD_ONLY);
        }
        assert_eq!(seen.recent.len(), WINDOW);
        assert_eq!(seen.decoy(), KEYBOARD_ONLY);
    }
}
