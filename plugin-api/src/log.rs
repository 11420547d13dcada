//! Forwards `tracing` events from inside a plugin to the host.
//!
//! `tracing`'s global dispatcher is a static, and statics are per shared library:
//! without this, `tracing::info!` in a plugin would log nowhere.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::{Host, LogLevel};

struct Forward {
    host: Host,
}

/// Collects an event's message and fields into one line: `message k=v k=v`.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let meta = event.metadata();
        self.host
            .log(LogLevel::from(meta.level()), meta.target(), &line.0);
    }
}

fn level_filter(level: LogLevel) -> tracing::level_filters::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs, in this library, a subscriber that forwards every event at or
/// above the host's level to `host`. A second call is a no-op.
pub(crate) fn forward_to(host: Host) {
    let filter = level_filter(host.max_level());
    let subscriber = tracing_subscriber::registry().with(Forward { host }.with_filter(filter));
    let _ = tracing::subscriber::set_global_default(subscriber);
}
