//! One leg of a proxied session: a TCP stream and the SSH transport that runs over it.
//!
//! The client leg is the server role of the transport, the upstream leg the client role.
//! During the relay two pumps share a leg (one reads it, the other writes to it), so the
//! stream sits in a `RefCell` that is borrowed only for the duration of one `poll_*`
//! call, and writes are serialized by a one-permit semaphore: a packet is sealed (given
//! its sequence number) only while its writer holds the permit, which keeps the wire
//! order equal to the sequence order.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::{Permit, Semaphore};
use sshr_protocol::error::PeerMisbehaved;
use sshr_protocol::packet::MAX_PACKET_LEN;
use sshr_protocol::transport::{Event, Input, Transport};

use crate::core::refusal::Refusal;
use crate::core::values::Side;
use crate::io::pool::{HandshakeBudget, PooledBuf};
use crate::rt::Notify;

/// Why a leg stopped.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    #[error("{side}: connection closed")]
    Closed { side: Side },
    #[error("{side}: {source}")]
    Io { side: Side, source: io::Error },
    #[error("{side}: {source}")]
    Protocol {
        side: Side,
        source: sshr_protocol::Error,
    },
    /// A packet's first bytes came and the rest did not within
    /// `limits.packet_timeout_secs` (before authentication, or during the relay).
    #[error("{side}: a packet stalled")]
    Stalled { side: Side },
    /// During the relay, the peer on this side sent more want-reply global requests
    /// than may await the other side's replies (`core::relay::PendingReplies`).
    #[error("{side}: too many global requests awaiting replies")]
    Requests { side: Side },
    /// During the relay, the peer on this side sent more than may be queued for the
    /// other leg while both legs were in key exchanges (`core::relay::KexRoom`).
    #[error("{side}: too much sent while the other leg was in a key exchange")]
    Overflow { side: Side },
    /// Before authentication, a packet needed more buffer than the shard's handshake
    /// budget had left.
    #[error("{side}: {source}")]
    Busy { side: Side, source: BudgetExhausted },
}

impl LegError {
    pub fn side(&self) -> Side {
        match self {
            LegError::Closed { side }
            | LegError::Io { side, .. }
            | LegError::Protocol { side, .. }
            | LegError::Stalled { side }
            | LegError::Requests { side }
            | LegError::Overflow { side }
            | LegError::Busy { side, .. } => *side,
        }
    }
}

/// Where a receive buffer's bytes live.
enum Storage {
    /// A small buffer of the session's own, enough for interactive traffic and the
    /// handshake; an idle session holds nothing bigger.
    Inline(Vec<u8>),
    /// A relay buffer borrowed from the shard's pool while traffic is heavy.
    Pooled(PooledBuf),
}

/// A receive buffer: bytes `start..end` of the storage are received and not yet
/// consumed. Packets are decrypted (and re-sealed by the relay) in place inside it.
pub struct RxBuf {
    storage: Storage,
    start: usize,
    end: usize,
    /// Where growth beyond [`INLINE_RX`] is charged before authentication, and how much
    /// is charged now.
    budget: Option<HandshakeBudget>,
    charged: usize,
}

/// A packet before authentication needs a larger buffer than the shard's handshake
/// budget has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the proxy is short of memory for large packets before authentication")]
pub struct BudgetExhausted;

/// Room a receive buffer must have: the largest packet plus its tag.
pub const MAX_WIRE_PACKET: usize = MAX_PACKET_LEN as usize + 4 + sshr_protocol::packet::MAX_TAG_LEN;
/// Size of the inline buffer; larger packets or heavy traffic borrow a pooled one.
pub const INLINE_RX: usize = 4096;
/// Largest packet accepted before the relay starts (authentication messages are a few
/// KiB at most, even with 16384-bit RSA keys).
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;
/// How long a DISCONNECT may take to write before the connection is dropped anyway.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

impl RxBuf {
    pub fn new() -> Self {
        Self {
            storage: Storage::Inline(vec![0; INLINE_RX]),
            start: 0,
            end: 0,
            budget: None,
            charged: 0,
        }
    }

    /// A buffer whose growth beyond [`INLINE_RX`] is charged to `budget` (an
    /// unauthenticated client's) until [`RxBuf::end_handshake`].
    pub fn with_budget(budget: HandshakeBudget) -> Self {
        let mut rx = Self::new();
        rx.budget = Some(budget);
        rx
    }

    /// Authentication is over: shrink what the handshake grew and stop charging the
    /// budget (the relay's large buffers come from the capped pool instead).
    pub fn end_handshake(&mut self) {
        self.release_pooled();
        self.refund(self.charged);
        self.budget = None;
    }

    fn refund(&mut self, n: usize) {
        if let Some(b) = &self.budget {
            b.refund(n);
        }
        self.charged -= n;
    }

