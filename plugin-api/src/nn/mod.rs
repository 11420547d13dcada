//! Small building blocks for methods that own trainable modules (architectures,
//! policies): linear layers, embeddings, batch, layer and group normalisation, MLPs,
//! convolutions, transformer blocks and banks of experts over plain tensors.
//!
//! Parameters are ordinary leaf tensors with `requires_grad`, initialised as
//! PyTorch initialises `torch.nn.Linear`, so a model built here matches its
//! PyTorch twin for the same seed. They are returned by `parameters` as named
//! handles sharing storage, which is how the host's optimizer and checkpoints
//! reach them.

mod conv;
pub mod experts;
mod transformer;

use tch::{Device, Kind, Tensor};

use crate::config::JsonSchema;
use crate::Result;

pub use conv::{Conv2d, GroupNorm};
pub use transformer::{KvCache, LayerNorm, TransformerBlock};

/// An elementwise non-linearity; configs name it in lower case (`"relu"`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(x, 0).
    #[default]
    Relu,
    /// tanh(x).
    Tanh,
    /// GELU (exact, erf form).
    Gelu,
    /// SiLU / swish: x·sigmoid(x).
    Silu,
    /// x.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.f_relu()?,
            Activation::Tanh => x.f_tanh()?,
            Activation::Gelu => x.f_gelu("none")?,
            Activation::Silu => x.f_silu()?,
            Activation::Identity => x.shallow_clone(),
        })
    }
}

/// `prefix.weight` and `prefix.bias`, sharing storage: how every layer with
/// a weight and a bias names them.
pub(crate) fn weight_and_bias(
    prefix: &str,
    weight: &Tensor,
    bias: &Tensor,
) -> Vec<(String, Tensor)> {
    vec![
        (format!("{prefix}.weight"), weight.shallow_clone()),
        (format!("{prefix}.bias"), bias.shallow_clone()),
    ]
}

/// A normalisation's trainable scale γ = 1 and shift β = 0 over `n` features.
pub(crate) fn identity_affine(n: usize, device: Device) -> Result<(Tensor, Tensor)> {
    let shape = [n as i64];
    Ok((
        Tensor::f_ones(shape, (Kind::Float, device))?.set_requires_grad(true),
        Tensor::f_zeros(shape, (Kind::Float, device))?.set_requires_grad(true),
    ))
}

/// `y = x Wᵀ + b`.
pub struct Linear {
    /// `[outputs, inputs]`.
    pub weight: Tensor,
    /// `[outputs]`.
    pub bias: Tensor,
}

fn uniform(shape: &[i64], bound: f64, device: Device) -> Result<Tensor> {
    let mut t = Tensor::f_empty(shape, (Kind::Float, device))?;
    let _ = t.f_uniform_(-bound, bound)?;
    Ok(t.set_requires_grad(true))
}

impl Linear {
    /// A layer initialised like `torch.nn.Linear` (both weight and bias uniform
    /// in ±1/√inputs), drawing from libtorch's global generator.
    pub fn new(inputs: usize, outputs: usize, device: Device) -> Result<Linear> {
        let bound = 1.0 / (inputs.max(1) as f64).sqrt();
        Ok(Linear {
            weight: uniform(&[outputs as i64, inputs as i64], bound, device)?,
            bias: uniform(&[outputs as i64], bound, device)?,
        })
    }

    /// Applies the layer to `x` `[.., inputs]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, Some(&self.bias))?)
    }

    /// The number of trainable values of a layer built with these arguments.
    pub fn size(inputs: usize, outputs: usize) -> u128 {
        (inputs as u128 + 1) * outputs as u128
    }

    /// `prefix.weight` and `prefix.bias`, sharing storage.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        weight_and_bias(prefix, &self.weight, &self.bias)
    }
}

/// A lookup table of `rows` vectors of width `dim`, as `torch.nn.Embedding`.
pub struct Embedding {
    /// `[rows, dim]`, initialised N(0, 1) like PyTorch.
    pub weight: Tensor,
}

impl Embedding {
    /// A table drawing from libtorch's global generator.
    pub fn new(rows: usize, dim: usize, device: Device) -> Result<Embedding> {
        let mut weight = Tensor::f_empty([rows as i64, dim as i64], (Kind::Float, device))?;
        let _ = weight.f_normal_(0.0, 1.0)?;
        Ok(Embedding {
            weight: weight.set_requires_grad(true),
        })
    }

