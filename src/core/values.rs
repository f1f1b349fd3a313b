//! Plain values shared by every layer: no behaviour beyond parsing and printing, no
//! imports from the rest of the daemon. Anything that more than one layer names lives
//! here, so that no layer imports another's behaviour module for a type.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sshr_protocol::cipher::{CipherAlg, MacAlg};

/// Which side of the proxy a leg faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

/// Which tunnels a user may open through the proxy: the words of sshd's `PermitTunnel`,
/// with `deny` and `any` for its `no` and `yes` (which are not accepted: a policy reads
/// the same wherever it is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TunnelPolicy {
    /// No tunnels (the default, like sshd's `PermitTunnel no`).
    #[default]
    Deny,
    /// Layer 3 tunnels only (`Tunnel point-to-point`, tun devices).
    PointToPoint,
    /// Layer 2 tunnels only (`Tunnel ethernet`, tap devices).
    Ethernet,
    /// Both modes; the upstream's `PermitTunnel` still decides.
    Any,
}

impl TunnelPolicy {
    /// Whether a tunnel of `mode` may be opened.
    pub fn allows(self, mode: TunnelMode) -> bool {
        match self {
            TunnelPolicy::Deny => false,
            TunnelPolicy::PointToPoint => mode == TunnelMode::PointToPoint,
            TunnelPolicy::Ethernet => mode == TunnelMode::Ethernet,
            TunnelPolicy::Any => true,
        }
    }

    /// The configuration words, for messages.
    pub const NAMES: &'static str = "\"deny\", \"point-to-point\", \"ethernet\" or \"any\"";
}

/// A word that is not a [`TunnelPolicy`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tunnel policy: use {names}", names = TunnelPolicy::NAMES)]
pub struct BadTunnelPolicy(pub String);

impl FromStr for TunnelPolicy {
    type Err = BadTunnelPolicy;

    fn from_str(s: &str) -> Result<Self, BadTunnelPolicy> {
        match s {
            "deny" => Ok(TunnelPolicy::Deny),
            "point-to-point" => Ok(TunnelPolicy::PointToPoint),
            "ethernet" => Ok(TunnelPolicy::Ethernet),
            "any" => Ok(TunnelPolicy::Any),
            _ => Err(BadTunnelPolicy(s.to_owned())),
        }
    }
}

impl fmt::Display for TunnelPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelPolicy::Deny => "deny",
            TunnelPolicy::PointToPoint => "point-to-point",
            TunnelPolicy::Ethernet => "ethernet",
            TunnelPolicy::Any => "any",
        })
    }
}

/// The tunnel mode of a `tun@openssh.com` open (OpenSSH `PROTOCOL` 2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    /// 1: layer 3, IP packets (tun).
    PointToPoint,
    /// 2: layer 2, Ethernet frames (tap).
    Ethernet,
    /// Any other value; only the `any` policy lets it through (the upstream refuses it).
    Other(u32),
}

impl TunnelMode {
    pub fn from_wire(mode: u32) -> Self {
        match mode {
            1 => TunnelMode::PointToPoint,
            2 => TunnelMode::Ethernet,
            n => TunnelMode::Other(n),
        }
    }

    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            TunnelMode::PointToPoint => "point-to-point",
            TunnelMode::Ethernet => "ethernet",
            TunnelMode::Other(_) => "other",
        }
    }
}

impl fmt::Display for TunnelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelMode::Other(n) => write!(f, "mode-{n}"),
            m => f.write_str(m.label()),
        }
    }
}

/// `[tunnels]`: the tunnel policy of users the hooks say nothing about, and when an
/// open tunnel gets an alert or a record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelSettings {
    /// The policy of users without a `tunnel` key (and of hooks that do not say).
    pub default: TunnelPolicy,
    /// A tunnel open longer than this gets one alert line; `None`: no alert.
    pub max_duration: Option<Duration>,
    /// A tunnel that carried more bytes (both ways) gets one alert line; `None`: no alert.
    pub max_bytes: Option<u64>,
    /// How often an open tunnel gets a log record with its duration and bytes.
    pub report_interval: Duration,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            default: TunnelPolicy::Deny,
            max_duration: None,
            max_bytes: None,
            report_interval: Duration::from_secs(60),
        }
    }
}

/// The cipher and MAC an upstream connection was asked for.
pub type CipherPreference = (Option<CipherAlg>, Option<MacAlg>);

/// A login name split at the `target_separator`: `alice+web2` is the account `alice`
/// and its server `web2`. The separator must pass through scp, sftp, rsync and git
/// unchanged, which is why it is `+` by default and never `@` or `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginName {
    pub user: String,
    /// `None`: the account's default server.
    pub target: Option<String>,
}