    /// Charge (or refund) the budget for an inline buffer of `capacity` bytes.
    fn charge_for(&mut self, capacity: usize) -> Result<(), BudgetExhausted> {
        let want = capacity.saturating_sub(INLINE_RX);
        if want > self.charged {
            if let Some(b) = &self.budget {
                if !b.try_charge(want - self.charged) {
                    return Err(BudgetExhausted);
                }
            }
            self.charged = want;
        } else if want < self.charged {
            self.refund(self.charged - want);
        }
        Ok(())
    }

    /// The whole storage (received bytes are `start..end`).
    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Storage::Inline(v) => v,
            Storage::Pooled(p) => p,
        }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Inline(v) => v,
            Storage::Pooled(p) => p,
        }
    }

    pub fn capacity(&self) -> usize {
        self.data().len()
    }

    pub fn is_pooled(&self) -> bool {
        matches!(self.storage, Storage::Pooled(_))
    }

    pub fn filled(&mut self) -> &mut [u8] {
        let (s, e) = (self.start, self.end);
        &mut self.data_mut()[s..e]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        self.settle();
    }

    /// Consume without moving the window back to the front, so that offsets of bytes
    /// after the consumed ones stay valid (the relay keeps sealed packets there).
    pub fn consume_keeping_position(&mut self, n: usize) {
        self.start += n;
    }

    /// Reset an empty window to the front of the buffer.
    pub fn settle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Make room for at least `need` bytes from `start` plus free space to read into:
    /// compact to the front, and grow the inline buffer (handshake phase; the relay
    /// moves to a pooled buffer instead, see [`RxBuf::use_pooled`]). Growth is charged
    /// to the handshake budget, if the buffer has one.
    pub fn reserve(&mut self, need: usize) -> Result<(), BudgetExhausted> {
        let need = need.min(MAX_WIRE_PACKET);
        self.compact(need);
        if self.capacity() < need {
            let grown = need.next_power_of_two().min(MAX_WIRE_PACKET).max(need);
            if let Storage::Inline(_) = &self.storage {
                self.charge_for(grown)?;
            }
            if let Storage::Inline(v) = &mut self.storage {
                v.resize(grown, 0);
            }
        }
        Ok(())
    }

    /// Move the received bytes to the front when `need` bytes from `start` would not fit
    /// behind them, or nothing more can be read; never grows the buffer.
    pub fn compact(&mut self, need: usize) {
        if self.start > 0 && (self.capacity() - self.start < need || self.end == self.capacity()) {
            let (s, e) = (self.start, self.end);
            self.data_mut().copy_within(s..e, 0);
            self.end -= s;
            self.start = 0;
        }
    }

    /// Move the received bytes into `buf` (a pooled relay buffer).
    pub fn use_pooled(&mut self, mut buf: PooledBuf) {
        let (s, e) = (self.start, self.end);
        buf[..e - s].copy_from_slice(&self.data()[s..e]);
        self.storage = Storage::Pooled(buf);
        self.start = 0;
        self.end = e - s;
        // The pool counts this buffer now.
        self.refund(self.charged);
    }

    /// Go back to a small inline buffer (when traffic is light) if what is buffered fits
    /// in one: gives a pooled buffer back to the pool, or shrinks an inline buffer that
    /// the handshake grew.
    pub fn release_pooled(&mut self) {
        if self.capacity() > INLINE_RX && self.len() <= INLINE_RX {
            let mut v = vec![0; INLINE_RX];
            let (s, e) = (self.start, self.end);
            v[..e - s].copy_from_slice(&self.data()[s..e]);
            self.storage = Storage::Inline(v);
            self.start = 0;
            self.end = e - s;
            self.refund(self.charged);
        }
    }

    /// Where the received bytes begin in [`RxBuf::data`].
    pub fn start(&self) -> usize {
        self.start
    }

    /// `n` bytes were read into [`RxBuf::unfilled`].
    pub fn fill(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.capacity());
        self.end += n;
    }

    pub fn unfilled(&mut self) -> &mut [u8] {
        let e = self.end;
        &mut self.data_mut()[e..]
    }
}

impl Default for RxBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RxBuf {
    fn drop(&mut self) {
        self.refund(self.charged);
    }
}

/// What [`Leg::recv`] got.
pub enum Received {
    /// A user-auth or connection-layer message (copied out; handshake use only).
    Packet(Vec<u8>),
    Event(Event),
}

