//! Built-in implementations of [`crate::hooks::Hooks`]: where the proxy looks users up.
//!
//! - [`static_table`]: the `[[users]]` table of the configuration file.
//! - [`sqlite`], [`postgres`], [`http`] and [`command`]: the `[[providers]]` of the
//!   configuration, backends that an operator changes while the proxy runs. Each
//!   answers a login in one lookup ([`Backend::look_up`]).
//! - [`chain`]: the static table, then the providers in order, with the cache that
//!   keeps logins working through a backend outage (`stale_if_error_secs`).
//!
//! Backends are blocking code (a database client, an HTTP request, a child process):
//! the chain calls them on the shard's helper threads ([`crate::run_blocking`]), never
//! on a shard's event loop, so a slow backend delays only the logins waiting for it.
//!
//! Custom providers (a directory, a naming scheme) implement [`crate::hooks::Hooks`] in
//! the operator's own crate and are passed to [`crate::Server::hooks`]; see
//! `examples/custom_hooks.rs`.

pub mod answer;
pub mod chain;
pub mod command;
pub mod health;
pub mod http;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod static_table;

pub use chain::Providers;
pub use static_table::{StaticTable, StaticTableHooks};

use crate::hooks::{HookContext, HookError, Lookup};

/// A user directory that answers a login's questions in one blocking call.
///
/// Implementations are shared by every shard and called from helper threads, several
/// at once: they keep their own connection pool. Each call must end by itself within
/// the provider's `timeout` (a database statement timeout, an HTTP timeout, killing a
/// child process): the chain stops waiting then, but cannot stop the thread.
pub trait Backend: Send + Sync {
    /// What the log calls this backend: its kind and where it is, with no secret
    /// (`sqlite /var/lib/sshr/sshr.db`, `http https://dir.example/sshr`).
    fn describe(&self) -> String;

    /// The answer for `ctx.user` and `ctx.target`:
    /// - [`Lookup::Unknown`] when the backend does not know the user (or that target of
    ///   it): the next provider is asked;
    /// - [`HookError::Unavailable`] or [`HookError::Timeout`] when the backend cannot
    ///   answer, [`HookError::InvalidData`] when its answer is unusable (a bad address,
    ///   bad JSON). The chain then uses the last good answer if it is recent enough.
    ///
    /// A key line that does not parse is left out with a warning naming the user and
    /// the line; the other keys are used (as sshd does with authorized_keys).
    fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError>;
}
