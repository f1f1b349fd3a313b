//! `kind = "sqlite"`: the user table in a local SQLite file (not written yet).

use std::path::Path;

use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};

/// A SQLite database with the schema of [`super::schema`].
pub struct Sqlite {
    path: String,
}

impl Sqlite {
    /// Opens (creating it with the schema if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Sqlite, String> {
        Ok(Sqlite {
            path: path.display().to_string(),
        })
    }
}

impl Backend for Sqlite {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path)
    }

    fn look_up(&self, _ctx: &HookContext) -> Result<Lookup, HookError> {
        Err(HookError::Unavailable("not written yet".into()))
    }
}
