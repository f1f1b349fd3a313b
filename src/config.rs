//! The daemon's TOML configuration: parsing, defaults and validation.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file, the line
//! and what is wrong, on one line, so `sshr --check-config` output can be pasted into a
//! ticket. Paths are resolved against the configuration file's directory (the current
//! directory for the built-in default). Key files are not read here (see
//! [`crate::keys`]), nor are `authorized_keys_file`s (see
//! [`crate::providers::static_table`]), so a configuration can be checked on a machine
//! that does not hold the keys yet.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sshr_protocol::hostkey::PublicKey;
use toml::Spanned;

use crate::core::penalty::{PenaltySettings, StartupLimit};
use crate::core::values::TunnelPolicy;
use crate::io::pool::RELAY_BUFFER_SIZE;

/// The built-in configuration, used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// Name under which the built-in configuration appears in messages.
pub const DEFAULT_CONFIG_ORIGIN: &str = "<built-in config>";

/// A parsed and validated configuration. Cheap to share behind an `Arc`; shards keep a
/// snapshot.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Addresses to accept clients on; every shard listens on each (SO_REUSEPORT).
    pub listen: Vec<SocketAddr>,
    /// OpenSSH private key files of the proxy's host keys, in order of preference.
    pub host_keys: Vec<PathBuf>,
    /// OpenSSH private key file the proxy logs in to upstreams with.
    pub upstream_key: PathBuf,
    /// The static user table (`[[users]]`), used by the default hooks.
    pub users: Vec<UserConfig>,
    /// Number of shards; `None` means one per CPU.
    pub workers: Option<usize>,
    /// Address of the Prometheus endpoint, if any.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub rekey: Rekey,
    /// `[tunnels]`: default policy and alert thresholds of SSH tunnels (`ssh -w`).
    pub tunnels: Tunnels,
    /// `[warm_upstreams]`: upstream connections made ready before a login needs them.
    pub warm_upstreams: WarmUpstreams,
    /// `[penalties]`: sources refused for a while after failed or abandoned logins.
    pub penalties: PenaltySettings,
    /// The free-form `[hooks]` table: settings for custom hook implementations. The
    /// built-in static table ignores it.
    pub hooks: toml::Table,
    /// Where this configuration came from (a path, or [`DEFAULT_CONFIG_ORIGIN`]).
    pub origin: String,
    /// The file it was read from, if any (used to reload it).
    pub path: Option<PathBuf>,
}

/// One `[[users]]` entry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UserConfig {
    /// The login name clients use.
    pub name: String,
    /// `host:port` of the user's server.
    pub upstream: String,
    /// The user name on the upstream (defaults to `name`).
    pub upstream_user: String,
    pub authorized_keys: AuthorizedKeys,
    /// Pinned upstream host keys; empty means unpinned.
    pub upstream_host_keys: Vec<PublicKey>,
    /// `tunnel = "..."`: which SSH tunnels this user may open; `None` means
    /// `tunnels.default`.
    pub tunnel: Option<TunnelPolicy>,
}

/// Where a user's authorized keys come from.
#[derive(Clone, Debug)]
pub enum AuthorizedKeys {
    /// No keys configured: public-key login is impossible for this user.
    None,
    /// `authorized_keys = [...]`, parsed.
    Inline(Vec<PublicKey>),
    /// `authorized_keys_file = "path"`, read when the hooks are built (startup, reload).
    File(PathBuf),
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Sessions one shard serves at once; connections beyond it are closed at accept.
    pub max_sessions_per_shard: usize,
    /// Time a client has from TCP connect to successful authentication.
    pub auth_timeout: Duration,
    /// Time allowed to resolve and connect to an upstream.
    pub connect_timeout: Duration,
    /// Time one hook call may take before it fails with `HookError::Timeout`.
    pub hook_timeout: Duration,
    /// Hard cap of relay buffer memory per shard.
    pub buffer_pool_bytes_per_shard: usize,
    /// On SIGTERM/SIGINT, how long running sessions may go on before the process exits.
    pub shutdown_grace: Duration,
    /// Upstream connections per server, whole proxy, held for clients that have not
    /// authenticated yet, warm ones included (see `src/preauth.rs`); 0: no cap, and
    /// logins connect only when they need the server.
    pub preauth_upstream_connections: usize,
    /// Authentication attempts per connection before the proxy hangs up, counted as
    /// sshd counts them (`MaxAuthTries`).
    pub max_auth_tries: u32,
    /// Early drop of new connections while this many are not authenticated yet, whole
    /// proxy (`MaxStartups`).
    pub max_startups: StartupLimit,
    /// Receive buffer memory beyond each connection's small inline buffer that
    /// unauthenticated connections of one shard may hold together.
    pub preauth_buffer_bytes_per_shard: usize,
    /// Before authentication, the rest of a packet must arrive within this long of its
    /// first bytes.
    pub packet_timeout: Duration,
}

/// `[rekey]`: when the proxy starts a new key exchange on each leg, whichever comes first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rekey {
    /// Bytes sent or received on a leg since its last key exchange.
    pub bytes: u64,
    /// Time since the leg's last key exchange.
    pub interval: Duration,
}

/// `[tunnels]`: SSH tunnels (`ssh -w`, `tun@openssh.com`) through the proxy.
pub use crate::core::values::TunnelSettings as Tunnels;

/// `[warm_upstreams]`: connections to recently used upstream servers, connected and
/// through key exchange, kept per shard for the next login (see `src/warm.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmUpstreams {
    /// Ready connections per upstream server and shard; 0 turns the pool off.
    pub per_upstream: usize,
    /// An unused connection is closed after this long (keep it well below the
    /// upstream's LoginGraceTime).
    pub idle: Duration,
    /// Ready connections per shard, all servers together.
    pub max_per_shard: usize,
}

