//! Errors of the transport, precise enough that one log line says who misbehaved and how.

use crate::msg::disconnect;
use crate::wire::WireError;

/// Why a connection ended or could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol; we send DISCONNECT with a matching reason code.
    #[error("peer misbehaved: {0}")]
    Peer(#[from] PeerMisbehaved),
    /// The peer sent DISCONNECT. `description` is escaped and cut (`crate::text`).
    #[error("peer disconnected (reason {reason}): \"{description}\"")]
    PeerDisconnected { reason: u32, description: String },
    /// No algorithm in common for one of the negotiated lists.
    #[error("no common {list} algorithm (ours: {ours}; theirs: {theirs})")]
    NoCommonAlgorithm {
        list: AlgorithmList,
        ours: String,
        theirs: String,
    },
    /// The server's host key was not the one we were told to expect.
    #[error("host key {fingerprint} is not the pinned key")]
    HostKeyMismatch { fingerprint: String },
    /// We refused to go on for a local reason (configuration, key problem).
    #[error("local error: {0}")]
    Local(String),
    /// The caller used the API out of order (a bug in the caller, never the peer).
    #[error("API misuse: {0}")]
    Misuse(&'static str),
}

/// The lists of a KEXINIT that are negotiated (RFC 4253 7.1), to name the one that had no
/// algorithm in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgorithmList {
    KeyExchange,
    HostKey,
    CipherClientToServer,
    CipherServerToClient,
    MacClientToServer,
    MacServerToClient,
    CompressionClientToServer,
    CompressionServerToClient,
}

impl AlgorithmList {
    /// The list's name in messages: "key exchange", "cipher (client to server)", ...
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmList::KeyExchange => "key exchange",
            AlgorithmList::HostKey => "host key",
            AlgorithmList::CipherClientToServer => "cipher (client to server)",
            AlgorithmList::CipherServerToClient => "cipher (server to client)",
            AlgorithmList::MacClientToServer => "MAC (client to server)",
            AlgorithmList::MacServerToClient => "MAC (server to client)",
            AlgorithmList::CompressionClientToServer => "compression (client to server)",
            AlgorithmList::CompressionServerToClient => "compression (server to client)",
        }
    }
}

impl std::fmt::Display for AlgorithmList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Ways the peer broke the protocol. Each names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    #[error("identification line is not SSH-2.0 ({0:?})")]
    BadVersion(String),
    #[error("identification line longer than 255 bytes")]
    VersionTooLong,
    #[error("too many lines before the identification line")]
    TooMuchPreamble,
    #[error("client sent lines before its identification line")]
    ClientPreamble,
    #[error("packet length {0} out of bounds")]
    PacketLength(u32),
    #[error("packet length {len} not a multiple of the cipher block size {block}")]
    BlockAlignment { len: u32, block: usize },
    #[error("padding length {padding} invalid for packet length {len}")]
    Padding { padding: u8, len: u32 },
    #[error("message authentication failed (bad MAC or tag)")]
    BadMac,
    #[error("empty packet payload")]
    EmptyPayload,
    #[error("malformed message {msg}: {err}")]
    Malformed { msg: u8, err: WireError },
    #[error("unexpected message {msg} while {state}")]
    Unexpected { msg: u8, state: &'static str },
    #[error("strict kex violated: message {msg} during the initial key exchange")]
    StrictKex { msg: u8 },
    #[error("key exchange signature did not verify: {0}")]
    BadKexSignature(String),
    #[error("invalid key exchange public value")]
    BadKexValue,
    /// RFC 4419: a request we cannot serve, or a group outside what we asked for.
    #[error("group exchange: {0}")]
    GroupExchange(String),
    #[error("host key algorithm {0} does not match the key we negotiated")]
    HostKeyAlgorithm(String),
    #[error("compression is not negotiated but {0} was forced")]
    Compression(String),
    #[error("sequence number wrapped during the initial key exchange")]
    SequenceWrap,
    #[error("peer requested unknown service {0:?}")]
    UnknownService(String),
}

impl Error {
    pub(crate) fn malformed(msg: u8) -> impl Fn(WireError) -> Error {
        move |err| Error::Peer(PeerMisbehaved::Malformed { msg, err })
    }

    /// The DISCONNECT reason code and description to send the peer, if any should be sent.
    pub fn disconnect_reason(&self) -> Option<(u32, String)> {
        use PeerMisbehaved as P;
        let code = match self {
            Error::PeerDisconnected { .. } | Error::Misuse(_) => return None,
            Error::Peer(P::BadMac) => disconnect::MAC_ERROR,
            Error::Peer(P::BadVersion(_)) => disconnect::PROTOCOL_VERSION_NOT_SUPPORTED,
            Error::Peer(P::UnknownService(_)) => disconnect::SERVICE_NOT_AVAILABLE,
            Error::Peer(
                P::BadKexSignature(_)
                | P::BadKexValue
                | P::GroupExchange(_)
                | P::HostKeyAlgorithm(_),
            ) => disconnect::KEY_EXCHANGE_FAILED,
            Error::Peer(_) => disconnect::PROTOCOL_ERROR,
            Error::NoCommonAlgorithm { .. } => disconnect::KEY_EXCHANGE_FAILED,
            Error::HostKeyMismatch { .. } => disconnect::HOST_KEY_NOT_VERIFIABLE,
            Error::Local(_) => disconnect::BY_APPLICATION,
        };
        Some((code, self.to_string()))
    }
}
