//! Built-in implementations of [`crate::hooks::Hooks`].
//!
//! - [`static_table`]: the `[[users]]` table of the configuration file (the default).
//!
//! Custom providers (a database, an HTTP directory, a naming scheme) implement the trait
//! in the operator's own crate and are passed to [`crate::Server::hooks`]; see
//! `examples/custom_hooks.rs`.

pub mod static_table;

pub use static_table::{StaticTable, StaticTableHooks};
