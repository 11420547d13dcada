//! Log output: `tracing` with a `RUST_LOG` filter, human-readable by default
//! (coloured only on a terminal, never under `NO_COLOR`), one JSON object per
//! line with `--log-format json`.

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::debug_fn;
use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the process-wide subscriber, writing to stderr. `default` is the
/// filter used when `RUST_LOG` is unset (for example `"info"`).
pub fn init(format: Format, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, and never under NO_COLOR.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        // A full or closed stderr must not turn a log line into a panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        // People read the message, which says everything; structured fields
        // (step, losses, ...) are for machines and appear in JSON only.
        Format::Human => builder
            .fmt_fields(debug_fn(|writer, field, value| {
                if field.name() == "message" {
                    write!(writer, "{value:?}")
                } else {
                    Ok(())
                }
            }))
            .with_target(false)
            .without_time()
            .try_init(),
        Format::Json => builder.json().try_init(),
    };
}
