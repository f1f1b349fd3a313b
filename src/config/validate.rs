//! From the deserialized form ([`super::raw`]) to the typed [`Config`]: defaults filled in,
//! every rule checked, relative paths resolved. The first broken rule is the error, with
//! the line of the offending value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::hostkey::{PublicKey, MAX_RSA_VERIFY_BITS, MIN_RSA_BITS};
use sshr_protocol::kex::KexAlg;
use toml::Spanned;

use super::error::{line_col, ConfigError, ConfigProblem};
use super::raw::{
    OneOrMany, RawAlgorithms, RawConfig, RawLimits, RawPenalties, RawProvider, RawProxyProtocol,
    RawRekey, RawTunnels, RawUser, RawWarmUpstreams,
};
use super::{
    Algorithms, AuditLog, AuthorizedKeys, Config, Limits, PostgresUrl, ProviderConfig,
    ProviderKind, ProxyProtocol, Rekey, SkippedKey, Tunnels, UserConfig, WarmUpstreams,
    DEFAULT_TARGET_SEPARATOR, MAX_SECS, MAX_WARM_IDLE_SECS, MIN_BUFFER_POOL_BYTES,
};
use crate::core::algorithms::{LegAlgorithms, UpstreamCipher};
use crate::core::host_port::check_host_port;
use crate::core::penalty::PenaltySettings;
use crate::core::values::TunnelPolicy;

/// Turns the deserialized form into a [`Config`], or the first error with its line.
pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    origin: &str,
    base: &Path,
) -> Result<Config, ConfigError> {
    Validator {
        text,
        origin,
        required_rsa_size: MIN_RSA_BITS,
    }
    .validate(raw, base)
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    /// `required_rsa_size`, once read (keys in the user table are checked against it).
    required_rsa_size: usize,
}

