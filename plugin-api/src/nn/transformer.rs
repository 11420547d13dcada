//! Pre-norm transformer blocks over token sequences `[B, N, D]`, for
//! vision transformers (all tokens see each other) and causal language
//! models (a token sees itself and the tokens before it).

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

use super::{Activation, Linear};

/// Layer normalisation over the last dimension, as `torch.nn.LayerNorm`.
pub struct LayerNorm {
    /// Scale γ, `[dim]`, initially 1.
    pub weight: Tensor,
    /// Shift β, `[dim]`, initially 0.
    pub bias: Tensor,
}

impl LayerNorm {
    const EPS: f64 = 1e-5;

    /// γ = 1, β = 0.
    pub fn new(dim: usize, device: Device) -> Result<LayerNorm> {
        let (weight, bias) = super::identity_affine(dim, device)?;
        Ok(LayerNorm { weight, bias })
    }

    /// Normalises `x` `[.., dim]` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm(
            [self.weight.size()[0]],
            Some(&self.weight),
            Some(&self.bias),
            Self::EPS,
            false,
        )?)
    }

    /// `prefix.weight` and `prefix.bias`, sharing storage.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        super::weight_and_bias(prefix, &self.weight, &self.bias)
    }
}

/// One pre-norm transformer block: `x + Attention(LN(x))`, then
/// `x + MLP(LN(x))` with a GELU MLP, as in ViT and GPT-2.
pub struct TransformerBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
    causal: bool,
}

impl TransformerBlock {
    /// A block over tokens `dim` wide with `heads` attention heads (which must
    /// divide `dim`) and an MLP `hidden` wide; `causal` blocks let each token
    /// attend only to itself and earlier ones.
    pub fn new(
        dim: usize,
        heads: usize,
        hidden: usize,
        causal: bool,
        device: Device,
    ) -> Result<TransformerBlock> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::msg(format!(
                "{heads} attention heads do not divide the width {dim}"
            )));
        }
        Ok(TransformerBlock {
            norm1: LayerNorm::new(dim, device)?,
            qkv: Linear::new(dim, 3 * dim, device)?,
            proj: Linear::new(dim, dim, device)?,
            norm2: LayerNorm::new(dim, device)?,
            fc1: Linear::new(dim, hidden, device)?,
            fc2: Linear::new(hidden, dim, device)?,
            heads: heads as i64,
            causal,
        })
    }

    /// The number of trainable values of a block built with these arguments.
    pub fn size(dim: usize, hidden: usize) -> u128 {
        let (d, h) = (dim as u128, hidden as u128);
        4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    }

    /// The block applied to `x` `[B, N, dim]`. `valid`, a bool `[B, N]`,
    /// marks the tokens others may attend to (padding is false); every
    /// sequence needs at least one valid token (a causal block: a valid first
    /// token).
    pub fn forward(&self, x: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, _) = x.size3()?;
        let (q, k, v) = self.project(x)?;
        let mask = match valid {
            None => None,
            Some(valid) => {
                // [B, 1, 1, N]: query i may read key j when j is valid (and j ≤ i).
                let keys = valid.f_view([b, 1, 1, n])?;
                Some(match self.causal {
                    false => keys,
                    true => keys.f_logical_and(&causal_mask(n, 0, x.device())?)?,
                })
            }
        };
        let causal = self.causal && mask.is_none();
        self.finish(x, &q, &k, &v, mask, causal)
    }

    /// A causal block applied to the next tokens `x` `[B, N, dim]` of
    /// sequences whose earlier tokens `cache` holds (empty at the start);
    /// `cache` then holds `x` too. Decoding one token at a time this way
    /// costs O(length) per token instead of re-reading the window, and gives
    /// what [`TransformerBlock::forward`] gives at the same positions.
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if !self.causal {
            return Err(Error::msg(
                "a key-value cache serves causal blocks only: a bidirectional block's earlier tokens read the later ones",
            ));
        }
        let n = x.size3()?.1;
        let (q, k, v) = self.project(x)?;
        let (k, v) = match cache.keys_values.take() {
            None => (k, v),
            Some((past_k, past_v)) => (
                Tensor::f_cat(&[past_k, k], 2)?,
                Tensor::f_cat(&[past_v, v], 2)?,
            ),
        };
        let past = k.size()[2] - n;
        // One new token reads every key; several read up to themselves.
        let (mask, causal) = match (n, past) {
            (1, _) => (None, false),
            (_, 0) => (None, true),
            _ => (Some(causal_mask(n, past, x.device())?), false),
        };
        let out = self.finish(x, &q, &k, &v, mask, causal)?;
        cache.keys_values = Some((k, v));
        Ok(out)
    }

    /// Queries, keys and values `[B, heads, N, dim / heads]` of `x`.
    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, d) = x.size3()?;
        let h = self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .f_view([b, n, 3, h, d / h])?
            .f_permute([2, 0, 3, 1, 4])?;
        Ok((qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?))
    }

    /// Attention of `q` over `k`, `v`, then the residual and the MLP.
    fn finish(
        &self,
        x: &Tensor,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<Tensor>,
        causal: bool,
    ) -> Result<Tensor> {
        let (b, n, d) = x.size3()?;
        let attended =
            Tensor::f_scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None, false)?
                .f_transpose(1, 2)?
                .f_reshape([b, n, d])?;
        let x = x.f_add(&self.proj.forward(&attended)?)?;
        let hidden = Activation::Gelu.apply(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        Ok(x.f_add(&self.fc2.forward(&hidden)?)?)
    }

    /// Every trainable tensor, named `prefix.*`.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = self.norm1.parameters(&format!("{prefix}.norm1"));
        out.extend(self.qkv.parameters(&format!("{prefix}.attention.qkv")));
        out.extend(self.proj.parameters(&format!("{prefix}.attention.proj")));
        out.extend(self.norm2.parameters(&format!("{prefix}.norm2")));
        out.extend(self.fc1.parameters(&format!("{prefix}.mlp.fc1")));
        out.extend(self.fc2.parameters(&format!("{prefix}.mlp.fc2")));
        out
    }
}

