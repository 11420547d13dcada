//! The runtime's own pipeline sections as typed configs: `[run]`, `[plugins]`,
//! `[model]`, `[train]`, `[eval]`, `[diffusion]` (and the method tables inside them as
//! JSON, each typed by its method). The pipeline schema is derived from these
//! structs, so a default is written once, here, and shows in `--print-config`.

mod diffusion;
mod model;
mod train;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskweave_plugin_api::config::{schema_for, JsonSchema};

pub use diffusion::DiffusionConfig;
pub use model::{
    BackboneConfig, ConvBackbone, ConvStyle, EmbeddingBackbone, HeadConfig, MlpBackbone,
    ModelConfig, SequencePooling, TransformerLmBackbone, UnetBackbone, VitBackbone,
};
pub use train::{steps_per_epoch, EvalConfig, OnNonFinite, ScheduleConfig, Select, TrainConfig};

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
    /// A denoising diffusion model of the data's samples instead of the
    /// data's own tasks (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion: Option<DiffusionConfig>,
}

/// The top-level sections of a [`PipelineConfig`], as its TOML names them.
pub const SECTIONS: [&str; 7] = [
    "run",
    "plugins",
    "data",
    "model",
    "train",
    "eval",
    "diffusion",
];

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
    /// CPU threads that share each training batch (1: off): each takes a
    /// contiguous part through its own copy of the model, forward and
    /// backward, and the gradients are summed. Data parallelism inside one
    /// process, for models whose operations are too small for libtorch to
    /// split well over threads.
    #[schemars(range(min = 1, max = 256))]
    pub batch_threads: u32,
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
            batch_threads: 1,
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
            s["properties"]["model"]["properties"]["head"]["properties"]["hidden"]["items"]
                ["maximum"],
            MAX_WIDTH
        );
        assert_eq!(s["required"], json!(["data", "train"]));
        let mut sections: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
        sections.sort();
        let mut listed = SECTIONS.to_vec();
        listed.sort();
        assert_eq!(sections, listed, "SECTIONS lists every section");
    }
}
