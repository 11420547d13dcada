//! What MMoE and PLE share: banks of expert MLPs and softmax gates over them.

use taskweave_plugin_api::nn::{Activation, Linear, Mlp, MlpSpec};
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{Group, Parameter, Result};

/// `n` expert MLPs through the widths `dims`, each activated at its output.
pub fn bank(n: usize, dims: &[usize], device: Device) -> Result<Vec<Mlp>> {
    let spec = MlpSpec {
        activation: Activation::Relu,
        dropout: 0.0,
        batch_norm: false,
        activate_last: true,
    };
    (0..n).map(|_| Mlp::new(dims, spec, device)).collect()
}

/// Every expert's output for `x` `[.., C]`: `[.., d]` each.
pub fn run(experts: &[Mlp], x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
    experts.iter().map(|e| e.forward(x, train, true)).collect()
}

/// `Σ_e softmax(gate(x))_e · outs_e`: the gate reads `x` `[.., C]` and mixes
/// the expert outputs `[.., d]` over the last dimension.
pub fn mix(gate: &Linear, x: &Tensor, outs: &[Tensor]) -> Result<Tensor> {
    // [.., n, d] · [.., n, 1], summed over the experts.
    let stacked = Tensor::f_stack(outs, -2)?;
    let weights = gate
        .forward(x)?
        .f_softmax(-1, Kind::Float)?
        .f_unsqueeze(-1)?;
    Ok(stacked
        .f_mul(&weights)?
        .f_sum_dim_intlist(-2, false, Kind::Float)?)
}

/// The parameters of `experts`, named `prefix{i}.*`, in `group`.
pub fn parameters(prefix: &str, experts: &[Mlp], group: Group, out: &mut Vec<Parameter>) {
    for (i, expert) in experts.iter().enumerate() {
        for (name, tensor) in expert.parameters(&format!("{prefix}{i}")) {
            out.push(Parameter {
                name,
                tensor,
                group,
            });
        }
    }
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
