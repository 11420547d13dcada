//! Baseline architectures between the backbone and the task heads.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema, NoKeys};
use taskweave_plugin_api::nn::{Activation, Linear, Mlp, MlpSpec};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Architecture, Constructor, Group, Host, Method, MethodContext, Parameter,
    Result,
};

/// Hard parameter sharing: every head reads the backbone's features.
struct HardSharing {
    dim: usize,
    tasks: usize,
}

impl Architecture for HardSharing {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        Ok(Vec::new())
    }

    fn output_dim(&self) -> usize {
        self.dim
    }

    fn forward(&mut self, features: &Tensor, _train: bool) -> Result<Vec<Tensor>> {
        Ok((0..self.tasks).map(|_| features.shallow_clone()).collect())
    }
}

fn create_hard(
    _config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Architecture>> {
    Ok(Box::new(HardSharing {
        dim: ctx.feature_dim,
        tasks: ctx.num_tasks(),
    }))
}

register_method!(Method::new(
    "hard-sharing",
    env!("CARGO_PKG_VERSION"),
    "Hard parameter sharing: the backbone's features go to every task head",
    schema_for::<NoKeys>,
    Constructor::Architecture(create_hard),
));

/// Multi-gate mixture of experts (Ma et al., KDD 2018): n expert MLPs shared by
/// all tasks, and per task a softmax gate over the experts.
struct Mmoe {
    experts: Vec<Mlp>,
    gates: Vec<Linear>,
}

impl Architecture for Mmoe {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        let mut out = Vec::new();
        for (e, expert) in self.experts.iter().enumerate() {
            for (name, tensor) in expert.parameters(&format!("expert{e}")) {
                out.push(Parameter {
                    name,
                    tensor,
                    group: Group::Shared,
                });
            }
        }
        for (t, gate) in self.gates.iter().enumerate() {
            for (name, tensor) in gate.parameters(&format!("gate{t}")) {
                out.push(Parameter {
                    name,
                    tensor,
                    group: Group::Task(t),
                });
            }
        }
        Ok(out)
    }

    fn output_dim(&self) -> usize {
        self.experts.first().map_or(0, Mlp::output_dim)
    }

    fn forward(&mut self, features: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let outs: Vec<Tensor> = self
            .experts
            .iter()
            .map(|e| e.forward(features, train, true))
            .collect::<Result<_>>()?;
        // [B, n, d]
        let stacked = Tensor::f_stack(&outs, 1)?;
        self.gates
            .iter()
            .map(|gate| {
                let g = gate
                    .forward(features)?
                    .f_softmax(-1, Kind::Float)?
                    .f_unsqueeze(-1)?;
                Ok(stacked
                    .f_mul(&g)?
                    .f_sum_dim_intlist(1, false, Kind::Float)?)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct MmoeConfig {
    /// Number of experts.
    #[schemars(range(min = 1, max = 4096))]
    experts: u32,
    /// Widths of each expert MLP (the last is the output width).
    #[schemars(length(min = 1), inner(range(min = 1, max = 16_777_216)))]
    expert_hidden: Vec<u32>,
}

impl Default for MmoeConfig {
    fn default() -> MmoeConfig {
        MmoeConfig {
            experts: 8,
            expert_hidden: vec![16],
        }
    }
}

fn create_mmoe(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Architecture>> {
    let device = ctx.device()?;
    let config: MmoeConfig = typed(config)?;
    let n = config.experts as usize;
    let hidden: Vec<usize> = config.expert_hidden.iter().map(|&w| w as usize).collect();
    let dims: Vec<usize> = std::iter::once(ctx.feature_dim).chain(hidden).collect();
    let spec = MlpSpec {
        activation: Activation::Relu,
        dropout: 0.0,
        batch_norm: false,
        activate_last: true,
    };
    let experts = (0..n)
        .map(|_| Mlp::new(&dims, spec, device))
        .collect::<Result<Vec<_>>>()?;
    let gates = (0..ctx.num_tasks())
        .map(|_| Linear::new(ctx.feature_dim, n, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Box::new(Mmoe { experts, gates }))
}

register_method!(Method::new(
    "mmoe",
    env!("CARGO_PKG_VERSION"),
    "Multi-gate mixture of experts: shared experts, one softmax gate per task (Ma et al., KDD 2018)",
    schema_for::<MmoeConfig>,
    Constructor::Architecture(create_mmoe),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::serde_json::json;

    #[test]
    fn mmoe_outputs_one_mixture_per_task_with_gate_and_expert_groups() {
        let ctx = MethodContext {
            tasks: vec!["a".into(), "b".into()].into(),
            device: "cpu".into(),
            seed: 0,
            feature_dim: 5,
            weighting: "{}".into(),
        };
        let config = json!({"experts": 3, "expert_hidden": [4]});
        let mut m = create_mmoe(&config, &ctx, &Host::standalone()).unwrap();
        let out = m
            .forward(
                &Tensor::ones(
                    [2, 5],
                    (Kind::Float, taskweave_plugin_api::tch::Device::Cpu),
                ),
                true,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].size(), vec![2, 4]);
        let params = m.parameters().unwrap();
        assert_eq!(
            params.iter().filter(|p| p.group == Group::Shared).count(),
            6
        );
        assert_eq!(
            params.iter().filter(|p| p.group == Group::Task(1)).count(),
            2
        );
    }
}
