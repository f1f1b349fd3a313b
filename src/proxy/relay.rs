//! The relay: after both legs are authenticated, packets flow at the packet level.
//!
//! Each direction is a pump that reads one leg into its receive buffer, decrypts each
//! packet in place, looks at the message number, and re-seals the packet in place for
//! the other leg: only the length, padding and tag change, so the payload is never
//! copied. The padding is chosen so that the sealed packet fits exactly where the
//! received one was ([`Sealer::padding_to_fit`]); when both legs use the same cipher
//! family (the upstream leg asks for the client leg's cipher) consecutive packets stay
//! contiguous and a whole read's worth goes out in one write.
//!
//! Channels, windows and flow control run end to end, so every channel type works
//! without code here, and backpressure is natural: a pump that cannot write stops
//! reading. Per-leg traffic never crosses: the transports consume KEX*, NEWKEYS,
//! EXT_INFO, SERVICE_*, IGNORE and DEBUG; user-auth messages after authentication are
//! dropped (RFC 4252 5.1); the upstream's `hostkeys-00@openssh.com` is dropped (the
//! client would store the upstream's keys under the proxy's name) and the client's
//! `hostkeys-prove-00@openssh.com` is refused. Each leg rekeys on its own schedule.
//!
//! A watchdog beside the pumps keeps the session honest in time (`core::liveness`): it
//! sends each leg's peer a keepalive after `limits.keepalive_interval_secs` of silence
//! and closes both legs, saying why, when a peer stops answering, when no channel data
//! passed for `limits.idle_timeout_secs`, or when a packet stalls half-way for
//! `limits.packet_timeout_secs`. The replies to its keepalives are swallowed: each leg
//! keeps the order of the global requests sent on it (`core::relay::PendingReplies`).
//!
//! [`Sealer::padding_to_fit`]: sshr_protocol::packet::Sealer::padding_to_fit

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Permit;
use sshr_protocol::msg::{self, disconnect};
use sshr_protocol::packet::PAYLOAD_OFFSET;
use sshr_protocol::transport::Input;
use tracing::{debug, info};

use crate::audit::{CloseReason, SessionAudit};
use crate::config::Limits;
use crate::core::liveness::{index, Check, Expired, Seen, Watch, WatchSettings};
use crate::core::refusal::Refusal;
use crate::core::relay::{
    classify, forward_step, wants_reply, Origin, PendingReplies, Step, Verdict, KEEPALIVE_REQUEST,
};
use crate::core::tunnel::encode_open_failure;
use crate::core::values::Side;
use crate::io::leg::{Leg, LegError, RxBuf, INLINE_RX};
use crate::proxy::shard::ShardContext;
use crate::proxy::tunnel::SessionTunnels;
use crate::rt::{Notify, StopSignal};

/// What the pumps tell the watchdog about one leg, and the global requests sent on the
/// leg that await its peer's replies.
struct LegWatch {
    /// When the last read from the leg returned.
    heard: Cell<Instant>,
    /// While the pump waits in a read for the rest of a packet: when that wait must end.
    stall_deadline: Cell<Option<Instant>>,
    replies: RefCell<PendingReplies>,
    /// Signalled when the watchdog queued a keepalive for the leg.
    queued: Notify,
}

/// The session's timekeeping, shared by its pumps and its watchdog.
struct Liveness {
    legs: [LegWatch; 2],
    /// When channel data last passed, either way.
    last_data: Cell<Instant>,
    packet_timeout: Duration,
}

impl Liveness {
    fn new(now: Instant, packet_timeout: Duration) -> Self {
        let leg = || LegWatch {
            heard: Cell::new(now),
            stall_deadline: Cell::new(None),
            replies: RefCell::default(),
            queued: Notify::default(),
        };
        Liveness {
            legs: [leg(), leg()],
            last_data: Cell::new(now),
            packet_timeout,
        }
    }

    fn of(&self, side: Side) -> &LegWatch {
        &self.legs[index(side)]
    }

    fn seen(&self) -> Seen {
        Seen {
            heard: self.legs.each_ref().map(|l| l.heard.get()),
            last_data: self.last_data.get(),
            stall_deadline: self.legs.each_ref().map(|l| l.stall_deadline.get()),
        }
    }
}

