//! Counters and gauges, exported in the Prometheus text format on `metrics_listen`.
//!
//! The relay counts bytes per packet, so counting must not touch memory shared between
//! shards: each shard counts in plain `Cell`s ([`ShardMetrics`]) and a task of the shard
//! publishes the increments to the `metrics` recorder about once a second. Without
//! `metrics_listen` no recorder is installed and publishing costs next to nothing.
//!
//! Exported series:
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `sshr_sessions_active` | gauge | |
//! | `sshr_sessions_total` | counter | |
//! | `sshr_sessions_refused_total` | counter | `reason` (`session_limit`, `penalty`, `startups`) |
//! | `sshr_unauthenticated_connections` | gauge | |
//! | `sshr_preauth_buffer_bytes` | gauge | `shard` |
//! | `sshr_auth_failures_total` | counter | `reason` (see [`AuthFailure`]) |
//! | `sshr_upstream_connect_failures_total` | counter | `reason` (see [`UpstreamFailure`]) |
//! | `sshr_relayed_bytes_total` | counter | `direction` (`client_to_upstream`, `upstream_to_client`) |
//! | `sshr_buffer_pool_in_use` | gauge | `shard` |
//! | `sshr_buffer_pool_waiters` | gauge | `shard` |
//! | `sshr_upstream_warm_total` | counter | `outcome` (`hit`, `miss`) |
//! | `sshr_upstream_warm_held` | gauge | `shard` |
//! | `sshr_tunnels_open` | gauge | |
//! | `sshr_tunnels_total` | counter | `mode` (`point-to-point`, `ethernet`, `other`) |
//! | `sshr_tunnels_refused_total` | counter | `reason` (`policy`, `limit`, `malformed`, `upstream`) |
//! | `sshr_tunnel_bytes_total` | counter | `direction` |
//! | `sshr_tunnel_alerts_total` | counter | `kind` (`duration`, `bytes`) |
//! | `sshr_provider_lookups_total` | counter | `kind` (`sqlite`, `postgres`, `http`, `command`, `custom`), `result` (`found`, `unknown`, `choose`, `cached`, `stale`, `error`) |
//!
//! Every label takes a fixed set of values: never a user, an address or a free text.

pub mod endpoint;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::core::login::AuthFailure;
use crate::core::refusal::Refusal;

