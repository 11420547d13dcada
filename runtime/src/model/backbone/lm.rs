//! `kind = "transformer-lm"`: a causal transformer over an id input `[B, L]`
//! (bytes or tokens): token and learned position embeddings, then the causal
//! blocks of [`Stack`]; position i's outputs depend on ids 0..=i only. Every
//! block's hidden states `[B, L, dim]` are an output; a `token-multiclass`
//! task's head turns the last into next-token logits (a language model).

use taskweave_plugin_api::nn::{Embedding, KvCache};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::stack::{positions, Stack, StackSpec};
use super::{input, require, Backbone, CausalBackbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::TransformerLmBackbone;

/// The vocabulary size and the context length.
fn shape(config: &TransformerLmBackbone, inputs: &[InputSpec]) -> Result<(usize, usize)> {
    let tokens = require(inputs, "transformer-lm", &config.input, InputKind::Index, 1)?;
    match tokens.vocab_of(0) {
        Some(vocab) if vocab > 0 => Ok((vocab, tokens.shape[0])),
        _ => Err(Error::Input(format!(
            "model.backbone: backbone `transformer-lm` needs the vocabulary size of the input `{}`, and the data give none",
            config.input
        ))),
    }
}

pub fn plan(config: &TransformerLmBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let (vocab, context) = shape(config, inputs)?;
    let dim = config.dim as usize;
    let mut sizes = vec![(
        format!("model.backbone.dim = {dim} (embeddings of {vocab} ids and {context} positions)"),
        ((vocab + context) * dim) as u128,
    )];
    sizes.extend(StackSpec::new(config.blocks(), true).sizes()?);
    Ok(Plan {
        layer_dims: vec![dim; config.depth as usize],
        layer_ranks: vec![2; config.depth as usize],
        sizes,
        spatial: false,
    })
}

/// The built `transformer-lm` backbone.
pub struct LmTrunk {
    input: String,
    tokens: Embedding,
    positions: Tensor,
    stack: Stack,
}

impl LmTrunk {
    pub fn new(
        config: &TransformerLmBackbone,
        inputs: &[InputSpec],
        device: Device,
    ) -> Result<LmTrunk> {
        let (vocab, context) = shape(config, inputs)?;
        let dim = config.dim as usize;
        Ok(LmTrunk {
            input: config.input.clone(),
            tokens: Embedding::new(vocab, dim, device)?,
            positions: positions(context, dim, device)?,
            stack: Stack::new(&StackSpec::new(config.blocks(), true), device)?,
        })
    }
}

impl Backbone for LmTrunk {
    fn forward(&self, inputs: &Inputs, _train: bool, _update_stats: bool) -> Result<Vec<Tensor>> {
        let ids = input(inputs, &self.input)?;
        let length = ids.size().last().copied().unwrap_or(0);
        let x = self
            .tokens
            .forward(ids)?
            .f_add(&self.positions.f_narrow(0, 0, length)?)?;
        self.stack.forward(x)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.tokens.parameters("backbone.tokens");
        out.push(("backbone.positions".into(), self.positions.shallow_clone()));
        out.extend(self.stack.parameters());
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn causal(&self) -> Option<&dyn CausalBackbone> {
        Some(self)
    }
}

impl CausalBackbone for LmTrunk {
    fn forward_cached(&self, inputs: &Inputs, cache: &mut Vec<KvCache>) -> Result<Tensor> {
        let ids = input(inputs, &self.input)?;
        let length = ids.size().last().copied().unwrap_or(0);
        let past = cache.first().map_or(0, KvCache::len) as i64;
        let context = self.positions.size()[0];
        if past + length > context {
            return Err(Error::Input(format!(
                "{past} tokens read and {length} more exceed the model's context of {context} positions"
            )));
        }
        let x = self
            .tokens
            .forward(ids)?
            .f_add(&self.positions.f_narrow(0, past, length)?)?;
        self.stack.forward_cached(x, cache)
    }
}
