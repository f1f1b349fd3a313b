//! Transports of `sshr-protocol` wired to each other in memory, with virtual time.
//!
//! An [`Endpoint`] is one transport with the bytes it has received and not yet read and
//! what it delivered (messages, events, the error that stopped it). [`transfer`] moves
//! one endpoint's output into another's input, [`exchange`] does one round of that both
//! ways with the reads, and [`until_quiet`] repeats any such round until nothing moves.
//! A [`Clock`] is the only time the endpoints see.
//!
//! [`Pair`] is the common case, a client and a server back to back. Longer chains (a
//! client, a proxy's two transports, an upstream) are endpoints and links of the same
//! kind, stepped by the caller in one [`until_quiet`] round:
//!
//! ```no_run
//! # use sshr_testsupport::pair::{exchange, until_quiet, Clock, Endpoint};
//! # fn chain(client: &mut Endpoint, proxy_srv: &mut Endpoint, proxy_cli: &mut Endpoint,
//! #          upstream: &mut Endpoint, clock: Clock) {
//! until_quiet(|| {
//!     let mut progress = exchange(client, proxy_srv, clock.now());
//!     // The proxy in the middle: what its server side delivered goes out of its client side.
//!     for payload in proxy_srv.got.drain(..) {
//!         proxy_cli.send(&payload);
//!         progress = true;
//!     }
//!     progress | exchange(proxy_cli, upstream, clock.now())
//! });
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use sshr_protocol::hostkey::PrivateKey;
use sshr_protocol::transport::{ClientOptions, Config, Event, HostKeyCheck, Input, Transport};
use sshr_protocol::Error;

/// Virtual time: starts at the real time of its creation and moves only when told.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            now: Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Move time forward by `by`; returns the new time.
    pub fn advance(&mut self, by: Duration) -> Instant {
        self.now += by;
        self.now
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One transport, the bytes it has received but not yet read, and what it delivered to
/// the layers above. Reading stops at the first error, which is kept in `error`.
///
/// `spent` is the real time taken by this endpoint's calls (those made through
/// [`Endpoint::timed`], [`Endpoint::run`], [`Endpoint::read_all`], [`Endpoint::send`] and
/// [`transfer`] from it), for benchmarks that charge each party its own work.
pub struct Endpoint {
    pub t: Transport,
    pub rx: Vec<u8>,
    /// Messages for the layers above, in order of arrival (each a copy of the payload).
    pub got: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    pub error: Option<Error>,
    pub spent: Duration,
}

impl Endpoint {
    pub fn new(t: Transport) -> Endpoint {
        Endpoint {
            t,
            rx: Vec::new(),
            got: Vec::new(),
            events: Vec::new(),
            error: None,
            spent: Duration::ZERO,
        }
    }

    /// An endpoint whose `spent` starts with the time `make` took to build its transport.
    pub fn timed(make: impl FnOnce() -> Transport) -> Endpoint {
        let t0 = Instant::now();
        let mut e = Endpoint::new(make());
        e.spent = t0.elapsed();
        e
    }

    /// Run `f` on this endpoint, charging its time to `spent`.
    pub fn run<R>(&mut self, f: impl FnOnce(&mut Endpoint) -> R) -> R {
        let t0 = Instant::now();
        let r = f(self);
        self.spent += t0.elapsed();
        r
    }

    /// Read everything readable at `now` and collect the events; returns whether
    /// anything happened.
    pub fn read_all(&mut self, now: Instant) -> bool {
        self.run(|e| {
            let mut progress = false;
            while e.error.is_none() && !e.rx.is_empty() {
                match e.t.read(&mut e.rx, now) {
                    Ok(Input::NeedMore(_)) => break,
                    Ok(Input::Consumed(n)) => {
                        e.rx.drain(..n);
                    }
                    Ok(Input::Packet { len, payload }) => {
                        e.got.push(e.rx[payload].to_vec());
                        e.rx.drain(..len);
                    }
                    Err(err) => e.error = Some(err),
                }
                progress = true;
            }
            while let Some(ev) = e.t.poll_event() {
                e.events.push(ev);
            }
            progress
        })
    }

    /// Queue a message; panics if the transport refuses it.
    pub fn send(&mut self, payload: &[u8]) {
        self.run(|e| e.t.send(payload))
            .unwrap_or_else(|err| panic!("send refused: {err:?}"));
    }

    /// The oldest message not taken yet; panics if there is none.
    pub fn take(&mut self) -> Vec<u8> {
        assert!(!self.got.is_empty(), "expected a message, none arrived");
        self.got.remove(0)
    }

    /// Everything the transport has to send, taken off it (to be tampered with, or
    /// handed over with [`Endpoint::deliver`]).
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = self.t.transmit().to_vec();
        self.t.advance_transmit(out.len());
        out
    }

    /// Append `bytes` to what this endpoint has received (read by the next
    /// [`Endpoint::read_all`]).
    pub fn deliver(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
    }

    /// Run the transport's timer if it is due at `now`.
    pub fn handle_timeout_if_due(&mut self, now: Instant) {
        if self.t.poll_timeout().is_some_and(|at| at <= now) {
            self.run(|e| e.t.handle_timeout(now));
        }
    }
}