impl Validator<'_> {
    fn err<T>(&self, span: Range<usize>, problem: ConfigProblem) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.text, self.origin, span, problem))
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
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
        let proxy_protocol = self.proxy_protocol(raw.proxy_protocol, &listen)?;
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
        let upstream_keys = self.upstream_keys(raw.upstream_key, base)?;

        let workers = match raw.workers {
            Some(w) if *w.get_ref() == 0 => {
                return self.err(w.span(), ConfigProblem::Zero("workers"))
            }
            Some(w) => Some(w.into_inner()),
            None => None,
        };

        if let Some(size) = &raw.required_rsa_size {
            let value = *size.get_ref();
            if !(MIN_RSA_BITS..=MAX_RSA_VERIFY_BITS).contains(&value) {
                return self.err(
                    size.span(),
                    ConfigProblem::RsaSizeOutOfRange {
                        value,
                        min: MIN_RSA_BITS,
                        max: MAX_RSA_VERIFY_BITS,
                    },
                );
            }
            self.required_rsa_size = value;
        }
        let limits = self.limits(raw.limits)?;
        let rekey = self.rekey(raw.rekey)?;
        let algorithms = self.algorithms(raw.algorithms)?;
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

        let providers = raw
            .providers
            .into_iter()
            .map(|p| self.provider(p, base, limits.hook_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let target_separator = self.target_separator(raw.target_separator)?;
        let audit_log = match &raw.audit_log {
            None => None,
            Some(v) if v.get_ref().trim() == "-" => Some(AuditLog::Stderr),
            Some(v) if v.get_ref().trim().is_empty() => {
                return self.err(v.span(), ConfigProblem::BadAuditLog)
            }
            Some(v) => Some(AuditLog::File(base.join(v.get_ref()))),
        };
        let run_as = match raw.user {
            None => None,
            Some(v) => {
                let name = v.get_ref();
                let ok = !name.is_empty()
                    && name.len() <= 32
                    && !name.starts_with('-')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return self.err(v.span(), ConfigProblem::BadRunAsUser(name.clone()));
                }
                Some(v.into_inner())
            }
        };

        Ok(Config {
            listen,
            host_keys,
            upstream_keys,
            users,
            providers,
            target_separator,
            proxy_protocol,
            audit_log,
            run_as,
            required_rsa_size: self.required_rsa_size,
            workers,
            metrics_listen,
            limits,
            rekey,
            algorithms,
            tunnels,
            warm_upstreams,
            penalties,
            hooks: raw.hooks,
            origin: self.origin.to_string(),
            path: None,
        })
    }

    /// `[proxy_protocol]`. Its addresses may not also be plain `listen` addresses
    /// (`listen` is passed to check that).
    fn proxy_protocol(
        &self,
        raw: RawProxyProtocol,
        plain: &[SocketAddr],
    ) -> Result<ProxyProtocol, ConfigError> {
        let d = ProxyProtocol::default();
        let mut listen = Vec::new();
        let mut listen_span = None;
        for addr in raw.listen.unwrap_or_default() {
            listen_span.get_or_insert(addr.span());
            let parsed = self.socket_addr("proxy_protocol.listen", &addr)?;
            if listen.contains(&parsed) || plain.contains(&parsed) {
                return self.err(addr.span(), ConfigProblem::DuplicateListenAddress(parsed));
            }
            listen.push(parsed);
        }
        let mut trusted = Vec::new();
        let trusted_span = raw.trusted.as_ref().map(|t| t.span());
        for net in raw.trusted.map(Spanned::into_inner).unwrap_or_default() {
            trusted.push(self.network(&net)?);
        }
        if !listen.is_empty() && trusted.is_empty() {
            let span = trusted_span.or(listen_span).unwrap_or(0..0);
            return self.err(span, ConfigProblem::NoTrustedProxies);
        }
        self.at_most(
            "proxy_protocol.header_timeout_ms",
            &raw.header_timeout_ms,
            MAX_SECS,
        )?;
        let header_timeout = Duration::from_millis(self.nonzero(
            "proxy_protocol.header_timeout_ms",
            raw.header_timeout_ms,
            d.header_timeout.as_millis() as u64,
        )?);
        Ok(ProxyProtocol {
            listen,
            trusted,
            header_timeout,
        })
    }

    /// A network (`10.0.0.0/8`) or a single address.
    fn network(&self, net: &Spanned<String>) -> Result<ipnet::IpNet, ConfigError> {
        let text = net.get_ref().trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .or_else(|_| {
                self.err(
                    net.span(),
                    ConfigProblem::BadNetwork {
                        value: net.get_ref().clone(),
                    },
                )
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

    /// `upstream_key`: one key file or a list of them, each once.
    fn upstream_keys(
        &self,
        raw: Spanned<OneOrMany>,
        base: &Path,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let span = raw.span();
        let paths = match raw.into_inner() {
            OneOrMany::One(path) => vec![path],
            OneOrMany::Many(paths) => paths,
        };
        if paths.is_empty() {
            return self.err(span, ConfigProblem::NoUpstreamKeys);
        }
        let mut keys: Vec<PathBuf> = Vec::with_capacity(paths.len());
        for path in paths {
            if path.trim().is_empty() {
                return self.err(span, ConfigProblem::EmptyPath("upstream_key"));
            }
            let joined = base.join(path);
            if keys.contains(&joined) {
                return self.err(span, ConfigProblem::DuplicateUpstreamKey(joined));
            }
            keys.push(joined);
        }
        Ok(keys)
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
        self.at_most(
            "limits.keepalive_interval_secs",
            &raw.keepalive_interval_secs,
            MAX_SECS,
        )?;
        self.at_most("limits.idle_timeout_secs", &raw.idle_timeout_secs, MAX_SECS)?;
        // Zero turns these off.
        let off_if_zero = |v: Option<Spanned<u64>>, default: Option<Duration>| match v {
            Some(v) if *v.get_ref() == 0 => None,
            Some(v) => Some(Duration::from_secs(v.into_inner())),
            None => default,
        };
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
                keepalive_interval: off_if_zero(raw.keepalive_interval_secs, d.keepalive_interval),
                keepalive_count_max: self.nonzero(
                    "limits.keepalive_count_max",
                    raw.keepalive_count_max,
                    d.keepalive_count_max,
                )?,
                idle_timeout: off_if_zero(raw.idle_timeout_secs, d.idle_timeout),
                max_sessions_per_user: match raw.max_sessions_per_user {
                    Some(v) if *v.get_ref() == 0 => None,
                    Some(v) => Some(v.into_inner()),
                    None => d.max_sessions_per_user,
                },
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

    fn algorithms(&self, raw: RawAlgorithms) -> Result<Algorithms, ConfigError> {
        let upstream_cipher = match &raw.upstream_cipher {
            None => UpstreamCipher::default(),
            Some(name) => match UpstreamCipher::from_name(name.get_ref()) {
                Some(policy) => policy,
                None => {
                    return self.err(
                        name.span(),
                        ConfigProblem::BadUpstreamCipher(name.get_ref().clone()),
                    )
                }
            },
        };
        let leg = |kex: Option<Spanned<Vec<Spanned<String>>>>,
                   ciphers: Option<Spanned<Vec<Spanned<String>>>>,
                   macs: Option<Spanned<Vec<Spanned<String>>>>,
                   keys: [&'static str; 3],
                   d: LegAlgorithms|
         -> Result<LegAlgorithms, ConfigError> {
            Ok(LegAlgorithms {
                kex: self.algorithm_list(keys[0], kex, d.kex, KexAlg::from_name)?,
                ciphers: self.algorithm_list(keys[1], ciphers, d.ciphers, CipherAlg::from_name)?,
                macs: self.algorithm_list(keys[2], macs, d.macs, MacAlg::from_name)?,
            })
        };
        Ok(Algorithms {
            client: leg(
                raw.kex,
                raw.ciphers,
                raw.macs,
                ["algorithms.kex", "algorithms.ciphers", "algorithms.macs"],
                LegAlgorithms::default(),
            )?,
            upstream: leg(
                raw.upstream_kex,
                raw.upstream_ciphers,
                raw.upstream_macs,
                [
                    "algorithms.upstream_kex",
                    "algorithms.upstream_ciphers",
                    "algorithms.upstream_macs",
                ],
                LegAlgorithms::upstream_default(),
            )?,
            upstream_cipher,
        })
    }

    /// A list of algorithm names, each known and given once, in the order given.
    fn algorithm_list<T: Copy + PartialEq>(
        &self,
        key: &'static str,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
        default: Vec<T>,
        from_name: fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        if raw.get_ref().is_empty() {
            return self.err(raw.span(), ConfigProblem::NoAlgorithms(key));
        }
        let mut out = Vec::new();
        for n in raw.get_ref() {
            let Some(alg) = from_name(n.get_ref()) else {
                return self.err(
                    n.span(),
                    ConfigProblem::UnknownAlgorithm {
                        key,
                        name: n.get_ref().clone(),
                    },
                );
            };
            if out.contains(&alg) {
                return self.err(
                    n.span(),
                    ConfigProblem::DuplicateAlgorithm {
                        key,
                        name: n.get_ref().clone(),
                    },
                );
            }
            out.push(alg);
        }
        Ok(out)
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
        match value.get_ref().parse::<TunnelPolicy>() {
            Ok(policy) => Ok(policy),
            Err(_) => self.err(
                value.span(),
                ConfigProblem::BadTunnelPolicy {
                    key,
                    value: value.get_ref().clone(),
                },
            ),
        }
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
            exempt.push(self.network(&net)?);
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

    fn target_separator(&self, raw: Option<Spanned<String>>) -> Result<Option<char>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Some(DEFAULT_TARGET_SEPARATOR));
        };
        let mut chars = raw.get_ref().chars();
        match (chars.next(), chars.next()) {
            (None, _) => Ok(None),
            (Some(c), None) if c.is_ascii_punctuation() && !"@:/\\'\"`$".contains(c) => Ok(Some(c)),
            _ => self.err(
                raw.span(),
                ConfigProblem::BadTargetSeparator(raw.get_ref().clone()),
            ),
        }
    }

    fn provider(
        &self,
        raw: RawProvider,
        base: &Path,
        hook_timeout: Duration,
    ) -> Result<ProviderConfig, ConfigError> {
        let kind_word = raw.kind.get_ref().as_str();
        let kind_span = raw.kind.span();
        // Keys of another kind are mistakes (a typo of the kind, or a pasted block).
        let given: [(&str, bool); 9] = [
            ("path", raw.path.is_some()),
            ("url", raw.url.is_some()),
            ("url_file", raw.url_file.is_some()),
            ("pool_size", raw.pool_size.is_some()),
            ("bearer_token_file", raw.bearer_token_file.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            ("command", raw.command.is_some()),
            ("max_output_bytes", raw.max_output_bytes.is_some()),
            ("timeout_ms", raw.timeout_ms.is_some()),
        ];
        let allowed: &[&str] = match kind_word {
            "sqlite" => &["path", "timeout_ms"],
            "postgres" => &["url", "url_file", "pool_size", "timeout_ms"],
            "http" => &["url", "bearer_token_file", "ca_file", "timeout_ms"],
            "command" => &["command", "max_output_bytes", "timeout_ms"],
            other => {
                return self.err(
                    kind_span,
                    ConfigProblem::BadProvider {
                        kind: other.to_string(),
                        reason: "kind must be \"sqlite\", \"postgres\", \"http\" or \"command\""
                            .into(),
                    },
                )
            }
        };
        let kind = kind_word.to_string();
        let problem = |reason: String| ConfigProblem::BadProvider {
            kind: kind.clone(),
            reason,
        };
        if let Some((key, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            return self.err(
                kind_span,
                problem(format!("`{key}` is not a setting of this kind")),
            );
        }
        let required = |value: &Option<Spanned<String>>, key: &str| -> Result<(), ConfigError> {
            match value {
                Some(v) if v.get_ref().trim().is_empty() => {
                    self.err(v.span(), problem(format!("`{key}` is empty")))
                }
                Some(_) => Ok(()),
                None => self.err(kind_span.clone(), problem(format!("`{key}` is required"))),
            }
        };
        let kind = match kind_word {
            "sqlite" => {
                required(&raw.path, "path")?;
                let path = raw.path.expect("checked");
                ProviderKind::Sqlite {
                    path: self.path("providers.path", &path, base)?,
                }
            }
            "postgres" => {
                let url = match (raw.url, raw.url_file) {
                    (Some(url), None) => {
                        required(&Some(url.clone()), "url")?;
                        PostgresUrl::Inline(url.into_inner())
                    }
                    (None, Some(file)) => {
                        PostgresUrl::File(self.path("providers.url_file", &file, base)?)
                    }
                    (Some(_), Some(file)) => {
                        return self.err(
                            file.span(),
                            problem("give either `url` or `url_file`, not both".into()),
                        )
                    }
                    (None, None) => {
                        return self
                            .err(kind_span, problem("`url` or `url_file` is required".into()))
                    }
                };
                ProviderKind::Postgres {
                    url,
                    pool_size: self.nonzero("providers.pool_size", raw.pool_size, 8)?,
                }
            }
            "http" => {
                required(&raw.url, "url")?;
                let url = raw.url.expect("checked");
                let text = url.get_ref().trim();
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    return self.err(
                        url.span(),
                        problem(format!("url {text:?} must start with http:// or https://")),
                    );
                }
                ProviderKind::Http {
                    url: text.to_string(),
                    bearer_token_file: match &raw.bearer_token_file {
                        Some(p) => Some(self.path("providers.bearer_token_file", p, base)?),
                        None => None,
                    },
                    ca_file: match &raw.ca_file {
                        Some(p) => Some(self.path("providers.ca_file", p, base)?),
                        None => None,
                    },
                }
            }
            _ => {
                required(&raw.command, "command")?;
                let command = raw.command.expect("checked");
                let argv = match shlex::split(command.get_ref()) {
                    Some(argv) if !argv.is_empty() => argv,
                    _ => {
                        return self.err(
                            command.span(),
                            problem("`command` is not a command line (unbalanced quotes?)".into()),
                        )
                    }
                };
                if let Err(reason) = crate::core::values::check_argv(&argv) {
                    return self.err(command.span(), problem(reason));
                }
                ProviderKind::Command {
                    argv,
                    max_output_bytes: self.nonzero(
                        "providers.max_output_bytes",
                        raw.max_output_bytes,
                        64 << 10,
                    )?,
                }
            }
        };
        self.at_most("providers.cache_ttl_secs", &raw.cache_ttl_secs, MAX_SECS)?;
        self.at_most(
            "providers.stale_if_error_secs",
            &raw.stale_if_error_secs,
            MAX_SECS,
        )?;
        self.at_most("providers.timeout_ms", &raw.timeout_ms, MAX_SECS)?;
        let timeout = match raw.timeout_ms {
            Some(ms) if *ms.get_ref() == 0 => {
                return self.err(ms.span(), ConfigProblem::Zero("providers.timeout_ms"))
            }
            Some(ms) => Duration::from_millis(ms.into_inner()),
            None => hook_timeout,
        };
        Ok(ProviderConfig {
            kind,
            timeout,
            cache_ttl: Duration::from_secs(raw.cache_ttl_secs.map_or(0, Spanned::into_inner)),
            stale_if_error: Duration::from_secs(
                raw.stale_if_error_secs.map_or(300, Spanned::into_inner),
            ),
        })
    }

    fn user(&self, raw: RawUser, base: &Path) -> Result<UserConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        if let Err(reason) = check_user_name(&name) {
            return self.err(raw.name.span(), ConfigProblem::BadUserName { name, reason });
        }
        let user_upstream_user = self.upstream_user(raw.upstream_user, &name, &name)?;
        let user_tunnel = self.tunnel_or(&raw.tunnel, None)?;
        let mut skipped_keys = Vec::new();
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
                    match self.authorized_key(line.get_ref()) {
                        Ok(key) => parsed.push(key),
                        Err(reason) => skipped_keys.push(SkippedKey {
                            line: self.line(&line.span()),
                            entry: index + 1,
                            reason,
                        }),
                    }
                }
                AuthorizedKeys::Inline(parsed)
            }
            (None, Some(file)) => {
                AuthorizedKeys::File(self.path("authorized_keys_file", &file, base)?)
            }
            (None, None) => AuthorizedKeys::None,
        };
        let mut servers = Vec::new();
        match raw.upstream {
            Some(upstream) => servers.push(self.server(
                &name,
                String::new(),
                upstream,
                user_upstream_user.clone(),
                raw.upstream_host_key,
                user_tunnel,
            )?),
            None => {
                if let Some(keys) = raw.upstream_host_key {
                    return self.err(keys.span(), ConfigProblem::NoUpstream { user: name });
                }
            }
        }
        let targets_span = raw.targets.as_ref().map(Spanned::span);
        for target in raw.targets.map(Spanned::into_inner).unwrap_or_default() {
            let target_name = target.name.get_ref().clone();
            if !crate::core::values::is_target_name(&target_name) {
                return self.err(
                    target.name.span(),
                    ConfigProblem::BadTargetName {
                        user: name,
                        target: target_name,
                    },
                );
            }
            if servers
                .iter()
                .any(|s: &super::ServerConfig| s.target == target_name)
            {
                return self.err(
                    target.name.span(),
                    ConfigProblem::DuplicateTarget {
                        user: name,
                        target: target_name,
                    },
                );
            }
            let upstream_user =
                self.upstream_user(target.upstream_user, &name, &user_upstream_user)?;
            let tunnel = self.tunnel_or(&target.tunnel, user_tunnel)?;
            servers.push(self.server(
                &name,
                target_name,
                target.upstream,
                upstream_user,
                target.upstream_host_key,
                tunnel,
            )?);
        }
        if servers.is_empty() {
            let span = targets_span.unwrap_or_else(|| raw.name.span());
            return self.err(span, ConfigProblem::NoUpstream { user: name });
        }
        Ok(UserConfig {
            name,
            authorized_keys,
            skipped_keys,
            servers,
        })
    }

    /// One entry of an inline `authorized_keys` list, or why it cannot be used.
    fn authorized_key(&self, line: &str) -> Result<PublicKey, String> {
        let key = PublicKey::from_openssh(line.trim()).map_err(|e| e.to_string())?;
        key.check_rsa_size(self.required_rsa_size).map_err(|e| {
            format!(
                "{} {}: {e} (`required_rsa_size`)",
                key.algorithm_name(),
                key.fingerprint()
            )
        })?;
        Ok(key)
    }

    /// `upstream_user` of `user` (or of one of its targets): not empty; `default` when
    /// absent.
    fn upstream_user(
        &self,
        raw: Option<Spanned<String>>,
        user: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        match raw {
            Some(u) if u.get_ref().trim().is_empty() => self.err(
                u.span(),
                ConfigProblem::EmptyUpstreamUser {
                    user: user.to_string(),
                },
            ),
            Some(u) => Ok(u.into_inner()),
            None => Ok(default.to_string()),
        }
    }

    /// A `tunnel` policy word, or `default` when absent.
    fn tunnel_or(
        &self,
        raw: &Option<Spanned<String>>,
        default: Option<TunnelPolicy>,
    ) -> Result<Option<TunnelPolicy>, ConfigError> {
        match raw {
            Some(v) => Ok(Some(self.tunnel_policy("tunnel", v)?)),
            None => Ok(default),
        }
    }

    /// One server of `user`: its address and host keys checked.
    fn server(
        &self,
        user: &str,
        target: String,
        upstream: Spanned<String>,
        upstream_user: String,
        host_key: Option<Spanned<OneOrMany>>,
        tunnel: Option<TunnelPolicy>,
    ) -> Result<super::ServerConfig, ConfigError> {
        if let Err(reason) = check_host_port(upstream.get_ref()) {
            return self.err(
                upstream.span(),
                ConfigProblem::BadUpstreamAddress {
                    user: user.to_string(),
                    addr: upstream.into_inner(),
                    reason,
                },
            );
        }
        let upstream_host_keys = match host_key {
            None => Vec::new(),
            Some(spanned) => {
                let span = spanned.span();
                let lines = match spanned.into_inner() {
                    OneOrMany::One(line) => vec![line],
                    OneOrMany::Many(lines) => lines,
                };
                let mut keys = Vec::with_capacity(lines.len());
                for line in lines {
                    let checked = PublicKey::from_openssh(line.trim()).and_then(|key| {
                        key.check_rsa_size(self.required_rsa_size)?;
                        Ok(key)
                    });
                    match checked {
                        Ok(key) => keys.push(key),
                        Err(e) => {
                            return self.err(
                                span,
                                ConfigProblem::BadUpstreamHostKey {
                                    user: user.to_string(),
                                    reason: e.to_string(),
                                },
                            )
                        }
                    }
                }
                keys
            }
        };
        Ok(super::ServerConfig {
            target,
            upstream: upstream.into_inner(),
            upstream_user,
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

    #[test]
    fn algorithms_default_to_everything_and_take_lists_per_leg() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.algorithms.client.kex[0], KexAlg::MlKem768X25519Sha256);
        assert_eq!(c.algorithms.upstream, LegAlgorithms::upstream_default());
        assert_eq!(c.algorithms.upstream_cipher, UpstreamCipher::Fastest);
        let c = parse(&format!(
            "{MINIMAL}[algorithms]\nkex = [\"curve25519-sha256\", \"mlkem768x25519-sha256\"]\n\
             upstream_ciphers = [\"aes256-gcm@openssh.com\"]\nupstream_cipher = \"same-as-client\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.algorithms.client.kex,
            vec![KexAlg::Curve25519Sha256, KexAlg::MlKem768X25519Sha256]
        );
        assert_eq!(c.algorithms.client.ciphers, CipherAlg::ALL.to_vec());
        assert_eq!(c.algorithms.upstream.ciphers, vec![CipherAlg::Aes256Gcm]);
        assert_eq!(c.algorithms.upstream_cipher, UpstreamCipher::SameAsClient);

        let (p, line, shown) = problem(&format!(
            "{MINIMAL}[algorithms]\nupstream_kex = [\n  \"curve25519-sha256\",\n  \"diffie-hellman-group1-sha1\",\n]\n"
        ));
        assert!(matches!(
            p,
            ConfigProblem::UnknownAlgorithm {
                key: "algorithms.upstream_kex",
                ..
            }
        ));
        assert_eq!(line, Some(8), "{shown}");
        assert!(
            shown.contains("supported: mlkem768x25519-sha256, "),
            "{shown}"
        );
        let (p, _, _) = problem(&format!("{MINIMAL}[algorithms]\nmacs = []\n"));
        assert!(matches!(p, ConfigProblem::NoAlgorithms("algorithms.macs")));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[algorithms]\nciphers = [\"aes128-ctr\", \"aes128-ctr\"]\n"
        ));
        assert!(matches!(p, ConfigProblem::DuplicateAlgorithm { .. }));
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[algorithms]\nupstream_cipher = \"same\"\n"
        ));
        assert!(matches!(p, ConfigProblem::BadUpstreamCipher(_)));
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
        assert_eq!(c.upstream_keys, [PathBuf::from("/etc/sshr/keys/upstream")]);
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
        assert_eq!(alice.servers[0].upstream, "127.0.0.1:2201");
        assert_eq!(alice.servers[0].upstream_user, "root");
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
        assert_eq!(alice.servers[0].upstream_host_keys.len(), 1);

        let bob = c.user("bob").unwrap();
        assert_eq!(
            bob.servers[0].upstream_user, "bob",
            "upstream_user defaults to name"
        );
        match &bob.authorized_keys {
            AuthorizedKeys::File(path) => assert_eq!(path, Path::new("/etc/sshr/bob.keys")),
            other => panic!("expected a file, got {other:?}"),
        }
        assert_eq!(bob.servers[0].upstream_host_keys.len(), 2);

        let carol = c.user("carol").unwrap();
        assert!(matches!(carol.authorized_keys, AuthorizedKeys::None));
        assert!(carol.servers[0].upstream_host_keys.is_empty());
        assert!(c.user("dave").is_none());
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
    fn fleet_settings() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.proxy_protocol.listen.is_empty());
        assert_eq!(c.audit_log, None);
        assert_eq!(c.run_as, None);
        assert_eq!(c.limits.keepalive_interval, Some(Duration::from_secs(15)));
        let c = parse(&format!(
            "audit_log = \"-\"\nuser = \"sshr\"\n{MINIMAL}[proxy_protocol]\n\
             listen = [\"127.0.0.1:2223\"]\ntrusted = [\"10.0.0.0/8\", \"127.0.0.1\"]\n\
             header_timeout_ms = 500\n[limits]\nkeepalive_interval_secs = 0\n\
             keepalive_count_max = 5\nidle_timeout_secs = 600\nmax_sessions_per_user = 4\n"
        ))
        .unwrap();
        assert_eq!(c.audit_log, Some(AuditLog::Stderr));
        assert_eq!(c.run_as.as_deref(), Some("sshr"));
        assert_eq!(c.proxy_protocol.header_timeout, Duration::from_millis(500));
        assert!(c.proxy_protocol.trusts("10.1.2.3".parse().unwrap()));
        assert!(c.proxy_protocol.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.proxy_protocol.trusts("127.0.0.3".parse().unwrap()));
        assert_eq!(c.listeners().len(), 2);
        assert_eq!(c.limits.keepalive_interval, None);
        assert_eq!(c.limits.keepalive_count_max, 5);
        assert_eq!(c.limits.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.limits.max_sessions_per_user, Some(4));

        let (p, line, _) = problem(&format!(
            "{MINIMAL}[proxy_protocol]\nlisten = [\"127.0.0.1:2223\"]\n"
        ));
        assert!(matches!(p, ConfigProblem::NoTrustedProxies), "{p:?}");
        assert_eq!(line, Some(6), "the listen line");
        let (p, _, _) = problem(&format!(
            "{MINIMAL}[proxy_protocol]\nlisten = [\"127.0.0.1:2222\"]\ntrusted = [\"10.0.0.1\"]\n"
        ));
        assert!(
            matches!(p, ConfigProblem::DuplicateListenAddress(_)),
            "{p:?}"
        );
        let (p, line, _) = problem(&format!(
            "{MINIMAL}[proxy_protocol]\ntrusted = [\"10.0.0.300\"]\n"
        ));
        assert!(matches!(p, ConfigProblem::BadNetwork { .. }), "{p:?}");
        assert_eq!(line, Some(6));
        let (p, _, _) = problem(&format!("user = \"root; rm\"\n{MINIMAL}"));
        assert!(matches!(p, ConfigProblem::BadRunAsUser(_)), "{p:?}");
        let (p, _, _) = problem(&format!("audit_log = \"\"\n{MINIMAL}"));
        assert!(matches!(p, ConfigProblem::BadAuditLog), "{p:?}");
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

    const RSA1024: &str = include_str!("../../protocol/tests/data/hostkey/rsa1024.pub");
    const DSA: &str = include_str!("../../protocol/tests/data/hostkey/dsa.pub");

    /// Garbage, an unsupported key type and an RSA key under `required_rsa_size` are
    /// left out of an inline list, each noted with its line; the good keys stay.
    #[test]
    fn unusable_inline_keys_are_skipped() {
        let good = public_key_line();
        let rsa1024 = RSA1024.trim();
        let dsa = DSA.trim();
        let list = format!(
            "authorized_keys = [\n  \"ssh-ed25519 AAAAnotbase64!!\",\n  \"{dsa}\",\n  \"{rsa1024}\",\n  \"{good}\",\n]\n"
        );
        let user = format!("[[users]]\nname = \"a\"\nupstream = \"h:22\"\n{list}");

        // By default (1024 bits, as OpenSSH), the RSA key is usable.
        let c = parse(&format!("{MINIMAL}{user}")).unwrap();
        assert_eq!(c.required_rsa_size, 1024);
        let a = c.user("a").unwrap();
        match &a.authorized_keys {
            AuthorizedKeys::Inline(keys) => assert_eq!(
                keys,
                &[
                    PublicKey::from_openssh(rsa1024).unwrap(),
                    PublicKey::from_openssh(&good).unwrap()
                ]
            ),
            other => panic!("{other:?}"),
        }
        let lines: Vec<_> = a.skipped_keys.iter().map(|s| (s.line, s.entry)).collect();
        assert_eq!(lines, [(9, 1), (10, 2)]);
        assert_eq!(
            a.skipped_keys[0].reason,
            "invalid public key: invalid base64"
        );
        assert_eq!(a.skipped_keys[1].reason, "unsupported key type ssh-dss");

        // Asked for 2048 bits, it is skipped too, named by its fingerprint only.
        let c = parse(&format!("required_rsa_size = 2048\n{MINIMAL}{user}")).unwrap();
        assert_eq!(c.required_rsa_size, 2048);
        let a = c.user("a").unwrap();
        match &a.authorized_keys {
            AuthorizedKeys::Inline(keys) => {
                assert_eq!(keys, &[PublicKey::from_openssh(&good).unwrap()])
            }
            other => panic!("{other:?}"),
        }
        let fingerprint = PublicKey::from_openssh(rsa1024).unwrap().fingerprint();
        assert_eq!(
            a.skipped_keys[2],
            SkippedKey {
                line: 12,
                entry: 3,
                reason: format!(
                    "ssh-rsa {fingerprint}: RSA key of 1024 bits is smaller than the required \
                     2048 bits (`required_rsa_size`)"
                ),
            }
        );
        let material = rsa1024.split_whitespace().nth(1).unwrap();
        for skipped in &a.skipped_keys {
            assert!(!skipped.reason.contains(&material[20..40]), "{skipped:?}");
        }

        // A pinned upstream host key under the minimum could never match: refused.
        let text = format!(
            "required_rsa_size = 2048\n{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nupstream_host_key = \"{rsa1024}\"\n"
        );
        let (p, line, shown) = problem(&text);
        assert!(
            matches!(p, ConfigProblem::BadUpstreamHostKey { .. }),
            "{p:?}"
        );
        assert_eq!(line, Some(9));
        assert!(
            shown.ends_with("RSA key of 1024 bits is smaller than the required 2048 bits"),
            "{shown}"
        );
        let text = format!("{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\nupstream_host_key = \"not a key\"\n");
        let (p, line, _) = problem(&text);
        assert!(
            matches!(p, ConfigProblem::BadUpstreamHostKey { .. }),
            "{p:?}"
        );
        assert_eq!(line, Some(8));
    }

    #[test]
    fn required_rsa_size_is_bounded() {
        for value in [0, 768, 1023, 16385, 65536] {
            let (p, line, shown) = problem(&format!("{MINIMAL}required_rsa_size = {value}\n"));
            assert!(
                matches!(p, ConfigProblem::RsaSizeOutOfRange { value: v, min: 1024, max: 16384 } if v == value),
                "{p:?}"
            );
            assert_eq!(line, Some(5), "{shown}");
        }
        for value in [1024, 2048, 3072, 16384] {
            let c = parse(&format!("{MINIMAL}required_rsa_size = {value}\n")).unwrap();
            assert_eq!(c.required_rsa_size, value);
        }
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
        let (p, line, _) =
            problem("listen = [\"127.0.0.1:1\"]\nhost_keys = [\"k\"]\nupstream_key = []\n");
        assert!(matches!(p, ConfigProblem::NoUpstreamKeys));
        assert_eq!(line, Some(3));
        let (p, _, shown) = problem(
            "listen = [\"127.0.0.1:1\"]\nhost_keys = [\"k\"]\nupstream_key = [\"a\", \"b\", \"a\"]\n",
        );
        assert!(matches!(p, ConfigProblem::DuplicateUpstreamKey(_)));
        assert!(shown.contains("/etc/sshr/a"), "{shown}");
        let (p, _, _) = problem(
            "listen = [\"127.0.0.1:1\"]\nhost_keys = [\"k\"]\nupstream_key = [\"a\", \"\"]\n",
        );
        assert!(matches!(p, ConfigProblem::EmptyPath("upstream_key")));
    }

    #[test]
    fn upstream_key_takes_one_file_or_a_list_in_order() {
        let c = parse(
            "listen = [\"127.0.0.1:1\"]\nhost_keys = [\"k\"]\n\
             upstream_key = [\"id_ed25519\", \"/keys/id_rsa\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.upstream_keys,
            [
                PathBuf::from("/etc/sshr/id_ed25519"),
                PathBuf::from("/keys/id_rsa")
            ]
        );
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
    fn targets_inherit_the_users_settings_and_are_checked() {
        let c = parse(&format!(
            "{MINIMAL}[[users]]\nname = \"alice\"\nupstream_user = \"root\"\ntunnel = \"any\"\n\
             targets = [\n  {{ name = \"web1\", upstream = \"10.0.0.1:22\" }},\n  \
             {{ name = \"db-2\", upstream = \"10.0.0.2:22\", upstream_user = \"pg\", tunnel = \"deny\" }},\n]\n"
        ))
        .unwrap();
        let alice = c.user("alice").unwrap();
        assert!(alice.server("").is_none(), "no default server");
        let web1 = alice.server("web1").unwrap();
        assert_eq!(
            (web1.upstream.as_str(), web1.upstream_user.as_str()),
            ("10.0.0.1:22", "root")
        );
        assert_eq!(web1.tunnel, Some(TunnelPolicy::Any));
        let db = alice.server("db-2").unwrap();
        assert_eq!(db.upstream_user, "pg");
        assert_eq!(db.tunnel, Some(TunnelPolicy::Deny));

        let bad = |users: &str| problem(&format!("{MINIMAL}[[users]]\nname = \"a\"\n{users}")).0;
        assert!(matches!(bad(""), ConfigProblem::NoUpstream { .. }));
        assert!(matches!(
            bad("targets = [{ name = \"web 1\", upstream = \"h:22\" }]\n"),
            ConfigProblem::BadTargetName { .. }
        ));
        assert!(matches!(
            bad("upstream = \"h:22\"\ntargets = [{ name = \"w\", upstream = \"h:22\" }, { name = \"w\", upstream = \"i:22\" }]\n"),
            ConfigProblem::DuplicateTarget { .. }
        ));
        assert!(matches!(
            bad("targets = [{ name = \"w\", upstream = \"h:22\", upstream_user = \"\" }]\n"),
            ConfigProblem::EmptyUpstreamUser { .. }
        ));
        assert!(matches!(
            bad("targets = [{ name = \"w\", upstream = \"no-port\" }]\n"),
            ConfigProblem::BadUpstreamAddress { .. }
        ));
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
        assert_eq!(
            c.user("a").unwrap().servers[0].tunnel,
            Some(TunnelPolicy::Ethernet)
        );
        assert_eq!(c.user("b").unwrap().servers[0].tunnel, None);

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
    fn tunnel_policy_takes_only_its_four_words() {
        for (word, policy) in [
            ("deny", TunnelPolicy::Deny),
            ("point-to-point", TunnelPolicy::PointToPoint),
            ("ethernet", TunnelPolicy::Ethernet),
            ("any", TunnelPolicy::Any),
        ] {
            let c = parse(&format!(
                "{MINIMAL}[tunnels]\ndefault = \"{word}\"\n\n[[users]]\nname = \"a\"\nupstream = \"h:22\"\ntunnel = \"{word}\"\n"
            ))
            .unwrap();
            assert_eq!(c.tunnels.default, policy, "{word}");
            assert_eq!(
                c.user("a").unwrap().servers[0].tunnel,
                Some(policy),
                "{word}"
            );
        }
        // sshd's PermitTunnel words, other spellings and blanks are refused, in both
        // places, with the key, the value and the valid words.
        for word in [
            "yes",
            "no",
            "Any",
            " any",
            "deny ",
            "true",
            "point_to_point",
            "",
        ] {
            let (p, line, shown) = problem(&format!(
                "{MINIMAL}[[users]]\nname = \"a\"\nupstream = \"h:22\"\ntunnel = \"{word}\"\n"
            ));
            assert!(
                matches!(p, ConfigProblem::BadTunnelPolicy { key: "tunnel", ref value } if value == word),
                "{word:?}: {p:?}"
            );
            assert_eq!(line, Some(8));
            assert!(shown.contains(&format!("`tunnel` = {word:?}")), "{shown}");
            assert!(
                shown.contains("\"deny\", \"point-to-point\", \"ethernet\" or \"any\""),
                "{shown}"
            );
            let (p, line, shown) = problem(&format!("{MINIMAL}[tunnels]\ndefault = \"{word}\"\n"));
            assert!(
                matches!(p, ConfigProblem::BadTunnelPolicy { key: "tunnels.default", ref value } if value == word),
                "{word:?}: {p:?}"
            );
            assert_eq!(line, Some(6));
            assert!(shown.contains("`tunnels.default`"), "{shown}");
        }
    }
}
