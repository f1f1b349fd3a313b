//! SSH VPN tunnels (`ssh -w`, `tun@openssh.com` channels): policy, audit and metrics.
//!
//! The relay forwards tunnel channels unchanged like any other channel (channel ids,
//! windows and flow control run end to end). What this module adds is the
//! administrator's side of it, which a plain `sshd` does not give: a per-user policy
//! checked when the client opens the channel, and for every tunnel a log line when it
//! opens and closes (user, mode, unit, duration, bytes each way), periodic records while
//! it is open, one `warn` line when it exceeds the configured duration or volume, and
//! metrics.
//!
//! The relay calls [`SessionTunnels`] from its packet classifier. For almost every
//! packet the cost is one branch on the message number; a `CHANNEL_DATA` costs a scan
//! of the session's (small, usually empty) list of open tunnels and an add. Nothing is
//! allocated and no shared atomic is touched per packet: the process-wide metrics get
//! the byte counts at each tick of [`SessionTunnels::watch`] and when a tunnel closes.
//!
//! Wire format, OpenSSH `PROTOCOL` section 2.3: a `CHANNEL_OPEN` of type
//! `tun@openssh.com` carries, after the usual sender channel, window and maximum packet
//! size, `uint32 tunnel mode` (1 = point-to-point, layer 3, a tun device; 2 = ethernet,
//! layer 2, a tap device) and `uint32 remote unit` (0x7fffffff: any).

use std::cell::RefCell;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use sshr_protocol::msg;
use sshr_protocol::text::Untrusted;
use sshr_protocol::wire::Reader;
use tracing::{info, warn};

use crate::config::Tunnels as TunnelSettings;
use crate::core::refusal::ChannelRefusal;
use crate::core::tunnel::{parse_open, OpenVerdict, Unit, CHANNEL_TYPE};
use crate::core::values::{Side, TunnelMode, TunnelPolicy};
use crate::rt::Notify;

/// Why an open tunnel gets an alert line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alert {
    /// Open longer than `tunnels.max_duration_secs`.
    Duration,
    /// More bytes than `tunnels.max_bytes`.
    Volume,
}

impl Alert {
    fn label(self) -> &'static str {
        match self {
            Alert::Duration => "duration",
            Alert::Volume => "bytes",
        }
    }
}

/// Tunnels one session may have open (or being opened) at once. Each is tracked in a
/// list scanned per data packet, so the list stays short; `ssh -w` opens one.
pub const MAX_TUNNELS_PER_SESSION: usize = 16;

