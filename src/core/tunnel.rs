//! The `tun@openssh.com` channel open (`ssh -w`): its wire format and the proxy's
//! answer to it. Plain functions on payloads; the session's record of its tunnels is in
//! `proxy::tunnel`.
//!
//! Wire format, OpenSSH `PROTOCOL` section 2.3: a `CHANNEL_OPEN` of type
//! `tun@openssh.com` carries, after the usual sender channel, window and maximum packet
//! size, `uint32 tunnel mode` (1 = point-to-point, layer 3, a tun device; 2 = ethernet,
//! layer 2, a tap device) and `uint32 remote unit` (0x7fffffff: any).

use std::fmt;
use std::time::Instant;

use sshr_protocol::msg;
use sshr_protocol::text::Untrusted;
use sshr_protocol::wire::{self, Reader};
use tracing::{info, warn};

use crate::core::refusal::ChannelRefusal;
use crate::core::values::{Side, TunnelMode, TunnelPolicy, TunnelSettings};

/// The channel type of OpenSSH's tunnel forwarding.
pub const CHANNEL_TYPE: &str = "tun@openssh.com";

/// The remote unit a client sends when it lets the server choose (`ssh -w 0:any`).
pub const UNIT_ANY: u32 = 0x7fff_ffff;

/// A tunnel unit as the client asked for it (`any` for [`UNIT_ANY`]).
pub struct Unit(pub u32);

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            UNIT_ANY => f.write_str("any"),
            n => write!(f, "{n}"),
        }
    }
}

/// The parsed type-specific part of a `tun@openssh.com` open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelOpen {
    /// The client's channel id (the recipient of our answer).
    pub sender: u32,
    pub mode: TunnelMode,
    pub unit: u32,
}

/// What the relay does with a client's `CHANNEL_OPEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenVerdict {
    /// Not a tunnel, or an allowed one: forward it.
    Forward,
    /// Answer `CHANNEL_OPEN_FAILURE` to `recipient` on the client leg, do not forward.
    Refuse { recipient: u32, why: ChannelRefusal },
    /// A tunnel open too short to name its channel: nothing can be answered, and it must
    /// not reach the upstream either.
    Drop,
}

/// Parses a `CHANNEL_OPEN` payload (message number included). `Ok(None)`: another
/// channel type. `Err(sender)`: a tunnel open with a malformed tail, with the sender
/// channel when it could be read.
pub fn parse_open(payload: &[u8]) -> Result<Option<TunnelOpen>, Option<u32>> {
    let mut r = Reader::new(payload.get(1..).unwrap_or_default());
    match r.string("channel type") {
        Ok(t) if t == CHANNEL_TYPE.as_bytes() => {}
        _ => return Ok(None),
    }
    let sender = r.u32("sender channel").map_err(|_| None)?;
    let tail = (|| {
        r.u32("initial window size")?;
        r.u32("maximum packet size")?;
        Ok::<_, wire::WireError>((r.u32("tunnel mode")?, r.u32("remote unit")?))
    })();
    match tail {
        Ok((mode, unit)) => Ok(Some(TunnelOpen {
            sender,
            mode: TunnelMode::from_wire(mode),
            unit,
        })),
        Err(_) => Err(Some(sender)),
    }
}

/// `SSH_MSG_CHANNEL_OPEN_FAILURE` (RFC 4254 5.1) telling channel `recipient` why.
pub fn encode_open_failure(recipient: u32, why: ChannelRefusal) -> Vec<u8> {
    let (reason, description) = (why.code(), why.message());
    let mut out = Vec::with_capacity(17 + description.len());
    wire::put_u8(&mut out, msg::CHANNEL_OPEN_FAILURE);
    wire::put_u32(&mut out, recipient);
    wire::put_u32(&mut out, reason);
    wire::put_string(&mut out, description.as_bytes());
    wire::put_string(&mut out, b"");
    out
}

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

