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

pub mod config;
pub mod core;
pub mod hooks;
pub mod io;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod rt;
pub mod server;

pub use config::Config;
pub use hooks::{HookContext, HookError, Hooks, HooksFactory, HostKeyPolicy, Upstream};
pub use proxy::shard::ShardContext;
pub use rt::run_blocking;
pub use server::{RunningServer, Server, ServerError, ServerHandle};
