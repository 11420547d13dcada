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

/// Whether `a` and `b` look like one tensor handed out twice (as when an
/// architecture hands every task one features tensor): the same memory,
/// shape and strides, and both requiring gradients or neither. Two leaves
/// made separately over the same memory also pass; a forward pass cannot
/// tell them apart.
pub fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr()
        && a.size() == b.size()
        && a.stride() == b.stride()
        && a.requires_grad() == b.requires_grad()
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
#[derive(Clone, Copy, Debug, PartialEq)]
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

impl MlpSpec {
    /// What follows a layer's product: for hidden layers (and the last when
    /// `activate_last`), the batch norm when given, the activation and the
    /// dropout; the last layer's product is the output as it is.
    fn after_layer(
        &self,
        h: Tensor,
        last: bool,
        bn: Option<&BatchNorm>,
        train: bool,
        update_stats: bool,
    ) -> Result<Tensor> {
        if last && !self.activate_last {
            return Ok(h);
        }
        let h = match bn {
            Some(bn) => bn.forward(&h, train, update_stats)?,
            None => h,
        };
        let h = self.activation.apply(&h)?;
        Ok(match self.dropout > 0.0 {
            true => h.f_dropout(self.dropout, train)?,
            false => h,
        })
    }
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

    /// Applies several MLPs, each to its own input `[B, inputs]`, as batched
    /// matrix products: one product per layer for all of them instead of one
    /// per MLP (per-task heads and towers are small, and their separate
    /// products cost more in per-operation overhead than in arithmetic).
    /// Where every input is the same tensor, the first layer is one product
    /// with the MLPs' weights side by side. Each output equals that MLP's
    /// [`Mlp::forward`] up to rounding (with dropout in training, the same in
    /// distribution: the masks are drawn for all at once). The outputs are
    /// views of one tensor and may be non-contiguous (`reshape`, not `view`;
    /// no in-place changes under autograd). MLPs of different widths or
    /// specs, with batch normalisation (its statistics are per MLP), or
    /// inputs of different shapes are applied one by one instead.
    pub fn forward_many(
        mlps: &[&Mlp],
        inputs: &[Tensor],
        train: bool,
        update_stats: bool,
    ) -> Result<Vec<Tensor>> {
        let first = match (mlps.first(), inputs.first()) {
            (Some(m), Some(x)) if mlps.len() == inputs.len() => (*m, x),
            _ => {
                return Err(crate::Error::msg(format!(
                    "Mlp::forward_many: {} MLPs for {} inputs",
                    mlps.len(),
                    inputs.len()
                )))
            }
        };
        let widths =
            |m: &Mlp| -> Vec<Vec<i64>> { m.layers.iter().map(|(l, _)| l.weight.size()).collect() };
        let batched = mlps.len() > 1
            && !first.0.layers.is_empty()
            && !first.0.spec.batch_norm
            && mlps
                .iter()
                .all(|m| m.spec == first.0.spec && widths(m) == widths(first.0))
            && inputs
                .iter()
                .all(|x| x.dim() == 2 && x.size() == first.1.size());
        if !batched {
            return mlps
                .iter()
                .zip(inputs)
                .map(|(m, x)| m.forward(x, train, update_stats))
                .collect();
        }
        let n = mlps.len() as i64;
        let shared = inputs.iter().all(|x| same_tensor(x, first.1));
        let spec = first.0.spec;
        let last = first.0.layers.len() - 1;
        // Layer `i` of every MLP over `x` `[n, B, width]` (the inputs at the
        // first layer), as `[n, B, out]`.
        let layer = |i: usize, x: Option<Tensor>| -> Result<Tensor> {
            let weights: Vec<&Tensor> = mlps.iter().map(|m| &m.layers[i].0.weight).collect();
            let biases: Vec<&Tensor> = mlps.iter().map(|m| &m.layers[i].0.bias).collect();
            let y = match x {
                None if shared => {
                    let (rows, out) = (first.1.size()[0], weights[0].size()[0]);
                    let (w, b) = (Tensor::f_cat(&weights, 0)?, Tensor::f_cat(&biases, 0)?);
                    first
                        .1
                        .f_linear(&w, Some(&b))?
                        .f_view([rows, n, out])?
                        .f_transpose(0, 1)?
                }
                x => {
                    let x = match x {
                        Some(x) => x,
                        None => Tensor::f_stack(inputs, 0)?,
                    };
                    let w = Tensor::f_stack(&weights, 0)?.f_transpose(1, 2)?;
                    let b = Tensor::f_stack(&biases, 0)?.f_unsqueeze(1)?;
                    b.f_baddbmm(&x, &w, 1.0, 1.0)?
                }
            };
            spec.after_layer(y, i == last, None, train, update_stats)
        };
        let mut h = layer(0, None)?;
        for i in 1..=last {
            h = layer(i, Some(h))?;
        }
        Ok(h.f_unbind(0)?)
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
            let h = linear.forward(outs.last().unwrap_or(x))?;
            outs.push(
                self.spec
                    .after_layer(h, i == last, bn.as_ref(), train, update_stats)?,
            );
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

    /// The outputs and the gradients of every parameter and input, flat.
    fn outputs_and_grads(
        mlps: &[&Mlp],
        inputs: &[Tensor],
        forward: impl Fn(&[&Mlp], &[Tensor]) -> Vec<Tensor>,
    ) -> (Vec<Tensor>, Vec<Tensor>) {
        let outputs = forward(mlps, inputs);
        let loss = outputs
            .iter()
            .enumerate()
            .map(|(i, y)| y.square().sum(Kind::Float) * (i + 1) as f64)
            .fold(Tensor::from(0f32), |a, b| a + b);
        let mut leaves: Vec<Tensor> = mlps
            .iter()
            .flat_map(|m| m.parameters("m").into_iter().map(|(_, t)| t))
            .collect();
        leaves.extend(inputs.iter().map(Tensor::shallow_clone));
        let grads = Tensor::run_backward(&[loss], &leaves, false, false);
        (outputs.iter().map(Tensor::detach).collect(), grads)
    }

    #[test]
    fn forward_many_matches_each_mlp_and_its_gradients() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        let one_by_one = |mlps: &[&Mlp], xs: &[Tensor]| -> Vec<Tensor> {
            mlps.iter()
                .zip(xs)
                .map(|(m, x)| m.forward(x, true, true).unwrap())
                .collect()
        };
        let together =
            |mlps: &[&Mlp], xs: &[Tensor]| Mlp::forward_many(mlps, xs, true, true).unwrap();
        for dims in [&[6, 1][..], &[6, 5, 3][..], &[6, 4, 4, 2][..]] {
            let mlps: Vec<Mlp> = (0..3)
                .map(|_| Mlp::new(dims, spec(false), Device::Cpu).unwrap())
                .collect();
            let refs: Vec<&Mlp> = mlps.iter().collect();
            let x = Tensor::f_randn([7, 6], opts)
                .unwrap()
                .set_requires_grad(true);
            // One features tensor for all (hard sharing), then one each.
            let shared = vec![x.shallow_clone(), x.shallow_clone(), x.shallow_clone()];
            let own: Vec<Tensor> = (0..3)
                .map(|_| {
                    Tensor::f_randn([7, 6], opts)
                        .unwrap()
                        .set_requires_grad(true)
                })
                .collect();
            for xs in [&shared, &own] {
                let (want, want_grads) = outputs_and_grads(&refs, xs, one_by_one);
                let (got, got_grads) = outputs_and_grads(&refs, xs, together);
                for (a, b) in want
                    .iter()
                    .chain(&want_grads)
                    .zip(got.iter().chain(&got_grads))
                {
                    assert_eq!(a.size(), b.size(), "{dims:?}");
                    let err = (a - b).abs().max().double_value(&[]);
                    assert!(err < 1e-5, "{dims:?}: {err}");
                }
            }
        }
        // Batch normalisation (statistics per MLP) and mismatched widths are
        // applied one by one; a count mismatch is an error.
        let bn: Vec<Mlp> = (0..2)
            .map(|_| Mlp::new(&[6, 4, 1], spec(true), Device::Cpu).unwrap())
            .collect();
        let xs: Vec<Tensor> = (0..2)
            .map(|_| Tensor::f_randn([5, 6], opts).unwrap())
            .collect();
        let refs: Vec<&Mlp> = bn.iter().collect();
        let got = Mlp::forward_many(&refs, &xs, false, false).unwrap();
        assert!(got[1].equal(&bn[1].forward(&xs[1], false, false).unwrap()));
        let wide = Mlp::new(&[6, 2], spec(false), Device::Cpu).unwrap();
        let mixed = [&bn[0], &wide];
        let got = Mlp::forward_many(&mixed, &xs, false, false).unwrap();
        assert_eq!(got[1].size(), [5, 2]);
        assert!(Mlp::forward_many(&mixed, &xs[..1], false, false).is_err());
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
