//! The SSH transport layer (RFC 4253) as a sans-IO state machine, for both roles.
//!
//! The caller owns the socket and the receive buffer:
//!
//! * [`Transport::read`] takes the received bytes (starting at a packet boundary),
//!   decrypts one packet in place and either handles it (version exchange, key exchange,
//!   ignore/debug, service request, ext-info) or hands the payload's range back for the
//!   layers above (user auth, connection protocol).
//! * Bytes the transport wants sent wait in [`Transport::transmit`]; the caller writes
//!   them and calls [`Transport::advance_transmit`].
//! * Application messages go out through [`Transport::send`] (copied, queued during a key
//!   exchange) or, on the relay's hot path, [`Transport::seal_in_place`] (no copy).
//! * Time comes in as `now` arguments; a deadline for the time-based rekey is given by
//!   [`Transport::poll_timeout`]. Randomness comes from a seed given at construction.
//!
//! Rekeying is started by either side at any time, or automatically after
//! [`Config::rekey_bytes`] or [`Config::rekey_interval`]. While our side is in a key
//! exchange, application payloads given to `send` are queued and sent after NEWKEYS in
//! order; `seal_in_place` refuses (check [`Transport::can_seal`]) so that the caller
//! applies backpressure instead.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::cipher::{CipherAlg, MacAlg, PacketCipher};
use crate::crypto::dh::Group;
use crate::crypto::{CryptoProvider, Digest};
use crate::error::{Error, PeerMisbehaved};
use crate::hostkey::{PrivateKey, PublicKey, SigAlg};
use crate::kex::{
    self, ClientKex, ExchangeHashInput, GexRequest, KexAlg, KexInit, Negotiated, Proposal,
};
use crate::msg;
use crate::packet::{Opened, Opener, Sealer};
use crate::version::{Parsed, VersionParser};
use crate::wire::{self, Reader};

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Settings shared by many connections.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our identification line, without CR LF.
    pub version: String,
    /// Where the ciphers, key agreements and hashes come from.
    pub provider: &'static CryptoProvider,
    pub kex: Vec<KexAlg>,
    pub ciphers: Vec<CipherAlg>,
    pub macs: Vec<MacAlg>,
    /// Client: host key algorithms we accept, in preference order.
    pub host_key_algs: Vec<SigAlg>,
    /// Server: signature algorithms announced in `server-sig-algs` (RFC 8308 3.1).
    pub server_sig_algs: Vec<SigAlg>,
    /// Offer strict kex (OpenSSH PROTOCOL 1.10, CVE-2023-48795).
    pub strict_kex: bool,
    /// Rekey after this many bytes in either direction since the last key exchange.
    pub rekey_bytes: u64,
    /// Rekey after this much time since the last key exchange.
    pub rekey_interval: Duration,
    /// Client: the smallest RSA host key accepted, in bits (OpenSSH's `RequiredRSASize`).
    pub min_rsa_bits: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: concat!("SSH-2.0-sshr_", env!("CARGO_PKG_VERSION")).to_owned(),
            provider: crate::crypto::default_provider(),
            kex: KexAlg::ALL.to_vec(),
            ciphers: CipherAlg::ALL.to_vec(),
            macs: MacAlg::ALL.to_vec(),
            host_key_algs: SigAlg::ALL.to_vec(),
            server_sig_algs: SigAlg::ALL.to_vec(),
            strict_kex: true,
            rekey_bytes: 1 << 30,
            rekey_interval: Duration::from_secs(3600),
            min_rsa_bits: crate::hostkey::MIN_RSA_BITS,
        }
    }
}

/// How a client checks the server's host key (the signature is always verified).
#[derive(Clone, Debug, Default)]
pub enum HostKeyCheck {
    /// Accept any key; the caller sees it in [`Event::HostKey`] and may log it.
    #[default]
    AcceptAny,
    /// Refuse any key but these.
    Pinned(Vec<PublicKey>),
}

/// Per-connection options of the client role.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    pub host_key_check: HostKeyCheck,
    /// Put this cipher first in our proposal (the proxy asks the upstream for the cipher
    /// the client leg negotiated, so that packets can be re-sealed in place).
    pub prefer_cipher: Option<CipherAlg>,
    /// Likewise for the MAC (used with non-AEAD ciphers).
    pub prefer_mac: Option<MacAlg>,
}

/// Things the caller may want to know about, from [`Transport::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Client role: the server's host key, verified against the exchange hash and the
    /// [`HostKeyCheck`], once per connection (rekeys must present the same key).
    HostKey(PublicKey),
    /// A key exchange finished; `first` is the initial one.
    KexDone { first: bool, algorithms: Negotiated },
    /// The peer sent SSH_MSG_EXT_INFO (RFC 8308).
    ExtInfo(ExtInfo),
    /// Server role: the client asked for a service and we accepted it.
    /// Client role: the server accepted our service request.
    ServiceAccepted(String),
}

/// Extensions the peer announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtInfo {
    pub server_sig_algs: Option<Vec<String>>,
    /// Every extension as (name, value), for the caller's curiosity.
    pub all: Vec<(String, Vec<u8>)>,
}

/// What [`Transport::read`] did with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The buffer must hold at least this many bytes before anything can be done.
    NeedMore(usize),
    /// The first `n` bytes were handled by the transport; drop them.
    Consumed(usize),
    /// A message for the layers above: the packet took `len` bytes, its payload
    /// (message number first, decrypted in place) is at `payload`.
    Packet { len: usize, payload: Range<usize> },
}

/// Where a key exchange stands (RFC 4253 section 7).
///
/// Single round trip (ECDH, the hybrid methods, DH in a fixed group; messages 30 and 31):
/// * server: `KexInitSent`, `AwaitingEcdhInit`, `AwaitingNewKeys`, `Idle`;
/// * client: `KexInitSent`, `AwaitingEcdhReply`, `AwaitingNewKeys`, `Idle`.
///
/// Group exchange (RFC 4419; messages 34, 31, 32, 33):
/// * server: `KexInitSent`, `AwaitingGexRequest`, `AwaitingGexInit`, `AwaitingNewKeys`,
///   `Idle`;
/// * client: `KexInitSent`, `AwaitingGexGroup`, `AwaitingGexReply`, `AwaitingNewKeys`,
///   `Idle`.
///
/// A KEXINIT from the peer while `Idle` (the peer starts a rekey) sends ours first and
/// goes on as from `KexInitSent`. The first key exchange starts at construction.
enum KexState {
    /// No key exchange in progress.
    Idle,
    /// Our KEXINIT is out; the peer's is not in.
    KexInitSent {
        /// Our KEXINIT payload.
        ours: Vec<u8>,
    },
    /// Server: both KEXINITs are in; waiting for the client's KEX_ECDH_INIT (or KEXDH_INIT).
    AwaitingEcdhInit(Agreement),
    /// Client: both KEXINITs are in and our KEX_ECDH_INIT is out; waiting for the reply.
    AwaitingEcdhReply {
        agreement: Agreement,
        /// Our ephemeral keys and Q_C.
        client: ClientKex,
    },
    /// Server, group exchange: both KEXINITs are in; waiting for KEX_DH_GEX_REQUEST.
    AwaitingGexRequest(Agreement),
    /// Server, group exchange: our KEX_DH_GEX_GROUP is out; waiting for KEX_DH_GEX_INIT.
    AwaitingGexInit {
        agreement: Agreement,
        /// The sizes the client asked for (they go into the exchange hash).
        request: GexRequest,
        group: &'static Group,
    },
    /// Client, group exchange: our KEX_DH_GEX_REQUEST is out; waiting for the group.
    AwaitingGexGroup {
        agreement: Agreement,
        request: GexRequest,
    },
    /// Client, group exchange: our KEX_DH_GEX_INIT is out; waiting for KEX_DH_GEX_REPLY.
    AwaitingGexReply {
        agreement: Agreement,
        request: GexRequest,
        /// The group the server chose.
        group: Group,
        /// Our ephemeral key and e.
        client: ClientKex,
    },
    /// Our NEWKEYS is out, so application messages may flow again; the peer's NEWKEYS
    /// switches the receiving direction to `incoming`.
    AwaitingNewKeys {
        agreed: Negotiated,
        incoming: PacketCipher,
    },
}

