//! The daemon's TOML configuration: parsing, defaults and validation.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file, the line
//! and what is wrong, on one line, so `sshr --check-config` output can be pasted into a
//! ticket. Paths are resolved against the configuration file's directory (the current
//! directory for the built-in default). Key files are not read here (see
//! [`crate::keys`]), nor are `authorized_keys_file`s (see
//! [`crate::providers::static_table`]), so a configuration can be checked on a machine
//! that does not hold the keys yet.
//!
//! Layout: `raw` is the deserialized form, `validate` turns it into the typed [`Config`]
//! of this file, and `error` says what went wrong where. The shape of an upstream
//! address is a plain value rule shared with the network code
//! ([`crate::core::host_port`]).

mod error;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sshr_protocol::hostkey::PublicKey;

pub use crate::core::algorithms::{LegAlgorithms, UpstreamCipher};
use crate::core::penalty::{PenaltySettings, StartupLimit};
use crate::core::values::{ListenerKind, TunnelPolicy};
use crate::io::pool::RELAY_BUFFER_SIZE;

pub use error::{ConfigError, ConfigProblem};

/// The built-in configuration, used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = include_str!("../default_config.toml");

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
    /// OpenSSH private key files the proxy logs in to upstreams with (`upstream_key`, one
    /// or a list), offered in this order. Never empty.
    pub upstream_keys: Vec<PathBuf>,
    /// The static user table (`[[users]]`), asked first by the default hooks.
    pub users: Vec<UserConfig>,
    /// `[[providers]]`: user directories asked in order after the static table.
    pub providers: Vec<ProviderConfig>,
    /// Separates the account from the server in a login name (`alice+web2`); `None`:
    /// login names are taken whole (`target_separator = ""`).
    pub target_separator: Option<char>,
    /// `[proxy_protocol]`: listeners behind a load balancer that sends PROXY headers.
    pub proxy_protocol: ProxyProtocol,
    /// `audit_log`: where the JSON-lines audit log goes, if anywhere.
    pub audit_log: Option<AuditLog>,
    /// `user`: started as root, the account to drop to after binding and reading keys.
    pub run_as: Option<String>,
    /// `required_rsa_size`: the smallest RSA key accepted, in bits, as a client key, in
    /// an authorized keys list and as an upstream's host key (sshd's and ssh's
    /// `RequiredRSASize`). Default and smallest value: OpenSSH's 1024.
    pub required_rsa_size: usize,
    /// Number of shards; `None` means one per CPU.
    pub workers: Option<usize>,
    /// Address of the Prometheus endpoint, if any.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub rekey: Rekey,
    /// `[algorithms]`: what each leg offers, and how the upstream leg picks its cipher.
    pub algorithms: Algorithms,
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
    /// The login name clients use (before the `target_separator`).
    pub name: String,
    pub authorized_keys: AuthorizedKeys,
    /// Entries of an inline `authorized_keys` list that cannot be used, left out of
    /// [`AuthorizedKeys::Inline`]; the static table warns about each when it is built.
    pub skipped_keys: Vec<SkippedKey>,
    /// The user's servers: the default one (`upstream = ...`, target `""`) first if
    /// there is one, then the `targets` list. Never empty.
    pub servers: Vec<ServerConfig>,
}

/// One server of a user: its default one, or a `targets` entry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `""` for the default server; else the name after the separator (`web2`).
    pub target: String,
    /// `host:port` of the server.
    pub upstream: String,
    /// The user name on the upstream (defaults to the user's `upstream_user`, then its
    /// name).
    pub upstream_user: String,
    /// Pinned upstream host keys; empty means unpinned.
    pub upstream_host_keys: Vec<PublicKey>,
    /// `tunnel = "..."`: which SSH tunnels this user may open there (defaults to the
    /// user's `tunnel`); `None` means `tunnels.default`.
    pub tunnel: Option<TunnelPolicy>,
}

impl UserConfig {
    /// The server for `target` (`""`: the default one).
    pub fn server(&self, target: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.target == target)
    }
}

/// One `[[providers]]` entry: a user directory (`src/providers/`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `timeout_ms`: how long one lookup may take (default: `limits.hook_timeout_secs`).
    pub timeout: Duration,
    /// `cache_ttl_secs`: an answer is reused for this long without asking again
    /// (default 0: every login asks).
    pub cache_ttl: Duration,
    /// `stale_if_error_secs`: when the backend fails, the last good answer for the same
    /// user and target is used if it is at most this old (default 300).
    pub stale_if_error: Duration,
}

