//! Log lines on stdout, where Render collects them: JSON by default, text for
//! a terminal; `RUST_LOG` filters as usual.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Quiet by default for the libraries that narrate their own start.
const DEFAULT_FILTER: &str = "info,sqlx=warn,tokio_cron_scheduler=warn";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        // Colour codes only for a terminal, never into a log collector.
        .with_ansi(std::io::stdout().is_terminal());
    // A second initialisation (tests) keeps the first: ignore its error.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // The request span once, not again as a list of one.
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