/// Both KEXINITs of a key exchange and what they agree on.
struct Agreement {
    /// Our KEXINIT payload (I_C or I_S in the exchange hash).
    ours: Vec<u8>,
    /// The peer's KEXINIT payload.
    theirs: Vec<u8>,
    agreed: Negotiated,
    /// The peer guessed the algorithms wrong: drop its next key exchange packet
    /// (RFC 4253 section 7).
    ignore_guessed_packet: bool,
}

impl KexState {
    /// Whether the peer's KEXINIT of the current key exchange is in.
    fn peer_kexinit_in(&self) -> bool {
        !matches!(self, KexState::Idle | KexState::KexInitSent { .. })
    }

    /// Both KEXINITs, while the method's messages are being exchanged.
    fn agreement_mut(&mut self) -> Option<&mut Agreement> {
        match self {
            KexState::AwaitingEcdhInit(agreement)
            | KexState::AwaitingGexRequest(agreement)
            | KexState::AwaitingEcdhReply { agreement, .. }
            | KexState::AwaitingGexInit { agreement, .. }
            | KexState::AwaitingGexGroup { agreement, .. }
            | KexState::AwaitingGexReply { agreement, .. } => Some(agreement),
            KexState::Idle | KexState::KexInitSent { .. } | KexState::AwaitingNewKeys { .. } => {
                None
            }
        }
    }

    /// Whether our sending side is free for application messages: no key exchange, or
    /// our NEWKEYS is out.
    fn lets_us_send(&self) -> bool {
        matches!(self, KexState::Idle | KexState::AwaitingNewKeys { .. })
    }

    #[cfg(test)]
    fn name(&self) -> &'static str {
        match self {
            KexState::Idle => "Idle",
            KexState::KexInitSent { .. } => "KexInitSent",
            KexState::AwaitingEcdhInit(_) => "AwaitingEcdhInit",
            KexState::AwaitingEcdhReply { .. } => "AwaitingEcdhReply",
            KexState::AwaitingGexRequest(_) => "AwaitingGexRequest",
            KexState::AwaitingGexInit { .. } => "AwaitingGexInit",
            KexState::AwaitingGexGroup { .. } => "AwaitingGexGroup",
            KexState::AwaitingGexReply { .. } => "AwaitingGexReply",
            KexState::AwaitingNewKeys { .. } => "AwaitingNewKeys",
        }
    }
}

/// How far the connection's first key exchange has come, and what it settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keying {
    /// The peer's first KEXINIT is not in yet. `early_packet`: another packet came
    /// first, which strict kex forbids (known only once that KEXINIT is in).
    BeforePeerKexInit { early_packet: bool },
    /// The first key exchange is under way. The peer's KEXINIT settled whether strict
    /// kex is on (OpenSSH `PROTOCOL`, CVE-2023-48795) and whether we, the server, send
    /// EXT_INFO after our first NEWKEYS (RFC 8308 section 2.4).
    FirstKex { strict: bool, send_ext_info: bool },
    /// The first key exchange is done: user authentication may start.
    Established { strict: bool },
}

impl Keying {
    fn strict(self) -> bool {
        match self {
            Keying::BeforePeerKexInit { .. } => false,
            Keying::FirstKex { strict, .. } | Keying::Established { strict } => strict,
        }
    }
}

enum Phase {
    /// Waiting for the peer's identification line.
    Version(VersionParser),
    Packets,
    Closed,
}

/// One SSH transport connection, either role.
pub struct Transport {
    role: Role,
    config: Arc<Config>,
    host_keys: Arc<[PrivateKey]>,
    client: ClientOptions,
    rng: ChaCha20Rng,
    phase: Phase,
    peer_version: Option<String>,
    opener: Opener,
    sealer: Sealer,
    tx: Vec<u8>,
    tx_sent: usize,
    kex: KexState,
    keying: Keying,
    session_id: Option<Digest>,
    host_key: Option<PublicKey>,
    negotiated: Option<Negotiated>,
    events: VecDeque<Event>,
    /// Payloads given to `send` while our side is in a key exchange.
    queued: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    bytes_since_kex: u64,
    packets_since_kex: u64,
    rekey_at: Option<Instant>,
    kex_count: u64,
}

/// Rekey after this many packets whatever the byte count, well before any nonce or
/// sequence number could repeat.
const REKEY_PACKETS: u64 = 1 << 31;
/// Payloads queued during a key exchange before `send` refuses more. A hard limit:
/// callers that can wait instead stop earlier, at their own limit on
/// [`Transport::queued_messages`] and [`Transport::queued_bytes`].
pub const MAX_QUEUED: usize = 8192;

impl Transport {
    /// A server-side transport. `host_keys` must not be empty; they are shared by every
    /// connection of the process.
    pub fn server(
        config: Arc<Config>,
        host_keys: Arc<[PrivateKey]>,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let mut t = Self::new(
            Role::Server,
            config,
            host_keys,
            ClientOptions::default(),
            seed,
            now,
        );
        t.begin();
        t
    }

    /// A client-side transport.
    pub fn client(
        config: Arc<Config>,
        options: ClientOptions,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let mut t = Self::new(
            Role::Client,
            config,
            Arc::from(Vec::new()),
            options,
            seed,
            now,
        );
        t.begin();
        t
    }

    fn new(
        role: Role,
        config: Arc<Config>,
        host_keys: Arc<[PrivateKey]>,
        client: ClientOptions,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let rekey_at = Some(now + config.rekey_interval);
        Self {
            role,
            config,
            host_keys,
            client,
            rng: ChaCha20Rng::from_seed(seed),
            phase: Phase::Version(VersionParser::new(role == Role::Client)),
            peer_version: None,
            opener: Opener::new(),
            sealer: Sealer::new(),
            tx: Vec::new(),
            tx_sent: 0,
            kex: KexState::Idle,
            keying: Keying::BeforePeerKexInit {
                early_packet: false,
            },
            session_id: None,
            host_key: None,
            negotiated: None,
            events: VecDeque::new(),
            queued: VecDeque::new(),
            queued_bytes: 0,
            bytes_since_kex: 0,
            packets_since_kex: 0,
            rekey_at,
            kex_count: 0,
        }
    }

