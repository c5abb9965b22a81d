//! Tracing set-up: `RUST_LOG` filters, `CREDITS_LOG_FORMAT` picks pretty or JSON lines.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber with `filter` (`RUST_LOG` syntax; `info` if invalid).
/// Logs go to stderr so stdout stays for command output.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    // A second initialization (tests) keeps the first subscriber.
    drop(result);
}
