//! The relay's decisions, one message at a time: what to do with a message arriving on
//! a leg once both legs are authenticated, and whether a packet for a leg that is in a
//! key exchange may be queued. The pumps of `proxy::relay` act on the answers.
//!
//! Per-leg traffic never crosses: the transports consume KEX*, NEWKEYS, EXT_INFO,
//! SERVICE_*, IGNORE and DEBUG before anything gets here; user-auth messages after
//! authentication are dropped (RFC 4252 5.1); the upstream's `hostkeys-00@openssh.com`
//! is dropped (the client would store the upstream's keys under the proxy's name) and
//! the client's `hostkeys-prove-00@openssh.com` is refused.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use sshr_protocol::msg;
use sshr_protocol::transport::Transport;
use sshr_protocol::wire::Reader;

use crate::core::refusal::ChannelRefusal;
use crate::core::tunnel::{OpenVerdict, Tunnels};
use crate::core::values::Side;

/// Payload bytes a pump may queue (copied) for a leg that is in a key exchange before
/// it waits instead. A key exchange takes a round trip; the channel windows bound what
/// a peer can send meanwhile anyway.
pub const MAX_QUEUED_DURING_KEX: usize = 4 << 20;
/// Messages a pump may queue for a leg in a key exchange before it waits (small
/// messages cost more than their bytes: one allocation each).
pub const MAX_QUEUED_MESSAGES_DURING_KEX: usize = 1024;
/// A pump must not wait while the other pump waits for the end of a key exchange on
/// the pump's own leg: only this pump can finish that exchange, by reading on. It
/// queues past the limits above then, up to this many times them, and beyond that ends
/// the session rather than deadlock.
pub const KEX_OVERLAP_FACTOR: usize = 4;

/// What to do with a message arriving on one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
    /// Answer SSH_MSG_REQUEST_FAILURE on the arriving leg (a global request we refuse).
    RefuseGlobalRequest,
    /// Answer SSH_MSG_CHANNEL_OPEN_FAILURE on the arriving leg (a tunnel we refuse).
    RefuseChannelOpen {
        recipient: u32,
        why: ChannelRefusal,
    },
}

/// Decides about one message (`payload`, message number first) arriving from `from`,
/// and records what tunnels it opens, carries or closes. `now` is asked only when a
/// tunnel message needs the time.
#[inline]
pub fn classify(
    from: Side,
    payload: &[u8],
    tunnels: &mut Tunnels,
    now: impl FnOnce() -> Instant,
) -> Verdict {
    match payload[0] {
        // Tunnels (`ssh -w`): the policy, and the channel ids and bytes for the audit.
        msg::CHANNEL_DATA => {
            tunnels.channel_data(from, payload, now);
            Verdict::Forward
        }
        msg::CHANNEL_OPEN if from == Side::Client => {
            match tunnels.client_channel_open(payload, now()) {
                OpenVerdict::Forward => Verdict::Forward,
                OpenVerdict::Drop => Verdict::Drop,
                OpenVerdict::Refuse { recipient, why } => {
                    Verdict::RefuseChannelOpen { recipient, why }
                }
            }
        }
        msg::CHANNEL_OPEN_CONFIRMATION | msg::CHANNEL_OPEN_FAILURE | msg::CHANNEL_CLOSE => {
            tunnels.channel_control(from, payload, now());
            Verdict::Forward
        }
        // Late user-auth messages stay on their leg (RFC 4252 5.1).
        50..=79 => Verdict::Drop,
        msg::GLOBAL_REQUEST => {
            let mut r = Reader::new(&payload[1..]);
            let (Ok(name), Ok(want_reply)) = (r.utf8("request name"), r.bool("want reply")) else {
                return Verdict::Forward;
            };
            match (from, name) {
                (Side::Upstream, "hostkeys-00@openssh.com")
                | (Side::Client, "hostkeys-prove-00@openssh.com") => {
                    if want_reply {
                        Verdict::RefuseGlobalRequest
                    } else {
                        Verdict::Drop
                    }
                }
                _ => Verdict::Forward,
            }
        }
        _ => Verdict::Forward,
    }
}

/// The proxy's own keepalive: `SSH_MSG_GLOBAL_REQUEST "keepalive@openssh.com"` with
/// want-reply set, what sshd and ssh send. Any answer will do (OpenSSH peers answer
/// REQUEST_FAILURE).
pub const KEEPALIVE_REQUEST: [u8; 27] = keepalive_request();

const fn keepalive_request() -> [u8; 27] {
    const NAME: &[u8; 21] = b"keepalive@openssh.com";
    let mut p = [0u8; 27];
    p[0] = msg::GLOBAL_REQUEST;
    p[4] = NAME.len() as u8;
    let mut i = 0;
    while i < NAME.len() {
        p[5 + i] = NAME[i];
        i += 1;
    }
    p[26] = 1;
    p
}

