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
//! The layers, bottom up (`docs/architecture.md`): [`core`] decides without I/O,
//! `rt` and `metrics` are the runtime helpers and the metrics sink, `io` moves
//! bytes, [`config`], [`keys`], [`hooks`] and [`providers`] say what to do, `proxy`
//! runs sessions on a shard, and the server at the top starts one glommio executor per
//! core. Public are what an embedder needs (the configuration, the hooks, key loading,
//! [`Server`]) and the sans-IO [`core`], which benchmarks and tests drive directly.

pub(crate) mod audit;
mod build_info;
pub mod config;
pub mod core;
pub(crate) mod health;
pub mod hooks;
pub(crate) mod io;
pub mod keys;
pub mod logging;
pub(crate) mod metrics;
mod notify;
pub mod privileges;
pub mod providers;
pub(crate) mod proxy;
pub(crate) mod rt;
mod server;
mod upgrade;

pub use build_info::build_info;
pub use config::Config;
pub use hooks::{HookContext, HookError, Hooks, HooksFactory, HostKeyPolicy, Upstream};
pub use io::listener::{bind_reuseport, ListenFds};
pub use rt::{run_blocking, sleep, timeout, Elapsed};
pub use server::{RunningServer, Server, ServerError, ServerHandle};

/// The attribute a [`Hooks`] implementation goes under, `#[sshr::async_trait(?Send)]`
/// (hooks run on one shard's thread, so their futures need not be `Send`). Re-exported so
/// that `sshr` is the one dependency a hooks implementation needs.
pub use async_trait::async_trait;
/// The SSH transport: the key types hooks hand over
/// ([`protocol::hostkey::PublicKey`], [`protocol::hostkey::PrivateKey`]) and
/// [`protocol::hostkey::parse_authorized_keys`].
pub use sshr_protocol as protocol;
