//! The proxy layer: what a session does, driven on a shard. It asks [`crate::core`]
//! for decisions and uses [`crate::io`] for sockets.
//!
//! - [`shard`]: the state the sessions of one shard share.
//! - [`gate`]: which accepted connections become sessions, and what the others are told.
//! - [`admission`], [`preauth`]: process-wide limits on unauthenticated connections and
//!   on upstream connections made for them.
//! - [`session`]: one client from its first byte to the relay.
//! - [`upstream`], [`warm`]: logging in to the user's server, and connections held
//!   ready for the next login.
//! - [`relay`], [`tunnel`]: packets between the two legs after the login, and the
//!   audit of `ssh -w` tunnels.

pub mod admission;
pub mod gate;
pub mod preauth;
pub mod relay;
pub mod session;
pub mod shard;
pub mod tunnel;
pub mod upstream;
pub mod warm;