pub struct Leg {
    pub side: Side,
    stream: RefCell<TcpStream>,
    pub transport: RefCell<Transport>,
    writer: Semaphore,
    /// Signalled when this leg's transport may have become able to send again
    /// (a key exchange finished) or the leg closed.
    pub changed: Notify,
    /// A relay pump is waiting for this leg's key exchange to end (see
    /// `relay::KEX_OVERLAP_FACTOR`).
    pub awaited: Cell<bool>,
    /// A write to the stream was abandoned part-way (see [`Leg::write_all_locked`]).
    torn: Cell<bool>,
    /// In [`Leg::recv`]: how long the rest of a started packet may take (`None`: no
    /// limit beyond the caller's).
    packet_timeout: Cell<Option<Duration>>,
    /// In [`Leg::recv`]: bytes were read and nothing has been written back since, so
    /// the peer still waits for their acknowledgement (see [`Leg::recv`]).
    ack_owed: Cell<bool>,
    spare: Cell<Vec<u8>>,
}

impl Leg {
    /// A leg over `stream`, whose TCP options are already set (see
    /// [`crate::io::net::keepalive`]).
    pub fn new(side: Side, stream: TcpStream, transport: Transport) -> Self {
        Self {
            side,
            stream: RefCell::new(stream),
            transport: RefCell::new(transport),
            writer: Semaphore::new(1),
            changed: Notify::default(),
            awaited: Cell::new(false),
            torn: Cell::new(false),
            packet_timeout: Cell::new(None),
            ack_owed: Cell::new(false),
            spare: Cell::new(Vec::new()),
        }
    }

    fn io_err(&self, source: io::Error) -> LegError {
        LegError::Io {
            side: self.side,
            source,
        }
    }

    /// Close the connection when, in [`Leg::recv`], the rest of a packet whose first
    /// bytes arrived takes longer than `timeout` (an unauthenticated client's leg).
    pub fn set_packet_timeout(&self, timeout: Option<Duration>) {
        self.packet_timeout.set(timeout);
    }

    /// True when the peer has sent nothing and not closed the connection (for warm
    /// upstream connections waiting in the pool).
    pub fn is_idle_and_open(&self) -> bool {
        crate::io::net::idle_and_open(&self.stream.borrow())
    }

    /// Relay read: read what is there, and acknowledge it at once (see
    /// [`crate::io::net::quickack`]; what was read goes to the other leg, so no reply on
    /// this one would carry the acknowledgement).
    pub async fn read_some(&self, buf: &mut [u8]) -> Result<usize, LegError> {
        let n = self.read_unacked(buf).await?;
        crate::io::net::quickack(&self.stream.borrow());
        Ok(n)
    }

    /// The handshake is over: give back the send buffers it grew (see
    /// [`Transport::release_buffers`]), which an idle session would otherwise hold for
    /// its whole life, and acknowledge what it read last if no answer did.
    pub fn end_handshake(&self) {
        self.spare.take();
        self.transport.borrow_mut().release_buffers();
        self.send_owed_ack();
    }

    /// Acknowledge at once what [`Leg::recv`] read and no write answered (see there).
    fn send_owed_ack(&self) {
        if self.ack_owed.take() {
            crate::io::net::quickack(&self.stream.borrow());
        }
    }