    /// Our identification line and KEXINIT go out at once: sending KEXINIT without
    /// waiting for the peer's version saves a round trip (RFC 4253 7.1 allows it).
    fn begin(&mut self) {
        self.tx.extend_from_slice(self.config.version.as_bytes());
        self.tx.extend_from_slice(b"\r\n");
        self.start_kex();
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's identification line, once received.
    pub fn peer_version(&self) -> Option<&str> {
        self.peer_version.as_deref()
    }

    /// Our identification line.
    pub fn our_version(&self) -> &str {
        &self.config.version
    }

    /// The crypto provider this connection uses (its configuration's).
    pub fn provider(&self) -> &'static CryptoProvider {
        self.config.provider
    }

    /// H of the first key exchange, once done.
    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_ref().map(|s| s.as_ref())
    }

    /// The initial key exchange is done: user authentication may start.
    pub fn is_established(&self) -> bool {
        matches!(self.keying, Keying::Established { .. })
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn kex_in_progress(&self) -> bool {
        !matches!(self.kex, KexState::Idle)
    }

    /// Whether strict kex was negotiated.
    pub fn strict_kex(&self) -> bool {
        self.keying.strict()
    }

    /// Number of completed key exchanges.
    pub fn kex_count(&self) -> u64 {
        self.kex_count
    }

    /// The algorithms of the last completed key exchange.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }

    /// The server's host key (client role), once verified.
    pub fn host_key(&self) -> Option<&PublicKey> {
        self.host_key.as_ref()
    }

    /// The packet layer of the sending direction (for padding and size arithmetic).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The packet layer of the receiving direction.
    pub fn opener(&self) -> &Opener {
        &self.opener
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written to the peer, in order.
    pub fn transmit(&self) -> &[u8] {
        &self.tx[self.tx_sent..]
    }

    /// `n` bytes of [`Self::transmit`] were written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.tx_sent = (self.tx_sent + n).min(self.tx.len());
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
            // Idle sessions must stay small: give back what a burst grew.
            if self.tx.capacity() > 16 * 1024 {
                self.tx.shrink_to(1024);
            }
        }
    }

    /// Take the pending transmit bytes out without copying, leaving `spare` (cleared) in
    /// their place; hand the returned buffer back as `spare` next time to reuse it.
    pub fn take_transmit(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let mut out = std::mem::replace(&mut self.tx, spare);
        if self.tx_sent > 0 {
            out.drain(..self.tx_sent);
            self.tx_sent = 0;
        }
        out
    }

    /// Give back the memory of the send buffer when nothing waits in it, and of the
    /// event and key-exchange queues when they are empty: a connection that goes quiet
    /// after its handshake then holds none of what the handshake's large messages grew.
    /// The next packet allocates again.
    pub fn release_buffers(&mut self) {
        if self.tx_sent == self.tx.len() {
            self.tx = Vec::new();
            self.tx_sent = 0;
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.queued.is_empty() {
            self.queued = VecDeque::new();
        }
    }

    /// Bytes of application payloads waiting for a key exchange to end.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Application payloads waiting for a key exchange to end.
    pub fn queued_messages(&self) -> usize {
        self.queued.len()
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_established() && !self.kex_in_progress() {
            self.rekey_at
        } else {
            None
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.rekey_at.is_some_and(|at| now >= at) {
            self.rekey();
        }
    }

    /// Start a key exchange now (if none is in progress and the first one is done).
    pub fn rekey(&mut self) {
        if self.is_established() && !self.kex_in_progress() && !self.is_closed() {
            self.start_kex();
        }
    }

    /// Whether [`Self::seal_in_place`] may be called: no key exchange holds our sending
    /// side, and nothing sealed earlier is still waiting in [`Self::transmit`] or the
    /// queue (so a packet sealed now is also the next one written).
    pub fn can_seal(&self) -> bool {
        self.is_established()
            && self.kex.lets_us_send()
            && self.queued.is_empty()
            && self.tx_sent == self.tx.len()
            && !self.is_closed()
    }

    /// Seal an application packet in place: its payload is at
    /// `buf[PAYLOAD_OFFSET..][..payload_len]`, `padding` is valid for the sending
    /// direction ([`Sealer::padding_valid`]) and the last `fresh_padding` padding bytes get
    /// random values. Returns the packet's length on the wire. The caller must write it
    /// before anything the transport queues later.
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        payload_len: usize,
        padding: usize,
        fresh_padding: usize,
    ) -> Result<usize, Error> {
        if !self.can_seal() {
            return Err(Error::Misuse(
                "seal_in_place while the transport cannot send",
            ));
        }
        if !self.sealer.padding_valid(payload_len, padding) {
            return Err(Error::Misuse("invalid padding"));
        }
        let n = self
            .sealer
            .seal(buf, payload_len, padding, fresh_padding, &mut self.rng);
        self.count(n);
        Ok(n)
    }

    /// Send an application message (user auth or connection layer). Queued while our
    /// side is in a key exchange.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Misuse("send on a closed transport"));
        }
        if payload.is_empty() || payload.len() > crate::packet::MAX_PAYLOAD_LEN {
            return Err(Error::Misuse("payload size out of bounds"));
        }
        if !self.is_established() || !self.kex.lets_us_send() || !self.queued.is_empty() {
            if self.queued.len() >= MAX_QUEUED {
                return Err(Error::Misuse(
                    "too many messages queued during key exchange",
                ));
            }
            self.queued_bytes += payload.len();
            self.queued.push_back(payload.to_vec());
            return Ok(());
        }
        let before = self.tx.len();
        self.queue_packet(payload);
        self.count(self.tx.len() - before);
        Ok(())
    }

    /// Client: ask for a service (normally "ssh-userauth").
    pub fn request_service(&mut self, name: &str) -> Result<(), Error> {
        let mut p = vec![msg::SERVICE_REQUEST];
        wire::put_string(&mut p, name.as_bytes());
        self.send(&p)
    }

    /// Close without sending anything (the connection can no longer carry a packet).
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
    }

    /// Queue SSH_MSG_DISCONNECT and close. The caller flushes [`Self::transmit`].
    pub fn disconnect(&mut self, reason: u32, description: &str) {
        if self.is_closed() {
            return;
        }
        // Our identification line always went (or goes) out first, so a DISCONNECT
        // packet is meaningful to the peer even during the version exchange.
        let mut p = vec![msg::DISCONNECT];
        wire::put_u32(&mut p, reason);
        wire::put_string(&mut p, description.as_bytes());
        wire::put_string(&mut p, b"");
        self.queue_packet(&p);
        self.phase = Phase::Closed;
    }

    /// Process the bytes at the start of `buf` (see [`Input`]). On error, a DISCONNECT
    /// with the reason is queued (when one should be sent) and the transport is closed:
    /// flush [`Self::transmit`] and drop the connection.
    pub fn read(&mut self, buf: &mut [u8], now: Instant) -> Result<Input, Error> {
        let r = self.read_inner(buf, now);
        if let Err(e) = &r {
            match e.disconnect_reason() {
                Some((code, text)) => self.disconnect(code, &text),
                None => self.phase = Phase::Closed,
            }
        }
        r
    }

    fn read_inner(&mut self, buf: &mut [u8], now: Instant) -> Result<Input, Error> {
        match &mut self.phase {
            Phase::Closed => Err(Error::Misuse("read on a closed transport")),
            Phase::Version(parser) => match parser.parse(buf)? {
                Parsed::NeedMore => Ok(Input::NeedMore(buf.len() + 1)),
                Parsed::Preamble { consumed } => Ok(Input::Consumed(consumed)),
                Parsed::Version { line, consumed } => {
                    self.peer_version = Some(line);
                    self.phase = Phase::Packets;
                    Ok(Input::Consumed(consumed))
                }
            },
            Phase::Packets => match self.opener.open(buf)? {
                Opened::NeedMore(n) => Ok(Input::NeedMore(n)),
                Opened::Packet { len, payload } => {
                    self.count(len);
                    if self.handle_packet(&buf[payload.clone()], now)? {
                        Ok(Input::Packet { len, payload })
                    } else {
                        Ok(Input::Consumed(len))
                    }
                }
            },
        }
    }

    fn count(&mut self, bytes: usize) {
        self.bytes_since_kex += bytes as u64;
        self.packets_since_kex += 1;
        if (self.bytes_since_kex >= self.config.rekey_bytes
            || self.packets_since_kex >= REKEY_PACKETS)
            && self.is_established()
            && !self.kex_in_progress()
            && !self.is_closed()
        {
            self.start_kex();
        }
    }

    /// Seal a payload into the transmit buffer.
    fn queue_packet(&mut self, payload: &[u8]) {
        self.sealer.seal_into(&mut self.tx, payload, &mut self.rng);
    }

    fn proposal(&self) -> Proposal {
        let mut kex: Vec<&'static str> = self.config.kex.iter().map(|k| k.name()).collect();
        let host_key = match self.role {
            Role::Server => {
                let mut algs: Vec<&'static str> = Vec::new();
                for key in self.host_keys.iter() {
                    for alg in key.sig_algs() {
                        if !algs.contains(&alg.name()) {
                            algs.push(alg.name());
                        }
                    }
                }
                algs
            }
            Role::Client => {
                let mut algs: Vec<SigAlg> = self.config.host_key_algs.clone();
                // With a pinned key, ask for its type first so that a server with several
                // host keys presents the one we know (as OpenSSH does with known_hosts).
                if let HostKeyCheck::Pinned(keys) = &self.client.host_key_check {
                    algs.sort_by_key(|a| !keys.iter().any(|k| k.accepts(*a)));
                }
                algs.iter().map(|a| a.name()).collect()
            }
        };
        if !self.is_established() {
            match self.role {
                Role::Client => {
                    kex.push(kex::EXT_INFO_C);
                    if self.config.strict_kex {
                        kex.push(kex::STRICT_KEX_C);
                    }
                }
                Role::Server => {
                    if self.config.strict_kex {
                        kex.push(kex::STRICT_KEX_S);
                    }
                }
            }
        }
        let mut ciphers: Vec<&'static str> = self.config.ciphers.iter().map(|c| c.name()).collect();
        if let Some(pref) = self.client.prefer_cipher {
            ciphers.sort_by_key(|c| *c != pref.name());
        }
        let mut macs: Vec<&'static str> = self.config.macs.iter().map(|m| m.name()).collect();
        if let Some(pref) = self.client.prefer_mac {
            macs.sort_by_key(|m| *m != pref.name());
        }
        Proposal {
            kex,
            host_key,
            ciphers,
            macs,
        }
    }

    /// Start a key exchange: send our KEXINIT.
    fn start_kex(&mut self) {
        let ours = self.send_kexinit();
        self.kex = KexState::KexInitSent { ours };
    }

    /// Queue our KEXINIT (RFC 4253 section 7.1); returns its payload.
    fn send_kexinit(&mut self) -> Vec<u8> {
        let mut cookie = [0u8; 16];
        self.rng.fill_bytes(&mut cookie);
        let ours = self.proposal().encode(cookie);
        self.queue_packet(&ours);
        ours
    }

    /// Returns whether the payload is for the caller.
    fn handle_packet(&mut self, payload: &[u8], now: Instant) -> Result<bool, Error> {
        let m = payload[0];
        let peer_in_kex = self.kex.peer_kexinit_in();
        if m == msg::DISCONNECT {
            let mut r = Reader::new(&payload[1..]);
            let reason = r.u32("reason code").map_err(Error::malformed(m))?;
            let description = r.utf8("description").unwrap_or("(not UTF-8)");
            return Err(Error::PeerDisconnected {
                reason,
                description: crate::text::printable(description, 256),
            });
        }
        match &mut self.keying {
            // Strict kex is known once the peer's KEXINIT is in; before that, remember
            // anything that came first and judge it then.
            Keying::BeforePeerKexInit { early_packet } if m != msg::KEXINIT => {
                *early_packet = true;
            }
            Keying::FirstKex { strict: true, .. } if !(20..=49).contains(&m) => {
                return Err(PeerMisbehaved::StrictKex { msg: m }.into());
            }
            _ => {}
        }
        match m {
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED => Ok(false),
            msg::KEXINIT => {
                self.on_kexinit(payload)?;
                Ok(false)
            }
            msg::NEWKEYS => {
                self.on_newkeys(now)?;
                Ok(false)
            }
            30..=49 => {
                self.on_kex_method(m, payload)?;
                Ok(false)
            }
            msg::SERVICE_REQUEST | msg::SERVICE_ACCEPT | msg::EXT_INFO
                if !self.is_established() || peer_in_kex =>
            {
                Err(PeerMisbehaved::Unexpected {
                    msg: m,
                    state: "in key exchange",
                }
                .into())
            }
            msg::SERVICE_REQUEST if self.role == Role::Server => {
                let name = Reader::new(&payload[1..])
                    .utf8("service name")
                    .map_err(Error::malformed(m))?;
                if name != "ssh-userauth" {
                    return Err(
                        PeerMisbehaved::UnknownService(crate::text::printable(name, 64)).into(),
                    );
                }
                let mut p = vec![msg::SERVICE_ACCEPT];
                wire::put_string(&mut p, name.as_bytes());
                self.send(&p)?;
                self.events
                    .push_back(Event::ServiceAccepted(name.to_owned()));
                Ok(false)
            }
            msg::SERVICE_ACCEPT if self.role == Role::Client => {
                let name = Reader::new(&payload[1..])
                    .utf8("service name")
                    .map_err(Error::malformed(m))?;
                self.events
                    .push_back(Event::ServiceAccepted(name.to_owned()));
                Ok(false)
            }
            msg::EXT_INFO => {
                let info = parse_ext_info(payload)?;
                self.events.push_back(Event::ExtInfo(info));
                Ok(false)
            }
            1..=49 => {
                // RFC 4253 11.4: answer unknown transport messages with UNIMPLEMENTED.
                let mut p = vec![msg::UNIMPLEMENTED];
                wire::put_u32(&mut p, self.opener.seq().wrapping_sub(1));
                self.send(&p)?;
                Ok(false)
            }
            _ if !self.is_established() || peer_in_kex => Err(PeerMisbehaved::Unexpected {
                msg: m,
                state: "in key exchange",
            }
            .into()),
            _ => Ok(true),
        }
    }

    fn on_kexinit(&mut self, payload: &[u8]) -> Result<(), Error> {
        let ours = match std::mem::replace(&mut self.kex, KexState::Idle) {
            // The peer starts a rekey: ours goes out first.
            KexState::Idle => self.send_kexinit(),
            KexState::KexInitSent { ours } => ours,
            in_progress => {
                self.kex = in_progress;
                return Err(PeerMisbehaved::Unexpected {
                    msg: msg::KEXINIT,
                    state: "in key exchange",
                }
                .into());
            }
        };
        let theirs = KexInit::parse(payload)?;
        let our_kexinit = KexInit::parse(&ours)?;
        let (client, server) = match self.role {
            Role::Client => (&our_kexinit, &theirs),
            Role::Server => (&theirs, &our_kexinit),
        };
        let agreed = kex::negotiate(client, server, self.role == Role::Client)?;
        if let Keying::BeforePeerKexInit { early_packet } = self.keying {
            let strict_name = match self.role {
                Role::Client => kex::STRICT_KEX_S,
                Role::Server => kex::STRICT_KEX_C,
            };
            let strict = self.config.strict_kex && theirs.kex.contains(strict_name);
            let send_ext_info = self.role == Role::Server && theirs.kex.contains(kex::EXT_INFO_C);
            self.keying = Keying::FirstKex {
                strict,
                send_ext_info,
            };
            if strict && early_packet {
                return Err(PeerMisbehaved::StrictKex { msg: msg::KEXINIT }.into());
            }
        }
        let agreement = Agreement {
            ignore_guessed_packet: kex::guess_was_wrong(&theirs, &our_kexinit),
            agreed,
            ours,
            theirs: payload.to_vec(),
        };
        let group_exchange = agreement.agreed.kex.is_group_exchange();
        self.kex = match (self.role, group_exchange) {
            (Role::Server, false) => KexState::AwaitingEcdhInit(agreement),
            (Role::Server, true) => KexState::AwaitingGexRequest(agreement),
            (Role::Client, false) => {
                let client =
                    ClientKex::start(agreement.agreed.kex, self.config.provider, &mut self.rng)?;
                let mut p = Vec::with_capacity(client.public().len() + 8);
                p.push(msg::KEX_ECDH_INIT);
                wire::put_string(&mut p, client.public());
                self.queue_packet(&p);
                KexState::AwaitingEcdhReply { agreement, client }
            }
            (Role::Client, true) => {
                let request = GexRequest::for_algorithms(&agreement.agreed);
                let mut p = vec![msg::KEX_DH_GEX_REQUEST];
                for n in [request.min, request.n, request.max] {
                    wire::put_u32(&mut p, n);
                }
                self.queue_packet(&p);
                KexState::AwaitingGexGroup { agreement, request }
            }
        };
        Ok(())
    }

    fn on_kex_method(&mut self, m: u8, payload: &[u8]) -> Result<(), Error> {
        let unexpected = || -> Error {
            PeerMisbehaved::Unexpected {
                msg: m,
                state: "not expecting this key exchange message",
            }
            .into()
        };
        match self.kex.agreement_mut() {
            Some(agreement) if agreement.ignore_guessed_packet => {
                agreement.ignore_guessed_packet = false;
                return Ok(());
            }
            Some(_) => {}
            None => return Err(unexpected()),
        }
        match (std::mem::replace(&mut self.kex, KexState::Idle), m) {
            (KexState::AwaitingEcdhInit(agreement), msg::KEX_ECDH_INIT) => {
                self.server_init(&agreement, None, payload)
            }
            (KexState::AwaitingEcdhReply { agreement, client }, msg::KEX_ECDH_REPLY) => {
                self.client_reply(&agreement, client, None, payload)
            }
            (KexState::AwaitingGexRequest(agreement), msg::KEX_DH_GEX_REQUEST) => {
                self.server_gex_request(agreement, payload)
            }
            (
                KexState::AwaitingGexInit {
                    agreement,
                    request,
                    group,
                },
                msg::KEX_DH_GEX_INIT,
            ) => self.server_init(&agreement, Some((request, group)), payload),
            (KexState::AwaitingGexGroup { agreement, request }, msg::KEX_DH_GEX_GROUP) => {
                self.client_gex_group(agreement, request, payload)
            }
            (
                KexState::AwaitingGexReply {
                    agreement,
                    request,
                    group,
                    client,
                },
                msg::KEX_DH_GEX_REPLY,
            ) => self.client_reply(&agreement, client, Some((request, &group)), payload),
            (state, _) => {
                self.kex = state;
                Err(unexpected())
            }
        }
    }

    /// Server, RFC 4419 3: answer KEX_DH_GEX_REQUEST with a group.
    fn server_gex_request(&mut self, agreement: Agreement, payload: &[u8]) -> Result<(), Error> {
        let mal = Error::malformed(msg::KEX_DH_GEX_REQUEST);
        let mut r = Reader::new(&payload[1..]);
        let request = GexRequest {
            min: r.u32("min").map_err(&mal)?,
            n: r.u32("n").map_err(&mal)?,
            max: r.u32("max").map_err(&mal)?,
        };
        r.finish().map_err(&mal)?;
        let group = request.choose_group()?;
        let mut p = Vec::with_capacity(group.prime().len() + 16);
        p.push(msg::KEX_DH_GEX_GROUP);
        wire::put_mpint_unsigned(&mut p, group.prime());
        wire::put_mpint_unsigned(&mut p, group.generator());
        self.queue_packet(&p);
        self.kex = KexState::AwaitingGexInit {
            agreement,
            request,
            group,
        };
        Ok(())
    }

    /// Client, RFC 4419 3: check the server's group, then send e.
    fn client_gex_group(
        &mut self,
        agreement: Agreement,
        request: GexRequest,
        payload: &[u8],
    ) -> Result<(), Error> {
        let mal = Error::malformed(msg::KEX_DH_GEX_GROUP);
        let mut r = Reader::new(&payload[1..]);
        let p = r.mpint("p").map_err(&mal)?;
        let g = r.mpint("g").map_err(&mal)?;
        r.finish().map_err(&mal)?;
        let group = Group::from_peer(p, g)
            .map_err(|e| PeerMisbehaved::GroupExchange(format!("the server's group: {e}")))?;
        if !(request.min..=request.max).contains(&group.bits()) {
            return Err(PeerMisbehaved::GroupExchange(format!(
                "the server's group has {} bits; we asked for {} to {}",
                group.bits(),
                request.min,
                request.max
            ))
            .into());
        }
        let client = ClientKex::start_in_group(agreement.agreed.kex, &group, &mut self.rng)?;
        let mut init = Vec::with_capacity(client.public().len() + 8);
        init.push(msg::KEX_DH_GEX_INIT);
        wire::put_string(&mut init, client.public());
        self.queue_packet(&init);
        self.kex = KexState::AwaitingGexReply {
            agreement,
            request,
            group,
            client,
        };
        Ok(())
    }

    /// Server: the client's value (KEX_ECDH_INIT's Q_C or e, or KEX_DH_GEX_INIT's e: one
    /// string or mpint, the same framing), then our reply with the exchange hash signed
    /// (K_S, our value, signature: the same layout for every method) and NEWKEYS.
    fn server_init(
        &mut self,
        agreement: &Agreement,
        group_exchange: Option<(GexRequest, &'static Group)>,
        payload: &[u8],
    ) -> Result<(), Error> {
        let mal = Error::malformed(payload[0]);
        let mut r = Reader::new(&payload[1..]);
        let q_c = r.string("Q_C").map_err(&mal)?;
        r.finish().map_err(&mal)?;
        let agreed = agreement.agreed;
        let provider = self.config.provider;
        let (reply, (q_s, k)) = match group_exchange {
            None => (
                msg::KEX_ECDH_REPLY,
                kex::method::server_respond(agreed.kex, provider, q_c, &mut self.rng)?,
            ),
            Some((_, group)) => (
                msg::KEX_DH_GEX_REPLY,
                kex::method::server_respond_in_group(group, q_c, &mut self.rng)?,
            ),
        };
        let host_keys = self.host_keys.clone();
        let key = host_keys
            .iter()
            .find(|k| k.sig_algs().contains(&agreed.host_key))
            .ok_or(Error::Misuse(
                "negotiated a host key algorithm we have no key for",
            ))?;
        let k_s = key.public().to_blob();
        let h = ExchangeHashInput {
            client_version: self.peer_version.as_deref().unwrap_or_default().as_bytes(),
            server_version: self.config.version.as_bytes(),
            client_kexinit: &agreement.theirs,
            server_kexinit: &agreement.ours,
            host_key_blob: &k_s,
            group_exchange,
            client_public: q_c,
            server_public: &q_s,
            shared_secret: &k,
        }
        .hash(provider, agreed.kex.hash());
        let sig = key
            .sign(provider, agreed.host_key, h.as_ref())
            .map_err(|e| Error::Local(format!("host key signature failed: {e}")))?;
        let mut p = Vec::with_capacity(k_s.len() + q_s.len() + sig.len() + 16);
        p.push(reply);
        wire::put_string(&mut p, &k_s);
        wire::put_string(&mut p, &q_s);
        wire::put_string(&mut p, &sig);
        self.queue_packet(&p);
        self.install_keys(&k, &h, agreed);
        Ok(())
    }

    /// Client: the server's reply (K_S, its value, signature; KEX_ECDH_REPLY or
    /// KEX_DH_GEX_REPLY): K, the exchange hash, the host key and its signature; then
    /// NEWKEYS.
    fn client_reply(
        &mut self,
        agreement: &Agreement,
        client: ClientKex,
        group_exchange: Option<(GexRequest, &Group)>,
        payload: &[u8],
    ) -> Result<(), Error> {
        let mal = Error::malformed(payload[0]);
        let mut r = Reader::new(&payload[1..]);
        let k_s = r.string("K_S").map_err(&mal)?;
        let q_s = r.string("Q_S").map_err(&mal)?;
        let sig = r.string("signature").map_err(&mal)?;
        r.finish().map_err(&mal)?;
        let agreed = agreement.agreed;
        let host_key = PublicKey::from_blob(k_s)
            .and_then(|key| key.check_rsa_size(self.config.min_rsa_bits).map(|()| key))
            .map_err(|e| PeerMisbehaved::BadKexSignature(format!("host key: {e}")))?;
        if !host_key.accepts(agreed.host_key) {
            return Err(
                PeerMisbehaved::HostKeyAlgorithm(host_key.algorithm_name().to_owned()).into(),
            );
        }
        let provider = self.config.provider;
        let q_c = client.public().to_vec();
        let k = client.finish(provider, q_s)?;
        let h = ExchangeHashInput {
            client_version: self.config.version.as_bytes(),
            server_version: self.peer_version.as_deref().unwrap_or_default().as_bytes(),
            client_kexinit: &agreement.ours,
            server_kexinit: &agreement.theirs,
            host_key_blob: k_s,
            group_exchange,
            client_public: &q_c,
            server_public: q_s,
            shared_secret: &k,
        }
        .hash(provider, agreed.kex.hash());
        host_key
            .verify(provider, Some(agreed.host_key), h.as_ref(), sig)
            .map_err(|e| PeerMisbehaved::BadKexSignature(e.to_string()))?;
        match &self.host_key {
            // A rekey must present the key the connection was authenticated with.
            Some(known) if *known != host_key => {
                return Err(Error::HostKeyMismatch {
                    fingerprint: host_key.fingerprint(),
                })
            }
            Some(_) => {}
            None => {
                if let HostKeyCheck::Pinned(keys) = &self.client.host_key_check {
                    if !keys.contains(&host_key) {
                        return Err(Error::HostKeyMismatch {
                            fingerprint: host_key.fingerprint(),
                        });
                    }
                }
                self.events.push_back(Event::HostKey(host_key.clone()));
                self.host_key = Some(host_key);
            }
        }
        self.install_keys(&k, &h, agreed);
        Ok(())
    }

    /// Derive both directions' keys (RFC 4253 7.2), send NEWKEYS and switch our sending
    /// side; the receiving side switches at the peer's NEWKEYS.
    fn install_keys(&mut self, k: &[u8], h: &Digest, agreed: Negotiated) {
        let session_id = *self.session_id.get_or_insert(*h);
        let provider = self.config.provider;
        let hash = agreed.kex.hash();
        let derive = |letter: u8, len: usize| {
            kex::derive_key(
                provider,
                hash,
                k,
                h.as_ref(),
                letter,
                session_id.as_ref(),
                len,
            )
        };
        let make = |cipher: CipherAlg, mac: Option<MacAlg>, iv: u8, key: u8, mac_key: u8| {
            let iv: Zeroizing<Vec<u8>> = derive(iv, cipher.iv_len());
            let key: Zeroizing<Vec<u8>> = derive(key, cipher.key_len());
            let mac_key: Zeroizing<Vec<u8>> = derive(mac_key, mac.map_or(0, |m| m.key_len()));
            PacketCipher::new(provider, cipher, mac, &key, &iv, &mac_key)
        };
        let c2s = make(agreed.cipher_c2s, agreed.mac_c2s, b'A', b'C', b'E');
        let s2c = make(agreed.cipher_s2c, agreed.mac_s2c, b'B', b'D', b'F');
        let (outgoing, incoming) = match self.role {
            Role::Client => (c2s, s2c),
            Role::Server => (s2c, c2s),
        };
        self.queue_packet(&[msg::NEWKEYS]);
        self.sealer.set_cipher(outgoing);
        if self.keying.strict() {
            self.sealer.reset_seq();
        }
        self.kex = KexState::AwaitingNewKeys { agreed, incoming };
        // RFC 8308 2.4: the server's EXT_INFO is the first packet after its NEWKEYS.
        if let Keying::FirstKex {
            send_ext_info: true,
            ..
        } = self.keying
        {
            let mut p = vec![msg::EXT_INFO];
            wire::put_u32(&mut p, 1);
            wire::put_string(&mut p, b"server-sig-algs");
            wire::put_name_list(&mut p, self.config.server_sig_algs.iter().map(|a| a.name()));
            self.queue_packet(&p);
        }
    }

    fn on_newkeys(&mut self, now: Instant) -> Result<(), Error> {
        let (agreed, incoming) = match std::mem::replace(&mut self.kex, KexState::Idle) {
            KexState::AwaitingNewKeys { agreed, incoming } => (agreed, incoming),
            state => {
                self.kex = state;
                return Err(PeerMisbehaved::Unexpected {
                    msg: msg::NEWKEYS,
                    state: "before the key exchange produced keys",
                }
                .into());
            }
        };
        self.opener.set_cipher(incoming);
        let strict = self.keying.strict();
        if strict {
            self.opener.reset_seq();
        }
        let first = !self.is_established();
        self.keying = Keying::Established { strict };
        self.kex_count += 1;
        self.bytes_since_kex = 0;
        self.packets_since_kex = 0;
        self.rekey_at = Some(now + self.config.rekey_interval);
        self.negotiated = Some(agreed);
        self.events.push_back(Event::KexDone {
            first,
            algorithms: agreed,
        });
        while let Some(p) = self.queued.pop_front() {
            self.queue_packet(&p);
        }
        self.queued_bytes = 0;
        Ok(())
    }
}

