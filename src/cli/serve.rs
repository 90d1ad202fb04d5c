//! `session-worker serve`: the webhook server and the schedules (src/serve.rs).

use std::process::ExitCode;

use crate::config::Env;
use crate::serve::{self, ServeConfig};

pub fn run(env: &Env) -> ExitCode {
    if let Err(exit) = super::start_logs(env) {
        return exit;
    }
    match super::setting(ServeConfig::from_env(env)) {
        Ok(config) => {
            super::block_on(async move { serve::run(config, serve::shutdown_on_signal()).await })
        }
        Err(exit) => exit,
    }
}