/// What a provider is and where it is.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProviderKind {
    /// `kind = "sqlite"`: a local database file (created with the schema if missing).
    Sqlite { path: PathBuf },
    /// `kind = "postgres"`: a PostgreSQL database shared by many proxies.
    Postgres {
        url: PostgresUrl,
        /// `pool_size`: connections per proxy process (default 8).
        pool_size: u32,
    },
    /// `kind = "http"`: a Web API answering a POST per login (`docs/providers.md`).
    Http {
        url: String,
        /// A file holding the bearer token sent as `Authorization: Bearer ...`.
        bearer_token_file: Option<PathBuf>,
        /// PEM certificates to trust for an `https` URL instead of the system's.
        ca_file: Option<PathBuf>,
    },
    /// `kind = "command"`: a program printing the JSON answer, like OpenSSH's
    /// AuthorizedKeysCommand. `argv[0]` is the program; `%u`, `%t`, `%a` and `%%` in
    /// the arguments are the user, the target (empty for none), the client's address
    /// and a `%`.
    Command {
        argv: Vec<String>,
        /// `max_output_bytes`: more output than this is a failure (default 64 KiB).
        max_output_bytes: usize,
    },
}

/// Where the PostgreSQL connection string is: inline, or in a file (so the password
/// stays out of the configuration). Never printed.
#[derive(Clone)]
pub enum PostgresUrl {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostgresUrl::Inline(_) => f.write_str("Inline(<redacted>)"),
            PostgresUrl::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl ProviderKind {
    /// The `kind` word.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderKind::Sqlite { .. } => "sqlite",
            ProviderKind::Postgres { .. } => "postgres",
            ProviderKind::Http { .. } => "http",
            ProviderKind::Command { .. } => "command",
        }
    }
}

/// An entry of an inline `authorized_keys` list that was left out: it does not parse,
/// is of a type sshr does not support, or is an RSA key under `required_rsa_size`.
/// One bad line never stops the proxy from starting, as in sshd.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedKey {
    /// Line of the configuration file.
    pub line: usize,
    /// Position in the user's list, from 1.
    pub entry: usize,
    /// Why. Names the key by type and fingerprint at most, never by its text.
    pub reason: String,
}

/// Where a user's authorized keys come from.
#[derive(Clone, Debug)]
pub enum AuthorizedKeys {
    /// No keys configured: public-key login is impossible for this user.
    None,
    /// `authorized_keys = [...]`, parsed.
    Inline(Vec<PublicKey>),
    /// `authorized_keys_file = "path"`, read when the hooks are built (startup, reload)
    /// and again at a login after it changed.
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
    /// authenticated yet, warm ones included (see `src/proxy/preauth.rs`); 0: no cap, and
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
    /// The rest of a packet must arrive within this long of its first bytes (before
    /// authentication, and on both legs of a relayed session).
    pub packet_timeout: Duration,
    /// `keepalive_interval_secs`: after this long without a packet from a peer, the
    /// proxy asks it for an answer (sshd's ClientAliveInterval), on both legs; `None`
    /// (0): never.
    pub keepalive_interval: Option<Duration>,
    /// `keepalive_count_max`: unanswered keepalives after which the peer counts as gone
    /// and both legs are closed (sshd's ClientAliveCountMax).
    pub keepalive_count_max: u32,
    /// `idle_timeout_secs`: a session with no channel data either way for this long is
    /// closed; `None` (0, the default): never.
    pub idle_timeout: Option<Duration>,
    /// `max_sessions_per_user`: relayed sessions one account may have at once, whole
    /// proxy; `None` (0, the default): no cap.
    pub max_sessions_per_user: Option<usize>,
}

/// `[proxy_protocol]`: listeners whose every connection starts with a PROXY protocol
/// header (v1 or v2) from a trusted load balancer, naming the real client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyProtocol {
    /// Addresses accepting PROXY-protocol connections (each shard listens on each).
    pub listen: Vec<SocketAddr>,
    /// Only connections from these networks may connect to those listeners.
    pub trusted: Vec<ipnet::IpNet>,
    /// How long the header may take to arrive after the connection is accepted.
    pub header_timeout: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        ProxyProtocol {
            listen: Vec::new(),
            trusted: Vec::new(),
            header_timeout: Duration::from_millis(3000),
        }
    }
}

