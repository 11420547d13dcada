//! The sections of a decoding pipeline file: which models, how their logits
//! are fused, how text is drawn, and the held-out text `eval-lm` scores.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskweave_plugin_api::config::{schema_for, JsonSchema};

use crate::sections::PluginsConfig;

/// A whole decoding pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// Where plugins come from (the fusion's).
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The causal language models.
    pub models: ModelsConfig,
    /// How each step's logits become one distribution: `kind =
    /// "logit-fusion"` (the plugin), `"proxy"`, `"large"` or `"expert"`,
    /// plus that method's keys.
    #[schemars(extend("x-taskweave-role" = "Fusion"))]
    pub fusion: Value,
    /// How `taskweave decode` draws each next byte.
    #[serde(default)]
    pub decode: SamplingConfig,
    /// The held-out text `taskweave eval-lm` scores: a `[data]` table of
    /// `kind = "text"`, whose test split is used (the same corpora, context,
    /// split and seed as the models' training pipelines hold out exactly
    /// their test documents).
    #[schemars(extend("x-taskweave-role" = "Data"))]
    pub data: Value,
    /// What `taskweave eval-lm` compares.
    #[serde(default)]
    pub eval: LmEvalConfig,
    /// `cpu`, `cuda`, `cuda:N` or `auto`: where every model runs.
    #[serde(default = "DecodeConfig::default_device")]
    pub device: String,
}

impl DecodeConfig {
    fn default_device() -> String {
        "auto".into()
    }
}

/// `[models]`: the large and small base models and the small experts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// The large base model.
    pub large: ModelRef,
    /// The small base model the experts were fine-tuned from.
    pub small: ModelRef,
    /// The small experts by name; with `eval.experts = "own"` each corpus is
    /// scored with the expert of its name.
    pub experts: IndexMap<String, ModelRef>,
}

/// Where one model comes from: `kind = "run"` or `kind = "torchscript"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelRef {
    /// A run of `taskweave lm train`: its model at the selected checkpoint.
    Run(RunModel),
    /// A causal language model exported from PyTorch (`torch.jit.trace` or
    /// `torch.jit.script`): its `forward` reads ids `[B, L]` (the bytes
    /// 0–255, 256 = start of text) and returns next-byte logits `[B, L, V]`
    /// with V the other models' vocabulary (256 for `lm train` runs). It
    /// re-reads the whole window at every decoded byte (no cache).
    Torchscript(TorchScriptModel),
}

/// `kind = "run"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunModel {
    /// The run directory (relative to the pipeline file).
    pub dir: String,
}

/// `kind = "torchscript"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptModel {
    /// The saved module (`.pt`, relative to the pipeline file).
    pub path: String,
    /// The longest window it reads, in tokens.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub context: u64,
}

/// `[decode]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Bytes to generate at most (fewer when the context fills).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_new: u64,
    /// 0: greedy (the most probable byte); above 0: sample from the fused
    /// distribution at this temperature.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub temperature: f64,
    /// When sampling: only the `top_k` most probable bytes (0: all).
    pub top_k: u64,
    /// When sampling: only the most probable bytes whose probabilities add
    /// up to `top_p` (nucleus sampling; 1: all).
    #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0))]
    pub top_p: f64,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> SamplingConfig {
        SamplingConfig {
            max_new: 200,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// `[eval]` of a decoding pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LmEvalConfig {
    /// `own`: each corpus is scored with its own expert alone (the paper's
    /// single-task setting; every corpus needs an expert of its name);
    /// `all`: with every expert (multi-task).
    pub experts: ExpertChoice,
    /// Windows per batch.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch: u64,
}

impl Default for LmEvalConfig {
    fn default() -> LmEvalConfig {
        LmEvalConfig {
            experts: ExpertChoice::Own,
            batch: 16,
        }
    }
}

/// Which experts `eval-lm` hands the fusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExpertChoice {
    /// The corpus's own expert only.
    Own,
    /// Every expert.
    All,
}

/// The schema of a decoding pipeline file.
pub fn schema() -> Value {
    schema_for::<DecodeConfig>()
}