impl LoginName {
    /// Splits `name` at the first `separator`; `None` when what follows it is not a
    /// [target name](is_target_name) (such a login is answered like an unknown user).
    pub fn parse(name: &str, separator: Option<char>) -> Option<LoginName> {
        match separator.and_then(|sep| name.split_once(sep)) {
            None => Some(LoginName {
                user: name.to_owned(),
                target: None,
            }),
            Some((user, target)) if !user.is_empty() && is_target_name(target) => Some(LoginName {
                user: user.to_owned(),
                target: Some(target.to_owned()),
            }),
            Some(_) => None,
        }
    }
}

/// A server name a client can type after the separator: 1 to 64 ASCII letters, digits,
/// `-`, `_` or `.`.
pub fn is_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `argv` is a usable `kind = "command"` command line: a program given by its absolute path, and
/// no `%` sequence other than `%u`, `%t`, `%a` and `%%` (a typo such as `%U` would
/// otherwise reach the program as it is).
pub fn check_argv(argv: &[String]) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("the command is empty".into());
    };
    if !program.starts_with('/') {
        return Err(format!(
            "the program {program:?} must be given by its absolute path"
        ));
    }
    for arg in &argv[1..] {
        let mut chars = arg.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('u' | 't' | 'a' | '%') => {}
                    Some(other) => {
                        return Err(format!("unknown %{other} in {arg:?}: use %u, %t, %a or %%"))
                    }
                    None => return Err(format!("lone % at the end of {arg:?}: write %%")),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_split_at_the_first_separator() {
        let split = |name, sep| LoginName::parse(name, sep).map(|n| (n.user, n.target));
        assert_eq!(split("alice", Some('+')), Some(("alice".into(), None)));
        assert_eq!(
            split("alice+web2", Some('+')),
            Some(("alice".into(), Some("web2".into())))
        );
        assert_eq!(split("alice+web2", None), Some(("alice+web2".into(), None)));
        assert_eq!(
            split("a.b%db-1", Some('%')),
            Some(("a.b".into(), Some("db-1".into())))
        );
        for bad in [
            "alice+",
            "+web2",
            "alice+web 2",
            "alice+a+b",
            "alice+web2;rm",
        ] {
            assert_eq!(split(bad, Some('+')), None, "{bad}");
        }
        assert!(!is_target_name(&"x".repeat(65)));
    }

    #[test]
    fn tunnel_policy_words() {
        for (word, policy) in [
            ("deny", TunnelPolicy::Deny),
            ("point-to-point", TunnelPolicy::PointToPoint),
            ("ethernet", TunnelPolicy::Ethernet),
            ("any", TunnelPolicy::Any),
        ] {
            assert_eq!(word.parse::<TunnelPolicy>(), Ok(policy), "{word}");
            assert_eq!(policy.to_string(), word);
        }
        for word in ["yes", "no", " any", "Deny", ""] {
            assert!(word.parse::<TunnelPolicy>().is_err(), "{word:?}");
        }
        let err = "tun".parse::<TunnelPolicy>().unwrap_err();
        assert_eq!(err, BadTunnelPolicy("tun".into()));
        assert!(err.to_string().contains("\"point-to-point\""), "{err}");
    }

    #[test]
    fn policies_allow_their_modes_only() {
        use TunnelMode::*;
        let cases = [
            (TunnelPolicy::Deny, [false, false, false]),
            (TunnelPolicy::PointToPoint, [true, false, false]),
            (TunnelPolicy::Ethernet, [false, true, false]),
            (TunnelPolicy::Any, [true, true, true]),
        ];
        for (policy, allowed) in cases {
            for (mode, want) in [PointToPoint, Ethernet, Other(7)].into_iter().zip(allowed) {
                assert_eq!(policy.allows(mode), want, "{policy} {mode}");
            }
        }
    }

    #[test]
    fn sides_and_modes_print_for_logs() {
        assert_eq!(Side::Client.to_string(), "client");
        assert_eq!(Side::Upstream.to_string(), "upstream");
        assert_eq!(TunnelMode::from_wire(1).to_string(), "point-to-point");
        assert_eq!(TunnelMode::from_wire(9).to_string(), "mode-9");
        assert_eq!(TunnelMode::from_wire(9).label(), "other");
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is its IPv4 address: what an address
/// is matched against networks as.
pub fn canonical_ip(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// What a listening socket expects first from each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// `listen`: the client's SSH identification line.
    Ssh,
    /// `proxy_protocol.listen`: a PROXY protocol header from a trusted load balancer,
    /// then the client's SSH stream.
    ProxyProtocol,
}
