//! Backbones: the shared trunk that reads the batch's named inputs and gives
//! every layer's output, of which the architecture takes what it asks for.
//! `[model] backbone = { kind = ... }` picks one; each is planned (its layer
//! widths and parameter counts, from the data's input specs) before anything
//! is allocated, so a missing input or an oversized layer is refused first.

mod embedding;
mod mlp;

use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::sections::BackboneConfig;

/// A batch's inputs, by name.
pub type Inputs = [(String, Tensor)];

/// A built backbone.
pub trait Backbone: Send {
    /// Every layer's output, first to last, for a batch's `inputs`; see
    /// [`BatchNorm::forward`](taskweave_plugin_api::nn::BatchNorm::forward)
    /// for `train` and `update_stats`.
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>>;

    /// Every trainable tensor, named `backbone.*`.
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-trainable tensors checkpoints hold (batch-norm statistics).
    fn buffers(&self) -> Vec<(String, Tensor)>;
}

/// What a backbone will be, known before it is built.
pub struct Plan {
    /// The width of every layer's output, first to last (at least one).
    pub layer_dims: Vec<usize>,
    /// Each layer's parameter count, with the config key that sets it.
    pub sizes: Vec<(String, u128)>,
}

/// Plans the backbone `config` describes over inputs `inputs`, refusing one
/// that reads an input the data do not have.
pub fn plan(config: &BackboneConfig, inputs: &[InputSpec]) -> Result<Plan> {
    match config {
        BackboneConfig::Mlp(c) => mlp::plan(c, inputs),
        BackboneConfig::Embedding(c) => embedding::plan(c, inputs),
    }
}

/// Builds the backbone `config` describes, drawing its initial values from
/// libtorch's generator.
pub fn build(
    config: &BackboneConfig,
    inputs: &[InputSpec],
    device: Device,
) -> Result<Box<dyn Backbone>> {
    Ok(match config {
        BackboneConfig::Mlp(c) => Box::new(mlp::MlpTrunk::new(c, inputs, device)?),
        BackboneConfig::Embedding(c) => {
            Box::new(embedding::EmbeddingTrunk::new(c, inputs, device)?)
        }
    })
}

fn describe(spec: &InputSpec) -> String {
    let dtype = match spec.kind {
        InputKind::Float => "float32",
        InputKind::Index => "int64",
    };
    let dims: Vec<String> = std::iter::once("B".to_string())
        .chain(spec.shape.iter().map(usize::to_string))
        .collect();
    format!("`{}` {dtype} [{}]", spec.name, dims.join(", "))
}

/// The input `name` of element type `kind` and per-example rank `rank` that
/// backbone `backbone` reads, or an error naming what the data have instead.
fn require<'a>(
    inputs: &'a [InputSpec],
    backbone: &str,
    name: &str,
    kind: InputKind,
    rank: usize,
) -> Result<&'a InputSpec> {
    let found = inputs.iter().find(|i| i.name == name);
    match found {
        Some(spec) if spec.kind == kind && spec.shape.len() == rank => Ok(spec),
        _ => {
            let want = match kind {
                InputKind::Float => "float32",
                InputKind::Index => "int64",
            };
            let have: Vec<String> = inputs.iter().map(describe).collect();
            let problem = match found {
                Some(spec) => format!("the data's is {}", describe(spec)),
                None => "the data do not have it".to_string(),
            };
            Err(Error::Input(format!(
                "model.backbone: backbone `{backbone}` reads the input `{name}` ({want}, {} dimensions per example), but {problem} (the data have: {}); pick a backbone for these inputs",
                rank,
                have.join(", ")
            )))
        }
    }
}

/// The tensor of input `name` in a batch (present: [`plan`] checked the specs).
fn input<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Tensor> {
    inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Run(format!("the batch has no input `{name}`")))
}