/// The watchdog's settings from `[limits]`.
pub fn watch_settings(limits: &Limits) -> WatchSettings {
    WatchSettings {
        keepalive_interval: limits.keepalive_interval,
        keepalive_count_max: limits.keepalive_count_max,
        idle_timeout: limits.idle_timeout,
        packet_timeout: limits.packet_timeout,
    }
}

/// How the relay ended, short of a shutdown.
enum End {
    Leg(LegError),
    Expired(Expired),
}

/// Run the relay until either side goes away, then tell the other side why; or, once
/// `stop` fires (the shutdown grace period is over), tell both sides; or until the
/// watchdog (`settings`) finds a peer gone, the session idle or a packet stalled.
/// `tunnels` holds the session's tunnel policy; its audit records end with the relay.
/// `audit` gets the client's channel opens and forwardings, the bytes relayed each way
/// and why the relay ended (for the audit log's `close` record).
#[allow(clippy::too_many_arguments)] // each is one thing of the session's own
pub async fn run(
    ctx: &ShardContext,
    settings: WatchSettings,
    client: Rc<Leg>,
    client_rx: RxBuf,
    upstream: Rc<Leg>,
    upstream_rx: RxBuf,
    tunnels: SessionTunnels,
    stop: &StopSignal,
    audit: &SessionAudit,
) {
    let started = Instant::now();
    let live = Rc::new(Liveness::new(started, settings.packet_timeout));
    let up =
        async { End::Leg(pump(ctx, &client, client_rx, &upstream, &tunnels, &live, audit).await) };
    let down = async {
        End::Leg(pump(ctx, &upstream, upstream_rx, &client, &tunnels, &live, audit).await)
    };
    let watch = async { match tunnels.watch().await {} };
    // The watchdog and the keepalive writers run as a task of their own (cancelled when
    // the relay ends), so that the pumps' wake-ups do not poll its timer and its timer
    // does not poll the pumps.
    let watchdog = glommio::spawn_local({
        let (client, upstream, live) = (client.clone(), upstream.clone(), live.clone());
        async move {
            use futures_lite::future::or;
            let dog = async { End::Expired(watchdog(settings, [&client, &upstream], &live).await) };
            let flushers =
                async { End::Leg(or(flusher(&client, &live), flusher(&upstream, &live)).await) };
            or(dog, flushers).await
        }
    });
    let relayed = async {
        use futures_lite::future::or;
        Some(or(or(up, down), or(watchdog, watch)).await)
    };
    let stopped = async {
        stop.stopped().await;
        None
    };
    let Some(end) = futures_lite::future::or(relayed, stopped).await else {
        // The shutdown grace period is over: both peers learn why (each write bounded
        // by DISCONNECT_GRACE), then both connections close.
        audit.ending(CloseReason::Shutdown, None);
        info!(
            duration_ms = started.elapsed().as_millis() as u64,
            "session closed: the proxy is shutting down"
        );
        futures_lite::future::zip(
            client.refuse(Refusal::ShuttingDown),
            upstream.refuse(Refusal::ShuttingDown),
        )
        .await;
        futures_lite::future::zip(client.shutdown(), upstream.shutdown()).await;
        return;
    };
    let end = match end {
        End::Leg(e) => e,
        End::Expired(expired) => {
            audit.ending(CloseReason::Timeout, Some(&expired));
            return expire(expired, &client, &upstream, started).await;
        }
    };
    let (reason, error) = close_reason(&end);
    audit.ending(reason, error);
    let (ended, other) = match end.side() {
        Side::Client => (&client, &upstream),
        Side::Upstream => (&upstream, &client),
    };
    let (reason, description) = match &end {
        LegError::Protocol {
            source:
                sshr_protocol::Error::PeerDisconnected {
                    reason,
                    description,
                },
            ..
        } => (*reason, description.clone()),
        LegError::Closed { side }
        | LegError::Io { side, .. }
        | LegError::Stalled { side }
        | LegError::Busy { side, .. } => (
            disconnect::BY_APPLICATION,
            format!("sshr: the {side} closed the connection"),
        ),
        LegError::Protocol { side, source } => (
            disconnect::PROTOCOL_ERROR,
            format!("sshr: the {side} connection failed: {source}"),
        ),
        LegError::Overflow { side } => (
            disconnect::PROTOCOL_ERROR,
            format!("sshr: the {side} sent too much while the other leg was in a key exchange"),
        ),
        LegError::Requests { side } => (
            disconnect::PROTOCOL_ERROR,
            format!("sshr: the {side} sent too many global requests awaiting replies"),
        ),
    };
    match &end {
        LegError::Protocol {
            source: sshr_protocol::Error::PeerDisconnected { .. },
            ..
        }
        | LegError::Closed { .. } => {
            info!(ended_by = %end.side(), duration_ms = started.elapsed().as_millis() as u64, "session closed")
        }
        e => info!(error = %e, duration_ms = started.elapsed().as_millis() as u64, "session ended"),
    }
    // Tell the other side, but never wait long on a peer that does not read.
    let _ = glommio::timer::timeout(Duration::from_secs(2), async {
        other.disconnect(reason, &description).await;
        let _ = ended.flush().await;
        Ok(())
    })
    .await;
    other.shutdown().await;
    ended.shutdown().await;
}