impl Default for WarmUpstreams {
    fn default() -> Self {
        WarmUpstreams {
            per_upstream: 1,
            idle: Duration::from_secs(30),
            max_per_shard: 256,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions_per_shard: 10_000,
            auth_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(10),
            buffer_pool_bytes_per_shard: 64 << 20,
            shutdown_grace: Duration::from_secs(30),
            preauth_upstream_connections: 8,
            max_auth_tries: 6,
            max_startups: StartupLimit::default(),
            preauth_buffer_bytes_per_shard: 16 << 20,
            packet_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Rekey {
    fn default() -> Self {
        Rekey {
            bytes: 1 << 30,
            interval: Duration::from_secs(3600),
        }
    }
}

/// The smallest relay buffer cap that lets one session relay both ways.
pub const MIN_BUFFER_POOL_BYTES: usize = 2 * RELAY_BUFFER_SIZE;
/// Largest number of seconds any timeout or interval may be set to (thirty days).
pub const MAX_SECS: u64 = 30 * 24 * 3600;
/// Largest `warm_upstreams.idle_secs` (an hour).
pub const MAX_WARM_IDLE_SECS: u64 = 3600;

/// A configuration error: where, and what.
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    line: Option<usize>,
    column: Option<usize>,
    problem: ConfigProblem,
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
    #[error("user {user:?}: authorized_keys entry {index} is not a public key: {reason}")]
    BadAuthorizedKey {
        user: String,
        index: usize,
        reason: String,
    },
    #[error("user {user:?}: upstream_host_key is not a public key: {reason}")]
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
    #[error("`limits.packet_timeout_secs` must be below `limits.auth_timeout_secs`")]
    PacketTimeoutTooLong,
}

impl ConfigError {
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

impl Config {
    /// Reads and validates a configuration file. Relative paths in it are relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            problem: ConfigProblem::Read(e),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut config = Config::parse(&text, &origin, base)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// The built-in configuration (paths relative to the current directory).
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN, Path::new(""))
    }

    /// Parses and validates configuration text. `origin` names it in errors; relative
    /// paths are joined to `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError {
                origin: origin.to_string(),
                line,
                column,
                problem: ConfigProblem::Syntax(one_line(e.message())),
            }
        })?;
        Validator { text, origin }.validate(raw, base_dir)
    }

    /// Number of shards to run: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(num_cpus::get).max(1)
    }

    /// The user entry named `name`, if any.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

