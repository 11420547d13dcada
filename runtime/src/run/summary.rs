//! What a finished run reports, and the table the CLI prints of it.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::data::Task;
use crate::train::metrics::TaskMetrics;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The run directory.
    pub dir: PathBuf,
    /// The tasks, in order.
    pub tasks: Vec<Task>,
    /// Final validation metrics per task.
    pub val: Vec<TaskMetrics>,
    /// Final test metrics per task.
    pub test: Vec<TaskMetrics>,
    /// Δm (%) on the test split against the stored single-task baselines,
    /// when they exist (`taskweave baselines`).
    pub delta_m: Option<f64>,
    /// Whether Δm applies: not to a diffusion model, whose tasks (timestep
    /// intervals of one denoiser) have no single-task baselines.
    pub delta_m_applies: bool,
    /// Steps trained in total.
    pub steps: u64,
    /// The step whose parameters the metrics are of: the best validation
    /// score's under `eval.select = "best-val"`, the last otherwise.
    pub selected_step: u64,
    /// Training throughput of this invocation (steps per second).
    pub steps_per_second: f64,
    /// Steps skipped because of a non-finite loss.
    pub skipped: u64,
    /// Trainable values in the run.
    pub parameters: i64,
}

/// The per-task result table printed at the end of a run.
pub fn table(summary: &Summary) -> String {
    let mut metric_names: Vec<&str> = Vec::new();
    for m in &summary.test {
        for name in m.keys() {
            if !metric_names.contains(&name.as_str()) {
                metric_names.push(name);
            }
        }
    }
    let width = summary
        .tasks
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}", "task");
    for name in &metric_names {
        let _ = write!(out, "  {name:>12}");
    }
    out.push('\n');
    for (task, m) in summary.tasks.iter().zip(&summary.test) {
        let _ = write!(out, "{:width$}", task.name);
        for name in &metric_names {
            match m.get(*name) {
                Some(v) => {
                    let _ = write!(out, "  {v:>12.5}");
                }
                None => {
                    let _ = write!(out, "  {:>12}", "-");
                }
            }
        }
        out.push('\n');
    }
    if summary.selected_step != summary.steps {
        let _ = writeln!(
            out,
            "test metrics of step {} of {} (the best validation score)",
            summary.selected_step, summary.steps
        );
    }
    match summary.delta_m {
        None if !summary.delta_m_applies => {}
        Some(d) => {
            let _ = writeln!(
                out,
                "Δm vs single-task baselines: {d:+.2}% (test; positive is better)"
            );
        }
        None => out.push_str(
            "Δm: no single-task baselines stored; run `taskweave baselines` with this pipeline\n",
        ),
    }
    out
}
