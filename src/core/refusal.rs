//! Every line the proxy itself tells a peer when it ends a connection or refuses a
//! channel: its text and its reason code in one place, chosen by value, never by
//! comparing strings.
//!
//! The texts say why in one line and never whether a user name exists: a refusal that
//! only a known account can reach (the user's server failing) is given only once the
//! client has proven who it is, or replaced by the ordinary authentication failure.

use std::fmt;

use sshr_protocol::msg::disconnect;
use sshr_protocol::AlgorithmList;

/// SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (RFC 4254 5.1).
const OPEN_ADMINISTRATIVELY_PROHIBITED: u32 = 1;
/// SSH_OPEN_RESOURCE_SHORTAGE (RFC 4254 5.1).
const OPEN_RESOURCE_SHORTAGE: u32 = 4;

/// Why the proxy ends a connection: sent as an SSH_MSG_DISCONNECT with [`Refusal::code`]
/// and [`Refusal::message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    // At accept, before key exchange (a plaintext DISCONNECT after our version line).
    /// The shard serves `limits.max_sessions_per_shard` sessions.
    SessionLimit,
    /// The source address is penalised (`[penalties]`).
    Penalised,
    /// Early drop: too many unauthenticated connections (`limits.max_startups`).
    Startups,

    // Before the login.
    /// A packet longer than any handshake needs.
    PacketTooLarge,
    /// The shard's handshake memory budget is spent.
    Busy,
    /// A packet's first bytes came and the rest did not (`limits.packet_timeout_secs`).
    PacketStalled,
    /// `limits.auth_timeout_secs` passed without a login.
    AuthTimedOut,

    // The login.
    /// Something other than SSH_MSG_USERAUTH_REQUEST where one belongs.
    ExpectedUserauth,
    /// More requests than a login may make (`core::attempts`).
    TooManyRequests,
    /// `limits.max_auth_tries` failed attempts.
    TooManyFailures,
    MalformedRequest,
    MalformedInfoResponse,
    /// A service other than ssh-connection.
    WrongService,
    /// Another user name than in the first request (OpenSSH refuses it too).
    UserChanged,
    /// A state the login code should never reach.
    Internal,
    /// No provider could answer for the user, and no recent answer was kept: said to
    /// every name alike, so it tells nothing about which exist.
    AccountServiceUnavailable,
    /// The account has several servers and the client named none (said only to a
    /// client that proved its key).
    ChooseTarget,

    // The user's server (said only to a client that proved who it is).
    Unreachable,
    UnexpectedHostKey,
    /// The server's key exchange offered nothing the proxy supports in one list (RFC
    /// 4253 7.1); the log has both lists.
    NoCommonAlgorithm(Negotiated),
    /// The server refused the proxy's own login, or the hooks gave no key for it.
    LoginRefused,
    /// The account has `limits.max_sessions_per_user` relayed sessions already (said
    /// only to a client that proved who it is).
    TooManyUserSessions,

    // The relay.
    /// To the upstream: the client left `limits.keepalive_count_max` keepalives
    /// unanswered.
    ClientGone,
    /// To the client: the upstream left them unanswered.
    UpstreamGone,
    /// To both: no channel data either way for `limits.idle_timeout_secs`.
    IdleTimeout,

    // Any time.
    /// The shutdown grace period is over.
    ShuttingDown,
    /// To an upstream: a connection held ready for a login expired unused.
    Idle,
}

impl Refusal {
    /// The refusals made at accept, in the order of their metric counters.
    pub const AT_ACCEPT: [Refusal; 3] =
        [Refusal::SessionLimit, Refusal::Penalised, Refusal::Startups];

    /// The SSH_MSG_DISCONNECT reason code (RFC 4253 11.1).
    pub fn code(self) -> u32 {
        use Refusal::*;
        match self {
            SessionLimit | Penalised | Startups | Busy | TooManyUserSessions => {
                disconnect::TOO_MANY_CONNECTIONS
            }
            ClientGone | UpstreamGone => disconnect::CONNECTION_LOST,
            PacketTooLarge
            | PacketStalled
            | ExpectedUserauth
            | MalformedRequest
            | MalformedInfoResponse
            | UserChanged
            | Internal => disconnect::PROTOCOL_ERROR,
            TooManyRequests | TooManyFailures => disconnect::NO_MORE_AUTH_METHODS_AVAILABLE,
            WrongService => disconnect::SERVICE_NOT_AVAILABLE,
            AuthTimedOut | Unreachable | UnexpectedHostKey | NoCommonAlgorithm(_)
            | LoginRefused | ShuttingDown | Idle | ChooseTarget | IdleTimeout => {
                disconnect::BY_APPLICATION
            }
            AccountServiceUnavailable => disconnect::SERVICE_NOT_AVAILABLE,
        }
    }

