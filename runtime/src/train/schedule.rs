//! The learning rate at each step (`train.schedule`), as PyTorch's schedulers
//! compute it: StepLR, linear warm-up into cosine annealing, and
//! ReduceLROnPlateau on the validation score. Only the plateau schedule has
//! state (checkpoints hold it); the others are functions of the step, so a
//! resumed run gets the same rates without saving anything.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::sections::ScheduleConfig;

/// The learning rate of every step of one run.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: ScheduleConfig,
    base_lr: f64,
    total: u64,
    plateau: Plateau,
}

/// ReduceLROnPlateau's state: the best score so far, evaluations since it,
/// and the current rate.
#[derive(Debug, Clone, PartialEq)]
struct Plateau {
    best: Option<f64>,
    bad: u64,
    lr: f64,
}

impl Schedule {
    /// The schedule of a run of `total` steps whose optimizer has learning rate `base_lr`.
    pub fn new(config: &ScheduleConfig, base_lr: f64, total: u64) -> Schedule {
        Schedule {
            config: config.clone(),
            base_lr,
            total,
            plateau: Plateau {
                best: None,
                bad: 0,
                lr: base_lr,
            },
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let base = self.base_lr;
        match self.config {
            ScheduleConfig::Constant => base,
            ScheduleConfig::Step { every, gamma } => {
                base * gamma.powi((step / every.max(1)).min(i32::MAX as u64) as i32)
            }
            ScheduleConfig::Cosine { warmup, min_lr } => {
                if step < warmup {
                    base * (step + 1) as f64 / warmup as f64
                } else {
                    let span = self.total.saturating_sub(warmup + 1).max(1) as f64;
                    let progress = ((step - warmup) as f64 / span).min(1.0);
                    min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            ScheduleConfig::Plateau { .. } => self.plateau.lr,
        }
    }

    /// Takes a validation score (lower is better): the plateau schedule
    /// lowers its rate when the score stops improving; the others ignore it.
    pub fn observe(&mut self, score: f64) {
        let ScheduleConfig::Plateau {
            factor,
            patience,
            threshold,
            min_lr,
        } = self.config
        else {
            return;
        };
        let p = &mut self.plateau;
        match p.best {
            // An absolute threshold: the score is −Δm in percent, 0 at the first evaluation.
            Some(best) if score > best - threshold => {
                p.bad += 1;
                if p.bad > patience {
                    p.lr = (p.lr * factor).max(min_lr);
                    p.bad = 0;
                    tracing::info!(
                        lr = p.lr,
                        "validation score flat: learning rate now {}",
                        p.lr
                    );
                }
            }
            _ if score.is_finite() => {
                p.best = Some(score);
                p.bad = 0;
            }
            _ => p.bad += 1,
        }
    }

    /// The state a checkpoint holds.
    pub fn state(&self) -> Value {
        json!({"best": self.plateau.best, "bad": self.plateau.bad, "lr": self.plateau.lr})
    }

    /// Restores [`Schedule::state`].
    pub fn load_state(&mut self, state: &Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        let bad =
            |what: &str| Error::Input(format!("the checkpoint's schedule state has no {what}"));
        self.plateau = Plateau {
            best: state["best"].as_f64(),
            bad: state["bad"].as_u64().ok_or_else(|| bad("`bad`"))?,
            lr: state["lr"].as_f64().ok_or_else(|| bad("`lr`"))?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn step_and_cosine_follow_pytorch() {
        let step = Schedule::new(
            &ScheduleConfig::Step {
                every: 10,
                gamma: 0.5,
            },
            0.1,
            100,
        );
        assert!(close(step.lr(0), 0.1) && close(step.lr(9), 0.1) && close(step.lr(10), 0.05));
        assert!(close(step.lr(25), 0.025));
        let cosine = Schedule::new(
            &ScheduleConfig::Cosine {
                warmup: 4,
                min_lr: 0.001,
            },
            0.1,
            104,
        );
        assert!(close(cosine.lr(0), 0.025) && close(cosine.lr(3), 0.1));
        assert!(close(cosine.lr(4), 0.1), "the peak right after warm-up");
        assert!(close(cosine.lr(103), 0.001), "min_lr at the last step");
        let mid = cosine.lr(4 + 99 / 2);
        assert!(
            (mid - (0.001 + 0.099 * 0.5 * (1.0 + (std::f64::consts::PI * 49.0 / 99.0).cos())))
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn plateau_lowers_the_rate_after_patience_flat_scores_and_survives_a_checkpoint() {
        let config = ScheduleConfig::Plateau {
            factor: 0.5,
            patience: 2,
            threshold: 0.01,
            min_lr: 0.02,
        };
        let mut s = Schedule::new(&config, 0.1, 1000);
        for score in [1.0, 0.5, 0.499, 0.498, 0.497] {
            s.observe(score);
        }
        // 0.499.. are within 0.01 of 0.5: the third flat score passes patience 2.
        assert!(close(s.lr(0), 0.05), "{}", s.lr(0));
        let saved = s.state();
        let mut resumed = Schedule::new(&config, 0.1, 1000);
        resumed.load_state(&saved).unwrap();
        for score in [0.497, 0.497, 0.497, 0.497, 0.497, 0.497] {
            s.observe(score);
            resumed.observe(score);
        }
        assert!(close(s.lr(0), 0.02), "never below min_lr: {}", s.lr(0));
        assert_eq!(s.plateau, resumed.plateau);
    }
}
