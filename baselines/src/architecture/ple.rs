//! Progressive layered extraction (PLE; Tang et al., RecSys 2020): levels of
//! customized gate control (CGC), each with experts of its own per task
//! beside shared experts. `levels = 1` is CGC.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Device, Tensor};
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, Constructor, Group, Host, Method,
    MethodContext, Parameter, Result,
};

use taskweave_plugin_api::nn::experts;

/// One extraction level.
struct Level {
    /// Per task, its own experts.
    task_experts: Vec<experts::Bank>,
    shared_experts: experts::Bank,
    /// Per task, a gate over its experts then the shared ones.
    task_gates: Vec<Linear>,
    /// A gate over every expert (every task's, then the shared ones) that
    /// feeds the next level's shared experts; absent at the last level.
    shared_gate: Option<Linear>,
}

impl Level {
    fn new(
        tasks: usize,
        config: &PleConfig,
        input: usize,
        last: bool,
        device: Device,
    ) -> Result<Level> {
        let dims: Vec<usize> = std::iter::once(input)
            .chain(config.expert_hidden.iter().map(|&w| w as usize))
            .collect();
        let (own, shared) = (config.task_experts as usize, config.shared_experts as usize);
        Ok(Level {
            task_experts: (0..tasks)
                .map(|_| experts::Bank::new(own, &dims, device))
                .collect::<Result<_>>()?,
            shared_experts: experts::Bank::new(shared, &dims, device)?,
            task_gates: (0..tasks)
                .map(|_| Linear::new(input, own + shared, device))
                .collect::<Result<_>>()?,
            shared_gate: match last {
                true => None,
                false => Some(Linear::new(input, tasks * own + shared, device)?),
            },
        })
    }

    /// Per task inputs and the shared input → per task outputs and the next
    /// level's shared input.
    fn forward(
        &self,
        task_in: &[Tensor],
        shared_in: &Tensor,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let shared = self.shared_experts.forward(shared_in)?;
        let mut every: Vec<Tensor> = Vec::new();
        let mut outs = Vec::with_capacity(task_in.len());
        for ((bank, gate), x) in self.task_experts.iter().zip(&self.task_gates).zip(task_in) {
            let own = bank.forward(x)?;
            // [.., own + shared, d]
            let mine = Tensor::f_cat(&[&own, &shared], -2)?;
            outs.push(experts::mix_one(gate, x, &mine)?);
            every.push(own);
        }
        let next = match &self.shared_gate {
            Some(gate) => {
                every.push(shared);
                Some(experts::mix_one(
                    gate,
                    shared_in,
                    &Tensor::f_cat(&every, -2)?,
                )?)
            }
            None => None,
        };
        Ok((outs, next))
    }

    fn parameters(&self, level: usize, out: &mut Vec<Parameter>) {
        for (t, (bank, gate)) in self.task_experts.iter().zip(&self.task_gates).enumerate() {
            bank.parameters(
                &format!("level{level}.task{t}.experts"),
                Group::Task(t),
                out,
            );
            experts::gate_parameters(&format!("level{level}.gate{t}"), gate, Group::Task(t), out);
        }
        let shared = format!("level{level}.shared.experts");
        self.shared_experts.parameters(&shared, Group::Shared, out);
        if let Some(gate) = &self.shared_gate {
            let name = format!("level{level}.shared_gate");
            experts::gate_parameters(&name, gate, Group::Shared, out);
        }
    }
}

struct Ple {
    levels: Vec<Level>,
    output_dim: usize,
}

impl Architecture for Ple {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        let mut out = Vec::new();
        for (i, level) in self.levels.iter().enumerate() {
            level.parameters(i, &mut out);
        }
        Ok(out)
    }

    // No dropout, no state across calls.
    fn replicable(&self) -> bool {
        true
    }

    fn output_dim(&self) -> usize {
        self.output_dim
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let x = input.last_layer()?;
        let tasks = self.levels.first().map_or(0, |l| l.task_gates.len());
        let mut task_in: Vec<Tensor> = (0..tasks).map(|_| x.shallow_clone()).collect();
        let mut shared_in = Some(x.shallow_clone());
        for level in &self.levels {
            let shared = shared_in
                .take()
                .expect("every level but the last feeds the next");
            let (outs, next) = level.forward(&task_in, &shared)?;
            task_in = outs;
            shared_in = next;
        }
        Ok(task_in)
    }
}