/// Global requests with want-reply set that may await their replies on one leg at once;
/// a peer that sends more before the other side answers ends the session.
pub const MAX_PENDING_REPLIES: usize = 1024;

/// Who sent a global request on a leg, and so where its reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The other leg's peer: its reply is forwarded back.
    Forwarded,
    /// The proxy's own keepalive: its reply is swallowed.
    Own,
}

/// Too many global requests await replies on a leg (see [`MAX_PENDING_REPLIES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many global requests awaiting replies")]
pub struct TooManyPending;

/// The global requests sent on one leg that await the peer's reply, oldest first.
///
/// The peer answers want-reply global requests in the order they were sent (RFC 4254
/// 4), and the proxy sends its own keepalives on the same leg as the requests it
/// forwards: each REQUEST_SUCCESS or REQUEST_FAILURE answers the oldest one, and goes
/// back to the other leg only if that one was forwarded. Record each request when it is
/// sealed for the leg (its place in the leg's order), not when it is read.
#[derive(Debug, Default)]
pub struct PendingReplies {
    queue: VecDeque<Origin>,
}

impl PendingReplies {
    /// A want-reply global request from `origin` was sealed for the leg.
    pub fn sent(&mut self, origin: Origin) -> Result<(), TooManyPending> {
        if self.queue.len() >= MAX_PENDING_REPLIES {
            return Err(TooManyPending);
        }
        self.queue.push_back(origin);
        Ok(())
    }

    /// Whether the proxy may send a keepalive now without exceeding the bound.
    pub fn has_room(&self) -> bool {
        self.queue.len() < MAX_PENDING_REPLIES
    }

