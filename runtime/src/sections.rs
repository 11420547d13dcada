//! The runtime's own pipeline sections as typed configs: `[run]`, `[plugins]`,
//! `[model]`, `[train]`, `[eval]` (and the method tables inside them as
//! JSON, each typed by its method). The pipeline schema is derived from these
//! structs, so a default is written once, here, and shows in `--print-config`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskweave_plugin_api::config::{schema_for, JsonSchema};
use taskweave_plugin_api::nn::Activation;

use crate::optimizer::OptimizerConfig;

/// The widest layer a pipeline may ask for (products of two stay far from overflow).
pub const MAX_WIDTH: u32 = 1 << 24;

/// A whole pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where and how the run goes.
    #[serde(default)]
    pub run: RunConfig,
    /// Where plugins come from.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The data set and its tasks: `kind = "..."` plus that data kind's keys.
    #[schemars(extend("x-taskweave-role" = "Data"))]
    pub data: Value,
    /// The model: backbone, architecture, heads.
    #[serde(default)]
    pub model: ModelConfig,
    /// Training.
    pub train: TrainConfig,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
}

/// `[run]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name: the run directory is out_dir/name (default: the file name).
    pub name: String,
    /// Seed of initialisation, batch order and methods.
    pub seed: u64,
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    pub device: String,
    /// Where run directories go, relative to the working directory.
    pub out_dir: String,
    /// CPU threads for libtorch, process-wide (0: libtorch's default; at most 4 per logical CPU).
    pub threads: u32,
    /// Cap on libtorch's CUDA caching allocator, as a fraction of the device's memory (0: no cap).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub gpu_memory_fraction: f64,
    /// libtorch caching-allocator settings (PYTORCH_CUDA_ALLOC_CONF syntax, e.g.
    /// "expandable_segments:True"), process-wide, for allocations from the run's start on.
    pub cuda_allocator: String,
    /// Arithmetic of the forward passes: fp32, or bf16 autocast (libtorch's
    /// mixed precision: matrix products in bfloat16, parameters kept in fp32).
    pub precision: Precision,
}

/// `run.precision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// libtorch autocast to bfloat16 for the forward passes.
    Bf16,
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            name: "run".into(),
            seed: 0,
            device: "auto".into(),
            out_dir: "runs".into(),
            threads: 0,
            gpu_memory_fraction: 0.0,
            cuda_allocator: String::new(),
            precision: Precision::Fp32,
        }
    }
}

/// `[plugins]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directories of plugin .so files, relative to the pipeline file.
    pub dirs: Vec<String>,
}

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The shared MLP.
    pub backbone: BackboneConfig,
    /// Trainable modules between the backbone and the heads: `kind = "..."`.
    #[schemars(extend("x-taskweave-role" = "Architecture"))]
    pub architecture: Value,
    /// Each task's head.
    pub head: HeadConfig,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            backbone: BackboneConfig::default(),
            architecture: json!({"kind": "hard-sharing"}),
            head: HeadConfig::default(),
        }
    }
}

/// `[model] backbone`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// Widths of the shared MLP's hidden layers ([] = identity).
    #[schemars(inner(range(min = 1, max = MAX_WIDTH)))]
    pub hidden: Vec<u32>,
    /// Non-linearity after each layer.
    pub activation: Activation,
    /// Dropout probability after each layer.
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1))]
    pub dropout: f64,
    /// Batch normalisation after each linear layer.
    pub batch_norm: bool,
}

impl Default for BackboneConfig {
    fn default() -> BackboneConfig {
        BackboneConfig {
            hidden: vec![64],
            activation: Activation::Relu,
            dropout: 0.0,
            batch_norm: false,
        }
    }
}

/// `[model] head`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Widths of each task head's hidden layers.
    #[schemars(inner(range(min = 1, max = MAX_WIDTH)))]
    pub hidden: Vec<u32>,
    /// Non-linearity after each hidden layer.
    pub activation: Activation,
}

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
    /// On a NaN or infinite loss: stop with an error, or skip the step.
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
}

impl TrainConfig {
    /// The run's length in steps for a training split of `rows` rows.
    pub fn total_steps(&self, rows: usize) -> u64 {
        match (self.steps, self.epochs) {
            (Some(steps), _) => steps,
            (None, epochs) => epochs.unwrap_or(1) * steps_per_epoch(rows, self.batch),
        }
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
    /// Steps between validation evaluations (0: ten per run).
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

/// The schema of a pipeline file. `run.threads` is bounded by this machine:
/// more than 4 threads per logical CPU only adds contention (100,000 hangs).
pub fn schema() -> Value {
    let mut schema = schema_for::<PipelineConfig>();
    let max_threads = std::thread::available_parallelism().map_or(1, |n| n.get()) * 4;
    schema["properties"]["run"]["properties"]["threads"]["maximum"] = json!(max_threads);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_carries_every_default_once_and_the_machine_bound_on_threads() {
        let s = schema();
        let run = &s["properties"]["run"]["properties"];
        assert_eq!(run["device"]["default"], "auto");
        assert!(run["threads"]["maximum"].as_u64().unwrap() >= 4);
        let train = &s["properties"]["train"];
        assert!(train.get("required").is_none(), "steps or epochs");
        assert_eq!(train["properties"]["batch"]["default"], 128);
        assert_eq!(
            train["properties"]["weighting"]["x-taskweave-role"],
            "Weighting"
        );
        assert_eq!(
            s["properties"]["model"]["properties"]["backbone"]["properties"]["hidden"]["items"]
                ["maximum"],
            MAX_WIDTH
        );
        assert_eq!(s["required"], json!(["data", "train"]));
    }
}