/// The tunnels of one session: its policy, and the state of each tunnel channel. The
/// relay feeds it the channel messages it passes; it answers what to do with tunnel
/// opens and writes the audit records (log lines and metrics).
pub struct Tunnels {
    user: String,
    policy: TunnelPolicy,
    settings: TunnelSettings,
    tunnels: Vec<Tunnel>,
    /// Set when a tunnel opens (see [`Tunnels::take_opened`]).
    opened: bool,
}

impl Tunnels {
    /// `policy` is the hook's answer for this user, or else the configuration's default.
    pub fn new(user: impl Into<String>, policy: TunnelPolicy, settings: &TunnelSettings) -> Self {
        Tunnels {
            user: user.into(),
            policy,
            settings: settings.clone(),
            tunnels: Vec::new(),
            opened: false,
        }
    }

    /// Whether a tunnel opened since the last call.
    pub fn take_opened(&mut self) -> bool {
        std::mem::take(&mut self.opened)
    }

    /// Tunnels confirmed by the upstream and not closed yet.
    pub fn open_count(&self) -> usize {
        self.tunnels
            .iter()
            .filter(|t| t.upstream_channel.is_some())
            .count()
    }

    /// Bytes relayed so far through the open tunnel whose client channel is `channel`:
    /// (client to upstream, upstream to client).
    #[cfg(test)]
    pub fn bytes(&self, client_channel: u32) -> Option<(u64, u64)> {
        self.tunnels
            .iter()
            .find(|t| t.client_channel == client_channel)
            .map(|t| (t.client_to_upstream, t.upstream_to_client))
    }

    /// A `CHANNEL_OPEN` from the client: checks tunnel opens against the policy.
    pub fn client_channel_open(&mut self, payload: &[u8], now: Instant) -> OpenVerdict {
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
        let tunnels = &mut self.tunnels;
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

    /// `CHANNEL_DATA` arriving on `from`: counted if it belongs to a tunnel. `now` is
    /// asked only for an alert (most packets belong to no tunnel).
    #[inline]
    pub fn channel_data(&mut self, from: Side, payload: &[u8], now: impl FnOnce() -> Instant) {
        if self.tunnels.is_empty() {
            return;
        }
        let Some(channel) = recipient(payload) else {
            return;
        };
        // message number, recipient channel, data length: the rest is the data.
        let bytes = payload.len().saturating_sub(9) as u64;
        // The client addresses the upstream's channel id, and the other way round.
        let tunnel = match from {
            Side::Client => self
                .tunnels
                .iter_mut()
                .find(|t| t.upstream_channel == Some(channel)),
            Side::Upstream => self
                .tunnels
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
                alert(&self.user, &self.settings, t, Alert::Volume, now());
            }
        }
    }

