//! Mixtures of experts: banks of expert MLPs and softmax gates over them, as
//! MMoE, PLE and TaskExpert use them.

use tch::{Device, Kind, Tensor};

use crate::nn::Linear;
use crate::{Group, Parameter, Result};

/// `n` expert MLPs of the same widths, held as one stacked weight per layer
/// so that all experts run as one matrix product per layer (8 experts cost
/// one product, not eight). Every layer is followed by a ReLU.
pub struct Bank {
    /// Per layer: weight `[n, out, in]` and bias `[n, out]`.
    layers: Vec<(Tensor, Tensor)>,
    n: i64,
}

impl Bank {
    /// `n` experts through the widths `dims` (`dims[0]` inputs), each layer
    /// initialised like its own `torch.nn.Linear` (uniform in ±1/√inputs).
    pub fn new(n: usize, dims: &[usize], device: Device) -> Result<Bank> {
        let n = n as i64;
        let layers = dims
            .windows(2)
            .map(|pair| {
                let (inputs, outputs) = (pair[0] as i64, pair[1] as i64);
                let bound = 1.0 / (inputs.max(1) as f64).sqrt();
                let uniform = |shape: &[i64]| -> Result<Tensor> {
                    let mut t = Tensor::f_empty(shape, (Kind::Float, device))?;
                    let _ = t.f_uniform_(-bound, bound)?;
                    Ok(t.set_requires_grad(true))
                };
                Ok((uniform(&[n, outputs, inputs])?, uniform(&[n, outputs])?))
            })
            .collect::<Result<_>>()?;
        Ok(Bank { layers, n })
    }

    /// The width of each expert's output.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |(w, _)| w.size()[1] as usize)
    }

    /// Every expert's output for `x` `[.., C]`: `[.., n, d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h: Option<Tensor> = None;
        for (w, b) in &self.layers {
            let (out, inp) = (w.size()[1], w.size()[2]);
            let y = match &h {
                // The first layer reads the same input for every expert: one
                // product with the weights side by side, [.., n·out].
                None => {
                    let flat = x.f_linear(
                        &w.f_reshape([self.n * out, inp])?,
                        Some(&b.f_reshape([-1])?),
                    )?;
                    let mut shape = x.size();
                    shape.pop();
                    shape.extend([self.n, out]);
                    flat.f_reshape(shape.as_slice())?
                }
                // Later layers: expert e's input times expert e's weight, as a
                // batched product over the experts.
                Some(h) => {
                    let mut shape = h.size();
                    let rows = h.numel() as i64 / (self.n * inp);
                    let by_expert = h
                        .f_movedim(&[-2i64][..], &[0i64][..])?
                        .f_reshape([self.n, rows, inp])?;
                    let y = by_expert
                        .f_bmm(&w.f_transpose(1, 2)?)?
                        .f_add(&b.f_unsqueeze(1)?)?;
                    let last = shape.len() - 1;
                    shape[last] = out;
                    let mut moved = shape.clone();
                    moved.remove(last - 1);
                    moved.insert(0, self.n);
                    y.f_reshape(moved.as_slice())?
                        .f_movedim(&[0i64][..], &[-2i64][..])?
                }
            };
            h = Some(y.f_relu()?);
        }
        h.ok_or_else(|| crate::Error::msg("an expert bank needs at least one layer"))
    }

    /// The bank's tensors, named `prefix.{layer}.weight|bias`, in `group`.
    pub fn parameters(&self, prefix: &str, group: Group, out: &mut Vec<Parameter>) {
        for (i, (w, b)) in self.layers.iter().enumerate() {
            for (kind, tensor) in [("weight", w), ("bias", b)] {
                out.push(Parameter {
                    name: format!("{prefix}.{i}.{kind}"),
                    tensor: tensor.shallow_clone(),
                    group,
                });
            }
        }
    }
}

/// `Σ_e softmax(gate(x))_e · experts_e` for each gate of `gates`: the gates
/// read `x` `[.., C]` and mix the same expert outputs `[.., n, d]` into one
/// `[.., d]` each. All gates run as one linear layer and one softmax.
pub fn mix(gates: &[&Linear], x: &Tensor, experts: &Tensor) -> Result<Vec<Tensor>> {
    let n = experts.size()[experts.dim() - 2];
    let weight = Tensor::f_cat(&gates.iter().map(|g| &g.weight).collect::<Vec<_>>(), 0)?;
    let bias = Tensor::f_cat(&gates.iter().map(|g| &g.bias).collect::<Vec<_>>(), 0)?;
    let logits = x.f_linear(&weight, Some(&bias))?;
    let mut shape = logits.size();
    shape.pop();
    shape.extend([gates.len() as i64, n, 1]);
    // [.., T, n, 1] * [.., 1, n, d] summed over n. Not a batched [1, n]·[n, d]
    // matmul: libtorch runs those tiny products through its naive bmm loop,
    // which cost 9% of a census MMoE step; the broadcast is vectorised.
    let weights = logits
        .f_view(shape.as_slice())?
        .f_softmax(-2, Kind::Float)?;
    let mixed = weights
        .f_mul(&experts.f_unsqueeze(-3)?)?
        .f_sum_dim_intlist(-2, false, Kind::Float)?;
    Ok(mixed.f_unbind(-2)?)
}

/// [`mix`] with one gate.
pub fn mix_one(gate: &Linear, x: &Tensor, experts: &Tensor) -> Result<Tensor> {
    let mut mixed = mix(&[gate], x, experts)?;
    Ok(mixed.remove(0))
}

/// The parameters of `gate`, named `name.*`, in `group`.
pub fn gate_parameters(name: &str, gate: &Linear, group: Group, out: &mut Vec<Parameter>) {
    for (name, tensor) in gate.parameters(name) {
        out.push(Parameter {
            name,
            tensor,
            group,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bank_computes_what_separate_experts_would() {
        let bank = Bank::new(3, &[5, 4, 2], Device::Cpu).unwrap();
        let x = Tensor::randn([2, 7, 5], (Kind::Float, Device::Cpu));
        let out = bank.forward(&x).unwrap();
        assert_eq!(out.size(), [2, 7, 3, 2]);
        for e in 0..3 {
            let mut h = x.shallow_clone();
            for (w, b) in &bank.layers {
                h = h.linear(&w.get(e), Some(&b.get(e))).relu();
            }
            assert!(
                out.select(-2, e).allclose(&h, 1e-5, 1e-6, false),
                "expert {e}"
            );
        }
    }
}
