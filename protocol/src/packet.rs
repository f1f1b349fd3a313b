//! The binary packet protocol (RFC 4253 section 6): framing, padding, sequence numbers
//! and the packet-size cap, on top of [`PacketCipher`].
//!
//! Both directions work **in place** in a buffer the caller owns: [`Opener::open`]
//! decrypts a received packet where it lies and hands back the payload's range;
//! [`Sealer::seal`] takes a payload already placed at offset [`PAYLOAD_OFFSET`] and writes
//! the header, padding and tag around it. Nothing is allocated per packet.

use core::ops::Range;

use rand_core::RngCore;

use crate::cipher::PacketCipher;
use crate::error::PeerMisbehaved;

/// Where the payload starts in a packet: uint32 packet_length, byte padding_length.
pub const PAYLOAD_OFFSET: usize = 5;
/// Largest `packet_length` we accept or send. RFC 4253 6.1 asks for at least 35000;
/// anything larger is refused before a byte of it is buffered.
pub const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Largest payload we send: fits [`MAX_PACKET_LEN`] with maximal padding.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN as usize - 1 - 255;
/// Largest tag of any cipher/MAC we implement (hmac-sha2-512).
pub const MAX_TAG_LEN: usize = 64;

/// Result of [`Opener::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The buffer must hold at least this many bytes (from the packet start) before the
    /// packet can be opened. Nothing was changed: call again with the same bytes and more.
    NeedMore(usize),
    /// A packet was verified and decrypted; it spanned `len` bytes of the buffer and its
    /// payload (message number first) is at `payload`.
    Packet { len: usize, payload: Range<usize> },
}

/// The receiving half of a connection's packet layer.
pub struct Opener {
    cipher: PacketCipher,
    seq: u32,
    max_len: u32,
}

impl Opener {
    pub fn new() -> Self {
        Self {
            cipher: PacketCipher::none(),
            seq: 0,
            max_len: MAX_PACKET_LEN,
        }
    }

    pub fn seq(&self) -> u32 {
        self.seq
    }

    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    pub fn set_cipher(&mut self, cipher: PacketCipher) {
        self.cipher = cipher;
    }

    pub fn cipher(&self) -> &PacketCipher {
        &self.cipher
    }

    /// Verify and decrypt the packet at the start of `buf` in place.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, PeerMisbehaved> {
        let prefix = self.cipher.length_prefix_len();
        if buf.len() < prefix {
            return Ok(Opened::NeedMore(prefix));
        }
        let len = self.cipher.peek_length(self.seq, &buf[..prefix]);
        let block = self.cipher.block_size().max(8);
        if len > self.max_len || len < 5 {
            return Err(PeerMisbehaved::PacketLength(len));
        }
        let aligned = if self.cipher.length_in_alignment() {
            len as usize + 4
        } else {
            len as usize
        };
        if aligned % block != 0 {
            return Err(PeerMisbehaved::BlockAlignment { len, block });
        }
        let total = 4 + len as usize + self.cipher.tag_len();
        if buf.len() < total {
            return Ok(Opened::NeedMore(total));
        }
        let packet = &mut buf[..total];
        self.cipher
            .open(self.seq, packet)
            .map_err(|_| PeerMisbehaved::BadMac)?;
        let padding = packet[4];
        // At least 4 bytes of padding (RFC 4253 6) and at least one payload byte.
        if padding < 4 || padding as u32 + 1 >= len {
            return Err(PeerMisbehaved::Padding { padding, len });
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(Opened::Packet {
            len: total,
            payload: PAYLOAD_OFFSET..4 + len as usize - padding as usize,
        })
    }
}

impl Default for Opener {
    fn default() -> Self {
        Self::new()
    }
}

/// The sending half of a connection's packet layer.
pub struct Sealer {
    cipher: PacketCipher,
    seq: u32,
}

impl Sealer {
    pub fn new() -> Self {
        Self {
            cipher: PacketCipher::none(),
            seq: 0,
        }
    }

    pub fn seq(&self) -> u32 {
        self.seq
    }

    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    pub fn set_cipher(&mut self, cipher: PacketCipher) {
        self.cipher = cipher;
    }

    pub fn cipher(&self) -> &PacketCipher {
        &self.cipher
    }

    fn block(&self) -> usize {
        self.cipher.block_size().max(8)
    }

    fn aligned_part(&self, payload_len: usize) -> usize {
        1 + payload_len
            + if self.cipher.length_in_alignment() {
                4
            } else {
                0
            }
    }

    /// The smallest valid padding for a payload of this length (4 to block+3 bytes).
    pub fn min_padding(&self, payload_len: usize) -> usize {
        let block = self.block();
        let mut pad = block - self.aligned_part(payload_len) % block;
        if pad < 4 {
            pad += block;
        }
        pad
    }

    /// Whether `padding` bytes of padding are valid for this payload length.
    pub fn padding_valid(&self, payload_len: usize, padding: usize) -> bool {
        (4..=255).contains(&padding)
            && (self.aligned_part(payload_len) + padding).is_multiple_of(self.block())
    }

    /// The largest valid padding that makes the sealed packet at most `space` bytes, if any.
    /// The relay uses it to re-seal a packet exactly where it was received.
    pub fn padding_to_fit(&self, payload_len: usize, space: usize) -> Option<usize> {
        let fixed = PAYLOAD_OFFSET + payload_len + self.cipher.tag_len();
        let room = space.checked_sub(fixed)?.min(255);
        let min = self.min_padding(payload_len);
        if room < min {
            return None;
        }
        Some(min + (room - min) / self.block() * self.block())
    }

    /// Bytes on the wire for a payload of this length with the given padding.
    pub fn sealed_len(&self, payload_len: usize, padding: usize) -> usize {
        PAYLOAD_OFFSET + payload_len + padding + self.cipher.tag_len()
    }

    /// Seal in place: `buf[PAYLOAD_OFFSET..][..payload_len]` holds the payload and `buf`
    /// is at least [`Self::sealed_len`] long. `padding` must be valid
    /// ([`Self::padding_valid`]); `fresh_padding` tells how many of the padding bytes
    /// (from the end) must be filled with random bytes — the rest already hold random
    /// bytes (re-used padding of a received packet). Returns the sealed length.
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        payload_len: usize,
        padding: usize,
        fresh_padding: usize,
        rng: &mut dyn RngCore,
    ) -> usize {
        debug_assert!(self.padding_valid(payload_len, padding));
        let total = self.sealed_len(payload_len, padding);
        let packet = &mut buf[..total];
        let len = (1 + payload_len + padding) as u32;
        packet[..4].copy_from_slice(&len.to_be_bytes());
        packet[4] = padding as u8;
        let pad_end = PAYLOAD_OFFSET + payload_len + padding;
        let fresh = fresh_padding.min(padding);
        rng.fill_bytes(&mut packet[pad_end - fresh..pad_end]);
        self.cipher.seal(self.seq, packet);
        self.seq = self.seq.wrapping_add(1);
        total
    }

    /// Seal a payload into the end of `out` (for messages the transport writes itself).
    pub fn seal_into(&mut self, out: &mut Vec<u8>, payload: &[u8], rng: &mut dyn RngCore) {
        let padding = self.min_padding(payload.len());
        let total = self.sealed_len(payload.len(), padding);
        let at = out.len();
        out.resize(at + total, 0);
        out[at + PAYLOAD_OFFSET..at + PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
        self.seal(&mut out[at..], payload.len(), padding, padding, rng);
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}
