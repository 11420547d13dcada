//! TaskExpert (Ye & Xu, "TaskExpert: Dynamically Assembling Multi-Task
//! Representations with Memorial Mixture-of-Experts", ICCV 2023) as an `Architecture` over every block's tokens of the backbone.
//!
//! At each selected block `l` (`layers`, 0-based; all blocks by default),
//! with tokens `X_l` `[B, N, C_l]`: `n` expert MLPs (`experts`, widths
//! `expert_hidden`, the last the output width `d`) decompose the tokens;
//! per task `t` a gate reads each token and puts a softmax over `n + 1`
//! slots, the `n` experts and the task's memory `M_t^{l−1}` (zeros at the
//! first selected block); the mixture `F_t^l` becomes the memory `M_t^l`.
//! The last memory feeds task `t`'s head, as tokens `[B, N, d]`. With
//! `memory = false` (the ablation) the gates have `n` slots and each
//! block's mixture replaces the previous one.
//!
//! After every evaluation the mean gate weight per task, block and slot
//! (over the evaluation's tokens) goes to metrics.jsonl, as
//! `gate.<task>.<block>.<slot>` (slot `memory` for the memory).
//!
//! `balance` > 0 adds a load-balancing term per task (through
//! [`Architecture::aux_losses`], so it is part of the task's loss): over
//! each selected block's tokens, with `p_j` the gate's weight on expert `j`
//! renormalised over the `n` experts (the memory slot is not an expert),
//! `n · Σ_j f_j · P_j`, where `P_j` is the mean of `p_j` and `f_j` the share
//! of tokens whose largest `p` is expert `j` (the Switch Transformer's
//! form: 1 when the load is even, up to `n` when one expert takes it all),
//! averaged over the blocks and scaled by `balance`. The paper calls its
//! load-balancing loss optional without giving its form; this is the
//! common one.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::nn::experts::{gate_parameters, Bank};
use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, BackboneUse, Constructor, Error, Group, Host,
    Method, MethodContext, Parameter, Result,
};

/// `taskexpert`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Experts per selected block.
    #[schemars(range(min = 1, max = 256))]
    experts: u32,
    /// Widths of each expert MLP (the last is the output width).
    #[schemars(length(min = 1), inner(range(min = 1, max = 1_048_576)))]
    expert_hidden: Vec<u32>,
    /// The backbone blocks to decompose, 0-based, increasing (empty: every block).
    layers: Vec<u32>,
    /// Each task's memory as an extra gate slot (false: the ablation without it).
    memory: bool,
    /// Weight of the load-balancing term added to each task's loss (0: none).
    #[schemars(range(min = 0.0))]
    balance: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            experts: 8,
            expert_hidden: vec![64],
            layers: Vec::new(),
            memory: true,
            balance: 0.0,
        }
    }
}

/// One selected block: its experts and one gate per task.
struct Block {
    index: usize,
    experts: Bank,
    gates: Vec<Linear>,
}

struct TaskExpert {
    blocks: Vec<Block>,
    /// Experts per block.
    experts: usize,
    memory: bool,
    tasks: Vec<String>,
    /// Per block, the summed gate weights of the current evaluation
    /// `[tasks, slots]`, and the number of tokens they sum.
    gate_sums: Vec<Option<Tensor>>,
    tokens: f64,
    /// `balance`.
    balance: f64,
    /// The load-balancing terms `[T]` of the last training pass.
    aux: Option<Tensor>,
    /// The gate's kernel.
    host: Host,
}

