//! The transformer blocks the `vit` and `transformer-lm` backbones share:
//! `depth` pre-norm blocks, each block's tokens an output, the last one
//! through a final layer norm (as ViT and GPT-2 end).

use taskweave_plugin_api::nn::{KvCache, LayerNorm, TransformerBlock};
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// The keys a stack is built from.
pub struct StackSpec {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    pub causal: bool,
}

impl StackSpec {
    /// The spec of `(dim, depth, heads, mlp_ratio)` blocks, causal or not.
    pub fn new((dim, depth, heads, mlp_ratio): (usize, usize, usize, usize), causal: bool) -> Self {
        StackSpec {
            dim,
            depth,
            heads,
            mlp_ratio,
            causal,
        }
    }

    /// Each block's parameter count with the key that sets it, refusing
    /// heads that do not divide the width.
    pub fn sizes(&self) -> Result<Vec<(String, u128)>> {
        if !self.dim.is_multiple_of(self.heads) {
            return Err(Error::Input(format!(
                "model.backbone.heads: {} attention heads do not divide dim = {}",
                self.heads, self.dim
            )));
        }
        let block = TransformerBlock::size(self.dim, self.dim * self.mlp_ratio);
        Ok((0..self.depth)
            .map(|i| {
                (
                    format!("model.backbone.dim = {} (block {i})", self.dim),
                    block,
                )
            })
            .chain(std::iter::once((
                "model.backbone.dim".to_string(),
                2 * self.dim as u128,
            )))
            .collect())
    }
}

/// The built blocks and the final norm.
pub struct Stack {
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
}

impl Stack {
    pub fn new(spec: &StackSpec, device: Device) -> Result<Stack> {
        spec.sizes()?;
        let blocks = (0..spec.depth)
            .map(|_| {
                TransformerBlock::new(
                    spec.dim,
                    spec.heads,
                    spec.dim * spec.mlp_ratio,
                    spec.causal,
                    device,
                )
            })
            .collect::<taskweave_plugin_api::Result<_>>()?;
        Ok(Stack {
            blocks,
            norm: LayerNorm::new(spec.dim, device)?,
        })
    }

    /// Every block's output for tokens `x` `[B, N, dim]`, the last normalised.
    pub fn forward(&self, mut x: Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, None)?;
            out.push(x.shallow_clone());
        }
        if let Some(last) = out.last_mut() {
            *last = self.norm.forward(last)?;
        }
        Ok(out)
    }

    /// The last block's normalised output for the next tokens `x` `[B, n,
    /// dim]` of sequences whose earlier tokens `caches` hold (one per block,
    /// made at the first call); causal stacks only.
    pub fn forward_cached(&self, mut x: Tensor, caches: &mut Vec<KvCache>) -> Result<Tensor> {
        caches.resize_with(self.blocks.len(), KvCache::new);
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            x = block.forward_cached(&x, cache)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// Every trainable tensor, named `backbone.blocks.*` and `backbone.norm.*`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.parameters(&format!("backbone.blocks.{i}")))
            .collect();
        out.extend(self.norm.parameters("backbone.norm"));
        out
    }
}

/// A learned table `[rows, dim]` drawn from N(0, 0.02²), as ViT and GPT-2
/// initialise position embeddings.
pub fn positions(rows: usize, dim: usize, device: Device) -> Result<Tensor> {
    let mut t = Tensor::f_empty([rows as i64, dim as i64], (tch::Kind::Float, device))?;
    let _ = t.f_normal_(0.0, 0.02)?;
    Ok(t.set_requires_grad(true))
}
