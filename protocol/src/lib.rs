//! Sans-IO SSH transport for sshr, both roles.
//!
//! No sockets, no async runtime, no clock and no global RNG: bytes go in, bytes and
//! events come out, and time and randomness are passed in by the caller. The daemon
//! (`src/`) owns the sockets; tests wire two endpoints back to back in memory.

// `unsafe` is denied rather than forbidden so that `wipe.rs`, the one module that needs
// it (to wipe a value's bytes after dropping it), can allow it for itself.
#![deny(unsafe_code)]

pub mod auth;
pub mod cipher;
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

pub use error::Error;