/// How a session that ended with `end` is told in its audit `close` record, and the
/// error text when it was not a plain close.
pub fn close_reason(end: &LegError) -> (CloseReason, Option<&dyn std::fmt::Display>) {
    let closed = match end.side() {
        Side::Client => CloseReason::ClientClosed,
        Side::Upstream => CloseReason::UpstreamClosed,
    };
    match end {
        LegError::Closed { .. } => (closed, None),
        // A peer that is killed or whose host drops the connection resets it: it
        // closed, with the detail kept.
        LegError::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            (closed, Some(end))
        }
        LegError::Protocol {
            source: sshr_protocol::Error::PeerDisconnected { .. },
            ..
        } => (closed, Some(end)),
        LegError::Stalled { .. } => (CloseReason::Timeout, Some(end)),
        _ => (CloseReason::Error, Some(end)),
    }
}

/// The watchdog ended the session: log why, tell both peers (each write bounded by
/// DISCONNECT_GRACE: a peer that is gone may not read), and close both connections.
async fn expire(expired: Expired, client: &Leg, upstream: &Leg, started: Instant) {
    let duration_ms = started.elapsed().as_millis() as u64;
    let (to_client, to_upstream) = match expired {
        Expired::Gone(side) => {
            let (text, refusal) = match side {
                Side::Client => (
                    "session closed: the client stopped answering keepalives",
                    Refusal::ClientGone,
                ),
                Side::Upstream => (
                    "session closed: the upstream stopped answering keepalives",
                    Refusal::UpstreamGone,
                ),
            };
            info!(peer = %side, duration_ms, "{text}");
            metrics::counter!("sshr_sessions_expired_total", "reason" => match side {
                Side::Client => "client_gone",
                Side::Upstream => "upstream_gone",
            })
            .increment(1);
            (refusal, refusal)
        }
        Expired::Idle => {
            info!(
                duration_ms,
                "session closed: idle timeout (no channel data either way)"
            );
            metrics::counter!("sshr_sessions_expired_total", "reason" => "idle").increment(1);
            (Refusal::IdleTimeout, Refusal::IdleTimeout)
        }
        Expired::Stalled(side) => {
            info!(peer = %side, duration_ms, "session closed: a packet stalled half-way");
            metrics::counter!("sshr_sessions_expired_total", "reason" => match side {
                Side::Client => "client_stalled",
                Side::Upstream => "upstream_stalled",
            })
            .increment(1);
            // The stalled peer learns why; the other one that its peer is gone.
            match side {
                Side::Client => (Refusal::PacketStalled, Refusal::ClientGone),
                Side::Upstream => (Refusal::UpstreamGone, Refusal::PacketStalled),
            }
        }
    };
    futures_lite::future::zip(client.refuse(to_client), upstream.refuse(to_upstream)).await;
    futures_lite::future::zip(client.shutdown(), upstream.shutdown()).await;
}

/// Keeps time for the session (see `core::liveness`) and sends the keepalives it asks
/// for; returns why the session must end.
async fn watchdog(settings: WatchSettings, legs: [&Leg; 2], live: &Liveness) -> Expired {
    let mut watch = Watch::new(settings, Instant::now());
    loop {
        match watch.check(Instant::now(), &live.seen()) {
            Check::End(expired) => return expired,
            Check::Wait { probe, next } => {
                for leg in legs {
                    if probe[index(leg.side)] {
                        send_keepalive(leg, live.of(leg.side));
                    }
                }
                glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
            }
        }
    }
}

