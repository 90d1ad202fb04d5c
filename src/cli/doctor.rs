//! `session-worker doctor`: one line per check (src/doctor/), exit 0 when
//! all pass, 1 otherwise. Bad settings are reported as failed checks, not
//! refused at start.

use std::process::ExitCode;

use crate::config::Env;
use crate::doctor;

pub fn run(env: &Env) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let checks = runtime.block_on(doctor::run(env));
    for check in &checks {
        println!("{check}");
    }
    let failed = checks.iter().filter(|check| !check.ok).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}