impl Architecture for TaskExpert {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        let mut out = Vec::new();
        for block in &self.blocks {
            let b = block.index;
            block
                .experts
                .parameters(&format!("block{b}.experts"), Group::Shared, &mut out);
            for (t, gate) in block.gates.iter().enumerate() {
                gate_parameters(&format!("block{b}.gate{t}"), gate, Group::Task(t), &mut out);
            }
        }
        Ok(out)
    }

    // No dropout; gate sums and the auxiliary loss are per pass.
    fn replicable(&self) -> bool {
        true
    }

    fn output_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.experts.output_dim())
    }

    fn backbone(&self) -> BackboneUse {
        BackboneUse::All
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        // Every task's memory `[T, R, d]` over the R = B·N tokens (None before
        // the first selected block: its slot then holds zeros).
        let mut memory: Option<Tensor> = None;
        let mut shape = (0, 0);
        let tasks = self.tasks.len() as i64;
        let balancing = input.train && self.balance > 0.0;
        let mut imbalance: Vec<Vec<Tensor>> = self.tasks.iter().map(|_| Vec::new()).collect();
        for (k, block) in self.blocks.iter().enumerate() {
            let x = input.layers.get(block.index).ok_or_else(|| {
                Error::msg(format!(
                    "block {} selected, but the backbone gave {} outputs",
                    block.index,
                    input.layers.len()
                ))
            })?;
            let &[b, n_tokens, _] = x.size().as_slice() else {
                return Err(Error::msg(format!(
                    "TaskExpert reads tokens [B, N, C]; block {} gave {:?}",
                    block.index,
                    x.size()
                )));
            };
            shape = (b, n_tokens);
            let experts = block.experts.forward(x)?; // [B, N, n, d]
            let (n, d) = (self.experts as i64, experts.size()[3]);
            let experts = experts.f_reshape([b * n_tokens, n, d])?;
            // Every task's gate in one product: [B, N, T·S] -> [T, R, S].
            let weight = Tensor::f_cat(
                &block.gates.iter().map(|g| &g.weight).collect::<Vec<_>>(),
                0,
            )?;
            let bias = Tensor::f_cat(&block.gates.iter().map(|g| &g.bias).collect::<Vec<_>>(), 0)?;
            let logits = x
                .f_linear(&weight, Some(&bias))?
                .f_reshape([b * n_tokens, tasks, -1])?
                .f_permute([1, 0, 2])?;
            let carried = memory.as_ref().filter(|_| self.memory);
            let (mixed, weights) = self.host.gate_mix(&logits, &experts, carried)?;
            if balancing {
                for (t, per_task) in imbalance.iter_mut().enumerate() {
                    per_task.push(load_imbalance(&weights.f_get(t as i64)?, self.experts)?);
                }
            }
            if !input.train {
                let sum = weights.f_detach()?.f_sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    Kind::Double,
                )?;
                let slot = &mut self.gate_sums[k];
                *slot = Some(match slot.take() {
                    Some(s) => s.f_add(&sum)?,
                    None => sum,
                });
                if k == 0 {
                    self.tokens += (b * n_tokens) as f64;
                }
            }
            memory = Some(mixed);
        }
        if balancing {
            let per_task = imbalance
                .iter()
                .map(|blocks| Ok(Tensor::f_stack(blocks, 0)?.f_mean(Kind::Float)?))
                .collect::<Result<Vec<_>>>()?;
            self.aux = Some(Tensor::f_stack(&per_task, 0)?.f_mul_scalar(self.balance)?);
        }
        let memory = memory.ok_or_else(|| Error::msg("TaskExpert has no selected block"))?;
        (0..tasks)
            .map(|t| Ok(memory.f_get(t)?.f_reshape([shape.0, shape.1, -1])?))
            .collect()
    }

    fn aux_losses(&mut self) -> Result<Option<Tensor>> {
        Ok(self.aux.take())
    }

    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let n = self.experts;
        let sums: Vec<Option<Tensor>> = self.gate_sums.iter_mut().map(Option::take).collect();
        for (t, task) in self.tasks.iter().enumerate() {
            for (block, sum) in self.blocks.iter().zip(&sums) {
                let Some(sum) = sum else {
                    continue;
                };
                let means = Vec::<f64>::try_from(
                    &sum.f_get(t as i64)?.f_div_scalar(self.tokens.max(1.0))?,
                )?;
                for (slot, mean) in means.iter().enumerate() {
                    let name = if slot == n {
                        "memory".to_string()
                    } else {
                        format!("expert{slot}")
                    };
                    out.push((format!("gate.{task}.{}.{name}", block.index), *mean));
                }
            }
        }
        self.tokens = 0.0;
        Ok(out)
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Architecture>> {
    let device = ctx.device()?;
    let config: Config = typed(config)?;
    let depth = ctx.layer_dims.len();
    let layers: Vec<usize> = match config.layers.is_empty() {
        true => (0..depth).collect(),
        false => config.layers.iter().map(|&l| l as usize).collect(),
    };
    if let Some(&l) = layers.iter().find(|&&l| l >= depth) {
        return Err(Error::input(format!(
            "layers: block {l} does not exist; the backbone has {depth} blocks (0..{})",
            depth.saturating_sub(1)
        )));
    }
    if let Some(&l) = layers
        .iter()
        .find(|&&l| ctx.layer_ranks.get(l).is_some_and(|&r| r != 2))
    {
        let shape = match ctx.layer_ranks[l] {
            1 => "flat features [B, C]",
            _ => "feature maps [B, C, H, W]",
        };
        return Err(Error::input(format!(
            "model.backbone: TaskExpert decomposes tokens [B, N, C], but block {l} of the backbone gives {shape}; use a backbone of tokens (`vit`, `transformer-lm`)"
        )));
    }
    if layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::input(format!(
            "layers: {layers:?} must be increasing block indices"
        )));
    }
    let n = config.experts as usize;
    let slots = n + usize::from(config.memory);
    let tasks = ctx.num_tasks();
    let blocks = layers
        .iter()
        .map(|&index| {
            let width = ctx.layer_dims[index];
            let dims: Vec<usize> = std::iter::once(width)
                .chain(config.expert_hidden.iter().map(|&w| w as usize))
                .collect();
            Ok(Block {
                index,
                experts: Bank::new(n, &dims, device)?,
                gates: (0..tasks)
                    .map(|_| Linear::new(width, slots, device))
                    .collect::<Result<_>>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let selected = blocks.len();
    Ok(Box::new(TaskExpert {
        blocks,
        experts: n,
        memory: config.memory,
        tasks: ctx.tasks.iter().map(|t| t.to_string()).collect(),
        gate_sums: (0..selected).map(|_| None).collect(),
        tokens: 0.0,
        balance: config.balance,
        aux: None,
        host: host.clone(),
    }))
}

/// `n · Σ_j f_j · P_j` over the tokens of one gate's `weights` `[tokens,
/// slots]`, the first `n` slots the experts (see the module's doc).
fn load_imbalance(weights: &Tensor, n: usize) -> Result<Tensor> {
    let experts = weights.f_narrow(-1, 0, n as i64)?;
    let p = experts.f_div(&experts.f_sum_dim_intlist(-1, true, Kind::Float)?)?;
    let tokens = p.f_reshape([-1, n as i64])?;
    let importance = tokens.f_mean_dim(0, false, Kind::Float)?;
    // Where the tokens go: not differentiable, as in the Switch Transformer.
    let load = tokens
        .f_argmax(-1, false)?
        .f_one_hot(n as i64)?
        .f_to_kind(Kind::Float)?
        .f_mean_dim(0, false, Kind::Float)?;
    Ok(load
        .f_mul(&importance)?
        .f_sum(Kind::Float)?
        .f_mul_scalar(n as f64)?)
}

register_method!(Method::new(
    "taskexpert",
    env!("CARGO_PKG_VERSION"),
    "TaskExpert: per-block expert decomposition of tokens, per-task gates with a memory slot (Ye & Xu, ICCV 2023)",
    schema_for::<Config>,
    Constructor::Architecture(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{no_grad, Device};

    fn context(tasks: usize, layer_dims: &[usize]) -> MethodContext {
        MethodContext {
            tasks: (0..tasks).map(|t| format!("task{t}").into()).collect(),
            device: "cpu".into(),
            feature_dim: *layer_dims.last().unwrap(),
            layer_dims: layer_dims.to_vec().into(),
            layer_ranks: vec![2; layer_dims.len()].into(),
            weighting: "{}".into(),
            ..Default::default()
        }
    }

    fn tokens(blocks: usize) -> Vec<Tensor> {
        (0..blocks)
            .map(|_| Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu)))
            .collect()
    }

    fn run(m: &mut dyn Architecture, layers: &[Tensor], train: bool) -> Vec<Tensor> {
        m.forward(&ArchitectureInput {
            inputs: &[],
            layers,
            train,
        })
        .unwrap()
    }

    /// Makes gate `name` put (almost) all weight on slot `slot`.
    fn pin(params: &[Parameter], name: &str, slot: usize, slots: usize) {
        let find = |suffix: &str| {
            &params
                .iter()
                .find(|p| p.name == format!("{name}.{suffix}"))
                .unwrap()
                .tensor
        };
        let mut bias = vec![-50f32; slots];
        bias[slot] = 50.0;
        no_grad(|| {
            let _ = find("weight").shallow_clone().zero_();
            find("bias")
                .shallow_clone()
                .copy_(&Tensor::from_slice(&bias));
        });
    }

    #[test]
    fn every_selected_block_mixes_its_experts_and_the_memory_per_task() {
        let config = json!({"experts": 3, "expert_hidden": [4]});
        let mut m = create(&config, &context(2, &[6, 6, 6]), &Host::standalone()).unwrap();
        let layers = tokens(3);
        let out = run(m.as_mut(), &layers, true);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].size(), [2, 5, 4]);
        let params = m.parameters().unwrap();
        let in_group = |g| params.iter().filter(|p| p.group == g).count();
        assert_eq!(in_group(Group::Shared), 3 * 2, "one stacked bank per block");
        assert_eq!(in_group(Group::Task(1)), 3 * 2, "one gate per block");
        // Task 0: expert 1 at block 0, then only the memory: the output is
        // block 0's expert 1.
        pin(&params, "block0.gate0", 1, 4);
        pin(&params, "block1.gate0", 3, 4);
        pin(&params, "block2.gate0", 3, 4);
        let out = run(m.as_mut(), &layers, true);
        let find = |name: &str| &params.iter().find(|p| p.name == name).unwrap().tensor;
        let (w, b) = (
            find("block0.experts.0.weight").get(1),
            find("block0.experts.0.bias").get(1),
        );
        let want = layers[0].linear(&w, Some(&b)).relu();
        assert!(out[0].allclose(&want, 1e-5, 1e-6, false));
        assert!(
            !out[1].allclose(&want, 1e-3, 1e-3, false),
            "task 1 has its own gates"
        );
    }

    #[test]
    fn without_memory_the_last_block_alone_feeds_the_head() {
        let config = json!({"experts": 2, "expert_hidden": [3], "memory": false, "layers": [0, 2]});
        let mut m = create(&config, &context(1, &[6, 6, 6]), &Host::standalone()).unwrap();
        let params = m.parameters().unwrap();
        assert!(params.iter().all(|p| !p.name.starts_with("block1")));
        pin(&params, "block2.gate0", 0, 2);
        let layers = tokens(3);
        let out = run(m.as_mut(), &layers, true);
        let find = |name: &str| &params.iter().find(|p| p.name == name).unwrap().tensor;
        let want = layers[2]
            .linear(
                &find("block2.experts.0.weight").get(0),
                Some(&find("block2.experts.0.bias").get(0)),
            )
            .relu();
        assert!(out[0].allclose(&want, 1e-5, 1e-6, false));
    }

    #[test]
    fn evaluation_reports_each_task_s_mean_gate_weights_and_starts_afresh() {
        let config = json!({"experts": 2, "expert_hidden": [3]});
        let mut m = create(&config, &context(2, &[6, 6]), &Host::standalone()).unwrap();
        let layers = tokens(2);
        run(m.as_mut(), &layers, true);
        assert!(
            m.eval_metrics().unwrap().is_empty(),
            "training passes are not reported"
        );
        run(m.as_mut(), &layers, false);
        run(m.as_mut(), &layers, false);
        let metrics = m.eval_metrics().unwrap();
        assert_eq!(
            metrics.len(),
            2 * 2 * 3,
            "tasks × blocks × (2 experts + memory)"
        );
        for task in ["task0", "task1"] {
            for block in [0, 1] {
                let prefix = format!("gate.{task}.{block}.");
                let sum: f64 = metrics
                    .iter()
                    .filter(|(n, _)| n.starts_with(&prefix))
                    .map(|(_, v)| v)
                    .sum();
                assert!((sum - 1.0).abs() < 1e-6, "{prefix}: {sum}");
            }
        }
        assert!(metrics.iter().any(|(n, _)| n == "gate.task1.1.memory"));
        assert!(m.eval_metrics().unwrap().is_empty());
    }

    #[test]
    fn the_balancing_term_is_one_for_an_even_load_and_n_for_one_expert() {
        let ctx = context(2, &[6, 6]);
        let layers = tokens(2);
        let mut plain = create(&json!({"experts": 4}), &ctx, &Host::standalone()).unwrap();
        run(plain.as_mut(), &layers, true);
        assert!(plain.aux_losses().unwrap().is_none(), "balance 0: no term");

        let config = json!({"experts": 4, "expert_hidden": [3], "balance": 0.5});
        let mut m = create(&config, &ctx, &Host::standalone()).unwrap();
        let params = m.parameters().unwrap();
        // Task 0 sends every token to expert 2 at both blocks; task 1's
        // gates are uniform over the four experts and the memory.
        pin(&params, "block0.gate0", 2, 5);
        pin(&params, "block1.gate0", 2, 5);
        for b in 0..2 {
            no_grad(|| {
                for p in params
                    .iter()
                    .filter(|p| p.name.starts_with(&format!("block{b}.gate1.")))
                {
                    let _ = p.tensor.shallow_clone().zero_();
                }
            });
        }
        run(m.as_mut(), &layers, true);
        let aux = m.aux_losses().unwrap().unwrap();
        let values = Vec::<f64>::try_from(aux.to_kind(Kind::Double)).unwrap();
        assert!((values[0] - 0.5 * 4.0).abs() < 1e-4, "{values:?}");
        // Uniform weights: P_j = 1/4, all tokens on one argmax: 4 · 1/4 = 1.
        assert!((values[1] - 0.5).abs() < 1e-5, "{values:?}");
        assert!(m.aux_losses().unwrap().is_none(), "taken once per pass");
        // It is differentiable in the gates (task 1's uniform gate has a
        // non-zero gradient).
        run(m.as_mut(), &layers, true);
        let aux = m.aux_losses().unwrap().unwrap();
        aux.sum(Kind::Float).backward();
        let gate = &params
            .iter()
            .find(|p| p.name == "block0.gate1.weight")
            .unwrap()
            .tensor;
        assert!(gate.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        run(m.as_mut(), &layers, false);
        assert!(m.aux_losses().unwrap().is_none(), "evaluation adds none");
    }

    #[test]
    fn bad_layers_are_input_errors_naming_the_key() {
        let ctx = context(1, &[6, 6]);
        for (layers, want) in [
            (
                json!([0, 2]),
                "layers: block 2 does not exist; the backbone has 2 blocks (0..1)",
            ),
            (
                json!([1, 0]),
                "layers: [1, 0] must be increasing block indices",
            ),
        ] {
            let e = create(&json!({ "layers": layers }), &ctx, &Host::standalone())
                .err()
                .unwrap();
            assert!(e.is_input() && e.to_string().contains(want), "{e}");
        }
        let maps = MethodContext {
            layer_ranks: vec![3, 3].into(),
            ..ctx
        };
        let e = create(&json!({}), &maps, &Host::standalone())
            .err()
            .unwrap();
        assert!(
            e.is_input()
                && e.to_string()
                    .contains("block 0 of the backbone gives feature maps"),
            "{e}"
        );
    }
}