/// Seals a keepalive for `leg` (queued behind a key exchange if one runs) and has its
/// flusher write it: never waits, so that a peer that does not read cannot stall the
/// watchdog. Packets the pumps sealed before it are written first, as for any message
/// a transport queues (see `Batch::forward`).
fn send_keepalive(leg: &Leg, watch: &LegWatch) {
    let mut replies = watch.replies.borrow_mut();
    if !replies.has_room() {
        return;
    }
    if leg.transport.borrow_mut().send(&KEEPALIVE_REQUEST).is_ok() {
        // Sealed now: its reply comes in this place among the leg's replies.
        let _ = replies.sent(Origin::Own);
        debug!(peer = %leg.side, "keepalive sent");
        watch.queued.notify();
    }
}

/// Writes what the watchdog queued for `leg`, until writing fails.
async fn flusher(leg: &Leg, live: &Liveness) -> LegError {
    let queued = &live.of(leg.side).queued;
    loop {
        let seen = queued.generation();
        if let Err(e) = leg.flush().await {
            leg.changed.notify();
            return e;
        }
        queued.changed_since(seen).await;
    }
}

/// Read `from`, relay to `to`, until something ends the leg.
///
/// The receive buffer starts small. A packet larger than it, or a read that fills it
/// (bulk traffic), borrows a relay buffer from the shard's pool — waiting when the
/// pool's cap is reached, which is backpressure, never unbounded memory. The pooled
/// buffer goes back once traffic is light again, so idle sessions hold only the small
/// buffers.
///
/// While it waits in a read for the rest of a packet, it publishes when that wait must
/// end (`limits.packet_timeout_secs`, counting only time spent waiting in reads for that
/// packet) for the watchdog, which ends a stalled session and with it the pooled buffer.
async fn pump(
    ctx: &ShardContext,
    from: &Leg,
    mut rx: RxBuf,
    to: &Leg,
    tunnels: &SessionTunnels,
    live: &Liveness,
    audit: &SessionAudit,
) -> LegError {
    let mut last_read = 0usize;
    let watch = live.of(from.side);
    // Time spent waiting in reads for the rest of the packet now partly in `rx`.
    let mut waited = Duration::ZERO;
    // The handshake may have grown the inline buffer; idle sessions keep a small one,
    // and from now on large packets borrow from the pool, not the handshake budget.
    rx.end_handshake();
    // The same for the leg's send buffers. And what the handshake read last is
    // acknowledged now if no answer did: the peer may hold its next packet back until
    // then (sshd sends its host keys after USERAUTH_SUCCESS, with Nagle on). From here
    // every read is acknowledged at once.
    from.end_handshake();
    // The time the last read returned (read once per read, for the watchdog and the
    // transport's timers alike).
    let mut now = Instant::now();
    loop {
        from.transport.borrow_mut().handle_timeout(now);
        let buffered = rx.len();
        let need = match process(ctx, from, &mut rx, to, tunnels, live, audit).await {
            Ok(need) => need,
            Err(e) => {
                // Wake a pump waiting on this leg, so that it sees the end too.
                from.changed.notify();
                return e;
            }
        };
        // Light traffic and a small next packet: give the pooled buffer back. A packet
        // larger than the inline buffer goes into a pooled one once the inline buffer is
        // full of it (so that a peer sending the first bytes of a big packet and then
        // nothing does not hold a pooled buffer); the inline buffer never grows, so that
        // what the relay holds stays within the pool's cap.
        if rx.is_pooled() && last_read < INLINE_RX / 2 && need <= INLINE_RX {
            rx.release_pooled();
        }
        if !rx.is_pooled()
            && (last_read == rx.capacity() || (need > rx.capacity() && rx.len() == rx.capacity()))
        {
            let buf = ctx.pool.acquire().await;
            rx.use_pooled(buf);
        }
        if rx.len() < buffered || rx.is_empty() {
            // A packet completed (or none is started): the next one gets a fresh clock.
            waited = Duration::ZERO;
        }
        rx.compact(need);
        let reading_since = (!rx.is_empty()).then(|| {
            let now = Instant::now();
            let left = live.packet_timeout.saturating_sub(waited);
            watch.stall_deadline.set(Some(now + left));
            now
        });
        let read = from.read_some(rx.unfilled()).await;
        now = Instant::now();
        watch.heard.set(now);
        if let Some(since) = reading_since {
            waited += now - since;
            watch.stall_deadline.set(None);
        }
        match read {
            Ok(n) => {
                rx.fill(n);
                last_read = n;
            }
            Err(e) => {
                from.changed.notify();
                return e;
            }
        }
    }
}