fn parse_ext_info(payload: &[u8]) -> Result<ExtInfo, Error> {
    let mal = Error::malformed(msg::EXT_INFO);
    let mut r = Reader::new(&payload[1..]);
    let n = r.u32("nr-extensions").map_err(&mal)?;
    let mut info = ExtInfo::default();
    for _ in 0..n.min(64) {
        let name = r.utf8("extension-name").map_err(&mal)?;
        let value = r.string("extension-value").map_err(&mal)?;
        if name == "server-sig-algs" {
            let list = Reader::new(&[&(value.len() as u32).to_be_bytes()[..], value].concat())
                .name_list("server-sig-algs")
                .map_err(&mal)?
                .iter()
                .map(str::to_owned)
                .collect();
            info.server_sig_algs = Some(list);
        }
        info.all.push((name.to_owned(), value.to_vec()));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Sealer;

    fn pair(now: Instant) -> (Transport, Transport) {
        pair_with(Config::default(), now)
    }

    fn pair_with(config: Config, now: Instant) -> (Transport, Transport) {
        let config = Arc::new(config);
        let host_keys: Arc<[PrivateKey]> = Arc::from(vec![PrivateKey::from_ed25519_seed(&[9; 32])]);
        let client = Transport::client(config.clone(), ClientOptions::default(), [1; 32], now);
        let server = Transport::server(config, host_keys, [2; 32], now);
        (client, server)
    }

    /// Hand everything `from` has to send to `to`, which must read it all.
    fn deliver(from: &mut Transport, to: &mut Transport, now: Instant) -> Result<(), Error> {
        let mut bytes = from.take_transmit(Vec::new());
        let mut at = 0;
        while at < bytes.len() {
            at += match to.read(&mut bytes[at..], now)? {
                Input::Consumed(n) | Input::Packet { len: n, .. } => n,
                Input::NeedMore(n) => panic!("a whole flight was sent, yet {n} bytes needed"),
            };
        }
        Ok(())
    }

    /// A plaintext packet, as either side sends before the first NEWKEYS.
    fn plaintext(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        Sealer::new().seal_into(&mut out, payload, &mut rng);
        out
    }

    fn states(c: &Transport, s: &Transport) -> (&'static str, &'static str) {
        (c.kex.name(), s.kex.name())
    }

    #[test]
    fn release_buffers_keeps_what_waits_to_be_sent() {
        let now = Instant::now();
        let (mut c, mut s) = pair(now);
        for _ in 0..2 {
            deliver(&mut c, &mut s, now).unwrap();
            deliver(&mut s, &mut c, now).unwrap();
        }
        deliver(&mut c, &mut s, now).unwrap();
        assert!(s.is_established() && s.can_seal());
        // A packet waits to be written: it stays.
        s.send(&[msg::IGNORE]).unwrap();
        let waiting = s.transmit().to_vec();
        assert!(!waiting.is_empty());
        s.release_buffers();
        assert_eq!(s.transmit(), &waiting[..]);
        // Half of it written: the rest stays.
        s.advance_transmit(10);
        s.release_buffers();
        assert_eq!(s.transmit(), &waiting[10..]);
        s.advance_transmit(waiting.len() - 10);
        assert!(s.tx.capacity() > 0, "cleared, not freed, by the write");
        s.release_buffers();
        assert_eq!(s.tx.capacity(), 0);
        // And the connection goes on.
        s.send(&[msg::IGNORE]).unwrap();
        assert!(!s.transmit().is_empty());
    }

    #[test]
    fn first_key_exchange_then_rekeys_from_either_side() {
        let now = Instant::now();
        let (mut c, mut s) = pair(now);
        assert_eq!(states(&c, &s), ("KexInitSent", "KexInitSent"));
        let before = Keying::BeforePeerKexInit {
            early_packet: false,
        };
        assert_eq!((c.keying, s.keying), (before, before));

        deliver(&mut c, &mut s, now).unwrap(); // version, KEXINIT
        assert_eq!(states(&c, &s), ("KexInitSent", "AwaitingEcdhInit"));
        assert_eq!(
            s.keying,
            Keying::FirstKex {
                strict: true,
                send_ext_info: true
            }
        );
        deliver(&mut s, &mut c, now).unwrap(); // version, KEXINIT
        assert_eq!(states(&c, &s), ("AwaitingEcdhReply", "AwaitingEcdhInit"));
        assert_eq!(
            c.keying,
            Keying::FirstKex {
                strict: true,
                send_ext_info: false
            }
        );
        // Application messages wait for the key exchange.
        c.send(&[msg::IGNORE]).unwrap();
        assert_eq!(c.queued_messages(), 1);
        assert!(!c.can_seal());

        deliver(&mut c, &mut s, now).unwrap(); // KEX_ECDH_INIT
        assert_eq!(states(&c, &s), ("AwaitingEcdhReply", "AwaitingNewKeys"));
        assert!(!s.is_established() && !s.can_seal());
        deliver(&mut s, &mut c, now).unwrap(); // KEX_ECDH_REPLY, NEWKEYS, EXT_INFO
        assert_eq!(states(&c, &s), ("Idle", "AwaitingNewKeys"));
        assert_eq!(c.keying, Keying::Established { strict: true });
        assert_eq!(c.queued_messages(), 0, "sent after NEWKEYS");
        deliver(&mut c, &mut s, now).unwrap(); // NEWKEYS, the queued message
        assert_eq!(states(&c, &s), ("Idle", "Idle"));
        assert_eq!(s.keying, Keying::Established { strict: true });
        assert_eq!(c.session_id(), s.session_id());
        assert!(c.can_seal() && s.can_seal());

        for client_starts in [true, false] {
            let (a, b) = if client_starts {
                (&mut c, &mut s)
            } else {
                (&mut s, &mut c)
            };
            a.rekey();
            assert_eq!((a.kex.name(), b.kex.name()), ("KexInitSent", "Idle"));
            assert!(!a.can_seal() && b.can_seal());
            // The peer answers a KEXINIT from Idle with its own.
            deliver(a, b, now).unwrap();
            assert!(b.kex.peer_kexinit_in());
            deliver(b, a, now).unwrap();
            deliver(a, b, now).unwrap();
            deliver(b, a, now).unwrap();
            deliver(a, b, now).unwrap();
            assert_eq!((a.kex.name(), b.kex.name()), ("Idle", "Idle"));
        }
        assert_eq!((c.kex_count(), s.kex_count()), (3, 3));
        assert_eq!(c.keying, Keying::Established { strict: true });
    }

    #[test]
    fn key_exchange_messages_out_of_order_are_refused() {
        let now = Instant::now();
        let unexpected = |msg, state| Err(Error::Peer(PeerMisbehaved::Unexpected { msg, state }));

        // NEWKEYS before any keys.
        let (mut c, mut s) = pair(now);
        deliver(&mut c, &mut s, now).unwrap();
        assert_eq!(
            s.read(&mut plaintext(&[msg::NEWKEYS]), now),
            unexpected(msg::NEWKEYS, "before the key exchange produced keys")
        );

        // A second KEXINIT in the same key exchange.
        let (mut c, mut s) = pair(now);
        let first_flight = c.transmit().to_vec();
        deliver(&mut c, &mut s, now).unwrap();
        let kexinit = &first_flight[c.our_version().len() + 2..];
        assert_eq!(
            s.read(&mut kexinit.to_vec(), now),
            unexpected(msg::KEXINIT, "in key exchange")
        );

        // Each side's ECDH message sent to the same side.
        let ecdh = |m| plaintext(&[m, 0, 0, 0, 0]);
        let (mut c, mut s) = pair(now);
        deliver(&mut c, &mut s, now).unwrap();
        assert_eq!(
            s.read(&mut ecdh(msg::KEX_ECDH_REPLY), now),
            unexpected(
                msg::KEX_ECDH_REPLY,
                "not expecting this key exchange message"
            )
        );
        let (mut c, mut s) = pair(now);
        deliver(&mut s, &mut c, now).unwrap();
        assert_eq!(c.kex.name(), "AwaitingEcdhReply");
        assert_eq!(
            c.read(&mut ecdh(msg::KEX_ECDH_INIT), now),
            unexpected(
                msg::KEX_ECDH_INIT,
                "not expecting this key exchange message"
            )
        );
    }

    /// aes128-gcm: the client asks for 3072 bits and gets RFC 3526 group 15 (fast enough
    /// for a debug build).
    fn group_exchange_pair(now: Instant) -> (Transport, Transport) {
        pair_with(
            Config {
                kex: vec![KexAlg::DhGroupExchangeSha256],
                ciphers: vec![CipherAlg::Aes128Gcm],
                ..Config::default()
            },
            now,
        )
    }

    #[test]
    fn group_exchange_takes_two_round_trips() {
        let now = Instant::now();
        let (mut c, mut s) = group_exchange_pair(now);
        deliver(&mut c, &mut s, now).unwrap(); // version, KEXINIT
        assert_eq!(states(&c, &s), ("KexInitSent", "AwaitingGexRequest"));
        deliver(&mut s, &mut c, now).unwrap(); // version, KEXINIT; the client asks
        assert_eq!(states(&c, &s), ("AwaitingGexGroup", "AwaitingGexRequest"));
        deliver(&mut c, &mut s, now).unwrap(); // KEX_DH_GEX_REQUEST
        assert_eq!(states(&c, &s), ("AwaitingGexGroup", "AwaitingGexInit"));
        match &s.kex {
            KexState::AwaitingGexInit { request, group, .. } => {
                assert_eq!((request.min, request.n, request.max), (2048, 3072, 8192));
                assert_eq!(group.bits(), 3072);
            }
            _ => unreachable!(),
        }
        deliver(&mut s, &mut c, now).unwrap(); // KEX_DH_GEX_GROUP
        assert_eq!(states(&c, &s), ("AwaitingGexReply", "AwaitingGexInit"));
        deliver(&mut c, &mut s, now).unwrap(); // KEX_DH_GEX_INIT
        assert_eq!(states(&c, &s), ("AwaitingGexReply", "AwaitingNewKeys"));
        deliver(&mut s, &mut c, now).unwrap(); // KEX_DH_GEX_REPLY, NEWKEYS, EXT_INFO
        deliver(&mut c, &mut s, now).unwrap(); // NEWKEYS
        assert_eq!(states(&c, &s), ("Idle", "Idle"));
        assert!(c.is_established() && s.is_established());
        assert_eq!(c.session_id(), s.session_id());
        assert_eq!(c.negotiated().unwrap().kex, KexAlg::DhGroupExchangeSha256);
    }

    #[test]
    fn group_exchange_refuses_what_it_cannot_use() {
        let now = Instant::now();
        let refused = |t: &Transport| {
            assert!(t.is_closed());
            // The DISCONNECT says why, as a key exchange failure.
            let out = t.transmit();
            assert!(!out.is_empty());
        };
        let gex_error = |r: Result<Input, Error>| match r {
            Err(Error::Peer(PeerMisbehaved::GroupExchange(why))) => why,
            other => panic!("{other:?}"),
        };

        // Server: sizes out of order.
        let (mut c, mut s) = group_exchange_pair(now);
        deliver(&mut c, &mut s, now).unwrap();
        let mut request = vec![msg::KEX_DH_GEX_REQUEST];
        for n in [4096u32, 2048, 8192] {
            wire::put_u32(&mut request, n);
        }
        let why = gex_error(s.read(&mut plaintext(&request), now));
        assert_eq!(why, "request min 4096 n 2048 max 8192: not min <= n <= max");
        refused(&s);
        assert_eq!(
            Error::Peer(PeerMisbehaved::GroupExchange(why))
                .disconnect_reason()
                .unwrap()
                .0,
            msg::disconnect::KEY_EXCHANGE_FAILED
        );

        // Client: groups outside what it asked for, or with a useless generator.
        let group = |p: &[u8], g: &[u8]| {
            let mut m = vec![msg::KEX_DH_GEX_GROUP];
            wire::put_mpint_unsigned(&mut m, p);
            wire::put_mpint_unsigned(&mut m, g);
            plaintext(&m)
        };
        let p1024 = {
            let mut p = vec![0xff; 128];
            p[127] = 0xfd;
            p
        };
        let p2048 = crate::crypto::dh::GROUP14.prime();
        for (mut packet, want) in [
            (
                group(&p1024, &[2]),
                "the server's group: p has 1024 bits, outside 2048..=8192",
            ),
            (
                group(p2048, &[1]),
                "the server's group: g is not between 2 and p - 2",
            ),
        ] {
            let (mut c, mut s) = group_exchange_pair(now);
            deliver(&mut s, &mut c, now).unwrap();
            assert_eq!(c.kex.name(), "AwaitingGexGroup");
            assert_eq!(gex_error(c.read(&mut packet, now)), want);
            refused(&c);
        }

        // Messages of the other flow, or out of turn.
        let (mut c, mut s) = group_exchange_pair(now);
        deliver(&mut c, &mut s, now).unwrap();
        assert_eq!(
            s.read(&mut plaintext(&[msg::KEX_ECDH_INIT, 0, 0, 0, 0]), now),
            Err(Error::Peer(PeerMisbehaved::Unexpected {
                msg: msg::KEX_ECDH_INIT,
                state: "not expecting this key exchange message"
            }))
        );
        let (mut c, mut s) = group_exchange_pair(now);
        deliver(&mut s, &mut c, now).unwrap();
        assert_eq!(
            c.read(&mut plaintext(&[msg::KEX_DH_GEX_REPLY, 0, 0, 0, 0]), now),
            Err(Error::Peer(PeerMisbehaved::Unexpected {
                msg: msg::KEX_DH_GEX_REPLY,
                state: "not expecting this key exchange message"
            }))
        );
    }

    #[test]
    fn strict_kex_remembers_a_packet_before_the_peer_kexinit() {
        let now = Instant::now();
        let (mut c, mut s) = pair(now);
        let mut flight = c.take_transmit(Vec::new());
        let version_len = c.our_version().len() + 2;
        let (version, kexinit) = flight.split_at_mut(version_len);
        assert!(matches!(s.read(version, now), Ok(Input::Consumed(_))));
        assert!(s
            .read(&mut plaintext(&[msg::IGNORE, 0, 0, 0, 0]), now)
            .is_ok());
        assert_eq!(s.keying, Keying::BeforePeerKexInit { early_packet: true });
        assert_eq!(
            s.read(kexinit, now),
            Err(Error::Peer(PeerMisbehaved::StrictKex { msg: msg::KEXINIT }))
        );
        assert!(s.is_closed());
    }
}
