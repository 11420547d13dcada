//! `mixture`: each task's representation `h_k` as that task's input of a
//! multi-gate mixture of experts (MMoE: shared experts, one softmax gate per
//! task), whose mixture then feeds the task's head.

use taskweave_plugin_api::nn::experts::{gate_parameters, mix_one, Bank};
use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::tch::{Device, Tensor};
use taskweave_plugin_api::{Group, Parameter, Result};

/// The experts and one gate per task.
pub struct Mixture {
    experts: Bank,
    gates: Vec<Linear>,
}

impl Mixture {
    /// `n` experts through the widths `hidden` over inputs `width` wide, and
    /// `tasks` gates.
    pub fn new(
        tasks: usize,
        width: usize,
        n: usize,
        hidden: &[usize],
        device: Device,
    ) -> Result<Mixture> {
        let dims: Vec<usize> = std::iter::once(width)
            .chain(hidden.iter().copied())
            .collect();
        Ok(Mixture {
            experts: Bank::new(n, &dims, device)?,
            gates: (0..tasks)
                .map(|_| Linear::new(width, n, device))
                .collect::<Result<_>>()?,
        })
    }

    /// The width of each task's output.
    pub fn output_dim(&self) -> usize {
        self.experts.output_dim()
    }

    /// Task `task`'s mixture of the experts over its input `h` `[N, width]`.
    pub fn forward(&self, task: usize, h: &Tensor) -> Result<Tensor> {
        mix_one(&self.gates[task], h, &self.experts.forward(h)?)
    }

    /// The experts (shared) and each task's gate, under the component `mixture`.
    pub fn parameters(&self, out: &mut Vec<(&'static str, Parameter)>) {
        let mut own = Vec::new();
        self.experts
            .parameters("mixture.experts", Group::Shared, &mut own);
        for (t, gate) in self.gates.iter().enumerate() {
            gate_parameters(&format!("mixture.gate{t}"), gate, Group::Task(t), &mut own);
        }
        out.extend(own.into_iter().map(|p| ("mixture", p)));
    }
}
