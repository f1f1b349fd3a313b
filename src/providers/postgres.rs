//! `kind = "postgres"`: the user table in PostgreSQL (not written yet).

use super::Backend;
use crate::config::PostgresUrl;
use crate::hooks::{HookContext, HookError, Lookup};

/// A PostgreSQL database with the schema of [`super::schema`], through a pool.
pub struct Postgres;

impl Postgres {
    pub fn open(
        _url: &PostgresUrl,
        _pool_size: u32,
        _timeout: std::time::Duration,
    ) -> Result<Postgres, String> {
        Ok(Postgres)
    }
}

impl Backend for Postgres {
    fn describe(&self) -> String {
        "postgres".into()
    }

    fn look_up(&self, _ctx: &HookContext) -> Result<Lookup, HookError> {
        Err(HookError::Unavailable("not written yet".into()))
    }
}
