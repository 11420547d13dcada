//! GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient
//! Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
//! ICML 2018), as LibMTL runs it on the whole shared gradient.
//!
//! Task weights `w = T·softmax(s)` (so they sum to T) weigh the gradients,
//! `d = Σ_t w_t g_t`. The logits `s` learn to make each weighted gradient
//! norm `w_t‖g_t‖` match `Ḡ·r_t^α`, with `Ḡ` the mean weighted norm and
//! `r_t` task t's loss ratio `L_t/L_t⁰` relative to its mean (slower tasks
//! get larger norms): one Adam step (`lr` 0.025, no weight decay) per
//! training step on `Σ_t |w_t‖g_t‖ − Ḡ r_t^α|`, the target held constant,
//! after `d` is formed with the current `w`. `alpha` 1.5 as in the paper.
//!
//! LibMTL trains `s` with the model's optimizer and takes `L⁰` from the first
//! epoch's mean loss; a weighting has its own optimizer and takes `L⁰` from
//! the first step's losses (the paper's "initial loss"). The paper's norms
//! are of the last shared layer's gradients; like LibMTL this uses all shared
//! parameters. `s`, Adam's moments and `L⁰` are the state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use crate::adam::Adam;
use crate::vectors::{load_vector, softmax, vector_state};

struct GradNorm {
    tasks: Tasks,
    balance: Balance,
}

/// Everything but the task names, borrowed mutably while [`combine`] holds them.
struct Balance {
    alpha: f64,
    logits: Vec<f64>,
    adam: Adam,
    /// The first step's losses, `L⁰`.
    initial: Option<Vec<f64>>,
}

impl Balance {
    fn coefficients(&mut self, step: &Step<'_>) -> Vec<f64> {
        let t = self.logits.len();
        let z = softmax(&self.logits);
        let w: Vec<f64> = z.iter().map(|z| t as f64 * z).collect();
        let initial = self.initial.get_or_insert_with(|| step.losses.clone());
        let norms: Vec<f64> = (0..t).map(|i| step.gram[(i, i)].max(0.0).sqrt()).collect();
        let weighted: Vec<f64> = w.iter().zip(&norms).map(|(w, n)| w * n).collect();
        let mean_norm = weighted.iter().sum::<f64>() / t as f64;
        let ratios: Vec<f64> = step
            .losses
            .iter()
            .zip(initial.iter())
            .map(|(l, l0)| l / l0.max(f64::MIN_POSITIVE))
            .collect();
        let mean_ratio = ratios.iter().sum::<f64>() / t as f64;
        // ∂/∂w_t Σ|w_t n_t − c_t| = sign(·)·n_t, then through w = T·softmax(s).
        let u: Vec<f64> = (0..t)
            .map(|i| {
                let target =
                    mean_norm * (ratios[i] / mean_ratio.max(f64::MIN_POSITIVE)).powf(self.alpha);
                (weighted[i] - target).signum() * norms[i]
            })
            .collect();
        let zu: f64 = z.iter().zip(&u).map(|(z, u)| z * u).sum();
        let grad: Vec<f64> = z
            .iter()
            .zip(&u)
            .map(|(z, u)| t as f64 * z * (u - zu))
            .collect();
        self.adam.step(&mut self.logits, &grad);
        w
    }
}

impl Weighting for GradNorm {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let balance = &mut self.balance;
        combine(input, &self.tasks, |step| Ok(balance.coefficients(step)))
    }

    fn state(&self) -> Result<State> {
        let Some(initial) = &self.balance.initial else {
            return Ok(State::default());
        };
        let (adam, steps) = self.balance.adam.state()?;
        let mut state = vector_state(&[("logits", &self.balance.logits), ("initial", initial)])?;
        state.tensors.extend(adam.tensors);
        state.meta = json!({ "adam_steps": steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        if state.is_empty() {
            (self.balance.logits, self.balance.initial) = (vec![0.0; t], None);
            self.balance.adam = Adam::new(t, self.balance.adam.lr, 0.0);
            return Ok(());
        }
        let steps = state.meta["adam_steps"].clone();
        self.balance.logits =
            load_vector(&mut state, "gradnorm", "logits", t)?.unwrap_or(vec![0.0; t]);
        self.balance.initial = load_vector(&mut state, "gradnorm", "initial", t)?;
        self.balance.adam.load(&mut state, "gradnorm", &steps)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Strength α of the pull toward equal training rates.
    #[schemars(range(min = 0.0))]
    alpha: f64,
    /// Adam learning rate of the weight logits.
    #[schemars(range(min = 0.0))]
    lr: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            alpha: 1.5,
            lr: 0.025,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { alpha, lr } = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    Ok(Box::new(GradNorm {
        tasks,
        balance: Balance {
            alpha,
            logits: vec![0.0; t],
            adam: Adam::new(t, lr, 0.0),
            initial: None,
        },
    }))
}

register_method!(Method::new(
    "gradnorm",
    env!("CARGO_PKG_VERSION"),
    "GradNorm: weights learned so that the weighted gradient norms follow each task's training rate (Chen et al., ICML 2018)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn equal_training_rates_equalise_the_weighted_gradient_norms() {
        // Constant losses (all rates 1): the targets are the mean weighted
        // norm, so w_t‖g_t‖ converge to each other; weights sum to T.
        let grads = vec![
            vec![4.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.5],
        ];
        let mut method = create("gradnorm", json!({ "lr": 0.01 }), &context(3, 0));
        let mut w = vec![];
        for step in 0..3000 {
            w = values(
                &weigh(&mut *method, step, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .weights
                    .unwrap(),
            );
        }
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-9);
        let norms = [4.0 * w[0], w[1], 0.5 * w[2]];
        let spread = norms.iter().copied().fold(0.0, f64::max)
            / norms.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(spread < 1.1, "{norms:?}");
    }
}