    /// The one line the peer is told.
    pub fn message(self) -> &'static str {
        use Refusal::*;
        match self {
            SessionLimit => "sshr: too many sessions on this proxy, try again later",
            Penalised => {
                "sshr: too many failed or abandoned logins from your address, try again later"
            }
            Startups => "sshr: too many logins in progress on this proxy, try again later",
            PacketTooLarge => "sshr: packet too large before authentication",
            Busy => "sshr: the proxy is busy, try again later",
            PacketStalled => "sshr: packet not completed in time",
            AuthTimedOut => "sshr: authentication timed out",
            ExpectedUserauth => "sshr: expected a user authentication request",
            TooManyRequests => "sshr: too many authentication requests",
            TooManyFailures => "sshr: too many authentication failures",
            MalformedRequest => "sshr: malformed authentication request",
            MalformedInfoResponse => "sshr: malformed keyboard-interactive response",
            WrongService => "sshr: only the ssh-connection service is available",
            UserChanged => "sshr: changing the user name during authentication is not allowed",
            Internal => "sshr: internal error",
            AccountServiceUnavailable => {
                "sshr: the account service is unavailable, try again later"
            }
            ChooseTarget => {
                "sshr: this account has several servers: name one in the login, as user+server"
            }
            Unreachable => "sshr: the server for this account is unreachable",
            UnexpectedHostKey => {
                "sshr: the server for this account presented an unexpected host key"
            }
            NoCommonAlgorithm(Negotiated::KeyExchange) => {
                "sshr: the server for this account uses no key exchange that the proxy supports"
            }
            NoCommonAlgorithm(Negotiated::HostKey) => {
                "sshr: the server for this account uses no host key type that the proxy supports"
            }
            NoCommonAlgorithm(Negotiated::Cipher) => {
                "sshr: the server for this account uses no cipher that the proxy supports"
            }
            NoCommonAlgorithm(Negotiated::Mac) => {
                "sshr: the server for this account uses no MAC that the proxy supports"
            }
            NoCommonAlgorithm(Negotiated::Compression) => {
                "sshr: the server for this account uses no compression that the proxy supports"
            }
            LoginRefused => "sshr: the server for this account refused the proxy's login",
            TooManyUserSessions => "sshr: too many sessions for this account, try again later",
            ClientGone => "sshr: the client stopped answering",
            UpstreamGone => "sshr: the server stopped answering",
            IdleTimeout => "sshr: idle timeout, no data either way for too long",
            ShuttingDown => "sshr: the proxy is shutting down",
            Idle => "sshr: idle",
        }
    }

    /// A bounded label for metrics and logs of refusals at accept; `None` for the rest.
    pub fn accept_label(self) -> Option<&'static str> {
        match self {
            Refusal::SessionLimit => Some("session_limit"),
            Refusal::Penalised => Some("penalty"),
            Refusal::Startups => Some("startups"),
            _ => None,
        }
    }

    /// What the operator's log says about a refusal at accept (the client sees
    /// [`Refusal::message`]).
    pub fn log_reason(self) -> &'static str {
        match self {
            Refusal::SessionLimit => "max_sessions_per_shard reached",
            Refusal::Penalised => "source address penalised ([penalties])",
            Refusal::Startups => "too many unauthenticated connections (max_startups)",
            other => other.message(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Which list of a key exchange had no algorithm both sides support (RFC 4253 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    KeyExchange,
    HostKey,
    /// Either direction.
    Cipher,
    /// Either direction.
    Mac,
    Compression,
}

impl Negotiated {
    pub const ALL: [Negotiated; 5] = [
        Negotiated::KeyExchange,
        Negotiated::HostKey,
        Negotiated::Cipher,
        Negotiated::Mac,
        Negotiated::Compression,
    ];
}

/// The list of the protocol crate's `Error::NoCommonAlgorithm`, both directions of a
/// cipher, MAC or compression list as one.
impl From<AlgorithmList> for Negotiated {
    fn from(list: AlgorithmList) -> Negotiated {
        match list {
            AlgorithmList::KeyExchange => Negotiated::KeyExchange,
            AlgorithmList::HostKey => Negotiated::HostKey,
            AlgorithmList::CipherClientToServer | AlgorithmList::CipherServerToClient => {
                Negotiated::Cipher
            }
            AlgorithmList::MacClientToServer | AlgorithmList::MacServerToClient => Negotiated::Mac,
            AlgorithmList::CompressionClientToServer | AlgorithmList::CompressionServerToClient => {
                Negotiated::Compression
            }
        }
    }
}

/// Why the proxy refuses a channel the client opens: sent as an
/// SSH_MSG_CHANNEL_OPEN_FAILURE with [`ChannelRefusal::code`] and
/// [`ChannelRefusal::message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelRefusal {
    /// The account's tunnel policy does not allow this tunnel.
    TunnelNotAllowed,
    /// The session has as many tunnels as it may.
    TooManyTunnels,
}

impl ChannelRefusal {
    /// The reason code (RFC 4254 5.1).
    pub fn code(self) -> u32 {
        match self {
            ChannelRefusal::TunnelNotAllowed => OPEN_ADMINISTRATIVELY_PROHIBITED,
            ChannelRefusal::TooManyTunnels => OPEN_RESOURCE_SHORTAGE,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ChannelRefusal::TunnelNotAllowed => "sshr: tunnels are not allowed for this account",
            ChannelRefusal::TooManyTunnels => "sshr: too many tunnels in this session",
        }
    }

    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            ChannelRefusal::TunnelNotAllowed => "policy",
            ChannelRefusal::TooManyTunnels => "limit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 31] = [
        Refusal::NoCommonAlgorithm(Negotiated::KeyExchange),
        Refusal::NoCommonAlgorithm(Negotiated::HostKey),
        Refusal::NoCommonAlgorithm(Negotiated::Cipher),
        Refusal::NoCommonAlgorithm(Negotiated::Mac),
        Refusal::NoCommonAlgorithm(Negotiated::Compression),
        Refusal::TooManyUserSessions,
        Refusal::ClientGone,
        Refusal::UpstreamGone,
        Refusal::IdleTimeout,
        Refusal::AccountServiceUnavailable,
        Refusal::ChooseTarget,
        Refusal::SessionLimit,
        Refusal::Penalised,
        Refusal::Startups,
        Refusal::PacketTooLarge,
        Refusal::Busy,
        Refusal::PacketStalled,
        Refusal::AuthTimedOut,
        Refusal::ExpectedUserauth,
        Refusal::TooManyRequests,
        Refusal::TooManyFailures,
        Refusal::MalformedRequest,
        Refusal::MalformedInfoResponse,
        Refusal::WrongService,
        Refusal::UserChanged,
        Refusal::Internal,
        Refusal::Unreachable,
        Refusal::UnexpectedHostKey,
        Refusal::LoginRefused,
        Refusal::ShuttingDown,
        Refusal::Idle,
    ];

    #[test]
    fn every_message_is_one_short_line_that_names_the_proxy() {
        for r in ALL {
            let m = r.message();
            assert!(m.starts_with("sshr: "), "{r:?}");
            assert!(m.len() <= 100 && !m.contains('\n'), "{r:?}");
            assert_eq!(r.to_string(), m);
        }
        let mut seen = std::collections::HashSet::new();
        assert!(
            ALL.iter().all(|r| seen.insert(r.message())),
            "texts are distinct"
        );
    }

    #[test]
    fn no_message_names_an_account_or_a_user() {
        // A refusal reachable without proof must not depend on the name: none of the
        // texts carries anything but fixed words.
        for r in ALL {
            assert!(
                !r.message().contains('{') && !r.message().contains('%'),
                "{r:?}"
            );
        }
    }

    #[test]
    fn codes_follow_rfc_4253() {
        assert_eq!(
            Refusal::SessionLimit.code(),
            disconnect::TOO_MANY_CONNECTIONS
        );
        assert_eq!(Refusal::Busy.code(), disconnect::TOO_MANY_CONNECTIONS);
        assert_eq!(Refusal::MalformedRequest.code(), disconnect::PROTOCOL_ERROR);
        assert_eq!(
            Refusal::TooManyFailures.code(),
            disconnect::NO_MORE_AUTH_METHODS_AVAILABLE
        );
        assert_eq!(
            Refusal::WrongService.code(),
            disconnect::SERVICE_NOT_AVAILABLE
        );
        assert_eq!(Refusal::ShuttingDown.code(), disconnect::BY_APPLICATION);
    }

    #[test]
    fn only_accept_refusals_have_accept_labels() {
        for r in ALL {
            assert_eq!(
                r.accept_label().is_some(),
                Refusal::AT_ACCEPT.contains(&r),
                "{r:?}"
            );
        }
        assert_eq!(
            Refusal::Startups.log_reason(),
            "too many unauthenticated connections (max_startups)"
        );
    }

    #[test]
    fn a_failed_negotiation_names_the_list_that_failed() {
        for (from, list) in [
            (AlgorithmList::KeyExchange, Negotiated::KeyExchange),
            (AlgorithmList::HostKey, Negotiated::HostKey),
            (AlgorithmList::CipherClientToServer, Negotiated::Cipher),
            (AlgorithmList::CipherServerToClient, Negotiated::Cipher),
            (AlgorithmList::MacClientToServer, Negotiated::Mac),
            (AlgorithmList::MacServerToClient, Negotiated::Mac),
            (
                AlgorithmList::CompressionServerToClient,
                Negotiated::Compression,
            ),
        ] {
            assert_eq!(Negotiated::from(from), list, "{from}");
        }
        assert_eq!(
            Refusal::NoCommonAlgorithm(Negotiated::KeyExchange).message(),
            "sshr: the server for this account uses no key exchange that the proxy supports"
        );
        for list in Negotiated::ALL {
            let r = Refusal::NoCommonAlgorithm(list);
            assert_eq!(r.code(), disconnect::BY_APPLICATION);
            assert!(r.message().contains("that the proxy supports"), "{r:?}");
        }
    }

    #[test]
    fn channel_refusals_have_their_own_codes() {
        assert_eq!(ChannelRefusal::TunnelNotAllowed.code(), 1);
        assert_eq!(ChannelRefusal::TooManyTunnels.code(), 4);
        assert_ne!(
            ChannelRefusal::TunnelNotAllowed.message(),
            ChannelRefusal::TooManyTunnels.message()
        );
    }
}
