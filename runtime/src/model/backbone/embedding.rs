//! `kind = "embedding"`: one embedding table per column of the id input
//! `fields`, concatenated with the float input `features` when the data have
//! it, then an MLP (the shared bottom of the MMoE paper's census model).

use taskweave_plugin_api::nn::{Embedding, Mlp};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::mlp::{layers, Trunk, FEATURES};
use super::{input, require, Backbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::EmbeddingBackbone;
use taskweave_datasets::FIELDS;

/// The fields' vocabulary sizes and the width of `features` (0 without).
fn shape(inputs: &[InputSpec]) -> Result<(Vec<usize>, usize)> {
    let fields = require(inputs, "embedding", FIELDS, InputKind::Index, 1)?;
    let columns = fields.shape[0];
    let vocab: Vec<usize> = (0..columns)
        .map(|c| fields.vocab_of(c).unwrap_or(0))
        .collect();
    if let Some(c) = vocab.iter().position(|&v| v == 0) {
        return Err(Error::Input(format!(
            "model.backbone: backbone `embedding` needs the vocabulary size of every column of `fields`, and column {c} has none"
        )));
    }
    let width = match inputs.iter().find(|i| i.name == FEATURES) {
        Some(_) => require(inputs, "embedding", FEATURES, InputKind::Float, 1)?.shape[0],
        None => 0,
    };
    Ok((vocab, width))
}

fn trunk(config: &EmbeddingBackbone) -> Trunk<'_> {
    Trunk {
        hidden: &config.hidden,
        spec: config.mlp_spec(),
    }
}

pub fn plan(config: &EmbeddingBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let (vocab, width) = shape(inputs)?;
    let dim = config.dim as u128;
    let ids: u128 = vocab.iter().map(|&v| v as u128).sum();
    let sizes = vec![(
        format!(
            "model.backbone.dim = {dim} over {ids} ids of {} fields",
            vocab.len()
        ),
        ids * dim,
    )];
    Ok(trunk(config).plan(vocab.len() * config.dim as usize + width, sizes))
}

/// The built `embedding` backbone.
pub struct EmbeddingTrunk {
    /// Every field's table, stacked: field c's ids start at `offsets[c]`.
    tables: Embedding,
    /// `[F]` int64: where each field's rows start in `tables`.
    offsets: Tensor,
    with_features: bool,
    mlp: Mlp,
}

impl EmbeddingTrunk {
    pub fn new(
        config: &EmbeddingBackbone,
        inputs: &[InputSpec],
        device: Device,
    ) -> Result<EmbeddingTrunk> {
        let (vocab, width) = shape(inputs)?;
        let starts: Vec<i64> = vocab
            .iter()
            .scan(0i64, |next, &v| {
                let start = *next;
                *next += v as i64;
                Some(start)
            })
            .collect();
        let rows: usize = vocab.iter().sum();
        let dim = config.dim as usize;
        Ok(EmbeddingTrunk {
            tables: Embedding::new(rows, dim, device)?,
            offsets: Tensor::from_slice(&starts).f_to_device(device)?,
            with_features: width > 0,
            mlp: trunk(config).build(vocab.len() * dim + width, device)?,
        })
    }
}

impl Backbone for EmbeddingTrunk {
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
        let ids = input(inputs, FIELDS)?.f_add(&self.offsets)?;
        // One lookup for every field: [B, F, dim] → [B, F·dim].
        let mut x = self.tables.forward(&ids)?.f_flatten(1, -1)?;
        if self.with_features {
            x = Tensor::f_cat(&[x, input(inputs, FEATURES)?.shallow_clone()], 1)?;
        }
        layers(&self.mlp, &x, train, update_stats)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.tables.parameters("backbone.embeddings");
        out.extend(self.mlp.parameters("backbone.mlp"));
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.mlp.buffers("backbone.mlp")
    }
}
