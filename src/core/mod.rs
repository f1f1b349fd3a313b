//! Decisions without I/O: plain values, the time passed in, unit-tested without a
//! runtime. The session drivers feed them what happened and act on the answer.
//!
//! - [`attempts`]: which authentication attempts count, and when to hang up (sshd's
//!   MaxAuthTries rules).
//! - [`failure_times`]: how long a refused password takes, so that a name the proxy
//!   does not know fails as slowly as a real one.
//! - [`methods`]: the authentication methods listed to a client, following its
//!   server's, and the list a name without a server gets.
//! - [`penalty`]: per-source penalties and early drop of unauthenticated connections
//!   (sshd's PerSourcePenalties and MaxStartups).
//! - [`liveness`]: keepalives, idle and stall timeouts of a relayed session.
//! - [`sessions_per_user`]: relayed sessions per account (`limits.max_sessions_per_user`).

pub mod algorithms;
pub mod attempts;
#[cfg(test)]
pub mod chain;
pub mod failure_times;
pub mod host_port;
pub mod liveness;
pub mod login;
pub mod methods;
pub mod opens;
pub mod penalty;
pub mod refusal;
pub mod relay;
pub mod sessions_per_user;
pub mod tunnel;
pub mod values;