/// One batch: every complete packet in `rx`. Packets sealed in place accumulate in a
/// contiguous segment that is written when it would break or at the end of the batch.
/// Returns how many bytes the next packet needs in the buffer.
async fn process(
    ctx: &ShardContext,
    from: &Leg,
    rx: &mut RxBuf,
    to: &Leg,
    tunnels: &SessionTunnels,
    live: &Liveness,
    audit: &SessionAudit,
) -> Result<usize, LegError> {
    // `to`'s rekey timer too: a leg that only receives (its own pump never wakes) still
    // gets new keys on time, before more is sealed for it.
    to.transport.borrow_mut().handle_timeout(Instant::now());
    let mut batch = Batch {
        permit: None,
        segment: None,
    };
    let mut from_dirty = false;
    // Channel data passed in this batch (the idle timeout).
    let mut data = false;
    let result = loop {
        let read = from
            .transport
            .borrow_mut()
            .read(rx.filled(), Instant::now());
        match read {
            Err(source) => {
                break Err(LegError::Protocol {
                    side: from.side,
                    source,
                })
            }
            Ok(Input::NeedMore(n)) => {
                if let Err(e) = batch.write_segment(to, rx).await {
                    break Err(e);
                }
                batch.permit = None;
                break Ok(n);
            }
            Ok(Input::Consumed(n)) => {
                rx.consume_keeping_position(n);
                from_dirty = true;
                // A transport message (key exchange, IGNORE, ...) may have changed
                // whether `from` can send: the other pump may be waiting for that, and
                // this batch may yet wait on it in turn, so wake it now.
                from.changed.notify();
            }
            Ok(Input::Packet { len, payload }) => {
                let start = rx.start();
                let payload = start + payload.start..start + payload.end;
                let message = &rx.data()[payload.clone()];
                let verdict = classify(from.side, message, &mut tunnels.borrow_mut(), Instant::now);
                let kind = message[0];
                if kind == msg::CHANNEL_OPEN_CONFIRMATION {
                    tunnels.notice_opened();
                }
                // The audit log's `channel` records (opens and forwardings only).
                if from.side == Side::Client
                    && matches!(message[0], msg::CHANNEL_OPEN | msg::GLOBAL_REQUEST)
                {
                    audit.client_request(message);
                }
                data |= kind == msg::CHANNEL_DATA || kind == msg::CHANNEL_EXTENDED_DATA;
                let (verdict, track) = match kind {
                    // The reply to our own keepalive is ours; others go back.
                    msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
                        (live.of(from.side).replies.borrow_mut().reply(), None)
                    }
                    // Its reply will come on `to`, in the order sealed there.
                    msg::GLOBAL_REQUEST if wants_reply(message) => {
                        (verdict, Some(&live.of(to.side).replies))
                    }
                    _ => (verdict, None),
                };
                match verdict {
                    Verdict::Forward => {
                        let bytes = payload.len();
                        let forwarded = batch.forward(from, to, rx, start, len, payload, track);
                        if let Err(e) = forwarded.await {
                            break Err(e);
                        }
                        match from.side {
                            Side::Client => {
                                ctx.metrics.relayed_client_to_upstream(bytes);
                                audit.relayed_from_client(bytes);
                            }
                            Side::Upstream => {
                                ctx.metrics.relayed_upstream_to_client(bytes);
                                audit.relayed_to_client(bytes);
                            }
                        }
                    }
                    Verdict::Drop => {
                        debug!(msg = rx.data()[payload.start], from = %from.side, "dropped")
                    }
                    Verdict::RefuseGlobalRequest => {
                        let _ = from.transport.borrow_mut().send(&[msg::REQUEST_FAILURE]);
                        from_dirty = true;
                    }
                    Verdict::RefuseChannelOpen { recipient, why } => {
                        let failure = encode_open_failure(recipient, why);
                        let _ = from.transport.borrow_mut().send(&failure);
                        from_dirty = true;
                    }
                }
                rx.consume_keeping_position(len);
            }
        }
    };
    // Write what is sealed before anything else touches the buffer or `to`.
    let flushed = batch.write_segment(to, rx).await;
    drop(batch);
    // The relay has no use for transport events (KexDone, EXT_INFO, SERVICE_*): drop
    // them, or a peer could make them pile up.
    while from.transport.borrow_mut().poll_event().is_some() {}
    if data {
        live.last_data.set(live.of(from.side).heard.get());
    }
    if from_dirty || from.has_transmit() {
        from.flush().await?;
        from.changed.notify();
    }
    rx.settle();
    let need = result?;
    flushed?;
    Ok(need)
}

