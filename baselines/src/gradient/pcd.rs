//! PCD, priority-constrained descent (Varam et al., "Hierarchical
//! Multi-Objective Optimization", TMLR 2026; TorchJD 0.18's `PCD`): the first
//! task is the primary objective; the update stays as close as possible to
//! its gradient while guaranteeing every other task a share `τ` of its own
//! normalised first-order progress.
//!
//! With each gradient scaled by `s_i = 1/sqrt(v̂_i + ε)`, `v̂_i` the
//! bias-corrected moving average (decay `β`) of its squared norm, the
//! direction is `d = ĝ_0 + Σ_{i≥1} μ_i ĝ_i` with `μ ≥ 0` solving
//! `min ½‖d − ĝ_0‖²` subject to `ĝ_iᵀd ≥ τ_i‖ĝ_i‖²`; in Gramian form the
//! non-negative QP `min ½μᵀĜμ − bᵀμ` with `b_i = τ_i Ĝ_ii − Ĝ_i0`, solved
//! exactly ([`nonnegative_qp`]; TorchJD uses Goldfarb-Idnani's dual active
//! set, the reference code enumerates working sets). The update is `d`
//! rescaled to the primary gradient's raw norm, `‖g_0‖`; zero if `g_0 = 0`
//! or `d` vanishes (below `10·ε₃₂` of its terms). Options: `tau` (0.02, a
//! number or one per secondary task), `beta` 0.999, `eps` 1e-8. The moving
//! averages and the step count are the weighting's state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::solvers::{nonnegative_qp, Matrix};
use crate::vectors::{load_vector, vector_state};

/// The PCD weighting.
struct Pcd {
    tasks: Tasks,
    priorities: Priorities,
}

/// Everything but the task names, borrowed mutably while [`combine`] holds them.
struct Priorities {
    taus: Vec<f64>,
    beta: f64,
    eps: f64,
    /// The moving average of the squared gradient norms.
    average: Vec<f64>,
    steps: u64,
}

impl Priorities {
    fn coefficients(&mut self, step: &Step<'_>) -> Vec<f64> {
        let gram = &step.gram;
        let t = gram.n();
        self.steps += 1;
        for (a, i) in self.average.iter_mut().zip(0..t) {
            *a = self.beta * *a + (1.0 - self.beta) * gram[(i, i)];
        }
        let correction = 1.0 - self.beta.powi(self.steps.min(i32::MAX as u64) as i32);
        let scales: Vec<f64> = self
            .average
            .iter()
            .map(|a| {
                let d = (a / correction + self.eps).sqrt();
                if d > 0.0 {
                    1.0 / d
                } else {
                    0.0
                }
            })
            .collect();
        let mut weights = vec![0.0; t];
        if gram[(0, 0)] <= 0.0 {
            return weights;
        }
        let scaled = Matrix::from_fn(t, |i, j| gram[(i, j)] * scales[i] * scales[j]);
        let mut w = vec![0.0; t];
        w[0] = 1.0;
        if t > 1 {
            let secondary: Vec<usize> = (1..t).collect();
            let b: Vec<f64> = (1..t)
                .map(|i| self.taus[i - 1] * scaled[(i, i)] - scaled[(i, 0)])
                .collect();
            let q: Vec<f64> = b.iter().map(|x| -x).collect();
            let mu = nonnegative_qp(&scaled.sub(&secondary), &q);
            w[1..].copy_from_slice(&mu);
        }
        let direction = scaled.quad(&w);
        let magnitude: f64 = w
            .iter()
            .enumerate()
            .map(|(i, x)| x.abs() * scaled[(i, i)].max(0.0).sqrt())
            .sum();
        let precision = 10.0 * step.rounding;
        if direction > precision * magnitude * magnitude {
            let rescale = (gram[(0, 0)] / direction).sqrt();
            for i in 0..t {
                weights[i] = w[i] * scales[i] * rescale;
            }
        }
        weights
    }
}

impl Weighting for Pcd {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let priorities = &mut self.priorities;
        combine(input, &self.tasks, |step| Ok(priorities.coefficients(step)))
    }

    fn state(&self) -> Result<State> {
        let mut state = vector_state(&[("average", &self.priorities.average)])?;
        state.meta = json!({ "steps": self.priorities.steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        let steps = state.meta["steps"].as_u64();
        let priorities = &mut self.priorities;
        match load_vector(&mut state, "pcd", "average", t)? {
            Some(average) => {
                priorities.average = average;
                priorities.steps = steps.ok_or_else(|| Error::msg("pcd state: `steps` missing"))?;
            }
            None => {
                priorities.average = vec![0.0; t];
                priorities.steps = 0;
            }
        }
        Ok(())
    }
}

/// `tau`: one share for every secondary task, or one each.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", untagged)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
enum Tau {
    /// The same share for every secondary task.
    All(f64),
    /// One share per secondary task (tasks 2, 3, ... of [tasks]).
    Each(Vec<f64>),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The share of its normalised first-order progress guaranteed to each secondary task (the first task is primary), in [0, 1]: one number, or one per secondary task.
    tau: Tau,
    /// Decay of the moving average of the squared gradient norms, in [0, 1).
    #[schemars(range(min = 0.0, max = 0.999999))]
    beta: f64,
    /// Added to that average before its inverse square root.
    #[schemars(range(min = 0.0))]
    eps: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tau: Tau::All(0.02),
            beta: 0.999,
            eps: 1e-8,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    let taus = match config.tau {
        Tau::All(tau) => vec![tau; t - 1],
        Tau::Each(taus) => taus,
    };
    if taus.len() != t - 1 || taus.iter().any(|x| !(0.0..=1.0).contains(x)) {
        return Err(Error::input(format!(
            "pcd's `tau` needs one number in [0, 1], or one per secondary task ({}), got {taus:?}",
            t - 1
        )));
    }
    Ok(Box::new(Pcd {
        tasks,
        priorities: Priorities {
            taus,
            beta: config.beta,
            eps: config.eps,
            average: vec![0.0; t],
            steps: 0,
        },
    }))
}

register_method!(Method::new(
    "pcd",
    env!("CARGO_PKG_VERSION"),
    "PCD: the first task's descent, constrained to give every other task a share of its own progress (Varam et al., TMLR 2026)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn every_secondary_task_gets_its_share_of_progress() {
        for (what, grads) in instances()
            .into_iter()
            .filter(|(n, _)| n.starts_with("conflicting"))
        {
            let t = grads.len();
            let mut method = create("pcd", json!({ "tau": 0.3, "beta": 0.0 }), &context(t, 0));
            let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let (d, w) = (values(&out.combined), values(&out.weights.unwrap()));
            let norm0 = dot(&grads[0], &grads[0]).sqrt();
            assert!(
                (dot(&d, &d).sqrt() / norm0 - 1.0).abs() < 1e-9,
                "{what}: |d| ≠ |g_0|"
            );
            // With β = 0 the scales are 1/‖g_i‖ (ε = 1e-8 aside), so w_0 =
            // rescale/‖g_0‖, and the unit-gradient direction is d/(w_0‖g_0‖).
            let rescale = w[0] * norm0;
            let mut binding = 0;
            for g in &grads[1..] {
                let progress = dot(g, &d) / dot(g, g).sqrt() / rescale;
                assert!(progress >= 0.3 - 1e-6, "{what}: {progress}");
                binding += usize::from(progress < 0.3 + 1e-6);
            }
            // Conflicting tasks need the constraint: some are held exactly at τ.
            assert!(binding > 0, "{what}");
        }
    }
}