    /// The vectors of the int64 ids `ids` `[..]`: `[.., dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?)
    }

    /// `prefix.weight`, sharing storage.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![(format!("{prefix}.weight"), self.weight.shallow_clone())]
    }
}

/// Batch normalisation over dimension 1, as `torch.nn.BatchNorm1d` on
/// `[B, C]` and `torch.nn.BatchNorm2d` on `[B, C, H, W]`.
pub struct BatchNorm {
    /// Scale γ.
    pub weight: Tensor,
    /// Shift β.
    pub bias: Tensor,
    /// Running mean (a buffer, not trained).
    pub running_mean: Tensor,
    /// Running variance (a buffer, not trained).
    pub running_var: Tensor,
}

impl BatchNorm {
    const MOMENTUM: f64 = 0.1;
    const EPS: f64 = 1e-5;

    /// γ = 1, β = 0, running statistics 0 and 1.
    pub fn new(features: usize, device: Device) -> Result<BatchNorm> {
        let f = [features as i64];
        let (weight, bias) = identity_affine(features, device)?;
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: Tensor::f_zeros(f, (Kind::Float, device))?,
            running_var: Tensor::f_ones(f, (Kind::Float, device))?,
        })
    }

    /// Normalises `x` `[B, features, ..]`: with batch statistics when `train`, which
    /// also update the running statistics unless `update_stats` is false (the
    /// momentum is then 0, leaving them bit-for-bit unchanged).
    pub fn forward(&self, x: &Tensor, train: bool, update_stats: bool) -> Result<Tensor> {
        let momentum = if update_stats { Self::MOMENTUM } else { 0.0 };
        Ok(Tensor::f_batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            momentum,
            Self::EPS,
            false,
        )?)
    }

    /// `prefix.weight` and `prefix.bias`.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        weight_and_bias(prefix, &self.weight, &self.bias)
    }

    /// `prefix.running_mean` and `prefix.running_var`.
    pub fn buffers(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (
                format!("{prefix}.running_mean"),
                self.running_mean.shallow_clone(),
            ),
            (
                format!("{prefix}.running_var"),
                self.running_var.shallow_clone(),
            ),
        ]
    }
}

/// How an [`Mlp`] is built.
#[derive(Clone, Copy, Debug)]
pub struct MlpSpec {
    /// Non-linearity between layers.
    pub activation: Activation,
    /// Dropout probability after each activation (0 = none).
    pub dropout: f64,
    /// Batch normalisation before each activation.
    pub batch_norm: bool,
    /// Whether the last layer is followed by the activation too (true for
    /// feature extractors, false for output layers).
    pub activate_last: bool,
}

/// A stack of [`Linear`] layers.
pub struct Mlp {
    layers: Vec<(Linear, Option<BatchNorm>)>,
    spec: MlpSpec,
    output_dim: usize,
}

impl Mlp {
    /// An MLP through the widths `dims` (`dims[0]` inputs, last outputs). With a
    /// single width it is the identity.
    pub fn new(dims: &[usize], spec: MlpSpec, device: Device) -> Result<Mlp> {
        let mut layers = Vec::new();
        for pair in dims.windows(2) {
            let bn = if spec.batch_norm {
                Some(BatchNorm::new(pair[1], device)?)
            } else {
                None
            };
            layers.push((Linear::new(pair[0], pair[1], device)?, bn));
        }
        Ok(Mlp {
            layers,
            spec,
            output_dim: dims.last().copied().unwrap_or(0),
        })
    }

    /// The width of the output.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Applies the MLP; see [`BatchNorm::forward`] for `train` and `update_stats`.
    pub fn forward(&self, x: &Tensor, train: bool, update_stats: bool) -> Result<Tensor> {
        let mut layers = self.forward_layers(x, train, update_stats)?;
        Ok(layers.pop().unwrap_or_else(|| x.shallow_clone()))
    }

