//! `kind = "command"`: a program printing the answer (not written yet).

use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};

/// The program `argv[0]` with its arguments.
pub struct Command {
    argv: Vec<String>,
}

impl Command {
    pub fn new(
        argv: &[String],
        _max_output_bytes: usize,
        _timeout: std::time::Duration,
    ) -> Command {
        Command {
            argv: argv.to_vec(),
        }
    }
}

impl Backend for Command {
    fn describe(&self) -> String {
        format!("command {}", self.argv[0])
    }

    fn look_up(&self, _ctx: &HookContext) -> Result<Lookup, HookError> {
        Err(HookError::Unavailable("not written yet".into()))
    }
}
