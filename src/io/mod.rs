//! The I/O layer: sockets and buffers, and nothing about logins, users or
//! configuration files. It imports only [`crate::core`] values, [`crate::rt`] and
//! [`crate::metrics`].
//!
//! - [`net`]: outgoing TCP connections and name resolution.
//! - [`pool`]: the shard's relay buffers and the handshake memory budget.
//! - [`leg`]: one TCP stream with the SSH transport that runs over it.
//! - [`listener`]: SO_REUSEPORT listening sockets and the accept loop.
//! - [`proxy_protocol`]: the PROXY header a load balancer sends before the client's bytes.

pub mod leg;
pub mod listener;
pub mod net;
pub mod pool;
pub(crate) mod proxy_protocol;