impl ProxyProtocol {
    /// Whether a connection from `ip` may send a PROXY header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::core::values::canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// `audit_log`: where audit records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditLog {
    /// `"-"`: standard error, one JSON object per line.
    Stderr,
    /// A file, appended to and reopened on SIGUSR1 (for logrotate).
    File(PathBuf),
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

/// `[algorithms]`: the key exchanges, ciphers and MACs each leg offers, in order of
/// preference, and how the upstream leg picks its cipher.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Algorithms {
    /// What clients are offered.
    pub client: LegAlgorithms,
    /// What the proxy offers upstream servers.
    pub upstream: LegAlgorithms,
    pub upstream_cipher: UpstreamCipher,
}

impl Default for Algorithms {
    fn default() -> Self {
        Algorithms {
            client: LegAlgorithms::default(),
            upstream: LegAlgorithms::upstream_default(),
            upstream_cipher: UpstreamCipher::default(),
        }
    }
}

/// `[tunnels]`: SSH tunnels (`ssh -w`, `tun@openssh.com`) through the proxy.
pub use crate::core::values::TunnelSettings as Tunnels;

/// `[warm_upstreams]`: connections to recently used upstream servers, connected and
/// through key exchange, kept per shard for the next login (see `src/proxy/warm.rs`).
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
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_count_max: 3,
            idle_timeout: None,
            max_sessions_per_user: None,
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
/// The default `target_separator`: `alice+web2` is account `alice`, server `web2`.
pub const DEFAULT_TARGET_SEPARATOR: char = '+';
/// Largest `warm_upstreams.idle_secs` (an hour).
pub const MAX_WARM_IDLE_SECS: u64 = 3600;

impl Config {
    /// Reads and validates a configuration file. Relative paths in it are relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole(&origin, ConfigProblem::Read(e)))?;
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
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let problem = ConfigProblem::Syntax(error::one_line(e.message()));
            match e.span() {
                Some(span) => ConfigError::at(text, origin, span, problem),
                None => ConfigError::whole(origin, problem),
            }
        })?;
        validate::validate(raw, text, origin, base_dir)
    }

    /// Number of shards to run: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(num_cpus::get).max(1)
    }

    /// Every listening address with what its connections start with: `listen`, then
    /// `proxy_protocol.listen`.
    pub fn listeners(&self) -> Vec<(SocketAddr, ListenerKind)> {
        let plain = self.listen.iter().map(|&a| (a, ListenerKind::Ssh));
        let proxied =
            (self.proxy_protocol.listen.iter()).map(|&a| (a, ListenerKind::ProxyProtocol));
        plain.chain(proxied).collect()
    }

    /// The user entry named `name`, if any.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.upstream_keys, [PathBuf::from("keys/upstream_ed25519")]);
        assert_eq!(c.origin, DEFAULT_CONFIG_ORIGIN);
        assert_eq!(c.users.len(), 1);
        let demo = c.user("demo").unwrap();
        assert_eq!(demo.servers[0].upstream, "127.0.0.1:22");
        match &demo.authorized_keys {
            AuthorizedKeys::File(p) => assert_eq!(p, Path::new("/root/.ssh/authorized_keys")),
            other => panic!("expected authorized_keys_file, got {other:?}"),
        }
        // The documented defaults are the code's defaults.
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.rekey, Rekey::default());
        assert_eq!(c.tunnels, Tunnels::default());
        assert_eq!(demo.servers[0].tunnel, None);
    }

    #[test]
    fn load_resolves_paths_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sshr.toml");
        std::fs::write(
            &path,
            "listen = [\"127.0.0.1:2222\"]\nhost_keys = [\"keys/host\"]\nupstream_key = \"keys/upstream\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.upstream_keys, [dir.path().join("keys/upstream")]);
        assert_eq!(c.path.as_deref(), Some(path.as_path()));

        let missing = dir.path().join("nope.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err.problem(), ConfigProblem::Read(_)));
        assert!(err.to_string().starts_with(&missing.display().to_string()));
    }
}