/// Why the proxy could not open its leg to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamFailure {
    /// The host name did not resolve.
    Resolve,
    /// No answer within `limits.connect_timeout_secs`.
    Timeout,
    /// TCP connect refused or failed.
    Connect,
    /// The upstream's host key is not the pinned one.
    HostKey,
    /// The upstream refused the proxy's key.
    Auth,
    /// Key exchange or protocol failure on the upstream leg.
    Protocol,
    /// The upstream's key exchange offered nothing the proxy supports in one list.
    Negotiation,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 7] = [
        UpstreamFailure::Resolve,
        UpstreamFailure::Timeout,
        UpstreamFailure::Connect,
        UpstreamFailure::HostKey,
        UpstreamFailure::Auth,
        UpstreamFailure::Protocol,
        UpstreamFailure::Negotiation,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Resolve => "resolve",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::HostKey => "host_key",
            UpstreamFailure::Auth => "auth",
            UpstreamFailure::Protocol => "protocol",
            UpstreamFailure::Negotiation => "negotiation",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One shard's counters. Updating them is a plain add on shard-local memory.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    shard: usize,
    now: Counts,
    published: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    sessions_active: Cell<u64>,
    sessions_total: Cell<u64>,
    sessions_refused: [Cell<u64>; Refusal::AT_ACCEPT.len()],
    auth_failures: [Cell<u64>; AuthFailure::ALL.len()],
    upstream_failures: [Cell<u64>; UpstreamFailure::ALL.len()],
    bytes_client_to_upstream: Cell<u64>,
    bytes_upstream_to_client: Cell<u64>,
    /// Only in `published`: the warm pool's own totals at the last publish.
    warm_hits: Cell<u64>,
    warm_misses: Cell<u64>,
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        ShardMetrics {
            shard,
            ..Default::default()
        }
    }

    /// Bytes read from the client leg and sent upstream (count SSH payload or wire
    /// bytes, but the same on both directions).
    #[inline]
    pub fn relayed_client_to_upstream(&self, bytes: usize) {
        add(&self.now.bytes_client_to_upstream, bytes as u64);
    }

    /// Bytes read from the upstream leg and sent to the client.
    #[inline]
    pub fn relayed_upstream_to_client(&self, bytes: usize) {
        add(&self.now.bytes_upstream_to_client, bytes as u64);
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        add(&self.now.auth_failures[reason as usize], 1);
    }

    pub fn upstream_failure(&self, reason: UpstreamFailure) {
        add(&self.now.upstream_failures[reason.index()], 1);
    }

    /// Called by the accept loop (through the session guard); sessions need not call it.
    pub(crate) fn session_started(&self) {
        add(&self.now.sessions_total, 1);
        add(&self.now.sessions_active, 1);
    }

    pub(crate) fn session_ended(&self) {
        let active = &self.now.sessions_active;
        active.set(active.get().saturating_sub(1));
    }

    pub(crate) fn session_refused(&self, reason: Refusal) {
        if let Some(i) = Refusal::AT_ACCEPT.iter().position(|r| *r == reason) {
            add(&self.now.sessions_refused[i], 1);
        }
    }

    /// Totals counted on this shard so far (for tests and logs).
    #[cfg(test)]
    pub fn relayed_bytes(&self) -> (u64, u64) {
        (
            self.now.bytes_client_to_upstream.get(),
            self.now.bytes_upstream_to_client.get(),
        )
    }

    /// Sends what changed since the last call to the global `metrics` recorder, with
    /// the shard's current `gauges`.
    pub fn publish(&self, gauges: ShardGauges) {
        fn delta(now: &Cell<u64>, published: &Cell<u64>) -> u64 {
            let d = now.get().wrapping_sub(published.get());
            published.set(now.get());
            d
        }
        let (now, p) = (&self.now, &self.published);

        let active_before = p.sessions_active.get();
        let active = now.sessions_active.get();
        p.sessions_active.set(active);
        // Every shard adds its own change to the one process-wide gauge.
        let gauge = metrics::gauge!("sshr_sessions_active");
        if active >= active_before {
            gauge.increment((active - active_before) as f64);
        } else {
            gauge.decrement((active_before - active) as f64);
        }

        let d = delta(&now.sessions_total, &p.sessions_total);
        if d > 0 {
            metrics::counter!("sshr_sessions_total").increment(d);
        }
        for (i, reason) in Refusal::AT_ACCEPT.into_iter().enumerate() {
            let d = delta(&now.sessions_refused[i], &p.sessions_refused[i]);
            if let (true, Some(label)) = (d > 0, reason.accept_label()) {
                metrics::counter!("sshr_sessions_refused_total", "reason" => label).increment(d);
            }
        }
        for reason in AuthFailure::ALL {
            let i = reason as usize;
            let d = delta(&now.auth_failures[i], &p.auth_failures[i]);
            if d > 0 {
                metrics::counter!("sshr_auth_failures_total", "reason" => reason.label())
                    .increment(d);
            }
        }
        for reason in UpstreamFailure::ALL {
            let i = reason.index();
            let d = delta(&now.upstream_failures[i], &p.upstream_failures[i]);
            if d > 0 {
                metrics::counter!("sshr_upstream_connect_failures_total", "reason" => reason.label())
                    .increment(d);
            }
        }
        let d = delta(&now.bytes_client_to_upstream, &p.bytes_client_to_upstream);
        if d > 0 {
            metrics::counter!("sshr_relayed_bytes_total", "direction" => "client_to_upstream")
                .increment(d);
        }
        let d = delta(&now.bytes_upstream_to_client, &p.bytes_upstream_to_client);
        if d > 0 {
            metrics::counter!("sshr_relayed_bytes_total", "direction" => "upstream_to_client")
                .increment(d);
        }

        let (hits, misses) = (gauges.warm_hits, gauges.warm_misses);
        let d = hits.wrapping_sub(p.warm_hits.replace(hits));
        if d > 0 {
            metrics::counter!("sshr_upstream_warm_total", "outcome" => "hit").increment(d);
        }
        let d = misses.wrapping_sub(p.warm_misses.replace(misses));
        if d > 0 {
            metrics::counter!("sshr_upstream_warm_total", "outcome" => "miss").increment(d);
        }

        let shard = self.shard.to_string();
        metrics::gauge!("sshr_upstream_warm_held", "shard" => shard.clone())
            .set(gauges.warm_held as f64);
        metrics::gauge!("sshr_buffer_pool_in_use", "shard" => shard.clone())
            .set(gauges.pool_in_use as f64);
        metrics::gauge!("sshr_buffer_pool_waiters", "shard" => shard)
            .set(gauges.pool_waiters as f64);
    }
}

