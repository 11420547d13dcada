//! Training progress: a bar with loss and throughput on an interactive
//! terminal, periodic log lines otherwise (CI logs, files, pipes).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports training progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: u64,
    total: u64,
    first_step: u64,
    started: Instant,
}

fn losses_text(names: &[String], losses: &[f64]) -> String {
    names
        .iter()
        .zip(losses)
        .map(|(n, l)| format!("{n} {l:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Progress {
    /// Progress over steps `first_step..total`; `quiet` shows nothing but
    /// warnings. Without a terminal, a log line every `log_every` steps.
    pub fn new(first_step: u64, total: u64, log_every: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_position(first_step);
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec:>12} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let log_every = if quiet { u64::MAX } else { log_every.max(1) };
        Progress {
            bar,
            log_every,
            total,
            first_step,
            started: Instant::now(),
        }
    }

    /// Steps per second since this progress started.
    pub fn rate(&self, step: u64) -> f64 {
        (step - self.first_step) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Reports that `step` steps are done, with the latest mean losses.
    pub fn update(&self, step: u64, names: &[String], losses: &[f64]) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                if step.is_multiple_of(10) || step == self.total {
                    bar.set_message(losses_text(names, losses));
                }
            }
            None if step.is_multiple_of(self.log_every) || step == self.total => {
                let rate = self.rate(step);
                let losses_text = losses_text(names, losses);
                tracing::info!(
                    step,
                    total = self.total,
                    losses = %losses_text,
                    steps_per_second = rate,
                    "step {step}/{} | {losses_text} | {rate:.1} steps/s",
                    self.total,
                );
            }
            None => {}
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
