//! `session-worker sessions list|revoke|stats`: the web app's sessions, for
//! operators (src/sessions/cli.rs holds the commands themselves).

use std::process::ExitCode;

use crate::config::{DatabaseConfig, Env};
use crate::sessions::cli::{SessionsCommand, run_command};

pub fn run(env: &Env, command: SessionsCommand) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(DatabaseConfig::from_env(env)) {
        Ok(database) => super::block_on(run_command(command, database)),
        Err(exit) => exit,
    }
}
