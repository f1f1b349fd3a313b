//! Sans-IO SSH transport for sshr, both roles.
//!
//! No sockets, no async runtime, no clock and no global RNG: bytes go in, bytes and
//! events come out, and time and randomness are passed in by the caller. The daemon
//! (`src/`) owns the sockets; tests wire two endpoints back to back in memory
//! (`protocol/tests/pair.rs`) or against a real OpenSSH (`protocol/tests/interop_openssh.rs`).
//!
//! # Where to start
//!
//! [`Transport`] is one connection, in the [`Role`] of client or server: feed it received
//! bytes with [`Transport::read`], which answers with an [`Input`]; write out what
//! [`Transport::transmit`] holds; take [`Event`]s from [`Transport::poll_event`]. Its
//! settings are a shared [`Config`] (and [`ClientOptions`] for a client); servers sign
//! with [`PrivateKey`]s, clients check the server's [`PublicKey`]. Everything that ends a
//! connection is an [`Error`]; [`PeerMisbehaved`] says which rule the peer broke.
//!
//! # The layers, bottom up
//!
//! * [`wire`]: SSH data types (RFC 4251 section 5); [`msg`]: message numbers.
//! * [`version`]: the identification lines; [`text`]: peer text made safe to log.
//! * [`cipher`]: packet protection for one direction; [`packet`]: framing around it.
//! * [`hostkey`]: keys and signatures; [`kex`]: KEXINIT, negotiation, key derivation.
//! * [`transport`]: the state machine that ties them together.
//! * [`auth`]: user authentication messages, for the layer above the transport.

// `unsafe` is denied rather than forbidden so that `wipe.rs`, the one module that needs
// it (to wipe a value's bytes after dropping it), can allow it for itself.
#![deny(unsafe_code)]

pub mod auth;
pub mod cipher;
pub mod crypto;
pub mod error;
pub mod hostkey;
pub mod kex;
pub mod msg;
pub mod packet;
pub mod text;
pub mod transport;
pub mod version;
mod wipe;
pub mod wire;

pub use error::{AlgorithmList, Error, PeerMisbehaved};
pub use hostkey::{KeyError, PrivateKey, PublicKey, SigAlg, VerifyError};
pub use transport::{ClientOptions, Config, Event, HostKeyCheck, Input, Role, Transport};