/// How often open tunnels are checked against the alert thresholds and their bytes
/// published, at most (the report interval when it is shorter).
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The recipient channel of a channel message (the uint32 after the message number).
#[inline]
fn recipient(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One tunnel channel of the session.
#[derive(Debug)]
struct Tunnel {
    client_channel: u32,
    /// The upstream's id, once it confirmed the open; data is counted only then.
    upstream_channel: Option<u32>,
    mode: TunnelMode,
    unit: u32,
    opened: Instant,
    last_report: Instant,
    client_to_upstream: u64,
    upstream_to_client: u64,
    published_client_to_upstream: u64,
    published_upstream_to_client: u64,
    close_from_client: bool,
    close_from_upstream: bool,
    alerted_duration: bool,
    alerted_bytes: bool,
}

impl Tunnel {
    fn total(&self) -> u64 {
        self.client_to_upstream + self.upstream_to_client
    }

    /// Sends the byte counts not yet published to the process-wide metrics.
    fn publish(&mut self) {
        let up = self.client_to_upstream - self.published_client_to_upstream;
        let down = self.upstream_to_client - self.published_upstream_to_client;
        if up > 0 {
            metrics::counter!("sshr_tunnel_bytes_total", "direction" => "client_to_upstream")
                .increment(up);
        }
        if down > 0 {
            metrics::counter!("sshr_tunnel_bytes_total", "direction" => "upstream_to_client")
                .increment(down);
        }
        self.published_client_to_upstream = self.client_to_upstream;
        self.published_upstream_to_client = self.upstream_to_client;
    }
}

/// The tunnels of one session: its policy, and the state of each tunnel channel.
///
/// Shared by the relay's two pumps of the session, on one thread.
pub struct SessionTunnels {
    user: String,
    policy: TunnelPolicy,
    settings: TunnelSettings,
    tunnels: RefCell<Vec<Tunnel>>,
    /// Signalled when a tunnel opens, to wake [`SessionTunnels::watch`].
    opened: Notify,
}

impl SessionTunnels {
    /// `policy` is the hook's answer for this user, or else the configuration's default.
    pub fn new(user: impl Into<String>, policy: TunnelPolicy, settings: &TunnelSettings) -> Self {
        SessionTunnels {
            user: user.into(),
            policy,
            settings: settings.clone(),
            tunnels: RefCell::new(Vec::new()),
            opened: Notify::default(),
        }
    }

    pub fn policy(&self) -> TunnelPolicy {
        self.policy
    }

    /// Tunnels confirmed by the upstream and not closed yet.
    pub fn open_count(&self) -> usize {
        self.tunnels
            .borrow()
            .iter()
            .filter(|t| t.upstream_channel.is_some())
            .count()
    }

    /// Bytes relayed so far through the open tunnel whose client channel is `channel`:
    /// (client to upstream, upstream to client).
    pub fn bytes(&self, client_channel: u32) -> Option<(u64, u64)> {
        self.tunnels
            .borrow()
            .iter()
            .find(|t| t.client_channel == client_channel)
            .map(|t| (t.client_to_upstream, t.upstream_to_client))
    }

    /// A `CHANNEL_OPEN` from the client: checks tunnel opens against the policy.
    pub fn client_channel_open(&self, payload: &[u8]) -> OpenVerdict {
        let open = match parse_open(payload) {
            Ok(None) => return OpenVerdict::Forward,
            Ok(Some(open)) => open,
            Err(sender) => {
                warn!(user = %Untrusted(&self.user), "tunnel refused: malformed {CHANNEL_TYPE} open");
                metrics::counter!("sshr_tunnels_refused_total", "reason" => "malformed")
                    .increment(1);
                return match sender {
                    Some(recipient) => OpenVerdict::Refuse {
                        recipient,
                        why: ChannelRefusal::TunnelNotAllowed,
                    },
                    None => OpenVerdict::Drop,
                };
            }
        };
        if !self.policy.allows(open.mode) {
            warn!(
                user = %Untrusted(&self.user),
                mode = %open.mode,
                unit = %Unit(open.unit),
                policy = %self.policy,
                "tunnel refused: not allowed for this account"
            );
            metrics::counter!("sshr_tunnels_refused_total", "reason" => ChannelRefusal::TunnelNotAllowed.label()).increment(1);
            return OpenVerdict::Refuse {
                recipient: open.sender,
                why: ChannelRefusal::TunnelNotAllowed,
            };
        }
        let mut tunnels = self.tunnels.borrow_mut();
        if tunnels.len() >= MAX_TUNNELS_PER_SESSION {
            warn!(user = %Untrusted(&self.user), mode = %open.mode, unit = %Unit(open.unit), "tunnel refused: too many tunnels in this session");
            metrics::counter!("sshr_tunnels_refused_total", "reason" => ChannelRefusal::TooManyTunnels.label()).increment(1);
            return OpenVerdict::Refuse {
                recipient: open.sender,
                why: ChannelRefusal::TooManyTunnels,
            };
        }
        // A client reusing the id of a channel that is not closed yet breaks the
        // protocol; the upstream will say so. Forget the old record rather than count
        // the new channel's bytes twice.
        tunnels.retain(|t| t.client_channel != open.sender);
        let now = Instant::now();
        tunnels.push(Tunnel {
            client_channel: open.sender,
            upstream_channel: None,
            mode: open.mode,
            unit: open.unit,
            opened: now,
            last_report: now,
            client_to_upstream: 0,
            upstream_to_client: 0,
            published_client_to_upstream: 0,
            published_upstream_to_client: 0,
            close_from_client: false,
            close_from_upstream: false,
            alerted_duration: false,
            alerted_bytes: false,
        });
        OpenVerdict::Forward
    }

    /// `CHANNEL_DATA` arriving on `from`: counted if it belongs to a tunnel.
    #[inline]
    pub fn channel_data(&self, from: Side, payload: &[u8]) {
        let mut tunnels = self.tunnels.borrow_mut();
        if tunnels.is_empty() {
            return;
        }
        let Some(channel) = recipient(payload) else {
            return;
        };
        // message number, recipient channel, data length: the rest is the data.
        let bytes = payload.len().saturating_sub(9) as u64;
        // The client addresses the upstream's channel id, and the other way round.
        let tunnel = match from {
            Side::Client => tunnels
                .iter_mut()
                .find(|t| t.upstream_channel == Some(channel)),
            Side::Upstream => tunnels
                .iter_mut()
                .find(|t| t.client_channel == channel && t.upstream_channel.is_some()),
        };
        if let Some(t) = tunnel {
            match from {
                Side::Client => t.client_to_upstream += bytes,
                Side::Upstream => t.upstream_to_client += bytes,
            }
            if !t.alerted_bytes && self.settings.max_bytes.is_some_and(|max| t.total() > max) {
                t.alerted_bytes = true;
                self.alert(t, Alert::Volume, Instant::now());
            }
        }
    }

    /// `CHANNEL_OPEN_CONFIRMATION`, `CHANNEL_OPEN_FAILURE` and `CHANNEL_CLOSE` arriving
    /// on `from`: they open, refuse and close tunnels.
    pub fn channel_control(&self, from: Side, payload: &[u8]) {
        let mut tunnels = self.tunnels.borrow_mut();
        if tunnels.is_empty() {
            return;
        }
        let Some(channel) = recipient(payload) else {
            return;
        };
        let now = Instant::now();
        match (payload[0], from) {
            (msg::CHANNEL_OPEN_CONFIRMATION, Side::Upstream) => {
                let Some(t) = tunnels
                    .iter_mut()
                    .find(|t| t.client_channel == channel && t.upstream_channel.is_none())
                else {
                    return;
                };
                let Some(upstream_channel) = payload.get(5..9) else {
                    return;
                };
                t.upstream_channel = Some(u32::from_be_bytes([
                    upstream_channel[0],
                    upstream_channel[1],
                    upstream_channel[2],
                    upstream_channel[3],
                ]));
                t.opened = now;
                t.last_report = now;
                info!(
                    user = %Untrusted(&self.user),
                    mode = %t.mode,
                    unit = %Unit(t.unit),
                    channel = t.client_channel,
                    "tunnel opened"
                );
                metrics::counter!("sshr_tunnels_total", "mode" => t.mode.label()).increment(1);
                metrics::gauge!("sshr_tunnels_open").increment(1.0);
                drop(tunnels);
                self.opened.notify();
            }
            (msg::CHANNEL_OPEN_FAILURE, Side::Upstream) => {
                let Some(i) = tunnels
                    .iter()
                    .position(|t| t.client_channel == channel && t.upstream_channel.is_none())
                else {
                    return;
                };
                let t = tunnels.swap_remove(i);
                let mut r = Reader::new(&payload[5..]);
                let reason = r.u32("reason code").unwrap_or(0);
                let description = r.utf8("description").unwrap_or("");
                info!(
                    user = %Untrusted(&self.user),
                    mode = %t.mode,
                    unit = %Unit(t.unit),
                    reason,
                    description = %Untrusted(description),
                    "tunnel refused by the upstream"
                );
                metrics::counter!("sshr_tunnels_refused_total", "reason" => "upstream")
                    .increment(1);
            }
            (msg::CHANNEL_CLOSE, _) => {
                let Some(i) = tunnels.iter().position(|t| match from {
                    Side::Client => t.upstream_channel == Some(channel),
                    Side::Upstream => t.client_channel == channel && t.upstream_channel.is_some(),
                }) else {
                    return;
                };
                let t = &mut tunnels[i];
                match from {
                    Side::Client => t.close_from_client = true,
                    Side::Upstream => t.close_from_upstream = true,
                }
                // A channel is gone once both sides sent CLOSE (RFC 4254 5.3).
                if t.close_from_client && t.close_from_upstream {
                    let t = tunnels.swap_remove(i);
                    self.closed(t, "channel close", now);
                }
            }
            _ => {}
        }
    }

    /// Runs beside the relay: while tunnels are open, emits the periodic records, checks
    /// the duration threshold and publishes byte counts. Never returns; the relay drops
    /// it when the session ends.
    pub async fn watch(&self) -> Infallible {
        let tick = self.settings.report_interval.min(CHECK_INTERVAL);
        loop {
            if self.open_count() == 0 {
                let seen = self.opened.generation();
                if self.open_count() == 0 {
                    self.opened.changed_since(seen).await;
                }
                continue;
            }
            crate::rt::sleep(tick).await;
            self.tick(Instant::now());
        }
    }

    /// One check of every open tunnel at `now`.
    pub fn tick(&self, now: Instant) {
        let mut tunnels = self.tunnels.borrow_mut();
        for t in tunnels.iter_mut().filter(|t| t.upstream_channel.is_some()) {
            if !t.alerted_duration
                && self
                    .settings
                    .max_duration
                    .is_some_and(|max| now.duration_since(t.opened) > max)
            {
                t.alerted_duration = true;
                self.alert(t, Alert::Duration, now);
            }
            if now.duration_since(t.last_report) >= self.settings.report_interval {
                t.last_report = now;
                info!(
                    user = %Untrusted(&self.user),
                    mode = %t.mode,
                    unit = %Unit(t.unit),
                    duration_s = now.duration_since(t.opened).as_secs(),
                    bytes_client_to_upstream = t.client_to_upstream,
                    bytes_upstream_to_client = t.upstream_to_client,
                    "tunnel open"
                );
            }
            t.publish();
        }
    }

    fn alert(&self, t: &Tunnel, kind: Alert, now: Instant) {
        let duration_s = now.duration_since(t.opened).as_secs();
        match kind {
            Alert::Duration => warn!(
                user = %Untrusted(&self.user),
                mode = %t.mode,
                unit = %Unit(t.unit),
                duration_s,
                bytes_client_to_upstream = t.client_to_upstream,
                bytes_upstream_to_client = t.upstream_to_client,
                max_duration_secs = self.settings.max_duration.map_or(0, |d| d.as_secs()),
                "tunnel alert: open longer than tunnels.max_duration_secs"
            ),
            Alert::Volume => warn!(
                user = %Untrusted(&self.user),
                mode = %t.mode,
                unit = %Unit(t.unit),
                duration_s,
                bytes_client_to_upstream = t.client_to_upstream,
                bytes_upstream_to_client = t.upstream_to_client,
                max_bytes = self.settings.max_bytes.unwrap_or(0),
                "tunnel alert: more traffic than tunnels.max_bytes"
            ),
        }
        metrics::counter!("sshr_tunnel_alerts_total", "kind" => kind.label()).increment(1);
    }

    fn closed(&self, mut t: Tunnel, by: &'static str, now: Instant) {
        info!(
            user = %Untrusted(&self.user),
            mode = %t.mode,
            unit = %Unit(t.unit),
            duration_ms = now.duration_since(t.opened).as_millis() as u64,
            bytes_client_to_upstream = t.client_to_upstream,
            bytes_upstream_to_client = t.upstream_to_client,
            ended_by = by,
            "tunnel closed"
        );
        t.publish();
        metrics::gauge!("sshr_tunnels_open").decrement(1.0);
    }
}

/// The session ended (the usual end of `ssh -w`: the client goes away without closing
/// its channels): every tunnel still open is closed now.
impl Drop for SessionTunnels {
    fn drop(&mut self) {
        let now = Instant::now();
        let tunnels = std::mem::take(self.tunnels.get_mut());
        for t in tunnels {
            if t.upstream_channel.is_some() {
                self.closed(t, "session end", now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tunnel::encode_open_failure;
    use crate::core::tunnel::fixtures::{close, confirmation, data, open};

    fn settings() -> TunnelSettings {
        TunnelSettings {
            max_bytes: Some(1000),
            max_duration: Some(Duration::from_secs(10)),
            report_interval: Duration::from_secs(1),
            ..TunnelSettings::default()
        }
    }

    #[test]
    fn refuses_what_the_policy_does_not_allow() {
        let s = settings();
        let deny = SessionTunnels::new("bob", TunnelPolicy::Deny, &s);
        assert_eq!(
            deny.client_channel_open(&open(CHANNEL_TYPE, 4, 1, 0)),
            OpenVerdict::Refuse {
                recipient: 4,
                why: ChannelRefusal::TunnelNotAllowed
            }
        );
        assert_eq!(
            deny.client_channel_open(&open("session", 0, 0, 0)),
            OpenVerdict::Forward
        );
        let p2p = SessionTunnels::new("alice", TunnelPolicy::PointToPoint, &s);
        assert_eq!(
            p2p.client_channel_open(&open(CHANNEL_TYPE, 1, 2, 0)),
            OpenVerdict::Refuse {
                recipient: 1,
                why: ChannelRefusal::TunnelNotAllowed
            }
        );
        assert_eq!(
            p2p.client_channel_open(&open(CHANNEL_TYPE, 1, 1, 0)),
            OpenVerdict::Forward
        );
        let full = open(CHANNEL_TYPE, 9, 1, 0);
        assert_eq!(p2p.client_channel_open(&full[..22]), OpenVerdict::Drop);
    }

    #[test]
    fn counts_bytes_of_confirmed_tunnels_each_way() {
        let t = SessionTunnels::new("alice", TunnelPolicy::Any, &settings());
        // Before any tunnel: nothing tracked, data is ignored.
        t.channel_data(Side::Client, &data(0, 100));
        assert_eq!(
            t.client_channel_open(&open(CHANNEL_TYPE, 2, 1, 0)),
            OpenVerdict::Forward
        );
        // Not confirmed yet: not open, nothing counted.
        assert_eq!(t.open_count(), 0);
        t.channel_data(Side::Upstream, &data(2, 50));
        assert_eq!(t.bytes(2), Some((0, 0)));
        t.channel_control(Side::Upstream, &confirmation(2, 40));
        assert_eq!(t.open_count(), 1);
        t.channel_data(Side::Client, &data(40, 100));
        t.channel_data(Side::Client, &data(41, 100)); // another channel
        t.channel_data(Side::Upstream, &data(2, 30));
        t.channel_data(Side::Upstream, &data(40, 30)); // another channel
        assert_eq!(t.bytes(2), Some((100, 30)));
        // Over max_bytes (1000): the alert fires once, counting goes on.
        t.channel_data(Side::Client, &data(40, 2000));
        t.channel_data(Side::Client, &data(40, 2000));
        assert_eq!(t.bytes(2), Some((4100, 30)));
        t.tick(Instant::now() + Duration::from_secs(11));
        // Close: both sides must send CLOSE.
        t.channel_control(Side::Client, &close(40));
        assert_eq!(t.open_count(), 1);
        t.channel_control(Side::Upstream, &close(2));
        assert_eq!(t.open_count(), 0);
        assert_eq!(t.bytes(2), None);
    }

    #[test]
    fn upstream_refusal_forgets_the_tunnel_and_limits_hold() {
        let t = SessionTunnels::new("alice", TunnelPolicy::Any, &settings());
        t.client_channel_open(&open(CHANNEL_TYPE, 0, 1, 0));
        t.channel_control(
            Side::Upstream,
            &encode_open_failure(0, ChannelRefusal::TunnelNotAllowed),
        );
        assert_eq!(t.bytes(0), None);
        for i in 0..MAX_TUNNELS_PER_SESSION as u32 {
            assert_eq!(
                t.client_channel_open(&open(CHANNEL_TYPE, i, 1, i)),
                OpenVerdict::Forward
            );
        }
        assert_eq!(
            t.client_channel_open(&open(CHANNEL_TYPE, 99, 1, 0)),
            OpenVerdict::Refuse {
                recipient: 99,
                why: ChannelRefusal::TooManyTunnels
            }
        );
    }
}
