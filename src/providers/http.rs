//! `kind = "http"`: a Web API answering a POST per login (not written yet).

use std::path::PathBuf;

use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};

/// The directory at `url`.
pub struct Http {
    url: String,
}

impl Http {
    pub fn open(
        url: &str,
        _bearer_token_file: Option<&PathBuf>,
        _ca_file: Option<&PathBuf>,
        _timeout: std::time::Duration,
    ) -> Result<Http, String> {
        Ok(Http { url: url.into() })
    }
}

impl Backend for Http {
    fn describe(&self) -> String {
        format!("http {}", self.url)
    }

    fn look_up(&self, _ctx: &HookContext) -> Result<Lookup, HookError> {
        Err(HookError::Unavailable("not written yet".into()))
    }
}