/// Move what `from` has to send into `to`'s receive buffer (the copy is charged to
/// `from`); returns whether there was anything.
pub fn transfer(from: &mut Endpoint, to: &mut Endpoint) -> bool {
    from.run(|f| {
        let out = f.t.transmit();
        if out.is_empty() {
            return false;
        }
        to.rx.extend_from_slice(out);
        let n = out.len();
        f.t.advance_transmit(n);
        true
    })
}

/// One round on the link between `a` and `b`: bytes both ways, then both read at `now`.
/// Returns whether anything happened.
pub fn exchange(a: &mut Endpoint, b: &mut Endpoint, now: Instant) -> bool {
    let mut progress = transfer(a, b);
    progress |= transfer(b, a);
    progress |= a.read_all(now);
    progress |= b.read_all(now);
    progress
}

/// Repeat `round` until it reports no progress; panics if that does not happen within
/// 10 000 rounds.
pub fn until_quiet(mut round: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if !round() {
            return;
        }
    }
    panic!("the endpoints did not settle");
}

/// A client and a server transport back to back.
pub struct Pair {
    pub client: Endpoint,
    pub server: Endpoint,
    pub clock: Clock,
}

impl Pair {
    pub fn new(client: Transport, server: Transport, clock: Clock) -> Pair {
        Pair {
            client: Endpoint::new(client),
            server: Endpoint::new(server),
            clock,
        }
    }

    /// A pair from configurations, with fixed seeds (`[1; 32]` for the client, `[2; 32]`
    /// for the server) so that runs are reproducible.
    pub fn with_configs(
        client_config: Config,
        server_config: Config,
        host_keys: Arc<[PrivateKey]>,
        check: HostKeyCheck,
    ) -> Pair {
        let clock = Clock::new();
        let client = Transport::client(
            Arc::new(client_config),
            ClientOptions {
                host_key_check: check,
                prefer_cipher: None,
                prefer_mac: None,
            },
            [1; 32],
            clock.now(),
        );
        let server = Transport::server(Arc::new(server_config), host_keys, [2; 32], clock.now());
        Pair::new(client, server, clock)
    }

    /// Move bytes both ways until nothing changes.
    pub fn drive(&mut self) {
        let now = self.clock.now();
        until_quiet(|| exchange(&mut self.client, &mut self.server, now));
    }

    /// Drive, then panic with both sides' errors unless both are established.
    pub fn handshake(&mut self) {
        self.drive();
        assert!(
            self.established(),
            "handshake failed: client {:?}, server {:?}",
            self.client.error,
            self.server.error
        );
    }

    pub fn established(&self) -> bool {
        self.client.t.is_established() && self.server.t.is_established()
    }

    /// Move the clock forward and run the timers that are due (drive to see their
    /// effect).
    pub fn advance(&mut self, by: Duration) {
        let now = self.clock.advance(by);
        self.client.handle_timeout_if_due(now);
        self.server.handle_timeout_if_due(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_past_the_rekey_interval_rekeys() {
        let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng);
        let mut pair = Pair::with_configs(
            Config::default(),
            Config::default(),
            Arc::from(vec![key]),
            HostKeyCheck::AcceptAny,
        );
        pair.handshake();
        pair.advance(Duration::from_secs(60));
        pair.drive();
        assert_eq!(pair.server.t.kex_count(), 1);
        pair.advance(Config::default().rekey_interval);
        pair.drive();
        assert_eq!(pair.client.t.kex_count(), 2);
        assert_eq!(pair.server.t.kex_count(), 2);
        assert!(pair.client.error.is_none() && pair.server.error.is_none());
    }
}
