//! Meta-RTL (Fu et al., "Reinforcement-based meta-transfer learning", 2024) as a `Strategy`: the tasks are N sources and one
//! low-resource target; an LSTM policy weights the sources in a Reptile
//! meta update, rewarded by how much each source's adapted model lowers the
//! target's loss.
//!
//! One meta-iteration (one training step):
//! 1. w = policy(previous weights, rewards, target losses): a softmax over
//!    the sources;
//! 2. per source i (all, or `sources_per_iteration` drawn from the seed and
//!    the step): a batch of its labelled rows and `inner_steps` SGD steps
//!    (lr `inner_lr`) from the meta parameters θ into θ_i;
//! 3. one target batch: L_gen = L_τ(θ), L_i = L_τ(θ_i); rewards
//!    r_i = L_gen − L_i, standardised across the sources into Â;
//! 4. the policy takes one Adam step (lr `policy_lr`) on −Σ w_i Â_i − β_H H(w);
//! 5. θ ← θ + β Σ_i w_i (θ_i − θ), the weights renormalised over the sources
//!    drawn.
//!
//! The host's optimizer is not used: the meta update is the step. The
//! reported weights are w on the sources and 0 on the target; the reported
//! losses are each source's loss on its batch at θ and L_gen.

mod policy;

use taskweave_plugin_api::config::schemars::Schema;
use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::{self, Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, InnerOptimizer, Method, MethodContext, Result,
    State, StepOps, StepReport, Strategy,
};

use policy::Policy;

/// Meta-RTL's config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(
    crate = "taskweave_plugin_api::config::schemars",
    transform = require_target
)]
struct Config {
    // Required: no task order makes a safe default (the low-resource QM9
    // kind appends its shuffled source after the target).
    /// The target task; every other task is a source.
    target: String,
    /// m: SGD steps per source from the meta parameters.
    #[schemars(range(min = 1, max = 1000))]
    inner_steps: u32,
    /// α: the inner SGD learning rate.
    #[schemars(extend("exclusiveMinimum" = 0))]
    inner_lr: f64,
    /// β: the meta step towards the weighted adapted parameters.
    #[schemars(extend("exclusiveMinimum" = 0))]
    meta_lr: f64,
    /// Width of the policy's LSTM.
    #[schemars(range(min = 1, max = 4096))]
    policy_hidden: u32,
    /// The policy's Adam learning rate.
    #[schemars(extend("exclusiveMinimum" = 0))]
    policy_lr: f64,
    /// β_H: weight of the entropy bonus.
    #[schemars(range(min = 0.0))]
    entropy: f64,
    /// Sources adapted per meta-iteration (0: all).
    #[schemars(range(min = 0))]
    sources_per_iteration: u32,
    /// Uniform weights, no policy: plain Reptile over the sources (the
    /// baseline that separates the learned weights from the meta update).
    uniform: bool,
}

/// `target` has no default: serde's container default fills every other
/// key, and the schema (which `validate` checks) requires this one.
fn require_target(schema: &mut Schema) {
    schema.insert("required".into(), json!(["target"]));
    if let Some(target) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("target"))
        .and_then(Value::as_object_mut)
    {
        target.remove("default");
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            target: String::new(),
            inner_steps: 1,
            inner_lr: 0.01,
            meta_lr: 1.0,
            policy_hidden: 32,
            policy_lr: 1e-3,
            entropy: 0.01,
            sources_per_iteration: 0,
            uniform: false,
        }
    }
}

struct MetaRtl {
    config: Config,
    /// Task index of each source, and of the target.
    sources: Vec<usize>,
    target: usize,
    seed: u64,
    policy: Policy,
    /// The policy's next input `[3N]`: weights, rewards, target losses.
    input: Tensor,
}

/// Standardised across its entries (zeros when they are all equal).
fn standardise(x: &Tensor) -> Result<Tensor> {
    let centred = x.f_sub(&x.f_mean(Kind::Float)?)?;
    let std = centred.f_square()?.f_mean(Kind::Float)?.f_sqrt()?;
    let std = std.f_double_value(&[])?;
    Ok(if std > 1e-12 {
        centred.f_div_scalar(std)?
    } else {
        centred.f_zeros_like()?
    })
}

impl MetaRtl {
    /// The sources (indices into `sources`) adapted at step `step`.
    fn chosen(&self, step: u64) -> Vec<usize> {
        let n = self.sources.len();
        let k = self.config.sources_per_iteration as usize;
        let mut all: Vec<usize> = (0..n).collect();
        if k == 0 || k >= n {
            return all;
        }
        SplitMix::at(self.seed, step).shuffle(&mut all);
        all.truncate(k);
        all.sort_unstable();
        all
    }
}

/// Task `task`'s loss on the current batch at the live parameters.
fn loss_of(ops: &mut dyn StepOps, task: usize) -> Result<f64> {
    let losses = tch::no_grad(|| ops.losses(false))?;
    Ok(losses.f_double_value(&[task as i64])?)
}

