//! `eval.select` and the plateau schedule's signal: one validation score per
//! evaluation, lower is better, and the best one so far.
//!
//! Tasks have metrics on different scales, so the score is −Δm (the mean
//! relative change of each task's primary metric, signed so that better is
//! positive, as [`delta_m`] computes it) against the run's first validation
//! evaluation: every task counts equally, and the score needs no baselines.

use serde_json::{json, Value};

use crate::data::Task;
use crate::error::{Error, Result};
use crate::train::metrics::{delta_m, TaskMetrics};

/// The reference metrics and the best evaluation so far; checkpoints hold it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    reference: Option<Vec<TaskMetrics>>,
    best: Option<(u64, f64)>,
}

impl Selection {
    /// The score of `metrics` (the first call's metrics become the reference).
    pub fn score(&mut self, tasks: &[Task], metrics: &[TaskMetrics]) -> Result<f64> {
        let reference = self.reference.get_or_insert_with(|| metrics.to_vec());
        Ok(-delta_m(tasks, metrics, reference).map_err(|e| e.input_context("the val split"))?)
    }

    /// Records the score of step `step`; true when it is the best so far.
    pub fn improves(&mut self, step: u64, score: f64) -> bool {
        let better = score.is_finite() && self.best.is_none_or(|(_, best)| score < best);
        if better {
            self.best = Some((step, score));
        }
        better
    }

    /// The step of the best score so far.
    pub fn best_step(&self) -> Option<u64> {
        self.best.map(|(step, _)| step)
    }

    /// Forgets the best score (its parameters are lost); the reference stays,
    /// so later scores compare as before.
    pub fn forget_best(&mut self) {
        self.best = None;
    }

    /// The state a checkpoint holds.
    pub fn state(&self) -> Value {
        json!({"reference": self.reference, "best": self.best})
    }

    /// The selection a checkpoint's `state` describes (a checkpoint without
    /// one starts afresh).
    pub fn from_state(state: &Value) -> Result<Selection> {
        if state.is_null() {
            return Ok(Selection::default());
        }
        let reference = serde_json::from_value(state["reference"].clone());
        let best = serde_json::from_value(state["best"].clone());
        match (reference, best) {
            (Ok(reference), Ok(best)) => Ok(Selection { reference, best }),
            _ => Err(Error::Input(
                "the checkpoint's selection state is unreadable".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TaskType;

    fn metrics(mse: f64, accuracy: f64) -> Vec<TaskMetrics> {
        vec![
            TaskMetrics::from([("mse".to_string(), mse)]),
            TaskMetrics::from([("accuracy".to_string(), accuracy)]),
        ]
    }

    #[test]
    fn tasks_count_alike_whatever_their_scale_and_the_best_survives_a_checkpoint() {
        let mut reg = Task::regression("y");
        reg.primary = "mse";
        let mut cls = Task::regression("c");
        cls.kind = TaskType::Multiclass(3);
        cls.primary = "accuracy";
        let tasks = [reg, cls];
        let mut s = Selection::default();
        assert_eq!(s.score(&tasks, &metrics(100.0, 0.5)).unwrap(), 0.0);
        // mse 10 % lower, accuracy 10 % lower: a wash.
        let wash = s.score(&tasks, &metrics(90.0, 0.45)).unwrap();
        assert!(wash.abs() < 1e-9, "{wash}");
        let better = s.score(&tasks, &metrics(50.0, 0.5)).unwrap();
        assert!((better + 25.0).abs() < 1e-9, "{better}");
        assert!(s.improves(10, 0.0) && s.improves(30, better) && !s.improves(40, 0.0));
        let back = Selection::from_state(&s.state()).unwrap();
        assert_eq!(back.best_step(), Some(30));
        assert_eq!(back.reference, s.reference);
    }
}