    async fn read_unacked(&self, buf: &mut [u8]) -> Result<usize, LegError> {
        let n = poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf))
            .await
            .map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Err(LegError::Closed { side: self.side });
        }
        Ok(n)
    }

    /// Write all of `data`. The caller holds the writer permit.
    pub async fn write_all_locked(&self, mut data: &[u8]) -> Result<(), LegError> {
        // Stays set if this write is abandoned half-way (an error, or the future dropped
        // when the relay ends): the stream then ends inside a packet.
        self.torn.set(true);
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, data))
                .await
                .map_err(|e| self.io_err(e))?;
            if n == 0 {
                return Err(LegError::Closed { side: self.side });
            }
            data = &data[n..];
            // The segment carries the acknowledgement of all that was read.
            self.ack_owed.set(false);
        }
        self.torn.set(false);
        Ok(())
    }

    pub async fn lock_writer(&self) -> Permit<'_> {
        // The semaphore is never closed, so acquiring cannot fail.
        loop {
            if let Ok(p) = self.writer.acquire_permit(1).await {
                return p;
            }
        }
    }

    /// Write what the transport queued. The caller holds the writer permit.
    pub async fn flush_locked(&self) -> Result<(), LegError> {
        loop {
            let out = {
                let mut t = self.transport.borrow_mut();
                if t.transmit().is_empty() {
                    return Ok(());
                }
                t.take_transmit(self.spare.take())
            };
            let r = self.write_all_locked(&out).await;
            self.spare.set(out);
            r?;
        }
    }

    pub fn has_transmit(&self) -> bool {
        !self.transport.borrow().transmit().is_empty()
    }

    pub async fn flush(&self) -> Result<(), LegError> {
        if !self.has_transmit() {
            return Ok(());
        }
        let _permit = self.lock_writer().await;
        self.flush_locked().await
    }

    /// Handshake-phase receive: the next upper-layer message or transport event.
    ///
    /// During the handshake nearly every message read is answered on the same leg, and
    /// the answer's segment acknowledges it; an acknowledgement of its own
    /// (`TCP_QUICKACK` after each read, as the relay does) would be one more segment
    /// each way through the kernel for most reads. So a read only leaves an
    /// acknowledgement owed, and it is sent at once only when the leg is about to wait
    /// for the peer without having written anything since: the peer may be holding its
    /// next packet back until then (Nagle), as OpenSSH does after NEWKEYS.
    pub async fn recv(&self, rx: &mut RxBuf) -> Result<Received, LegError> {
        // When the packet now being received must be complete (see `set_packet_timeout`):
        // set when its first bytes are in, for the whole packet, not per read.
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(e) = self.transport.borrow_mut().poll_event() {
                return Ok(Received::Event(e));
            }
            let r = self
                .transport
                .borrow_mut()
                .read(rx.filled(), Instant::now());
            match r {
                Ok(Input::Consumed(n)) => {
                    rx.consume(n);
                    deadline = None;
                }
                Ok(Input::Packet { len, payload }) => {
                    let start = rx.start();
                    let p = rx.data()[start + payload.start..start + payload.end].to_vec();
                    rx.consume(len);
                    self.flush().await?;
                    return Ok(Received::Packet(p));
                }
                Ok(Input::NeedMore(n)) => {
                    if n > MAX_HANDSHAKE_PACKET {
                        // Before authentication nobody needs big packets; refusing them
                        // keeps what an unauthenticated peer can make us hold small.
                        let e = sshr_protocol::Error::Peer(PeerMisbehaved::PacketLength(n as u32));
                        self.refuse(Refusal::PacketTooLarge).await;
                        return Err(LegError::Protocol {
                            side: self.side,
                            source: e,
                        });
                    }
                    self.flush().await?;
                    // Grow with what actually arrives (at most twice it), not with what
                    // the length field announces: four bytes must not reserve 64 KiB.
                    let target = n
                        .min(rx.len().saturating_mul(2).max(INLINE_RX))
                        .max(rx.len() + 1);
                    if let Err(source) = rx.reserve(target) {
                        self.refuse(Refusal::Busy).await;
                        return Err(LegError::Busy {
                            side: self.side,
                            source,
                        });
                    }
                    // Part of a packet (or of the identification line) is in: the rest
                    // must follow in time.
                    if rx.is_empty() {
                        deadline = None;
                    } else if let Some(limit) = self.packet_timeout.get() {
                        deadline.get_or_insert_with(|| Instant::now() + limit);
                    }
                    self.send_owed_ack();
                    let read = self.read_unacked(rx.unfilled());
                    let n = match deadline {
                        Some(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match glommio::timer::timeout(left, async { Ok(read.await) }).await {
                                Ok(r) => r?,
                                Err(_) => {
                                    self.refuse(Refusal::PacketStalled).await;
                                    return Err(LegError::Stalled { side: self.side });
                                }
                            }
                        }
                        _ => read.await?,
                    };
                    self.ack_owed.set(true);
                    rx.fill(n);
                }
                Err(source) => {
                    // The transport queued a DISCONNECT telling the peer why.
                    let _ = self.flush().await;
                    return Err(LegError::Protocol {
                        side: self.side,
                        source,
                    });
                }
            }
        }
    }

    /// Send a message (handshake phase) and flush it.
    pub async fn send(&self, payload: &[u8]) -> Result<(), LegError> {
        self.transport
            .borrow_mut()
            .send(payload)
            .map_err(|source| LegError::Protocol {
                side: self.side,
                source,
            })?;
        self.flush().await
    }

    /// Send DISCONNECT with a reason and flush it (best effort: a peer that does not
    /// read gets [`DISCONNECT_GRACE`], so that it cannot hold the session open).
    /// Tell the peer why the proxy ends this connection (see [`Leg::disconnect`]).
    pub async fn refuse(&self, refusal: Refusal) {
        self.disconnect(refusal.code(), refusal.message()).await
    }

    pub async fn disconnect(&self, reason: u32, description: &str) {
        if self.torn.get() {
            // A packet was cut off mid-way: anything after it would reach the peer as
            // garbage (a MAC error), not as the reason. Just close.
            self.transport.borrow_mut().close();
            self.changed.notify();
            return;
        }
        self.transport.borrow_mut().disconnect(reason, description);
        let _ = glommio::timer::timeout(DISCONNECT_GRACE, async {
            let _ = self.flush().await;
            Ok(())
        })
        .await;
        self.changed.notify();
    }

    pub async fn shutdown(&self) {
        let _ = poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)).await;
    }
}