// ---------------------------------------------------------------------------------------
// Raw (deserialized) form. Spans give every validation error a line number.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<Vec<Spanned<String>>>,
    host_keys: Spanned<Vec<Spanned<String>>>,
    upstream_key: Spanned<String>,
    workers: Option<Spanned<usize>>,
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    rekey: RawRekey,
    #[serde(default)]
    tunnels: RawTunnels,
    #[serde(default)]
    warm_upstreams: RawWarmUpstreams,
    #[serde(default)]
    penalties: RawPenalties,
    #[serde(default)]
    hooks: toml::Table,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_sessions_per_shard: Option<Spanned<usize>>,
    auth_timeout_secs: Option<Spanned<u64>>,
    connect_timeout_secs: Option<Spanned<u64>>,
    hook_timeout_secs: Option<Spanned<u64>>,
    buffer_pool_bytes_per_shard: Option<Spanned<usize>>,
    shutdown_grace_secs: Option<Spanned<u64>>,
    preauth_upstream_connections: Option<Spanned<usize>>,
    max_auth_tries: Option<Spanned<u32>>,
    max_startups: Option<Spanned<String>>,
    preauth_buffer_bytes_per_shard: Option<Spanned<usize>>,
    packet_timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPenalties {
    enabled: Option<bool>,
    authfail_secs: Option<Spanned<u64>>,
    noauth_secs: Option<Spanned<u64>>,
    grace_exceeded_secs: Option<Spanned<u64>>,
    min_secs: Option<Spanned<u64>>,
    max_secs: Option<Spanned<u64>>,
    max_sources: Option<Spanned<usize>>,
    exempt: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRekey {
    bytes: Option<Spanned<u64>>,
    seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWarmUpstreams {
    per_upstream: Option<Spanned<usize>>,
    idle_secs: Option<Spanned<u64>>,
    max_per_shard: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTunnels {
    default: Option<Spanned<String>>,
    max_duration_secs: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<u64>>,
    report_interval_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    upstream: Spanned<String>,
    upstream_user: Option<Spanned<String>>,
    authorized_keys: Option<Spanned<Vec<Spanned<String>>>>,
    authorized_keys_file: Option<Spanned<String>>,
    upstream_host_key: Option<Spanned<OneOrMany>>,
    tunnel: Option<Spanned<String>>,
}

/// `upstream_host_key` takes one key or a list (an upstream may have several).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        problem: ConfigProblem,
    ) -> Result<T, ConfigError> {
        let (line, column) = line_col(self.text, span.start);
        Err(ConfigError {
            origin: self.origin.to_string(),
            line: Some(line),
            column: Some(column),
            problem,
        })
    }

    fn line(&self, span: &std::ops::Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn validate(&self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        // listen
        if raw.listen.get_ref().is_empty() {
            return self.err(raw.listen.span(), ConfigProblem::NoListenAddress);
        }
        let mut listen = Vec::new();
        for addr in raw.listen.get_ref() {
            let parsed = self.socket_addr("listen", addr)?;
            if listen.contains(&parsed) {
                return self.err(addr.span(), ConfigProblem::DuplicateListenAddress(parsed));
            }
            listen.push(parsed);
        }
        let metrics_listen = match &raw.metrics_listen {
            Some(addr) => Some(self.socket_addr("metrics_listen", addr)?),
            None => None,
        };

        // keys
        if raw.host_keys.get_ref().is_empty() {
            return self.err(raw.host_keys.span(), ConfigProblem::NoHostKeys);
        }
        let host_keys = raw
            .host_keys
            .get_ref()
            .iter()
            .map(|p| self.path("host_keys", p, base))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream_key = self.path("upstream_key", &raw.upstream_key, base)?;

        let workers = match raw.workers {
            Some(w) if *w.get_ref() == 0 => {
                return self.err(w.span(), ConfigProblem::Zero("workers"))
            }
            Some(w) => Some(w.into_inner()),
            None => None,
        };

        let limits = self.limits(raw.limits)?;
        let rekey = self.rekey(raw.rekey)?;
        let tunnels = self.tunnels(raw.tunnels)?;
        let warm_upstreams = self.warm_upstreams(raw.warm_upstreams)?;
        let penalties = self.penalties(raw.penalties)?;

        // users
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut users = Vec::with_capacity(raw.users.len());
        for user in raw.users {
            let line = self.line(&user.name.span());
            if let Some(&first_line) = seen.get(user.name.get_ref()) {
                return self.err(
                    user.name.span(),
                    ConfigProblem::DuplicateUser {
                        name: user.name.into_inner(),
                        first_line,
                    },
                );
            }
            seen.insert(user.name.get_ref().clone(), line);
            users.push(self.user(user, base)?);
        }

        Ok(Config {
            listen,
            host_keys,
            upstream_key,
            users,
            workers,
            metrics_listen,
            limits,
            rekey,
            tunnels,
            warm_upstreams,
            penalties,
            hooks: raw.hooks,
            origin: self.origin.to_string(),
            path: None,
        })
    }

    fn socket_addr(
        &self,
        key: &'static str,
        addr: &Spanned<String>,
    ) -> Result<SocketAddr, ConfigError> {
        addr.get_ref().trim().parse().or_else(|_| {
            self.err(
                addr.span(),
                ConfigProblem::BadListenAddress {
                    key,
                    addr: addr.get_ref().clone(),
                },
            )
        })
    }

    fn path(
        &self,
        key: &'static str,
        p: &Spanned<String>,
        base: &Path,
    ) -> Result<PathBuf, ConfigError> {
        if p.get_ref().trim().is_empty() {
            return self.err(p.span(), ConfigProblem::EmptyPath(key));
        }
        Ok(base.join(p.get_ref()))
    }

    fn nonzero<T: Copy + Default + PartialEq>(
        &self,
        key: &'static str,
        value: Option<Spanned<T>>,
        default: T,
    ) -> Result<T, ConfigError> {
        match value {
            Some(v) if *v.get_ref() == T::default() => self.err(v.span(), ConfigProblem::Zero(key)),
            Some(v) => Ok(v.into_inner()),
            None => Ok(default),
        }
    }

    /// Refuse a number of seconds above `max` (a timer that far out would overflow, and
    /// nobody means it).
    fn at_most(
        &self,
        key: &'static str,
        value: &Option<Spanned<u64>>,
        max: u64,
    ) -> Result<(), ConfigError> {
        match value {
            Some(v) if *v.get_ref() > max => {
                self.err(v.span(), ConfigProblem::TooLarge { key, max })
            }
            _ => Ok(()),
        }
    }

    fn limits(&self, raw: RawLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        self.at_most("limits.auth_timeout_secs", &raw.auth_timeout_secs, MAX_SECS)?;
        self.at_most(
            "limits.connect_timeout_secs",
            &raw.connect_timeout_secs,
            MAX_SECS,
        )?;
        self.at_most("limits.hook_timeout_secs", &raw.hook_timeout_secs, MAX_SECS)?;
        self.at_most(
            "limits.shutdown_grace_secs",
            &raw.shutdown_grace_secs,
            MAX_SECS,
        )?;
        self.at_most(
            "limits.packet_timeout_secs",
            &raw.packet_timeout_secs,
            MAX_SECS,
        )?;
        let secs = |key, v, default: Duration| {
            self.nonzero(key, v, default.as_secs())
                .map(Duration::from_secs)
        };
        let pool_span = raw.buffer_pool_bytes_per_shard.as_ref().map(|s| s.span());
        let mut limits =
            Limits {
                max_sessions_per_shard: self.nonzero(
                    "limits.max_sessions_per_shard",
                    raw.max_sessions_per_shard,
                    d.max_sessions_per_shard,
                )?,
                auth_timeout: secs(
                    "limits.auth_timeout_secs",
                    raw.auth_timeout_secs,
                    d.auth_timeout,
                )?,
                connect_timeout: secs(
                    "limits.connect_timeout_secs",
                    raw.connect_timeout_secs,
                    d.connect_timeout,
                )?,
                hook_timeout: secs(
                    "limits.hook_timeout_secs",
                    raw.hook_timeout_secs,
                    d.hook_timeout,
                )?,
                buffer_pool_bytes_per_shard: raw
                    .buffer_pool_bytes_per_shard
                    .map(Spanned::into_inner)
                    .unwrap_or(d.buffer_pool_bytes_per_shard),
                // Zero is allowed here: exit as soon as the listeners are closed.
                shutdown_grace: raw
                    .shutdown_grace_secs
                    .map(|s| Duration::from_secs(s.into_inner()))
                    .unwrap_or(d.shutdown_grace),
                preauth_upstream_connections: raw
                    .preauth_upstream_connections
                    .map_or(d.preauth_upstream_connections, Spanned::into_inner),
                max_auth_tries: self.nonzero(
                    "limits.max_auth_tries",
                    raw.max_auth_tries,
                    d.max_auth_tries,
                )?,
                max_startups: match &raw.max_startups {
                    Some(v) => v.get_ref().parse().or_else(
                        |e: crate::core::penalty::BadStartupLimit| {
                            self.err(
                                v.span(),
                                ConfigProblem::BadStartupLimit {
                                    value: v.get_ref().clone(),
                                    reason: e.to_string(),
                                },
                            )
                        },
                    )?,
                    None => d.max_startups,
                },
                preauth_buffer_bytes_per_shard: raw
                    .preauth_buffer_bytes_per_shard
                    .map_or(d.preauth_buffer_bytes_per_shard, Spanned::into_inner),
                packet_timeout: secs(
                    "limits.packet_timeout_secs",
                    raw.packet_timeout_secs.clone(),
                    d.packet_timeout,
                )?,
            };
        match &raw.packet_timeout_secs {
            Some(v) if limits.packet_timeout >= limits.auth_timeout => {
                return self.err(v.span(), ConfigProblem::PacketTimeoutTooLong);
            }
            // Unset: the default, but always shorter than the auth timeout.
            None => limits.packet_timeout = limits.packet_timeout.min(limits.auth_timeout / 2),
            Some(_) => {}
        }
        if limits.buffer_pool_bytes_per_shard < MIN_BUFFER_POOL_BYTES {
            return self.err(
                pool_span.unwrap_or(0..0),
                ConfigProblem::BufferPoolTooSmall {
                    bytes: limits.buffer_pool_bytes_per_shard,
                    min: MIN_BUFFER_POOL_BYTES,
                },
            );
        }
        Ok(limits)
    }

    fn rekey(&self, raw: RawRekey) -> Result<Rekey, ConfigError> {
        let d = Rekey::default();
        self.at_most("rekey.seconds", &raw.seconds, MAX_SECS)?;
        Ok(Rekey {
            bytes: self.nonzero("rekey.bytes", raw.bytes, d.bytes)?,
            interval: Duration::from_secs(self.nonzero(
                "rekey.seconds",
                raw.seconds,
                d.interval.as_secs(),
            )?),
        })
    }

    fn tunnel_policy(
        &self,
        key: &'static str,
        value: &Spanned<String>,
    ) -> Result<TunnelPolicy, ConfigError> {
        value.get_ref().parse().or_else(|_| {
            self.err(
                value.span(),
                ConfigProblem::BadTunnelPolicy {
                    key,
                    value: value.get_ref().clone(),
                },
            )
        })
    }

    fn warm_upstreams(&self, raw: RawWarmUpstreams) -> Result<WarmUpstreams, ConfigError> {
        let d = WarmUpstreams::default();
        // Beyond sshd's LoginGraceTime (120 s by default) the server drops it anyway.
        self.at_most(
            "warm_upstreams.idle_secs",
            &raw.idle_secs,
            MAX_WARM_IDLE_SECS,
        )?;
        Ok(WarmUpstreams {
            per_upstream: raw.per_upstream.map_or(d.per_upstream, Spanned::into_inner),
            idle: Duration::from_secs(self.nonzero(
                "warm_upstreams.idle_secs",
                raw.idle_secs,
                d.idle.as_secs(),
            )?),
            max_per_shard: raw
                .max_per_shard
                .map_or(d.max_per_shard, Spanned::into_inner),
        })
    }

    fn penalties(&self, raw: RawPenalties) -> Result<PenaltySettings, ConfigError> {
        let d = PenaltySettings::default();
        for (key, value) in [
            ("penalties.authfail_secs", &raw.authfail_secs),
            ("penalties.noauth_secs", &raw.noauth_secs),
            ("penalties.grace_exceeded_secs", &raw.grace_exceeded_secs),
            ("penalties.min_secs", &raw.min_secs),
            ("penalties.max_secs", &raw.max_secs),
        ] {
            self.at_most(key, value, MAX_SECS)?;
        }
        // Zero is allowed for the costs: that offence is not penalised.
        let secs = |v: Option<Spanned<u64>>, default: Duration| {
            v.map_or(default, |v| Duration::from_secs(v.into_inner()))
        };
        let mut exempt = Vec::new();
        for net in raw.exempt.unwrap_or_default() {
            let text = net.get_ref().trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => exempt.push(n),
                Err(_) => {
                    return self.err(
                        net.span(),
                        ConfigProblem::BadNetwork {
                            value: net.get_ref().clone(),
                        },
                    )
                }
            }
        }
        Ok(PenaltySettings {
            enabled: raw.enabled.unwrap_or(d.enabled),
            authfail: secs(raw.authfail_secs, d.authfail),
            noauth: secs(raw.noauth_secs, d.noauth),
            grace_exceeded: secs(raw.grace_exceeded_secs, d.grace_exceeded),
            min: secs(raw.min_secs, d.min),
            max: Duration::from_secs(self.nonzero(
                "penalties.max_secs",
                raw.max_secs,
                d.max.as_secs(),
            )?),
            max_sources: self.nonzero("penalties.max_sources", raw.max_sources, d.max_sources)?,
            exempt,
        })
    }

    fn tunnels(&self, raw: RawTunnels) -> Result<Tunnels, ConfigError> {
        let d = Tunnels::default();
        self.at_most(
            "tunnels.max_duration_secs",
            &raw.max_duration_secs,
            MAX_SECS,
        )?;
        self.at_most(
            "tunnels.report_interval_secs",
            &raw.report_interval_secs,
            MAX_SECS,
        )?;
        let default = match &raw.default {
            Some(v) => self.tunnel_policy("tunnels.default", v)?,
            None => d.default,
        };
        let max_duration = match raw.max_duration_secs {
            Some(v) => Some(Duration::from_secs(self.nonzero(
                "tunnels.max_duration_secs",
                Some(v),
                0,
            )?)),
            None => None,
        };
        let max_bytes = match raw.max_bytes {
            Some(v) => Some(self.nonzero("tunnels.max_bytes", Some(v), 0)?),
            None => None,
        };
        Ok(Tunnels {
            default,
            max_duration,
            max_bytes,
            report_interval: Duration::from_secs(self.nonzero(
                "tunnels.report_interval_secs",
                raw.report_interval_secs,
                d.report_interval.as_secs(),
            )?),
        })
    }

    fn user(&self, raw: RawUser, base: &Path) -> Result<UserConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        if let Err(reason) = check_user_name(&name) {
            return self.err(raw.name.span(), ConfigProblem::BadUserName { name, reason });
        }
        if let Err(reason) = check_host_port(raw.upstream.get_ref()) {
            return self.err(
                raw.upstream.span(),
                ConfigProblem::BadUpstreamAddress {
                    user: name,
                    addr: raw.upstream.into_inner(),
                    reason,
                },
            );
        }
        let upstream_user = match raw.upstream_user {
            Some(u) if u.get_ref().trim().is_empty() => {
                return self.err(u.span(), ConfigProblem::EmptyUpstreamUser { user: name })
            }
            Some(u) => u.into_inner(),
            None => name.clone(),
        };
        let authorized_keys = match (raw.authorized_keys, raw.authorized_keys_file) {
            (Some(_), Some(file)) => {
                return self.err(
                    file.span(),
                    ConfigProblem::BothAuthorizedKeys { user: name },
                )
            }
            (Some(keys), None) => {
                let mut parsed = Vec::with_capacity(keys.get_ref().len());
                for (index, line) in keys.into_inner().into_iter().enumerate() {
                    match PublicKey::from_openssh(line.get_ref().trim()) {
                        Ok(key) => parsed.push(key),
                        Err(e) => {
                            return self.err(
                                line.span(),
                                ConfigProblem::BadAuthorizedKey {
                                    user: name,
                                    index: index + 1,
                                    reason: e.to_string(),
                                },
                            )
                        }
                    }
                }
                AuthorizedKeys::Inline(parsed)
            }
            (None, Some(file)) => {
                AuthorizedKeys::File(self.path("authorized_keys_file", &file, base)?)
            }
            (None, None) => AuthorizedKeys::None,
        };
        let upstream_host_keys = match raw.upstream_host_key {
            None => Vec::new(),
            Some(spanned) => {
                let span = spanned.span();
                let lines = match spanned.into_inner() {
                    OneOrMany::One(line) => vec![line],
                    OneOrMany::Many(lines) => lines,
                };
                let mut keys = Vec::with_capacity(lines.len());
                for line in lines {
                    match PublicKey::from_openssh(line.trim()) {
                        Ok(key) => keys.push(key),
                        Err(e) => {
                            return self.err(
                                span,
                                ConfigProblem::BadUpstreamHostKey {
                                    user: name,
                                    reason: e.to_string(),
                                },
                            )
                        }
                    }
                }
                keys
            }
        };
        let tunnel = match &raw.tunnel {
            Some(v) => Some(self.tunnel_policy("tunnel", v)?),
            None => None,
        };
        Ok(UserConfig {
            name,
            upstream: raw.upstream.into_inner(),
            upstream_user,
            authorized_keys,
            upstream_host_keys,
            tunnel,
        })
    }
}

