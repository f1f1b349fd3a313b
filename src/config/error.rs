//! Configuration errors: where (origin, line, column) and what.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;

use crate::core::values::TunnelPolicy;

/// A configuration error: where, and what.
#[derive(Debug)]
pub struct ConfigError {
    pub(super) origin: String,
    pub(super) line: Option<usize>,
    pub(super) column: Option<usize>,
    pub(super) problem: ConfigProblem,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// TOML syntax, an unknown key, a missing key or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    #[error(
        "`{key}`: unknown algorithm {name:?} (supported: {})",
        supported_algorithms(key)
    )]
    UnknownAlgorithm { key: &'static str, name: String },
    #[error("`{key}` lists {name:?} twice")]
    DuplicateAlgorithm { key: &'static str, name: String },
    #[error("`{0}` needs at least one algorithm")]
    NoAlgorithms(&'static str),
    #[error("`algorithms.upstream_cipher` is {0:?}; it takes \"fastest\" or \"same-as-client\"")]
    BadUpstreamCipher(String),
    #[error("`listen` needs at least one address")]
    NoListenAddress,
    #[error("{key} address {addr:?} is not IP:PORT (e.g. 127.0.0.1:2222 or [::]:2222)")]
    BadListenAddress { key: &'static str, addr: String },
    #[error("listen address {0} is given twice")]
    DuplicateListenAddress(SocketAddr),
    #[error("`host_keys` needs at least one key file")]
    NoHostKeys,
    #[error("`{0}` is an empty path")]
    EmptyPath(&'static str),
    #[error("`upstream_key` needs at least one key file")]
    NoUpstreamKeys,
    #[error("`upstream_key` lists {} twice", .0.display())]
    DuplicateUpstreamKey(std::path::PathBuf),
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    #[error("`{key}` must be at most {max}")]
    TooLarge { key: &'static str, max: u64 },
    #[error("`limits.buffer_pool_bytes_per_shard` = {bytes} is below the minimum of {min} (two relay buffers)")]
    BufferPoolTooSmall { bytes: usize, min: usize },
    #[error("user {name:?} is listed twice (first at line {first_line})")]
    DuplicateUser { name: String, first_line: usize },
    #[error("user name {name:?} is invalid: {reason}")]
    BadUserName { name: String, reason: &'static str },
    #[error("user {user:?}: upstream {addr:?} is not host:port ({reason})")]
    BadUpstreamAddress {
        user: String,
        addr: String,
        reason: &'static str,
    },
    #[error("user {user:?}: upstream_user is empty")]
    EmptyUpstreamUser { user: String },
    #[error("user {user:?}: give either authorized_keys or authorized_keys_file, not both")]
    BothAuthorizedKeys { user: String },
    #[error("user {user:?}: upstream_host_key cannot be used: {reason}")]
    BadUpstreamHostKey { user: String, reason: String },
    #[error(
        "`{key}` = {value:?} is not a tunnel policy: use {}",
        TunnelPolicy::NAMES
    )]
    BadTunnelPolicy { key: &'static str, value: String },
    #[error("`limits.max_startups` = {value:?}: {reason}")]
    BadStartupLimit { value: String, reason: String },
    #[error(
        "`penalties.exempt` entry {value:?} is not an address or network (e.g. \"10.0.0.0/8\")"
    )]
    BadNetwork { value: String },
    #[error(
        "`proxy_protocol.trusted` must list the load balancers' networks when \
         `proxy_protocol.listen` is given (anyone else could forge client addresses)"
    )]
    NoTrustedProxies,
    #[error("{0:?} is not a user name to run as")]
    BadRunAsUser(String),
    #[error("`audit_log` must be a file path or \"-\" (standard error)")]
    BadAuditLog,
    #[error("`limits.packet_timeout_secs` must be below `limits.auth_timeout_secs`")]
    PacketTimeoutTooLong,
    #[error("user {user:?} has no server: give `upstream`, or a `targets` list")]
    NoUpstream { user: String },
    #[error(
        "user {user:?}: target name {target:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
    )]
    BadTargetName { user: String, target: String },
    #[error("user {user:?}: target {target:?} is listed twice")]
    DuplicateTarget { user: String, target: String },
    #[error("provider ({kind}): {reason}")]
    BadProvider { kind: String, reason: String },
    #[error("`required_rsa_size` = {value} must be from {min} (OpenSSH's smallest RSA key) to {max} bits")]
    RsaSizeOutOfRange {
        value: usize,
        min: usize,
        max: usize,
    },
    #[error("`target_separator` = {0:?} must be one punctuation character other than @ : / \\ ' \" ` $, or \"\" for none")]
    BadTargetSeparator(String),
}

impl ConfigError {
    /// An error about the whole text (it cannot be read, or has no position).
    pub(super) fn whole(origin: &str, problem: ConfigProblem) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            line: None,
            column: None,
            problem,
        }
    }

    /// An error at byte offset `span.start` of `text`.
    pub(super) fn at(
        text: &str,
        origin: &str,
        span: Range<usize>,
        problem: ConfigProblem,
    ) -> ConfigError {
        let (line, column) = line_col(text, span.start);
        ConfigError {
            origin: origin.to_string(),
            line: Some(line),
            column: Some(column),
            problem,
        }
    }

    /// The problem, for callers that react to specific errors.
    pub fn problem(&self) -> &ConfigProblem {
        &self.problem
    }

    /// 1-based line of the offending key or value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// Where the configuration came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            ConfigProblem::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// The names an `[algorithms]` list takes, for its error message.
fn supported_algorithms(key: &str) -> String {
    use crate::core::algorithms::LegAlgorithms;
    let d = LegAlgorithms::default();
    let names: Vec<&str> = if key.ends_with("kex") {
        d.kex.iter().map(|a| a.name()).collect()
    } else if key.ends_with("ciphers") {
        d.ciphers.iter().map(|a| a.name()).collect()
    } else {
        d.macs.iter().map(|a| a.name()).collect()
    };
    names.join(", ")
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

pub(super) fn one_line(message: &str) -> String {
    message
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd\n", 0), (1, 1));
        assert_eq!(line_col("ab\ncd\n", 4), (2, 2));
        assert_eq!(
            line_col("é\nx", 1),
            (1, 1),
            "not on a char boundary: rounds down"
        );
        assert_eq!(line_col("x", 99), (1, 2));
    }
}
