//! `session-worker sign --secret S [--timestamp T] FILE`: a valid
//! `Stripe-Signature` value for a payload; needs no database and no settings.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::signature;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The endpoint's signing secret (whsec_...).
    #[arg(long)]
    pub secret: String,
    /// Unix seconds to sign at [default: now].
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// The payload to sign; - reads standard input.
    pub file: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let payload = if args.file.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer).map(|_| buffer)
    } else {
        std::fs::read(&args.file)
    };
    match payload {
        Ok(payload) => {
            let timestamp = args
                .timestamp
                .unwrap_or_else(|| chrono::Utc::now().timestamp());
            println!("{}", signature::sign(&args.secret, timestamp, &payload));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "session-worker: cannot read {}: {error}",
                args.file.display()
            );
            ExitCode::FAILURE
        }
    }
}