/// `[model] architecture = { kind = "ple", ... }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct PleConfig {
    /// Extraction levels (1 = CGC).
    #[schemars(range(min = 1, max = 64))]
    levels: u32,
    /// Experts of each task's own, per level.
    #[schemars(range(min = 1, max = 4096))]
    task_experts: u32,
    /// Experts shared by all tasks, per level.
    #[schemars(range(min = 1, max = 4096))]
    shared_experts: u32,
    /// Widths of each expert MLP (the last is the output width).
    #[schemars(length(min = 1), inner(range(min = 1, max = 16_777_216)))]
    expert_hidden: Vec<u32>,
}

impl Default for PleConfig {
    fn default() -> PleConfig {
        PleConfig {
            levels: 1,
            task_experts: 2,
            shared_experts: 2,
            expert_hidden: vec![16],
        }
    }
}

pub(super) fn create(
    config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Architecture>> {
    super::refuse_maps(ctx, "PLE")?;
    let device = ctx.device()?;
    let config: PleConfig = typed(config)?;
    let width = *config
        .expert_hidden
        .last()
        .expect("schema: at least one width") as usize;
    let levels = (0..config.levels as usize)
        .map(|i| {
            let input = if i == 0 { ctx.feature_dim } else { width };
            Level::new(
                ctx.num_tasks(),
                &config,
                input,
                i + 1 == config.levels as usize,
                device,
            )
        })
        .collect::<Result<_>>()?;
    Ok(Box::new(Ple {
        levels,
        output_dim: width,
    }))
}

register_method!(Method::new(
    "ple",
    env!("CARGO_PKG_VERSION"),
    "Progressive layered extraction: per-task and shared experts with per-task gates, stacked in levels (Tang et al., RecSys 2020)",
    schema_for::<PleConfig>,
    Constructor::Architecture(create),
));

#[cfg(test)]
mod tests {
    use super::super::testing::{context, forward};
    use super::*;
    use taskweave_plugin_api::serde_json::json;

    #[test]
    fn two_levels_on_flat_and_token_features() {
        let config =
            json!({"levels": 2, "task_experts": 1, "shared_experts": 2, "expert_hidden": [6, 3]});
        let mut m = create(&config, &context(3, 5), &Host::standalone()).unwrap();
        let flat = forward(m.as_mut(), &[2, 5]);
        assert_eq!(flat.len(), 3);
        assert_eq!(flat[2].size(), [2, 3]);
        assert_eq!(forward(m.as_mut(), &[2, 4, 5])[0].size(), [2, 4, 3]);
        let params = m.parameters().unwrap();
        // Per level and task: its experts (2 layers: 4 stacked tensors) and a gate (2).
        assert_eq!(
            params.iter().filter(|p| p.group == Group::Task(1)).count(),
            12
        );
        // Per level: the shared experts (4); a shared gate (2) at level 0 only.
        assert_eq!(
            params.iter().filter(|p| p.group == Group::Shared).count(),
            10
        );
        assert!(params.iter().any(|p| p.name == "level0.shared_gate.weight"));
        assert!(!params.iter().any(|p| p.name == "level1.shared_gate.weight"));
    }

    #[test]
    fn a_task_loss_reaches_no_other_task_s_own_experts() {
        let config =
            json!({"levels": 1, "task_experts": 1, "shared_experts": 1, "expert_hidden": [3]});
        taskweave_plugin_api::tch::manual_seed(0);
        let mut m = create(&config, &context(2, 4), &Host::standalone()).unwrap();
        let out = forward(m.as_mut(), &[5, 4]);
        out[0]
            .sum(taskweave_plugin_api::tch::Kind::Float)
            .backward();
        // Reached = the backward pass wrote a gradient (zeros count: a dead
        // ReLU under a random init is still on the path); task 1's own
        // parameters must get none or only zeros.
        for p in m.parameters().unwrap() {
            let grad = p.tensor.grad();
            if p.group == Group::Task(1) {
                let zero = !grad.defined()
                    || grad
                        .abs()
                        .sum(taskweave_plugin_api::tch::Kind::Float)
                        .double_value(&[])
                        == 0.0;
                assert!(zero, "{} gets task 0's gradient", p.name);
            } else {
                assert!(grad.defined(), "{} is not on task 0's path", p.name);
            }
        }
    }
}
