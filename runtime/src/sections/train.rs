//! `[train]` and `[eval]`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskweave_plugin_api::config::JsonSchema;

use crate::optimizer::OptimizerConfig;

/// What to do when a task's loss is NaN or infinite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnNonFinite {
    /// Stop the run with an error naming the step and task.
    #[default]
    Stop,
    /// Skip the step (no update) and go on.
    SkipStep,
}

/// `[train]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-taskweave-one-of" = ["steps", "epochs"]))]
pub struct TrainConfig {
    /// Optimizer steps (give this or `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub steps: Option<u64>,
    /// Passes over the training split (give this or `steps`); an epoch is
    /// ⌊rows / batch⌋ steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub epochs: Option<u64>,
    /// Rows per batch.
    #[serde(default = "TrainConfig::default_batch")]
    #[schemars(range(min = 1))]
    pub batch: u64,
    /// The optimizer: `kind = "adam" | "adamw" | "sgd"` plus its keys.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The learning rate over the run: `kind = "constant" | "step" | "cosine" | "plateau"`.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// The learning rate of the methods' own parameters (UW's log-variances,
    /// a strategy's parameters), following the schedule as `lr` does
    /// (absent: the optimizer's `lr`; ANT trains UW's at 0.025).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub method_lr: Option<f64>,
    /// Rescale the gradient of all trainable values to at most this L2 norm
    /// before each optimizer step (0: no clipping).
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub clip_grad_norm: f64,
    /// The training step: `kind = "..."`.
    #[serde(default = "TrainConfig::default_strategy")]
    #[schemars(extend("x-taskweave-role" = "Strategy"))]
    pub strategy: Value,
    /// How per-task losses or gradients combine: `kind = "..."`.
    #[serde(default = "TrainConfig::default_weighting")]
    #[schemars(extend("x-taskweave-role" = "Weighting"))]
    pub weighting: Value,
    /// With `[diffusion]`: the timesteps partitioned into intervals, one
    /// task each (`kind = "interval-clustering"`, `cost`, `k`); absent: one
    /// task over every timestep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-taskweave-role" = "Grouping"))]
    pub grouping: Option<Value>,
    /// On a NaN or infinite loss, or a non-finite update for the optimizer:
    /// stop with an error, or skip the step.
    #[serde(default)]
    pub on_nonfinite: OnNonFinite,
    /// With on_nonfinite = "skip-step": the run fails (exit 1) once more than
    /// this fraction of its steps were skipped.
    #[serde(default = "TrainConfig::default_max_skipped")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_skipped_fraction: f64,
    /// Steps between checkpoints (0: at every evaluation).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Steps between progress lines when not on a terminal.
    #[serde(default = "TrainConfig::default_log_every")]
    #[schemars(range(min = 1))]
    pub log_every: u64,
    /// Start from the model of another run (its directory, relative to the
    /// pipeline file): the parameters and normalisation statistics the two
    /// models share by name are copied from its selected checkpoint (the
    /// best-validation one, else the newest); the rest keep their
    /// initialisation, and the optimizer and methods start fresh. For
    /// fine-tuning after pre- or meta-training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

impl TrainConfig {
    /// The run's length in steps for a training split of `rows` rows;
    /// refuses epochs whose steps do not fit in a step count.
    pub fn total_steps(&self, rows: usize) -> crate::error::Result<u64> {
        let epochs = match (self.steps, self.epochs) {
            (Some(steps), _) => return Ok(steps),
            (None, epochs) => epochs.unwrap_or(1),
        };
        let per_epoch = steps_per_epoch(rows, self.batch);
        epochs.checked_mul(per_epoch).ok_or_else(|| {
            crate::error::Error::Input(format!(
                "train.epochs: {epochs} epochs of {per_epoch} steps are more steps than a run can count (2^64); ask for fewer"
            ))
        })
    }

    fn default_batch() -> u64 {
        128
    }
    fn default_strategy() -> Value {
        json!({"kind": "standard"})
    }
    fn default_weighting() -> Value {
        json!({"kind": "ew"})
    }
    fn default_max_skipped() -> f64 {
        0.5
    }
    fn default_log_every() -> u64 {
        100
    }
}

/// Steps in one pass over `rows` training rows with batches of `batch`: the
/// remainder of each shuffled epoch is skipped, and an epoch is at least one step.
pub fn steps_per_epoch(rows: usize, batch: u64) -> u64 {
    (rows as u64 / batch.clamp(1, rows.max(1) as u64)).max(1)
}

/// `[train] schedule`: the learning rate at each step, as a factor on the
/// optimizer's `lr`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// The optimizer's `lr` throughout.
    #[default]
    Constant,
    /// `lr · gamma^⌊step / every⌋` (PyTorch's StepLR).
    Step {
        /// Steps between decays.
        #[schemars(range(min = 1))]
        every: u64,
        /// Factor at each decay.
        #[serde(default = "ScheduleConfig::default_gamma")]
        #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0))]
        gamma: f64,
    },
    /// Linear warm-up from `lr / warmup` to `lr` over `warmup` steps, then a
    /// cosine from `lr` down to `min_lr` at the last step.
    Cosine {
        /// Warm-up steps.
        #[serde(default)]
        warmup: u64,
        /// The learning rate at the last step.
        #[serde(default)]
        #[schemars(range(min = 0.0))]
        min_lr: f64,
    },
    /// Multiply the learning rate by `factor` when the validation score has
    /// not improved by `threshold` for more than `patience` evaluations (the
    /// score is the one `eval.select` uses: −Δm in percent against the first
    /// evaluation); never below `min_lr`.
    Plateau {
        /// Factor at each reduction.
        #[serde(default = "ScheduleConfig::default_gamma")]
        #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0))]
        factor: f64,
        /// Evaluations without improvement before a reduction.
        #[serde(default = "ScheduleConfig::default_patience")]
        patience: u64,
        /// Improvement of the score (percentage points of Δm) that counts.
        #[serde(default = "ScheduleConfig::default_threshold")]
        #[schemars(range(min = 0.0))]
        threshold: f64,
        /// The smallest learning rate.
        #[serde(default)]
        #[schemars(range(min = 0.0))]
        min_lr: f64,
    },
}

impl ScheduleConfig {
    fn default_gamma() -> f64 {
        0.1
    }
    fn default_patience() -> u64 {
        5
    }
    fn default_threshold() -> f64 {
        0.01
    }
}

/// `eval.select`: which parameters the reported metrics come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The evaluation with the best validation score (−Δm against the first evaluation).
    #[default]
    BestVal,
    /// The last step.
    Last,
}

/// `[eval]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Steps between validation evaluations (0: every ⌈steps / 10⌉ steps, at most ten per run).
    pub every: u64,
    /// Rows per evaluation batch.
    #[schemars(range(min = 1))]
    pub batch: u64,
    /// Report test metrics at the best validation score ("best-val") or at the
    /// last step ("last").
    pub select: Select,
}

impl Default for EvalConfig {
    fn default() -> EvalConfig {
        EvalConfig {
            every: 0,
            batch: 4096,
            select: Select::BestVal,
        }
    }
}