/// What a shard holds right now, read when it publishes: the sink takes plain numbers
/// and knows no pool or session type.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardGauges {
    /// Relay buffers lent out.
    pub pool_in_use: usize,
    /// Sessions waiting for a relay buffer.
    pub pool_waiters: usize,
    /// Warm upstream connections held.
    pub warm_held: usize,
    /// Logins that found a warm connection, and those that did not, since the start.
    pub warm_hits: u64,
    pub warm_misses: u64,
}

/// Publishes what unauthenticated connections hold: this shard's receive buffer bytes
/// beyond their inline buffers, and (from shard 0) the whole proxy's count.
pub fn publish_preauth(shard: usize, buffer_bytes: usize, unauthenticated: usize) {
    metrics::gauge!("sshr_preauth_buffer_bytes", "shard" => shard.to_string())
        .set(buffer_bytes as f64);
    if shard == 0 {
        metrics::gauge!("sshr_unauthenticated_connections").set(unauthenticated as f64);
    }
}

/// The Prometheus endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the metrics endpoint on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// What `/readyz` asks: `Ok` when the process wants new connections, else why not in
/// one line (`draining`, `provider sqlite#1 (/var/lib/sshr/sshr.db) failed: ...`).
pub trait Readiness: Send + Sync {
    fn ready(&self) -> Result<(), String>;
}