impl Strategy for MetaRtl {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        let n = self.sources.len();
        let chosen = self.chosen(ops.current_step());
        let weights = if self.config.uniform {
            Tensor::f_full(
                [n as i64],
                1.0 / n as f64,
                (Kind::Float, self.input.device()),
            )?
        } else {
            self.policy.weights(&self.input)?
        };
        let theta = ops.parameters_flat()?;
        let mut reported = vec![0.0; ops.num_tasks()];
        let inner = InnerOptimizer::Sgd {
            lr: self.config.inner_lr,
        };
        let tasks: Vec<usize> = chosen.iter().map(|&i| self.sources[i]).collect();
        let mut adapted = Vec::with_capacity(chosen.len());
        for (task, steps) in
            tasks
                .iter()
                .zip(ops.adapt(&tasks, self.config.inner_steps as usize, inner)?)
        {
            reported[*task] = steps.losses[0];
            adapted.push(steps.params);
        }
        // One target batch for the general and every task-specific loss.
        ops.task_batch(self.target)?;
        let general = loss_of(ops, self.target)?;
        reported[self.target] = general;
        let mut specific = Vec::with_capacity(chosen.len());
        for theta_i in &adapted {
            ops.set_parameters_flat(theta_i)?;
            specific.push(loss_of(ops, self.target)?);
        }
        ops.set_parameters_flat(&theta)?;

        let device = theta.device();
        let rewards: Vec<f32> = specific.iter().map(|l| (general - l) as f32).collect();
        let index: Vec<i64> = chosen.iter().map(|&i| i as i64).collect();
        let index = Tensor::from_slice(&index).f_to_device(device)?;
        let advantages = standardise(&Tensor::from_slice(&rewards).f_to_device(device)?)?;
        if !self.config.uniform {
            self.policy
                .update(&weights, &index, &advantages, self.config.entropy)?;
        }

        // The meta update with this iteration's weights, renormalised over
        // the sources drawn.
        let w = weights.f_detach()?.f_index_select(0, &index)?;
        let w = w.f_div(&w.f_sum(Kind::Float)?)?;
        let mut step = theta.f_zeros_like()?;
        for (k, theta_i) in adapted.iter().enumerate() {
            let delta = theta_i.f_sub(&theta)?;
            step = step.f_add(&delta.f_mul(&w.f_get(k as i64)?)?)?;
        }
        ops.set_parameters_flat(&theta.f_add(&step.f_mul_scalar(self.config.meta_lr)?)?)?;

        // The next input: weights, rewards and target losses of every source
        // (0 for sources not drawn).
        let (mut r, mut l) = (vec![0f32; n], vec![0f32; n]);
        for (k, &i) in chosen.iter().enumerate() {
            r[i] = rewards[k];
            l[i] = specific[k] as f32;
        }
        self.input = Tensor::f_cat(
            &[
                weights.f_detach()?,
                Tensor::from_slice(&r).f_to_device(device)?,
                Tensor::from_slice(&l).f_to_device(device)?,
            ],
            0,
        )?;
        let mut per_task = vec![0f32; reported.len()];
        let all = Vec::<f32>::try_from(weights.f_detach()?.f_to_device(tch::Device::Cpu)?)?;
        for (i, &task) in self.sources.iter().enumerate() {
            per_task[task] = all[i];
        }
        let losses: Vec<f32> = reported.iter().map(|&x| x as f32).collect();
        Ok(StepReport {
            losses: Tensor::from_slice(&losses).f_to_device(device)?,
            weights: Some(Tensor::from_slice(&per_task).f_to_device(device)?),
        })
    }

    fn state(&self) -> Result<State> {
        let mut state = self.policy.state()?;
        state
            .tensors
            .push(("input".into(), self.input.f_detach_copy()?));
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        self.input = state
            .take_tensor("input")?
            .f_to_device(self.input.device())?;
        self.policy.load_state(&mut state)
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Strategy>> {
    let config: Config = typed(config)?;
    let names: Vec<String> = ctx.tasks.iter().map(|t| t.to_string()).collect();
    if names.len() < 2 {
        return Err(Error::input(format!(
            "meta-rtl needs a target and at least one source task; the data have {} task(s)",
            names.len()
        )));
    }
    let name = &config.target;
    let target = names.iter().position(|n| n == name).ok_or_else(|| {
        Error::input(format!(
            "train.strategy.target: no task `{name}` (the tasks: {})",
            names.join(", ")
        ))
    })?;
    let sources: Vec<usize> = (0..names.len()).filter(|&t| t != target).collect();
    let n = sources.len();
    let k = config.sources_per_iteration as usize;
    if k > n {
        return Err(Error::input(format!(
            "train.strategy.sources_per_iteration: {k}, but there are {n} sources (0 adapts them all)"
        )));
    }
    let device = ctx.device()?;
    // The policy's initial draw is the run's: seeded like the model.
    let policy = Policy::new(n, config.policy_hidden as usize, config.policy_lr, device)?;
    let uniform = vec![1.0 / n as f32; n];
    let input = Tensor::f_cat(
        &[
            Tensor::from_slice(&uniform),
            Tensor::f_zeros([2 * n as i64], (Kind::Float, tch::Device::Cpu))?,
        ],
        0,
    )?
    .f_to_device(device)?;
    Ok(Box::new(MetaRtl {
        config,
        sources,
        target,
        seed: ctx.seed,
        policy,
        input,
    }))
}

register_method!(Method::new(
    "meta-rtl",
    env!("CARGO_PKG_VERSION"),
    "Meta-RTL: an LSTM policy weights source tasks in Reptile meta-transfer (Fu et al. 2024)",
    schema_for::<Config>,
    Constructor::Strategy(create),
));

#[cfg(test)]
mod tests;
