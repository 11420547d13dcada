//! `kind = "embedding"`: one embedding table per column of the id input
//! `fields`, concatenated with the float input `features` when the data have
//! it and with each behaviour sequence `seq.<name>` mean-pooled (unless
//! `sequences = "ignore"`), then an MLP (the shared bottom of the MMoE
//! paper's census model and of the recommendation papers' baselines).

use taskweave_plugin_api::nn::{Embedding, Mlp};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::mlp::{layers, Trunk, FEATURES};
use super::{input, require, Backbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::{EmbeddingBackbone, SequencePooling};
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

/// One behaviour sequence the backbone pools.
struct Sequence {
    name: String,
    /// Its mask input, when the data have one (else every position is valid).
    mask: Option<String>,
    vocab: usize,
}

/// The sequences `config` pools: every int64 `seq.<name>` input `[L]`.
fn sequences(config: &EmbeddingBackbone, inputs: &[InputSpec]) -> Result<Vec<Sequence>> {
    if config.sequences == SequencePooling::Ignore {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for spec in inputs.iter().filter(|i| i.name.starts_with("seq.")) {
        if spec.kind != InputKind::Index {
            continue;
        }
        let vocab = match (spec.shape.as_slice(), spec.vocab_of(0)) {
            ([_], Some(v)) if v > 0 => v,
            _ => {
                return Err(Error::Input(format!(
                    "model.backbone: backbone `embedding` pools the sequence `{}`, which must be int64 ids [L] with a vocabulary size, and it is {}; set model.backbone.sequences = \"ignore\" to leave it out",
                    spec.name,
                    super::describe(spec)
                )))
            }
        };
        let mask = format!("{}.mask", spec.name);
        let mask = match inputs.iter().find(|i| i.name == mask) {
            Some(m) if m.kind == InputKind::Mask && m.shape == spec.shape => Some(mask),
            Some(m) => {
                return Err(Error::Input(format!(
                    "model.backbone: the mask of `{}` must be bool {:?} like the sequence, and it is {}",
                    spec.name,
                    spec.shape,
                    super::describe(m)
                )))
            }
            None => None,
        };
        out.push(Sequence {
            mask,
            name: spec.name.clone(),
            vocab,
        });
    }
    Ok(out)
}

fn trunk(config: &EmbeddingBackbone) -> Trunk<'_> {
    Trunk {
        hidden: &config.hidden,
        spec: config.mlp_spec(),
    }
}

pub fn plan(config: &EmbeddingBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let (vocab, width) = shape(inputs)?;
    let sequences = sequences(config, inputs)?;
    let dim = config.dim as u128;
    let ids: u128 = vocab.iter().map(|&v| v as u128).sum();
    let mut sizes = vec![(
        format!(
            "model.backbone.dim = {dim} over {ids} ids of {} fields",
            vocab.len()
        ),
        ids * dim,
    )];
    for s in &sequences {
        sizes.push((
            format!(
                "model.backbone.dim = {dim} over {} ids of {}",
                s.vocab, s.name
            ),
            s.vocab as u128 * dim,
        ));
    }
    let input_width = (vocab.len() + sequences.len()) * config.dim as usize + width;
    Ok(trunk(config).plan(input_width, sizes))
}

/// The built `embedding` backbone.
pub struct EmbeddingTrunk {
    /// Every field's table, stacked: field c's ids start at `offsets[c]`.
    tables: Embedding,
    /// `[F]` int64: where each field's rows start in `tables`.
    offsets: Tensor,
    with_features: bool,
    /// The pooled sequences, each with its own table.
    sequences: Vec<(Sequence, Embedding)>,
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
        let tables = Embedding::new(rows, dim, device)?;
        let mut pooled = Vec::new();
        for s in sequences(config, inputs)? {
            let table = Embedding::new(s.vocab, dim, device)?;
            pooled.push((s, table));
        }
        let input_width = (vocab.len() + pooled.len()) * dim + width;
        Ok(EmbeddingTrunk {
            tables,
            offsets: Tensor::from_slice(&starts).f_to_device(device)?,
            with_features: width > 0,
            sequences: pooled,
            mlp: trunk(config).build(input_width, device)?,
        })
    }
}

impl Backbone for EmbeddingTrunk {
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
        let ids = input(inputs, FIELDS)?.f_add(&self.offsets)?;
        // One lookup for every field: [B, F, dim] → [B, F·dim].
        let mut parts = vec![self.tables.forward(&ids)?.f_flatten(1, -1)?];
        if self.with_features {
            parts.push(input(inputs, FEATURES)?.shallow_clone());
        }
        for (sequence, table) in &self.sequences {
            parts.push(mean_pool(sequence, table, inputs)?);
        }
        layers(&self.mlp, &Tensor::f_cat(&parts, 1)?, train, update_stats)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.tables.parameters("backbone.embeddings");
        for (sequence, table) in &self.sequences {
            out.extend(table.parameters(&format!("backbone.{}", sequence.name)));
        }
        out.extend(self.mlp.parameters("backbone.mlp"));
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.mlp.buffers("backbone.mlp")
    }
}

/// The mean of `sequence`'s item vectors over its valid positions `[B, dim]`
/// (zeros where none is valid).
fn mean_pool(sequence: &Sequence, table: &Embedding, inputs: &Inputs) -> Result<Tensor> {
    let vectors = table.forward(input(inputs, &sequence.name)?)?;
    let Some(mask) = &sequence.mask else {
        return Ok(vectors.f_mean_dim(1, false, None)?);
    };
    let weight = input(inputs, mask)?
        .f_to_kind(vectors.kind())?
        .f_unsqueeze(-1)?;
    let count = weight.f_sum_dim_intlist(1, false, None)?.f_clamp_min(1.0)?;
    Ok(vectors
        .f_mul(&weight)?
        .f_sum_dim_intlist(1, false, None)?
        .f_div(&count)?)
}