/// Installs the process-wide Prometheus recorder and serves `addr` on threads of its
/// own, outside the shards: `/metrics` (and `/`), `/healthz` and `/readyz` from
/// `readiness` (see [`endpoint`]). Call once, before the shards start; the endpoint
/// lives as long as the process.
pub fn install_prometheus(
    addr: SocketAddr,
    readiness: Arc<dyn Readiness>,
) -> Result<(), MetricsError> {
    let failed = |reason: String| MetricsError { addr, reason };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| failed(e.to_string()))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| failed(e.to_string()))?;
    endpoint::serve(listener, handle, readiness).map_err(|e| failed(e.to_string()))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!("sshr_sessions_active", "Client connections being served");
    describe_counter!("sshr_sessions_total", "Client connections accepted");
    describe_counter!(
        "sshr_sessions_refused_total",
        "Client connections closed at accept"
    );
    describe_gauge!(
        "sshr_unauthenticated_connections",
        "Client connections not authenticated yet, whole proxy"
    );
    describe_gauge!(
        "sshr_preauth_buffer_bytes",
        Unit::Bytes,
        "Receive buffer bytes that unauthenticated connections hold beyond their inline buffers, per shard"
    );
    describe_counter!(
        "sshr_auth_failures_total",
        "Failed client authentications by reason"
    );
    describe_counter!(
        "sshr_upstream_connect_failures_total",
        "Failed upstream connections by reason"
    );
    describe_counter!(
        "sshr_relayed_bytes_total",
        Unit::Bytes,
        "Bytes relayed between client and upstream legs"
    );
    describe_counter!(
        "sshr_upstream_warm_total",
        "Upstream logins by whether a warm connection was ready (hit) or not (miss)"
    );
    describe_gauge!(
        "sshr_upstream_warm_held",
        "Warm upstream connections held, per shard"
    );
    describe_gauge!(
        "sshr_buffer_pool_in_use",
        "Relay buffers lent out, per shard"
    );
    describe_gauge!(
        "sshr_buffer_pool_waiters",
        "Sessions waiting for a relay buffer, per shard"
    );
    // User directories, recorded by `providers::chain`.
    describe_counter!(
        "sshr_provider_lookups_total",
        "Lookups asked of each [[providers]] kind, by result (cached and stale: answered without the backend)"
    );
    // SSH tunnels (`ssh -w`), recorded by `proxy::tunnel`.
    describe_gauge!("sshr_tunnels_open", "SSH tunnels (ssh -w) open now");
    describe_counter!("sshr_tunnels_total", "SSH tunnels opened, by mode");
    describe_counter!(
        "sshr_tunnels_refused_total",
        "SSH tunnel opens refused, by reason (policy, limit, malformed, upstream)"
    );
    describe_counter!(
        "sshr_tunnel_bytes_total",
        Unit::Bytes,
        "Bytes carried by SSH tunnels, by direction"
    );
    describe_counter!(
        "sshr_tunnel_alerts_total",
        "Tunnels that exceeded tunnels.max_duration_secs or tunnels.max_bytes"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn stats() -> ShardGauges {
        ShardGauges {
            pool_in_use: 3,
            ..ShardGauges::default()
        }
    }

    fn value(rendered: &str, series: &str) -> Option<f64> {
        rendered
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn publishes_deltas_once() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = ShardMetrics::new(3);
        metrics::with_local_recorder(&recorder, || {
            m.session_started();
            m.session_started();
            m.session_ended();
            m.relayed_client_to_upstream(100);
            m.relayed_upstream_to_client(7);
            m.auth_failure(AuthFailure::WrongKey);
            m.upstream_failure(UpstreamFailure::Timeout);
            m.session_refused(Refusal::SessionLimit);
            m.session_refused(Refusal::Penalised);
            m.publish(stats());
            // Nothing new: publishing again must not double count.
            m.publish(stats());
            m.relayed_client_to_upstream(1);
            m.session_ended();
            m.publish(stats());
        });
        let text = handle.render();
        assert_eq!(value(&text, "sshr_sessions_total"), Some(2.0), "{text}");
        assert_eq!(value(&text, "sshr_sessions_active"), Some(0.0), "{text}");
        assert_eq!(
            value(
                &text,
                r#"sshr_relayed_bytes_total{direction="client_to_upstream"}"#
            ),
            Some(101.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"sshr_relayed_bytes_total{direction="upstream_to_client"}"#
            ),
            Some(7.0)
        );
        assert_eq!(
            value(&text, r#"sshr_auth_failures_total{reason="wrong_key"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sshr_upstream_connect_failures_total{reason="timeout"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sshr_sessions_refused_total{reason="session_limit"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"sshr_sessions_refused_total{reason="penalty"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"sshr_buffer_pool_in_use{shard="3"}"#),
            Some(3.0)
        );
        assert_eq!(m.relayed_bytes(), (101, 7));
    }

    #[test]
    fn shards_add_up_in_one_gauge() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (a, b) = (ShardMetrics::new(0), ShardMetrics::new(1));
        metrics::with_local_recorder(&recorder, || {
            a.session_started();
            b.session_started();
            b.session_started();
            a.publish(stats());
            b.publish(stats());
        });
        let text = handle.render();
        assert_eq!(value(&text, "sshr_sessions_active"), Some(3.0), "{text}");
        assert_eq!(value(&text, "sshr_sessions_total"), Some(3.0), "{text}");
    }
}