    /// Applies the MLP and keeps every layer's output, first to last (empty
    /// for the identity).
    pub fn forward_layers(
        &self,
        x: &Tensor,
        train: bool,
        update_stats: bool,
    ) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let last = self.layers.len().saturating_sub(1);
        for (i, (linear, bn)) in self.layers.iter().enumerate() {
            let mut h = linear.forward(outs.last().unwrap_or(x))?;
            if i < last || self.spec.activate_last {
                if let Some(bn) = bn {
                    h = bn.forward(&h, train, update_stats)?;
                }
                h = self.spec.activation.apply(&h)?;
                if self.spec.dropout > 0.0 {
                    h = h.f_dropout(self.spec.dropout, train)?;
                }
            }
            outs.push(h);
        }
        Ok(outs)
    }

    /// Every trainable tensor: `prefix.{i}.weight`, `prefix.{i}.bias`, and
    /// `prefix.{i}.bn.*` with batch normalisation.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (linear, bn)) in self.layers.iter().enumerate() {
            out.extend(linear.parameters(&format!("{prefix}.{i}")));
            if let Some(bn) = bn {
                out.extend(bn.parameters(&format!("{prefix}.{i}.bn")));
            }
        }
        out
    }

    /// Running statistics of the batch-norm layers (empty without them).
    pub fn buffers(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (_, bn)) in self.layers.iter().enumerate() {
            if let Some(bn) = bn {
                out.extend(bn.buffers(&format!("{prefix}.{i}.bn")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch_norm: bool) -> MlpSpec {
        MlpSpec {
            activation: Activation::Relu,
            dropout: 0.0,
            batch_norm,
            activate_last: false,
        }
    }

    #[test]
    fn mlp_shapes_and_parameter_names() {
        let mlp = Mlp::new(&[5, 8, 3], spec(false), Device::Cpu).unwrap();
        let y = mlp
            .forward(
                &Tensor::f_ones([4, 5], (Kind::Float, Device::Cpu)).unwrap(),
                true,
                true,
            )
            .unwrap();
        assert_eq!(y.size(), vec![4, 3]);
        let names: Vec<String> = mlp.parameters("head").into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "head.0.weight",
                "head.0.bias",
                "head.1.weight",
                "head.1.bias"
            ]
        );
    }

    #[test]
    fn forward_layers_keeps_every_layer_and_ends_with_forward() {
        let mlp = Mlp::new(&[5, 8, 3], spec(false), Device::Cpu).unwrap();
        let x = Tensor::f_randn([4, 5], (Kind::Float, Device::Cpu)).unwrap();
        let layers = mlp.forward_layers(&x, false, false).unwrap();
        let sizes: Vec<Vec<i64>> = layers.iter().map(Tensor::size).collect();
        assert_eq!(sizes, [vec![4, 8], vec![4, 3]]);
        assert!(layers[1].equal(&mlp.forward(&x, false, false).unwrap()));
        let identity = Mlp::new(&[5], spec(false), Device::Cpu).unwrap();
        assert!(identity
            .forward_layers(&x, false, false)
            .unwrap()
            .is_empty());
        assert!(identity.forward(&x, false, false).unwrap().equal(&x));
    }

    #[test]
    fn embedding_looks_up_rows() {
        let e = Embedding::new(4, 3, Device::Cpu).unwrap();
        let ids = Tensor::from_slice(&[2i64, 0, 2]).reshape([1, 3]);
        let v = e.forward(&ids).unwrap();
        assert_eq!(v.size(), [1, 3, 3]);
        assert!(v.get(0).get(0).equal(&e.weight.get(2)));
        assert!(v.get(0).get(0).equal(&v.get(0).get(2)));
    }

    #[test]
    fn linear_init_bound_matches_pytorch() {
        tch::manual_seed(0);
        let l = Linear::new(100, 50, Device::Cpu).unwrap();
        let max = l.weight.abs().max().double_value(&[]);
        assert!(max <= 0.1 && max > 0.09, "{max}");
    }

    #[test]
    fn batch_norm_without_stat_updates_leaves_running_stats_bitwise() {
        let mlp = Mlp::new(&[3, 4, 2], spec(true), Device::Cpu).unwrap();
        let x = Tensor::f_randn([8, 3], (Kind::Float, Device::Cpu)).unwrap();
        let before: Vec<Tensor> = mlp
            .buffers("m")
            .into_iter()
            .map(|(_, t)| t.copy())
            .collect();
        let _ = mlp.forward(&x, true, false).unwrap();
        for ((_, after), before) in mlp.buffers("m").into_iter().zip(&before) {
            assert!(after.equal(before));
        }
        let _ = mlp.forward(&x, true, true).unwrap();
        assert!(!mlp.buffers("m")[0].1.equal(&before[0]));
    }
}