    /// A reply arrived from the leg's peer: forward it, or drop it (the answer to our
    /// own keepalive). A reply nothing awaits is forwarded, as it would pass without
    /// the proxy; the other peer judges it.
    pub fn reply(&mut self) -> Verdict {
        match self.queue.pop_front() {
            Some(Origin::Own) => Verdict::Drop,
            Some(Origin::Forwarded) | None => Verdict::Forward,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Whether a forwarded message is a global request that wants a reply (its reply is
/// then routed back by [`PendingReplies`]). A malformed one is the receiving peer's to
/// judge; it is not counted.
pub fn wants_reply(payload: &[u8]) -> bool {
    if payload.first() != Some(&msg::GLOBAL_REQUEST) {
        return false;
    }
    let mut r = Reader::new(&payload[1..]);
    r.string("request name").is_ok() && r.bool("want reply").unwrap_or(false)
}

/// Whether one more message may be queued for a leg in a key exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexRoom {
    Queue,
    /// Wait for the key exchange to end (or for the other pump to wait on us).
    Wait,
    /// Both pumps would wait on each other with the queue past its hard limit: end the
    /// session (the peer is flooding a leg that cannot finish its key exchange).
    Overflow,
}

/// Decides with `messages` and `bytes` already queued for the leg in a key exchange;
/// `other_waits_on_us`: the other pump waits for the end of a key exchange on the leg
/// this pump reads, which only this pump can finish by reading on.
pub fn room_during_kex(messages: usize, bytes: usize, other_waits_on_us: bool) -> KexRoom {
    let room = messages < MAX_QUEUED_MESSAGES_DURING_KEX && bytes < MAX_QUEUED_DURING_KEX;
    let overlap_room = messages < MAX_QUEUED_MESSAGES_DURING_KEX * KEX_OVERLAP_FACTOR
        && bytes < MAX_QUEUED_DURING_KEX * KEX_OVERLAP_FACTOR;
    if room || (other_waits_on_us && overlap_room) {
        KexRoom::Queue
    } else if other_waits_on_us {
        KexRoom::Overflow
    } else {
        KexRoom::Wait
    }
}

/// What can be done now with a packet for a leg (see [`forward_step`]).
#[derive(Debug)]
pub enum Step {
    /// The leg is closed.
    Closed,
    /// Re-sealed where it lies: this many bytes from its start go out as they are.
    Sealed(Result<usize, sshr_protocol::Error>),
    /// The leg's framing needs more room than the packet had (e.g. a longer MAC): seal
    /// a copy with `Transport::send`, after what is pending.
    Copy,
    /// The leg is in a key exchange: a copy was queued, sent in order after NEWKEYS.
    Queued(Result<(), sshr_protocol::Error>),
    /// Wait for the leg's key exchange to end (or for the other pump to wait on us).
    Wait,
    /// See [`KexRoom::Overflow`].
    Overflow,
}

/// Forwards the packet at `buf[start..start + len]`, with its payload at `payload`
/// (opened in place by the other leg's transport), to the leg whose transport is `to`:
/// re-sealed in place when `to` can seal now, which changes only the length, padding
/// and tag, so the payload is never copied. The padding is chosen so that the sealed
/// packet fits exactly where the received one was.
pub fn forward_step(
    to: &mut Transport,
    buf: &mut [u8],
    start: usize,
    len: usize,
    payload: Range<usize>,
    other_waits_on_us: bool,
) -> Step {
    let payload_len = payload.len();
    if to.is_closed() {
        Step::Closed
    } else if to.can_seal() {
        match to.sealer().padding_to_fit(payload_len, len) {
            Some(padding) => {
                // The received padding bytes are random already; fresh ones only where
                // the new padding is longer than the old.
                let old_padding = buf[start + 4] as usize;
                let fresh = padding.saturating_sub(old_padding);
                let packet = &mut buf[start..start + len];
                Step::Sealed(to.seal_in_place(packet, payload_len, padding, fresh))
            }
            None => Step::Copy,
        }
    } else if to.kex_in_progress() {
        match room_during_kex(to.queued_messages(), to.queued_bytes(), other_waits_on_us) {
            KexRoom::Queue => Step::Queued(to.send(&buf[payload])),
            KexRoom::Overflow => Step::Overflow,
            KexRoom::Wait => Step::Wait,
        }
    } else {
        Step::Wait
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sshr_protocol::wire;

    use super::*;
    use crate::core::tunnel::fixtures::{confirmation, data, open};
    use crate::core::tunnel::CHANNEL_TYPE;
    use crate::core::values::{TunnelPolicy, TunnelSettings};

    fn tunnels(policy: TunnelPolicy) -> Tunnels {
        Tunnels::new("alice", policy, &TunnelSettings::default())
    }

    fn global_request(name: &str, want_reply: bool) -> Vec<u8> {
        let mut p = vec![msg::GLOBAL_REQUEST];
        wire::put_string(&mut p, name.as_bytes());
        wire::put_u8(&mut p, want_reply as u8);
        p
    }

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn ordinary_channel_traffic_is_forwarded_both_ways() {
        let mut t = tunnels(TunnelPolicy::Deny);
        for from in [Side::Client, Side::Upstream] {
            for p in [
                data(0, 10),
                vec![msg::CHANNEL_EOF, 0, 0, 0, 0],
                vec![msg::CHANNEL_REQUEST],
            ] {
                assert_eq!(classify(from, &p, &mut t, now), Verdict::Forward);
            }
        }
        assert_eq!(
            classify(Side::Client, &open("session", 0, 0, 0), &mut t, now),
            Verdict::Forward
        );
    }

    #[test]
    fn late_user_auth_messages_stay_on_their_leg() {
        let mut t = tunnels(TunnelPolicy::Deny);
        for n in [msg::USERAUTH_REQUEST, msg::USERAUTH_SUCCESS, 60, 79] {
            for from in [Side::Client, Side::Upstream] {
                assert_eq!(classify(from, &[n], &mut t, now), Verdict::Drop, "{n}");
            }
        }
    }

    #[test]
    fn host_key_rotation_is_neither_passed_nor_proven() {
        let mut t = tunnels(TunnelPolicy::Deny);
        let hostkeys = global_request("hostkeys-00@openssh.com", false);
        assert_eq!(
            classify(Side::Upstream, &hostkeys, &mut t, now),
            Verdict::Drop
        );
        // The same request from the client is not ours to judge.
        assert_eq!(
            classify(Side::Client, &hostkeys, &mut t, now),
            Verdict::Forward
        );
        let prove = global_request("hostkeys-prove-00@openssh.com", true);
        assert_eq!(
            classify(Side::Client, &prove, &mut t, now),
            Verdict::RefuseGlobalRequest
        );
        let quiet = global_request("hostkeys-prove-00@openssh.com", false);
        assert_eq!(classify(Side::Client, &quiet, &mut t, now), Verdict::Drop);
        let other = global_request("tcpip-forward", true);
        assert_eq!(
            classify(Side::Client, &other, &mut t, now),
            Verdict::Forward
        );
        // A malformed global request goes on: the peer that gets it judges it.
        assert_eq!(
            classify(Side::Client, &[msg::GLOBAL_REQUEST, 0, 0], &mut t, now),
            Verdict::Forward
        );
    }

    #[test]
    fn tunnels_follow_the_policy() {
        let mut deny = tunnels(TunnelPolicy::Deny);
        assert_eq!(
            classify(Side::Client, &open(CHANNEL_TYPE, 3, 1, 0), &mut deny, now),
            Verdict::RefuseChannelOpen {
                recipient: 3,
                why: ChannelRefusal::TunnelNotAllowed
            }
        );
        let mut l2 = tunnels(TunnelPolicy::Ethernet);
        assert!(matches!(
            classify(Side::Client, &open(CHANNEL_TYPE, 3, 1, 0), &mut l2, now),
            Verdict::RefuseChannelOpen { .. }
        ));
        assert_eq!(
            classify(Side::Client, &open(CHANNEL_TYPE, 4, 2, 0), &mut l2, now),
            Verdict::Forward
        );
        // An open from the upstream (a server-initiated tunnel) is not the client's.
        assert_eq!(
            classify(Side::Upstream, &open(CHANNEL_TYPE, 3, 1, 0), &mut deny, now),
            Verdict::Forward
        );
    }

    #[test]
    fn a_confirmed_tunnel_is_noticed_and_counted() {
        let mut t = tunnels(TunnelPolicy::Any);
        classify(Side::Client, &open(CHANNEL_TYPE, 0, 1, 0), &mut t, now);
        assert!(!t.take_opened());
        classify(Side::Upstream, &confirmation(0, 9), &mut t, now);
        assert!(t.take_opened());
        assert!(!t.take_opened(), "told once");
        classify(Side::Client, &data(9, 100), &mut t, now);
        classify(Side::Upstream, &data(0, 50), &mut t, now);
        assert_eq!(t.bytes(0), Some((100, 50)));
    }

    #[test]
    fn data_outside_tunnels_never_asks_the_time() {
        let mut t = tunnels(TunnelPolicy::Any);
        let never = || -> Instant { panic!("the clock was read for a plain data packet") };
        classify(Side::Client, &data(0, 10), &mut t, never);
        let _ = Duration::ZERO;
    }

    #[test]
    fn the_keepalive_request_is_a_want_reply_global_request() {
        assert_eq!(
            KEEPALIVE_REQUEST.as_slice(),
            global_request("keepalive@openssh.com", true)
        );
        assert!(wants_reply(&KEEPALIVE_REQUEST));
        assert!(!wants_reply(&global_request(
            "keepalive@openssh.com",
            false
        )));
        assert!(!wants_reply(&[msg::GLOBAL_REQUEST, 0, 0]));
        assert!(!wants_reply(&data(0, 10)));
    }

    #[test]
    fn replies_to_our_keepalives_are_swallowed_in_order() {
        let mut p = PendingReplies::default();
        // Sent on the leg, in this order: a forwarded request (tcpip-forward), our
        // keepalive, another forwarded request.
        p.sent(Origin::Forwarded).unwrap();
        p.sent(Origin::Own).unwrap();
        p.sent(Origin::Forwarded).unwrap();
        assert_eq!(p.reply(), Verdict::Forward);
        assert_eq!(p.reply(), Verdict::Drop);
        assert_eq!(p.reply(), Verdict::Forward);
        assert!(p.is_empty());
        // An unsolicited reply passes, as it would without the proxy.
        assert_eq!(p.reply(), Verdict::Forward);
    }

    #[test]
    fn pending_replies_are_bounded() {
        let mut p = PendingReplies::default();
        for _ in 0..MAX_PENDING_REPLIES {
            p.sent(Origin::Forwarded).unwrap();
        }
        assert!(!p.has_room());
        assert_eq!(p.sent(Origin::Forwarded), Err(TooManyPending));
        assert_eq!(p.sent(Origin::Own), Err(TooManyPending));
        p.reply();
        assert!(p.has_room());
        assert_eq!(p.len(), MAX_PENDING_REPLIES - 1);
    }

    #[test]
    fn kex_queue_room() {
        assert_eq!(room_during_kex(0, 0, false), KexRoom::Queue);
        assert_eq!(
            room_during_kex(MAX_QUEUED_MESSAGES_DURING_KEX, 0, false),
            KexRoom::Wait
        );
        assert_eq!(
            room_during_kex(0, MAX_QUEUED_DURING_KEX, false),
            KexRoom::Wait
        );
        // The other pump waits on our leg: queue on (past the soft limits) rather than
        // deadlock, up to the hard limit.
        assert_eq!(
            room_during_kex(MAX_QUEUED_MESSAGES_DURING_KEX, MAX_QUEUED_DURING_KEX, true),
            KexRoom::Queue
        );
        assert_eq!(
            room_during_kex(MAX_QUEUED_MESSAGES_DURING_KEX * KEX_OVERLAP_FACTOR, 0, true),
            KexRoom::Overflow
        );
        assert_eq!(
            room_during_kex(0, MAX_QUEUED_DURING_KEX * KEX_OVERLAP_FACTOR, true),
            KexRoom::Overflow
        );
    }
}