    /// `CHANNEL_OPEN_CONFIRMATION`, `CHANNEL_OPEN_FAILURE` and `CHANNEL_CLOSE` arriving
    /// on `from`: they open, refuse and close tunnels.
    pub fn channel_control(&mut self, from: Side, payload: &[u8], now: Instant) {
        let tunnels = &mut self.tunnels;
        if tunnels.is_empty() {
            return;
        }
        let Some(channel) = recipient(payload) else {
            return;
        };
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
                self.opened = true;
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
                    closed(&self.user, t, "channel close", now);
                }
            }
            _ => {}
        }
    }

    /// One check of every open tunnel at `now`.
    pub fn tick(&mut self, now: Instant) {
        for t in self
            .tunnels
            .iter_mut()
            .filter(|t| t.upstream_channel.is_some())
        {
            if !t.alerted_duration
                && self
                    .settings
                    .max_duration
                    .is_some_and(|max| now.duration_since(t.opened) > max)
            {
                t.alerted_duration = true;
                alert(&self.user, &self.settings, t, Alert::Duration, now);
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

    /// The session ended (the usual end of `ssh -w`: the client goes away without
    /// closing its channels): every tunnel still open is closed at `now`.
    pub fn end(&mut self, now: Instant) {
        for t in std::mem::take(&mut self.tunnels) {
            if t.upstream_channel.is_some() {
                closed(&self.user, t, "session end", now);
            }
        }
    }
}

fn alert(user: &str, settings: &TunnelSettings, t: &Tunnel, kind: Alert, now: Instant) {
    let duration_s = now.duration_since(t.opened).as_secs();
    match kind {
        Alert::Duration => warn!(
            user = %Untrusted(user),
            mode = %t.mode,
            unit = %Unit(t.unit),
            duration_s,
            bytes_client_to_upstream = t.client_to_upstream,
            bytes_upstream_to_client = t.upstream_to_client,
            max_duration_secs = settings.max_duration.map_or(0, |d| d.as_secs()),
            "tunnel alert: open longer than tunnels.max_duration_secs"
        ),
        Alert::Volume => warn!(
            user = %Untrusted(user),
            mode = %t.mode,
            unit = %Unit(t.unit),
            duration_s,
            bytes_client_to_upstream = t.client_to_upstream,
            bytes_upstream_to_client = t.upstream_to_client,
            max_bytes = settings.max_bytes.unwrap_or(0),
            "tunnel alert: more traffic than tunnels.max_bytes"
        ),
    }
    metrics::counter!("sshr_tunnel_alerts_total", "kind" => kind.label()).increment(1);
}

fn closed(user: &str, mut t: Tunnel, by: &'static str, now: Instant) {
    info!(
        user = %Untrusted(user),
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

/// Channel messages for tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use sshr_protocol::msg;
    use sshr_protocol::wire;

    pub(crate) fn open(channel_type: &str, sender: u32, mode: u32, unit: u32) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_OPEN];
        wire::put_string(&mut p, channel_type.as_bytes());
        wire::put_u32(&mut p, sender);
        wire::put_u32(&mut p, 2 << 20);
        wire::put_u32(&mut p, 32768);
        wire::put_u32(&mut p, mode);
        wire::put_u32(&mut p, unit);
        p
    }

    pub(crate) fn confirmation(recipient: u32, sender: u32) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_OPEN_CONFIRMATION];
        for v in [recipient, sender, 2 << 20, 32768] {
            wire::put_u32(&mut p, v);
        }
        p
    }

    pub(crate) fn data(recipient: u32, len: usize) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_DATA];
        wire::put_u32(&mut p, recipient);
        wire::put_string(&mut p, &vec![0xab; len]);
        p
    }

    pub(crate) fn close(recipient: u32) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_CLOSE];
        wire::put_u32(&mut p, recipient);
        p
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fixtures::{close, confirmation, data, open};
    use super::*;

    #[test]
    fn parses_the_tunnel_open() {
        assert_eq!(
            parse_open(&open(CHANNEL_TYPE, 7, 1, 0)),
            Ok(Some(TunnelOpen {
                sender: 7,
                mode: TunnelMode::PointToPoint,
                unit: 0
            }))
        );
        assert_eq!(
            parse_open(&open(CHANNEL_TYPE, 3, 2, UNIT_ANY)).map(|o| o.map(|o| o.mode)),
            Ok(Some(TunnelMode::Ethernet))
        );
        assert_eq!(parse_open(&open("session", 1, 1, 0)), Ok(None));
        let full = open(CHANNEL_TYPE, 9, 1, 0);
        assert_eq!(parse_open(&full[..full.len() - 2]), Err(Some(9)));
        assert_eq!(parse_open(&full[..22]), Err(None));
        assert_eq!(parse_open(&[msg::CHANNEL_OPEN]), Ok(None));
        assert_eq!(Unit(UNIT_ANY).to_string(), "any");
    }

    #[test]
    fn open_failure_round_trip() {
        let p = encode_open_failure(5, ChannelRefusal::TunnelNotAllowed);
        assert_eq!(p[0], msg::CHANNEL_OPEN_FAILURE);
        let mut r = Reader::new(&p[1..]);
        assert_eq!(r.u32("recipient").unwrap(), 5);
        assert_eq!(r.u32("reason").unwrap(), 1);
        assert_eq!(
            r.utf8("description").unwrap(),
            ChannelRefusal::TunnelNotAllowed.message()
        );
        assert_eq!(r.utf8("language").unwrap(), "");
        assert!(r.finish().is_ok());
        let p = encode_open_failure(5, ChannelRefusal::TooManyTunnels);
        assert_eq!(Reader::new(&p[5..9]).u32("reason").unwrap(), 4);
    }

    fn now() -> Instant {
        Instant::now()
    }

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
        let mut deny = Tunnels::new("bob", TunnelPolicy::Deny, &s);
        assert_eq!(
            deny.client_channel_open(&open(CHANNEL_TYPE, 4, 1, 0), now()),
            OpenVerdict::Refuse {
                recipient: 4,
                why: ChannelRefusal::TunnelNotAllowed
            }
        );
        assert_eq!(
            deny.client_channel_open(&open("session", 0, 0, 0), now()),
            OpenVerdict::Forward
        );
        let mut p2p = Tunnels::new("alice", TunnelPolicy::PointToPoint, &s);
        assert_eq!(
            p2p.client_channel_open(&open(CHANNEL_TYPE, 1, 2, 0), now()),
            OpenVerdict::Refuse {
                recipient: 1,
                why: ChannelRefusal::TunnelNotAllowed
            }
        );
        assert_eq!(
            p2p.client_channel_open(&open(CHANNEL_TYPE, 1, 1, 0), now()),
            OpenVerdict::Forward
        );
        let full = open(CHANNEL_TYPE, 9, 1, 0);
        assert_eq!(
            p2p.client_channel_open(&full[..22], now()),
            OpenVerdict::Drop
        );
    }

    #[test]
    fn counts_bytes_of_confirmed_tunnels_each_way() {
        let mut t = Tunnels::new("alice", TunnelPolicy::Any, &settings());
        // Before any tunnel: nothing tracked, data is ignored.
        t.channel_data(Side::Client, &data(0, 100), now);
        assert_eq!(
            t.client_channel_open(&open(CHANNEL_TYPE, 2, 1, 0), now()),
            OpenVerdict::Forward
        );
        // Not confirmed yet: not open, nothing counted.
        assert_eq!(t.open_count(), 0);
        t.channel_data(Side::Upstream, &data(2, 50), now);
        assert_eq!(t.bytes(2), Some((0, 0)));
        t.channel_control(Side::Upstream, &confirmation(2, 40), now());
        assert_eq!(t.open_count(), 1);
        t.channel_data(Side::Client, &data(40, 100), now);
        t.channel_data(Side::Client, &data(41, 100), now); // another channel
        t.channel_data(Side::Upstream, &data(2, 30), now);
        t.channel_data(Side::Upstream, &data(40, 30), now); // another channel
        assert_eq!(t.bytes(2), Some((100, 30)));
        // Over max_bytes (1000): the alert fires once, counting goes on.
        t.channel_data(Side::Client, &data(40, 2000), now);
        t.channel_data(Side::Client, &data(40, 2000), now);
        assert_eq!(t.bytes(2), Some((4100, 30)));
        t.tick(Instant::now() + Duration::from_secs(11));
        // Close: both sides must send CLOSE.
        t.channel_control(Side::Client, &close(40), now());
        assert_eq!(t.open_count(), 1);
        t.channel_control(Side::Upstream, &close(2), now());
        assert_eq!(t.open_count(), 0);
        assert_eq!(t.bytes(2), None);
    }

    #[test]
    fn upstream_refusal_forgets_the_tunnel_and_limits_hold() {
        let mut t = Tunnels::new("alice", TunnelPolicy::Any, &settings());
        t.client_channel_open(&open(CHANNEL_TYPE, 0, 1, 0), now());
        t.channel_control(
            Side::Upstream,
            &encode_open_failure(0, ChannelRefusal::TunnelNotAllowed),
            now(),
        );
        assert_eq!(t.bytes(0), None);
        for i in 0..MAX_TUNNELS_PER_SESSION as u32 {
            assert_eq!(
                t.client_channel_open(&open(CHANNEL_TYPE, i, 1, i), now()),
                OpenVerdict::Forward
            );
        }
        assert_eq!(
            t.client_channel_open(&open(CHANNEL_TYPE, 99, 1, 0), now()),
            OpenVerdict::Refuse {
                recipient: 99,
                why: ChannelRefusal::TooManyTunnels
            }
        );
    }
}