struct Batch<'a> {
    /// `to`'s writer, held while packets of this batch are sealed and written.
    permit: Option<Permit<'a>>,
    /// Sealed bytes in the receive buffer not yet written.
    segment: Option<Range<usize>>,
}

impl<'a> Batch<'a> {
    async fn write_segment(&mut self, to: &Leg, rx: &RxBuf) -> Result<(), LegError> {
        if let Some(seg) = self.segment.take() {
            to.write_all_locked(&rx.data()[seg]).await?;
        }
        Ok(())
    }

    /// `track`: the packet is a want-reply global request, recorded there once it is
    /// sealed for `to` (its reply's place among `to`'s replies).
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &mut self,
        from: &Leg,
        to: &'a Leg,
        rx: &mut RxBuf,
        start: usize,
        len: usize,
        payload: Range<usize>,
        track: Option<&RefCell<PendingReplies>>,
    ) -> Result<(), LegError> {
        let record = || match track {
            Some(replies) => replies
                .borrow_mut()
                .sent(Origin::Forwarded)
                .map_err(|_| LegError::Requests { side: from.side }),
            None => Ok(()),
        };
        debug_assert_eq!(payload.start, start + PAYLOAD_OFFSET);
        loop {
            if self.permit.is_none() {
                self.permit = Some(to.lock_writer().await);
            }
            if to.has_transmit() {
                // The other pump queued transport messages for `to`: they were sealed
                // before anything we seal now, so they go first.
                self.write_segment(to, rx).await?;
                to.flush_locked().await?;
            }
            // Decide with the transport borrowed, act (and await) after.
            let step = forward_step(
                &mut to.transport.borrow_mut(),
                rx.data_mut(),
                start,
                len,
                payload.clone(),
                from.awaited.get(),
            );
            let protocol = |source| LegError::Protocol {
                side: to.side,
                source,
            };
            if matches!(&step, Step::Sealed(Ok(_)) | Step::Queued(Ok(()))) {
                // Sealed (or queued in order) before any await: nothing else was sealed
                // for `to` in between.
                record()?;
            }
            match step {
                Step::Closed => return Err(LegError::Closed { side: to.side }),
                Step::Sealed(sealed) => {
                    let n = sealed.map_err(protocol)?;
                    match &mut self.segment {
                        Some(seg) if seg.end == start => seg.end = start + n,
                        _ => {
                            self.write_segment(to, rx).await?;
                            self.segment = Some(start..start + n);
                        }
                    }
                    return Ok(());
                }
                Step::Copy => {
                    self.write_segment(to, rx).await?;
                    let sent = to.transport.borrow_mut().send(&rx.data()[payload]);
                    sent.map_err(protocol)?;
                    record()?;
                    return to.flush_locked().await;
                }
                Step::Queued(sent) => return sent.map_err(protocol),
                Step::Overflow => return Err(LegError::Overflow { side: from.side }),
                Step::Wait => {
                    // (No await since the decision: the generations are those it saw.)
                    let (seen_to, seen_from) = (to.changed.generation(), from.changed.generation());
                    // Full: wait for `to` to finish its key exchange, without holding
                    // its writer; or for the other pump to wait on `from` (then queue
                    // on, see KEX_OVERLAP_FACTOR), which it announces on `from`.
                    self.write_segment(to, rx).await?;
                    self.permit = None;
                    to.awaited.set(true);
                    to.changed.notify();
                    futures_lite::future::or(
                        to.changed.changed_since(seen_to.wrapping_add(1)),
                        from.changed.changed_since(seen_from),
                    )
                    .await;
                    to.awaited.set(false);
                }
            }
        }
    }
}