/// `[N, past + N]` bool: new query i (position past + i) may read key j
/// when j ≤ past + i.
fn causal_mask(n: i64, past: i64, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_ones([n, past + n], (Kind::Bool, device))?.f_tril(past)?)
}

/// The keys and values a causal [`TransformerBlock`] has computed for the
/// tokens it has read, kept between calls of
/// [`TransformerBlock::forward_cached`]. One per block and sequence batch.
#[derive(Default)]
pub struct KvCache {
    keys_values: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// An empty cache: the next call reads the first tokens.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// How many tokens of each sequence the cache holds.
    pub fn len(&self) -> usize {
        self.keys_values
            .as_ref()
            .map_or(0, |(k, _)| k.size()[2] as usize)
    }

    /// Whether the cache holds no token yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_causal_block_s_outputs_do_not_depend_on_later_tokens() {
        tch::manual_seed(0);
        let block = TransformerBlock::new(8, 2, 16, true, Device::Cpu).unwrap();
        let x = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        let changed = x.copy();
        let _ = changed.narrow(1, 3, 2).fill_(7.0);
        let (a, b) = (
            block.forward(&x, None).unwrap(),
            block.forward(&changed, None).unwrap(),
        );
        assert!(a
            .narrow(1, 0, 3)
            .allclose(&b.narrow(1, 0, 3), 1e-6, 1e-6, false));
        assert!(!a
            .narrow(1, 3, 2)
            .allclose(&b.narrow(1, 3, 2), 1e-3, 1e-3, false));
        // All-valid masks give the unmasked result, causal or not.
        let all = Tensor::ones([2, 5], (Kind::Bool, Device::Cpu));
        assert!(block
            .forward(&x, Some(&all))
            .unwrap()
            .allclose(&a, 1e-6, 1e-6, false));
    }

    #[test]
    fn cached_decoding_gives_the_full_window_s_outputs() {
        tch::manual_seed(2);
        let block = TransformerBlock::new(8, 2, 16, true, Device::Cpu).unwrap();
        let x = Tensor::randn([2, 7, 8], (Kind::Float, Device::Cpu));
        let full = block.forward(&x, None).unwrap();
        // A prompt of three tokens, then two, then one at a time.
        let mut cache = KvCache::new();
        let mut parts = Vec::new();
        for (start, len) in [(0, 3), (3, 2), (5, 1), (6, 1)] {
            parts.push(
                block
                    .forward_cached(&x.narrow(1, start, len), &mut cache)
                    .unwrap(),
            );
            assert_eq!(cache.len(), (start + len) as usize);
        }
        let stepped = Tensor::cat(&parts, 1);
        assert!(stepped.allclose(&full, 1e-5, 1e-5, false));
        let bidirectional = TransformerBlock::new(8, 2, 16, false, Device::Cpu).unwrap();
        let e = bidirectional
            .forward_cached(&x, &mut KvCache::new())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("causal blocks only"), "{e}");
    }

    #[test]
    fn padding_is_not_attended_to() {
        tch::manual_seed(1);
        let block = TransformerBlock::new(8, 4, 16, false, Device::Cpu).unwrap();
        let x = Tensor::randn([1, 4, 8], (Kind::Float, Device::Cpu));
        let padded = x.copy();
        let _ = padded.narrow(1, 3, 1).fill_(-5.0);
        let valid = Tensor::from_slice(&[true, true, true, false]).view([1, 4]);
        let a = block.forward(&x, Some(&valid)).unwrap().narrow(1, 0, 3);
        let b = block
            .forward(&padded, Some(&valid))
            .unwrap()
            .narrow(1, 0, 3);
        assert!(a.allclose(&b, 1e-6, 1e-6, false));
        // Without the mask the padding changes the others.
        let c = block.forward(&padded, None).unwrap().narrow(1, 0, 3);
        assert!(!a.allclose(&c, 1e-3, 1e-3, false));
        assert_eq!(
            TransformerBlock::new(6, 4, 8, false, Device::Cpu)
                .err()
                .unwrap()
                .to_string(),
            "4 attention heads do not divide the width 6"
        );
        let params: usize = block.parameters("b").iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(params as u128, TransformerBlock::size(8, 16));
    }
}
