//! Multi-gate mixture of experts (Ma et al., KDD 2018).

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, Constructor, Group, Host, Method,
    MethodContext, Parameter, Result,
};

use taskweave_plugin_api::nn::experts;

/// n expert MLPs shared by all tasks, and per task a softmax gate over them.
struct Mmoe {
    experts: experts::Bank,
    gates: Vec<Linear>,
}

impl Architecture for Mmoe {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        let mut out = Vec::new();
        self.experts.parameters("experts", Group::Shared, &mut out);
        for (t, gate) in self.gates.iter().enumerate() {
            experts::gate_parameters(&format!("gate{t}"), gate, Group::Task(t), &mut out);
        }
        Ok(out)
    }

    // No dropout, no state across calls.
    fn replicable(&self) -> bool {
        true
    }

    fn output_dim(&self) -> usize {
        self.experts.output_dim()
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let x = input.last_layer()?;
        let outs = self.experts.forward(x)?;
        let gates: Vec<&Linear> = self.gates.iter().collect();
        experts::mix(&gates, x, &outs)
    }
}

/// `[model] architecture = { kind = "mmoe", ... }`.
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

pub(super) fn create(
    config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Architecture>> {
    super::refuse_maps(ctx, "MMoE")?;
    let device = ctx.device()?;
    let config: MmoeConfig = typed(config)?;
    let n = config.experts as usize;
    let dims: Vec<usize> = std::iter::once(ctx.feature_dim)
        .chain(config.expert_hidden.iter().map(|&w| w as usize))
        .collect();
    let experts = experts::Bank::new(n, &dims, device)?;
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
    Constructor::Architecture(create),
));

#[cfg(test)]
mod tests {
    use super::super::testing::{context, forward};
    use super::*;
    use taskweave_plugin_api::serde_json::json;

    #[test]
    fn one_mixture_per_task_on_flat_and_token_features_with_gate_and_expert_groups() {
        let config = json!({"experts": 3, "expert_hidden": [4]});
        let mut m = create(&config, &context(2, 5), &Host::standalone()).unwrap();
        let flat = forward(m.as_mut(), &[2, 5]);
        assert_eq!(flat.len(), 2);
        assert_eq!(flat[0].size(), [2, 4]);
        let tokens = forward(m.as_mut(), &[2, 7, 5]);
        assert_eq!(tokens[1].size(), [2, 7, 4]);
        let params = m.parameters().unwrap();
        let in_group = |g| params.iter().filter(|p| p.group == g).count();
        assert_eq!(in_group(Group::Shared), 2, "one stacked weight and bias");
        assert_eq!(in_group(Group::Task(1)), 2);
    }

    #[test]
    fn a_gate_that_picks_one_expert_returns_that_expert() {
        let config = json!({"experts": 2, "expert_hidden": [3]});
        let mut m = create(&config, &context(1, 4), &Host::standalone()).unwrap();
        let params = m.parameters().unwrap();
        let bias = params.iter().find(|p| p.name == "gate0.bias").unwrap();
        let weight = params.iter().find(|p| p.name == "gate0.weight").unwrap();
        taskweave_plugin_api::tch::no_grad(|| {
            let _ = weight.tensor.shallow_clone().zero_();
            bias.tensor
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[-50f32, 50.0]));
        });
        let x = Tensor::randn(
            [3, 4],
            (
                taskweave_plugin_api::tch::Kind::Float,
                taskweave_plugin_api::tch::Device::Cpu,
            ),
        );
        let layers = [x.shallow_clone()];
        let out = m
            .forward(&ArchitectureInput {
                inputs: &[],
                layers: &layers,
                train: false,
            })
            .unwrap();
        let find = |name: &str| &params.iter().find(|p| p.name == name).unwrap().tensor;
        let (w, b) = (
            find("experts.0.weight").get(1),
            find("experts.0.bias").get(1),
        );
        let want = x.linear(&w, Some(&b)).relu();
        assert!(out[0].allclose(&want, 1e-5, 1e-6, false));
    }
}
