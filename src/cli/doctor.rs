//! `session-worker doctor`.

use std::process::ExitCode;

use crate::config::Env;

pub fn run(_env: &Env) -> ExitCode {
    ExitCode::FAILURE
}