/// Login names travel in SSH strings and end up in logs and hook queries: refuse what
/// would make either ambiguous.
fn check_user_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 255 {
        return Err("longer than 255 bytes");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    Ok(())
}

/// Checks the shape of an upstream `host:port` without resolving it.
pub(crate) fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or("IPv6 address without \"]:port\"")?;
        v6.parse::<Ipv6Addr>().map_err(|_| "invalid IPv6 address")?;
        (v6, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or("missing \":port\"")?;
        if host.contains(':') {
            return Err("write IPv6 addresses in brackets: [2001:db8::1]:22");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err("invalid character in host");
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0"),
        Ok(_) => Ok(()),
        Err(_) => Err("port is not a number from 1 to 65535"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

fn one_line(message: &str) -> String {
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
    use sshr_protocol::hostkey::PrivateKey;

    const MINIMAL: &str = r#"
listen = ["127.0.0.1:2222"]
host_keys = ["keys/host"]
upstream_key = "keys/upstream"
"#;

    fn public_key_line() -> String {
        PrivateKey::generate_ed25519(&mut rand_core::OsRng)
            .public()
            .to_openssh()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/sshr"))
    }

    fn problem(text: &str) -> (ConfigProblem, Option<usize>, String) {
        match parse(text) {
            Ok(_) => panic!("config should be refused:\n{text}"),
            Err(e) => {
                let shown = e.to_string();
                assert!(!shown.contains('\n'), "error must be one line: {shown:?}");
                (e.problem, e.line, shown)
            }
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2222".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.host_keys, vec![PathBuf::from("/etc/sshr/keys/host")]);
        assert_eq!(c.upstream_key, PathBuf::from("/etc/sshr/keys/upstream"));
        assert!(c.users.is_empty());
        assert_eq!(c.workers, None);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.limits.auth_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.buffer_pool_bytes_per_shard, 64 << 20);
        assert_eq!(c.rekey.bytes, 1 << 30);
        assert_eq!(c.rekey.interval, Duration::from_secs(3600));
        assert_eq!(c.limits, Limits::default());
        assert!(c.worker_count() >= 1);
    }

    #[test]
    fn full_schema() {
        let alice_key = public_key_line();
        let pin = public_key_line();
        let text = format!(
            r#"
listen = ["127.0.0.1:2222", "[::1]:2222"]
host_keys = ["/abs/host_ed25519", "rel/host_rsa"]
upstream_key = "keys/upstream_ed25519"
workers = 3
metrics_listen = "127.0.0.1:9222"

[limits]
max_sessions_per_shard = 50
auth_timeout_secs = 5
connect_timeout_secs = 2
hook_timeout_secs = 3
buffer_pool_bytes_per_shard = 8388608
shutdown_grace_secs = 0
preauth_upstream_connections = 0
max_auth_tries = 3
max_startups = "10:30:100"
preauth_buffer_bytes_per_shard = 1048576
packet_timeout_secs = 4

[penalties]
enabled = true
authfail_secs = 6
noauth_secs = 0
grace_exceeded_secs = 20
min_secs = 30
max_secs = 900
max_sources = 100
exempt = ["10.0.0.0/8", "2001:db8::1"]

[rekey]
bytes = 1000000
seconds = 60

[hooks]
domain = "internal.example"

[[users]]
name = "alice"
upstream = "127.0.0.1:2201"
upstream_user = "root"
authorized_keys = ["{alice_key}"]
upstream_host_key = "{pin}"

[[users]]
name = "bob"
upstream = "bob.internal:22"
authorized_keys_file = "bob.keys"
upstream_host_key = ["{pin}", "{pin}"]

[[users]]
name = "carol"
upstream = "[2001:db8::5]:22"
"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.limits.max_auth_tries, 3);
        assert_eq!(c.limits.max_startups, "10:30:100".parse().unwrap());
        assert_eq!(c.limits.preauth_buffer_bytes_per_shard, 1 << 20);
        assert_eq!(c.limits.packet_timeout, Duration::from_secs(4));
        assert_eq!(c.penalties.authfail, Duration::from_secs(6));
        assert_eq!(c.penalties.noauth, Duration::ZERO);
        assert_eq!(c.penalties.min, Duration::from_secs(30));
        assert_eq!(c.penalties.max_sources, 100);
        assert!(c.penalties.is_exempt("10.9.8.7".parse().unwrap()));
        assert!(c.penalties.is_exempt("2001:db8::1".parse().unwrap()));
        assert!(!c.penalties.is_exempt("2001:db8::2".parse().unwrap()));
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
        assert_eq!(c.host_keys[0], PathBuf::from("/abs/host_ed25519"));
        assert_eq!(c.host_keys[1], PathBuf::from("/etc/sshr/rel/host_rsa"));
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.worker_count(), 3);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9222".parse().unwrap()));
        assert_eq!(c.limits.max_sessions_per_shard, 50);
        assert_eq!(c.limits.auth_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.hook_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.buffer_pool_bytes_per_shard, 8 << 20);
        assert_eq!(c.limits.shutdown_grace, Duration::ZERO);
        assert_eq!(c.limits.preauth_upstream_connections, 0);
        assert_eq!(c.rekey.bytes, 1_000_000);
        assert_eq!(c.rekey.interval, Duration::from_secs(60));
        assert_eq!(
            c.hooks.get("domain").and_then(|v| v.as_str()),
            Some("internal.example")
        );

        let alice = c.user("alice").unwrap();
        assert_eq!(alice.upstream, "127.0.0.1:2201");
        assert_eq!(alice.upstream_user, "root");
        match &alice.authorized_keys {
            AuthorizedKeys::Inline(keys) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(
                    keys[0].to_openssh(),
                    PublicKey::from_openssh(&alice_key).unwrap().to_openssh()
                );
            }
            other => panic!("expected inline keys, got {other:?}"),
        }
        assert_eq!(alice.upstream_host_keys.len(), 1);

        let bob = c.user("bob").unwrap();
        assert_eq!(bob.upstream_user, "bob", "upstream_user defaults to name");
        match &bob.authorized_keys {
            AuthorizedKeys::File(path) => assert_eq!(path, Path::new("/etc/sshr/bob.keys")),
            other => panic!("expected a file, got {other:?}"),
        }
        assert_eq!(bob.upstream_host_keys.len(), 2);

        let carol = c.user("carol").unwrap();
        assert!(matches!(carol.authorized_keys, AuthorizedKeys::None));
        assert!(carol.upstream_host_keys.is_empty());
        assert!(c.user("dave").is_none());
    }

    #[test]
    fn builtin_config_parses_and_starts_a_demo_proxy() {
        let c = Config::builtin().unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2222".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            c.host_keys,
            vec![PathBuf::from("keys/ssh_host_ed25519_key")]
        );
        assert_eq!(c.upstream_key, PathBuf::from("keys/upstream_ed25519"));
        assert_eq!(c.origin, DEFAULT_CONFIG_ORIGIN);
        assert_eq!(c.users.len(), 1);
        let demo = c.user("demo").unwrap();
        assert_eq!(demo.upstream, "127.0.0.1:22");
        match &demo.authorized_keys {
            AuthorizedKeys::File(p) => assert_eq!(p, Path::new("/root/.ssh/authorized_keys")),
            other => panic!("expected authorized_keys_file, got {other:?}"),
        }
        // The documented defaults are the code's defaults.
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.rekey, Rekey::default());
        assert_eq!(c.tunnels, Tunnels::default());
        assert_eq!(demo.tunnel, None);
    }

    #[test]
    fn load_resolves_paths_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sshr.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.upstream_key, dir.path().join("keys/upstream"));
        assert_eq!(c.path.as_deref(), Some(path.as_path()));

        let missing = dir.path().join("nope.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err.problem(), ConfigProblem::Read(_)));
        assert!(err.to_string().starts_with(&missing.display().to_string()));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let (p, line, shown) = problem(&format!("{MINIMAL}listen_port = 22\n"));
        assert!(matches!(p, ConfigProblem::Syntax(_)));
        assert_eq!(line, Some(5));
        assert!(shown.contains("listen_port"), "{shown}");
        assert!(shown.starts_with("test.toml:5:"), "{shown}");

        let text = format!(
            "{MINIMAL}\n[[users]]\nname = \"a\"\nupstream = \"h:22\"\nupstrem_user = \"x\"\n"
        );
        let (_, line, shown) = problem(&text);
        assert_eq!(line, Some(9));
        assert!(shown.contains("upstrem_user"), "{shown}");

        let (_, line, shown) = problem(&format!("{MINIMAL}[limits]\nmax_session = 3\n"));
        assert_eq!(line, Some(6));
        assert!(shown.contains("max_session"), "{shown}");

        let (_, _, shown) = problem(&format!("{MINIMAL}[rekey]\nminutes = 3\n"));
        assert!(shown.contains("minutes"), "{shown}");
    }

    #[test]
    fn syntax_and_type_errors() {
        let (p, _, shown) = problem("host_keys = [\"k\"]\nupstream_key = \"u\"\n");
        assert!(matches!(p, ConfigProblem::Syntax(_)));
        assert!(shown.contains("listen"), "missing key is named: {shown}");

        let (_, line, shown) = problem(&format!("{MINIMAL}workers = \"two\"\n"));
        assert_eq!(line, Some(5));
        assert!(shown.contains("test.toml:5"), "{shown}");

        let (_, line, _) = problem("listen = [\"127.0.0.1:1\"\nhost_keys = 3");
        assert!(line.is_some());
    }

    #[test]
    fn bad_hardening_settings() {
        let (p, line, shown) = problem(&format!("{MINIMAL}[limits]\nmax_startups = \"100:30\"\n"));
        assert!(matches!(p, ConfigProblem::BadStartupLimit { .. }), "{p:?}");
        assert_eq!(line, Some(6));
        assert!(shown.contains("start:rate:full"), "{shown}");
        let (p, _, _) = problem(&format!("{MINIMAL}[limits]\nmax_auth_tries = 0\n"));
        assert!(matches!(p, ConfigProblem::Zero("limits.max_auth_tries")));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[limits]\nauth_timeout_secs = 5\npacket_timeout_secs = 5\n"
        ));
        assert!(matches!(p, ConfigProblem::PacketTimeoutTooLong));
        let (p, _, shown) = problem(&format!(
            "{MINIMAL}[penalties]\nexempt = [\"10.0.0.0/33\"]\n"
        ));
        assert!(matches!(p, ConfigProblem::BadNetwork { .. }), "{p:?}");
        assert!(shown.contains("10.0.0.0/33"));
        // Unset, the packet timeout stays below a short auth timeout.
        let c = parse(&format!("{MINIMAL}[limits]\nauth_timeout_secs = 4\n")).unwrap();
        assert_eq!(c.limits.packet_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_addresses() {
        let (p, line, shown) = problem(
            "listen = [\"127.0.0.1:2222\",\n  \"localhost:22\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n",
        );
        assert!(
            matches!(p, ConfigProblem::BadListenAddress { key: "listen", .. }),
            "{p:?}"
        );
        assert_eq!(line, Some(2));
        assert!(shown.contains("localhost:22"));

        let (p, _, _) =
            problem("listen = [\"127.0.0.1\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n");
        assert!(matches!(p, ConfigProblem::BadListenAddress { .. }));

        let (p, _, _) = problem("listen = []\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n");
        assert!(matches!(p, ConfigProblem::NoListenAddress));

        let (p, _, _) = problem(
            "listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n",
        );
        assert!(matches!(p, ConfigProblem::DuplicateListenAddress(_)));

        let (p, line, _) = problem(&format!("{MINIMAL}metrics_listen = \"9222\"\n"));
        assert!(matches!(
            p,
            ConfigProblem::BadListenAddress {
                key: "metrics_listen",
                ..
            }
        ));
        assert_eq!(line, Some(5));

        for bad in [
            "nohost",
            "host:",
            "host:0",
            "host:70000",
            ":22",
            "2001:db8::1:22",
            "[2001:db8::1]",
            "[nope]:22",
            "a b:22",
        ] {
            let text = format!("{MINIMAL}[[users]]\nname = \"u\"\nupstream = \"{bad}\"\n");
            let (p, line, shown) = problem(&text);
            assert!(
                matches!(p, ConfigProblem::BadUpstreamAddress { .. }),
                "{bad}: {p:?}"
            );
            assert_eq!(line, Some(7), "{shown}");
        }
        for good in [
            "host:22",
            "10.0.0.1:2201",
            "[2001:db8::1]:22",
            "web-1.example.com:65535",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn user_listed_twice() {
        let text = format!(
            "{MINIMAL}[[users]]\nname = \"alice\"\nupstream = \"a:22\"\n\n[[users]]\nname = \"alice\"\nupstream = \"b:22\"\n"
        );
        let (p, line, shown) = problem(&text);
        match p {
            ConfigProblem::DuplicateUser { name, first_line } => {
                assert_eq!(name, "alice");
                assert_eq!(first_line, 6);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(line, Some(10), "{shown}");
    }

    #[test]
    fn authorized_keys_and_file_together_are_refused() {
        let text = format!(
            "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nauthorized_keys = []\nauthorized_keys_file = \"f\"\n"
        );
        let (p, line, _) = problem(&text);
        assert!(
            matches!(p, ConfigProblem::BothAuthorizedKeys { ref user } if user == "a"),
            "{p:?}"
        );
        assert_eq!(line, Some(9));
    }

    #[test]
    fn unparseable_keys() {
        let good = public_key_line();
        let text = format!(
            "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nauthorized_keys = [\n  \"{good}\",\n  \"ssh-ed25519 AAAAnotbase64!!\",\n]\n"
        );
        let (p, line, _) = problem(&text);
        assert!(
            matches!(p, ConfigProblem::BadAuthorizedKey { index: 2, .. }),
            "{p:?}"
        );
        assert_eq!(line, Some(10));

        let text = format!("{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nupstream_host_key = \"not a key\"\n");
        let (p, line, _) = problem(&text);
        assert!(
            matches!(p, ConfigProblem::BadUpstreamHostKey { .. }),
            "{p:?}"
        );
        assert_eq!(line, Some(8));
    }

    #[test]
    fn bad_user_fields() {
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[[users]]\nname = \"\"\nupstream = \"h:22\"\n"
        ));
        assert!(matches!(p, ConfigProblem::BadUserName { .. }));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[[users]]\nname = \"a b\"\nupstream = \"h:22\"\n"
        ));
        assert!(matches!(p, ConfigProblem::BadUserName { .. }));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nupstream_user = \"\"\n"
        ));
        assert!(matches!(p, ConfigProblem::EmptyUpstreamUser { .. }));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nauthorized_keys_file = \"\"\n"
        ));
        assert!(matches!(
            p,
            ConfigProblem::EmptyPath("authorized_keys_file")
        ));
    }

    #[test]
    fn zero_and_too_small_values() {
        for (snippet, key) in [
            ("workers = 0\n", "workers"),
            (
                "[limits]\nmax_sessions_per_shard = 0\n",
                "limits.max_sessions_per_shard",
            ),
            (
                "[limits]\nauth_timeout_secs = 0\n",
                "limits.auth_timeout_secs",
            ),
            (
                "[limits]\nconnect_timeout_secs = 0\n",
                "limits.connect_timeout_secs",
            ),
            (
                "[limits]\nhook_timeout_secs = 0\n",
                "limits.hook_timeout_secs",
            ),
            ("[rekey]\nbytes = 0\n", "rekey.bytes"),
            ("[rekey]\nseconds = 0\n", "rekey.seconds"),
        ] {
            let (p, line, shown) = problem(&format!("{MINIMAL}{snippet}"));
            assert!(
                matches!(p, ConfigProblem::Zero(k) if k == key),
                "{snippet}: {p:?}"
            );
            assert!(line.is_some(), "{shown}");
        }
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[limits]\nbuffer_pool_bytes_per_shard = 1000\n"
        ));
        assert!(matches!(
            p,
            ConfigProblem::BufferPoolTooSmall { bytes: 1000, .. }
        ));
        let (p, _, _) = problem(&format!("{MINIMAL}[limits]\nauth_timeout_secs = -1\n"));
        assert!(matches!(p, ConfigProblem::Syntax(_)));
        let (p, _, _) =
            problem("listen = [\"127.0.0.1:1\"]\nhost_keys = []\nupstream_key = \"u\"\n");
        assert!(matches!(p, ConfigProblem::NoHostKeys));
        let (p, _, _) =
            problem("listen = [\"127.0.0.1:1\"]\nhost_keys = [\"k\"]\nupstream_key = \" \"\n");
        assert!(matches!(p, ConfigProblem::EmptyPath("upstream_key")));
    }

    #[test]
    fn timers_too_far_out_are_refused() {
        for (snippet, key, max) in [
            (
                "[limits]\nauth_timeout_secs = 9223372036854775807\n",
                "limits.auth_timeout_secs",
                MAX_SECS,
            ),
            (
                "[limits]\nshutdown_grace_secs = 99999999999\n",
                "limits.shutdown_grace_secs",
                MAX_SECS,
            ),
            (
                "[rekey]\nseconds = 99999999999\n",
                "rekey.seconds",
                MAX_SECS,
            ),
            (
                "[warm_upstreams]\nidle_secs = 3601\n",
                "warm_upstreams.idle_secs",
                MAX_WARM_IDLE_SECS,
            ),
            (
                "[tunnels]\nmax_duration_secs = 99999999999\n",
                "tunnels.max_duration_secs",
                MAX_SECS,
            ),
        ] {
            let (p, line, shown) = problem(&format!("{MINIMAL}{snippet}"));
            assert!(
                matches!(p, ConfigProblem::TooLarge { key: k, max: m } if k == key && m == max),
                "{snippet}: {p:?}"
            );
            assert!(line.is_some(), "{shown}");
        }
        let c = parse(&format!("{MINIMAL}[warm_upstreams]\nidle_secs = 3600\n")).unwrap();
        assert_eq!(c.warm_upstreams.idle, Duration::from_secs(3600));
    }

    #[test]
    fn tunnel_policy_and_thresholds() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.tunnels, Tunnels::default());
        assert_eq!(c.tunnels.default, TunnelPolicy::Deny);
        assert_eq!(c.tunnels.max_duration, None);
        assert_eq!(c.tunnels.report_interval, Duration::from_secs(60));

        let text = format!(
            "{MINIMAL}[tunnels]\ndefault = \"point-to-point\"\nmax_duration_secs = 3600\n\
             max_bytes = 1000000\nreport_interval_secs = 10\n\n\
             [[users]]\nname = \"a\"\nupstream = \"h:22\"\ntunnel = \"ethernet\"\n\n\
             [[users]]\nname = \"b\"\nupstream = \"h:22\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.tunnels.default, TunnelPolicy::PointToPoint);
        assert_eq!(c.tunnels.max_duration, Some(Duration::from_secs(3600)));
        assert_eq!(c.tunnels.max_bytes, Some(1_000_000));
        assert_eq!(c.tunnels.report_interval, Duration::from_secs(10));
        assert_eq!(c.user("a").unwrap().tunnel, Some(TunnelPolicy::Ethernet));
        assert_eq!(c.user("b").unwrap().tunnel, None);

        let (p, line, shown) = problem(&format!(
            "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\ntunnel = \"tun\"\n"
        ));
        assert!(
            matches!(p, ConfigProblem::BadTunnelPolicy { key: "tunnel", ref value } if value == "tun"),
            "{p:?}"
        );
        assert_eq!(line, Some(8));
        assert!(shown.contains("point-to-point"), "{shown}");
        let (p, line, _) = problem(&format!("{MINIMAL}[tunnels]\ndefault = \"maybe\"\n"));
        assert!(matches!(
            p,
            ConfigProblem::BadTunnelPolicy {
                key: "tunnels.default",
                ..
            }
        ));
        assert_eq!(line, Some(6));
        for key in ["max_duration_secs", "max_bytes", "report_interval_secs"] {
            let (p, _, _) = problem(&format!("{MINIMAL}[tunnels]\n{key} = 0\n"));
            assert!(
                matches!(p, ConfigProblem::Zero(k) if k == format!("tunnels.{key}")),
                "{key}: {p:?}"
            );
        }
        let (_, _, shown) = problem(&format!("{MINIMAL}[tunnels]\nmax_secs = 3\n"));
        assert!(shown.contains("max_secs"), "{shown}");
    }

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
