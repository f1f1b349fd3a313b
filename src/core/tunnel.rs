//! The `tun@openssh.com` channel open (`ssh -w`): its wire format and the proxy's
//! answer to it. Plain functions on payloads; the session's record of its tunnels is in
//! `proxy::tunnel`.
//!
//! Wire format, OpenSSH `PROTOCOL` section 2.3: a `CHANNEL_OPEN` of type
//! `tun@openssh.com` carries, after the usual sender channel, window and maximum packet
//! size, `uint32 tunnel mode` (1 = point-to-point, layer 3, a tun device; 2 = ethernet,
//! layer 2, a tap device) and `uint32 remote unit` (0x7fffffff: any).

use std::fmt;

use sshr_protocol::msg;
use sshr_protocol::wire::{self, Reader};

use crate::core::refusal::ChannelRefusal;
use crate::core::values::TunnelMode;

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
    use super::fixtures::open;
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
}
