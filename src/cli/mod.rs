//! The subcommands of the `session-worker` binary, one file each, so that
//! `main.rs` only parses the command line and dispatches. What they share:
//! how a bad setting ends the program, logging, and the async runtime.

pub mod doctor;
pub mod events;
pub mod migrate;
pub mod purge;
pub mod reconcile;
pub mod replay;
pub mod serve;
pub mod sessions;
pub mod sign;
pub mod trigger;

use std::future::Future;
use std::process::ExitCode;

use crate::config::{ConfigError, Env, LogFormat};
use crate::telemetry;

/// Exit status for a missing or invalid setting, as for a usage error.
pub const CONFIG_EXIT: u8 = 2;

/// One line naming the variable, exit 2.
pub fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("session-worker: invalid setting {error}");
    ExitCode::from(CONFIG_EXIT)
}

/// Starts logging as `LOG_FORMAT` says; `Err` holds the exit for a bad value.
pub fn start_logs(env: &Env) -> Result<(), ExitCode> {
    let format = LogFormat::from_env(env).map_err(|error| config_error(&error))?;
    telemetry::init(format);
    Ok(())
}

/// Runs `work` to its end on a new runtime: exit 0, or 1 with the error
/// logged and printed.
pub fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = runtime.block_on(work);
    // Dropped, a runtime waits for its blocking tasks (a DNS lookup of a
    // database host that does not answer) for as long as they take.
    runtime.shutdown_timeout(crate::serve::RUNTIME_SHUTDOWN_LIMIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("session-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(value)`, or the exit for a bad setting.
pub fn setting<T>(result: Result<T, ConfigError>) -> Result<T, ExitCode> {
    result.map_err(|error| config_error(&error))
}
