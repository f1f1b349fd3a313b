//! sshr: an SSH reverse proxy.
//!
//! Clients connect to one address; the proxy reads the login name, asks its
//! [hooks](hooks::Hooks) which upstream server the user belongs to and how to log in
//! there, logs in itself and relays the session. The binary `sshr` runs it with the
//! static user table of its configuration file; operators with their own user directory
//! implement [`hooks::Hooks`] and start a [`Server`] from their own `main`:
//!
//! ```no_run
//! # fn my_factory() -> sshr::hooks::HooksFactory { unimplemented!() }
//! let config = sshr::Config::load("sshr.toml".as_ref())?;
//! sshr::Server::new(config).hooks(my_factory()).run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture (README "Layout"): one glommio executor per core ([`shard`]), each with its
//! own SO_REUSEPORT listener ([`listener`]); a session and everything it does runs on the
//! shard that accepted it.

pub mod admission;
pub mod config;
pub mod core;
pub mod hooks;
pub mod keys;
pub mod leg;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod preauth;
pub mod providers;
pub mod relay;
pub mod session;
pub mod shard;
pub mod tunnel;
pub mod upstream;
pub mod warm;

pub use config::Config;
pub use hooks::{HookContext, HookError, Hooks, HooksFactory, HostKeyPolicy, Upstream};
pub use shard::{run_blocking, RunningServer, Server, ServerError, ServerHandle, ShardContext};

/// The attribute a [`Hooks`] implementation goes under, `#[sshr::async_trait(?Send)]`
/// (hooks run on one shard's thread, so their futures need not be `Send`). Re-exported so
/// that `sshr` is the one dependency a hooks implementation needs.
pub use async_trait::async_trait;
/// The SSH transport: the key types hooks hand over
/// ([`protocol::hostkey::PublicKey`], [`protocol::hostkey::PrivateKey`]) and
/// [`protocol::hostkey::parse_authorized_keys`].
pub use sshr_protocol as protocol;
