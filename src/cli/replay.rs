//! `session-worker replay`.

use std::process::ExitCode;

use crate::config::Env;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_env: &Env, _args: Args) -> ExitCode {
    ExitCode::FAILURE
}
