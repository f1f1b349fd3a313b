//! The configuration as deserialized, before validation. Every value keeps its span, so
//! that [`super::validate`] can give each error a line number. Unknown keys are refused
//! here (`deny_unknown_fields`).

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Spanned<Vec<Spanned<String>>>,
    pub(super) host_keys: Spanned<Vec<Spanned<String>>>,
    pub(super) upstream_key: Spanned<OneOrMany>,
    pub(super) workers: Option<Spanned<usize>>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) rekey: RawRekey,
    #[serde(default)]
    pub(super) algorithms: RawAlgorithms,
    #[serde(default)]
    pub(super) tunnels: RawTunnels,
    #[serde(default)]
    pub(super) warm_upstreams: RawWarmUpstreams,
    #[serde(default)]
    pub(super) penalties: RawPenalties,
    #[serde(default)]
    pub(super) hooks: toml::Table,
    #[serde(default)]
    pub(super) users: Vec<RawUser>,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    pub(super) target_separator: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) proxy_protocol: RawProxyProtocol,
    pub(super) audit_log: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) required_rsa_size: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyProtocol {
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) trusted: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) header_timeout_ms: Option<Spanned<u64>>,
}

/// One `[[providers]]` entry: every kind's keys, checked against its kind by
/// validation (a tagged enum would lose the values' spans).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) kind: Spanned<String>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) cache_ttl_secs: Option<Spanned<u64>>,
    pub(super) stale_if_error_secs: Option<Spanned<u64>>,
    // sqlite
    pub(super) path: Option<Spanned<String>>,
    // postgres (and http: `url`)
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<u32>>,
    // http
    pub(super) bearer_token_file: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    // command
    pub(super) command: Option<Spanned<String>>,
    pub(super) max_output_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_sessions_per_shard: Option<Spanned<usize>>,
    pub(super) auth_timeout_secs: Option<Spanned<u64>>,
    pub(super) connect_timeout_secs: Option<Spanned<u64>>,
    pub(super) hook_timeout_secs: Option<Spanned<u64>>,
    pub(super) buffer_pool_bytes_per_shard: Option<Spanned<usize>>,
    pub(super) shutdown_grace_secs: Option<Spanned<u64>>,
    pub(super) preauth_upstream_connections: Option<Spanned<usize>>,
    pub(super) max_auth_tries: Option<Spanned<u32>>,
    pub(super) max_startups: Option<Spanned<String>>,
    pub(super) preauth_buffer_bytes_per_shard: Option<Spanned<usize>>,
    pub(super) packet_timeout_secs: Option<Spanned<u64>>,
    pub(super) keepalive_interval_secs: Option<Spanned<u64>>,
    pub(super) keepalive_count_max: Option<Spanned<u32>>,
    pub(super) idle_timeout_secs: Option<Spanned<u64>>,
    pub(super) max_sessions_per_user: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPenalties {
    pub(super) enabled: Option<bool>,
    pub(super) authfail_secs: Option<Spanned<u64>>,
    pub(super) noauth_secs: Option<Spanned<u64>>,
    pub(super) grace_exceeded_secs: Option<Spanned<u64>>,
    pub(super) min_secs: Option<Spanned<u64>>,
    pub(super) max_secs: Option<Spanned<u64>>,
    pub(super) max_sources: Option<Spanned<usize>>,
    pub(super) exempt: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlgorithms {
    pub(super) kex: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) ciphers: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) macs: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) upstream_kex: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) upstream_ciphers: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) upstream_macs: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) upstream_cipher: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRekey {
    pub(super) bytes: Option<Spanned<u64>>,
    pub(super) seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWarmUpstreams {
    pub(super) per_upstream: Option<Spanned<usize>>,
    pub(super) idle_secs: Option<Spanned<u64>>,
    pub(super) max_per_shard: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnels {
    pub(super) default: Option<Spanned<String>>,
    pub(super) max_duration_secs: Option<Spanned<u64>>,
    pub(super) max_bytes: Option<Spanned<u64>>,
    pub(super) report_interval_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) name: Spanned<String>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) upstream_user: Option<Spanned<String>>,
    pub(super) authorized_keys: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) authorized_keys_file: Option<Spanned<String>>,
    pub(super) upstream_host_key: Option<Spanned<OneOrMany>>,
    pub(super) tunnel: Option<Spanned<String>>,
    pub(super) targets: Option<Spanned<Vec<RawTarget>>>,
}

/// One entry of a user's `targets` list: a server chosen as `name+target`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Spanned<String>,
    pub(super) upstream: Spanned<String>,
    pub(super) upstream_user: Option<Spanned<String>>,
    pub(super) upstream_host_key: Option<Spanned<OneOrMany>>,
    pub(super) tunnel: Option<Spanned<String>>,
}

/// `upstream_host_key` takes one key or a list (an upstream may have several), and
/// `upstream_key` one key file or a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}
