//! Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya,
//! "Multi-Task Learning as a Bargaining Game", ICML 2022).
//!
//! The update `d = Σ_i α_i g_i` is the Nash bargaining solution: `α > 0` with
//! `(G Gᵀ α)_i = 1/α_i` for every task. Conventions follow the official code
//! (github.com/AvivNavon/nash-mtl, `NashMTL` in `methods/weight_methods.py`):
//!
//! - the system is solved on the Gramian divided by its Frobenius norm,
//!   `M̂ = M/‖M‖_F`, and `α` is applied to the raw gradients;
//! - `α` is recomputed on steps that are multiples of `update_weights_every`
//!   (and on the first call) and reused in between; every solve is warm-started
//!   from the previous `α` (all ones at first);
//! - the update is clipped to norm `max_norm` as `torch.nn.utils.clip_grad_norm_`
//!   does (factor `max_norm/(‖d‖ + 1e-6)` when below 1; 0 turns clipping off),
//!   folded into the reported weights so that `update = weightsᵀG` still holds.
//!
//! The official solver (a sequence of convex problems handed to cvxpy/ECOS,
//! `optim_niter` of them at most) is replaced by damped Newton on the same
//! conditions ([`normalised_bargaining`]), `optim_niter` Newton steps at most.
//!
//! Because `α` carries over between steps, the weighting is stateful: its
//! state is the last `α` (tensor `alpha`, f64), so a resumed run solves from
//! the same warm start and reuses the same weights as an uninterrupted one.
//!
//! A task whose gradient is zero cannot satisfy `(Mα)_i = 1/α_i`; it is left
//! out of the solve and keeps its previous `α_i` (the official code keeps the
//! whole previous `α` when its solver fails). With one task, `α = 1/‖g‖` on the
//! normalised Gramian is 1, so the update is `g` clipped to `max_norm`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::solvers::normalised_bargaining;

/// Added to the norm when clipping, as `clip_grad_norm_` does.
const CLIP_EPS: f64 = 1e-6;

/// The Nash-MTL weighting.
struct NashMtl {
    tasks: Tasks,
    weights: Bargaining,
}

/// Everything but the task names, so that it can be borrowed mutably while
/// [`combine`] holds the names.
struct Bargaining {
    /// Clip the update to this norm; 0 = no clipping.
    max_norm: f64,
    /// Recompute `α` on steps that are multiples of this.
    update_weights_every: u64,
    /// At most this many Newton steps per solve.
    optim_niter: usize,
    /// The last `α`, unclipped; `None` before the first call.
    alpha: Option<Vec<f64>>,
}

impl Bargaining {
    /// This step's `α` (solved or reused), remembered for the next step, and
    /// the clipped coefficients of the update.
    fn coefficients(&mut self, step: &Step<'_>) -> Vec<f64> {
        let gram = &step.gram;
        let alpha = match self.alpha.take() {
            Some(alpha) if !step.step.is_multiple_of(self.update_weights_every) => alpha,
            previous => self.solve(step, previous),
        };
        let norm = gram.quad(&alpha).max(0.0).sqrt();
        let clip = if self.max_norm > 0.0 {
            (self.max_norm / (norm + CLIP_EPS)).min(1.0)
        } else {
            1.0
        };
        let coefficients = alpha.iter().map(|a| clip * a).collect();
        self.alpha = Some(alpha);
        coefficients
    }

    /// Solves for `α` on the normalised Gramian of the non-zero gradients,
    /// warm-started from `previous`, whose entries zero-gradient tasks keep.
    ///
    /// The first solve starts from `1/‖g_i‖` (the solution for orthogonal
    /// gradients, up to scale) rather than the official all-ones: with norms
    /// that differ by orders of magnitude, ones would cost many Newton steps.
    fn solve(&self, step: &Step<'_>, previous: Option<Vec<f64>>) -> Vec<f64> {
        let rows = step.nonzero_rows();
        let gram = &step.gram;
        let mut alpha = previous.unwrap_or_else(|| {
            (0..gram.n())
                .map(|i| {
                    if gram[(i, i)] > 0.0 {
                        1.0 / gram[(i, i)].sqrt()
                    } else {
                        1.0
                    }
                })
                .collect()
        });
        if rows.is_empty() {
            return alpha;
        }
        let start: Vec<f64> = rows.iter().map(|&i| alpha[i]).collect();
        // α is applied to the raw gradients, as in the official code: the
        // solution for the normalised Gramian as it is.
        let (solved, _) =
            normalised_bargaining(gram, &rows, &start, self.optim_niter, step.rounding, 1.0);
        for (&i, a) in rows.iter().zip(solved) {
            alpha[i] = a;
        }
        alpha
    }
}

impl Weighting for NashMtl {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let weights = &mut self.weights;
        combine(input, &self.tasks, |step| Ok(weights.coefficients(step)))
    }

    fn state(&self) -> Result<State> {
        let Some(alpha) = &self.weights.alpha else {
            return Ok(State::default());
        };
        Ok(State {
            tensors: vec![("alpha".into(), Tensor::f_from_slice(alpha)?)],
            meta: Value::Null,
        })
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        if state.is_empty() {
            self.weights.alpha = None;
            return Ok(());
        }
        let alpha = Vec::<f64>::try_from(&state.take_tensor("alpha")?.f_to_kind(Kind::Double)?)?;
        if !state.is_empty() {
            return Err(Error::msg("nash-mtl state holds more than `alpha`"));
        }
        if alpha.len() != self.tasks.len() || alpha.iter().any(|a| !(a.is_finite() && *a > 0.0)) {
            return Err(Error::msg(format!(
                "nash-mtl state: `alpha` must hold {} positive numbers, got {alpha:?}",
                self.tasks.len()
            )));
        }
        self.weights.alpha = Some(alpha);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Clip the update to this L2 norm (0 = no clipping).
    #[schemars(range(min = 0.0))]
    max_norm: f64,
    /// Recompute the weights on steps that are multiples of this; reuse them in between.
    #[schemars(range(min = 1))]
    update_weights_every: u64,
    /// At most this many Newton steps per solve (warm-started from the previous weights).
    #[schemars(range(min = 1, max = 10_000))]
    optim_niter: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_norm: 1.0,
            update_weights_every: 1,
            optim_niter: 20,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    Ok(Box::new(NashMtl {
        tasks: Tasks::new(ctx, host)?,
        weights: Bargaining {
            max_norm: config.max_norm,
            update_weights_every: config.update_weights_every.max(1),
            optim_niter: config.optim_niter.max(1) as usize,
            alpha: None,
        },
    }))
}

register_method!(Method::new(
    "nash-mtl",
    env!("CARGO_PKG_VERSION"),
    "Nash-MTL: weights from the Nash bargaining solution among the task gradients (Navon et al., ICML 2022)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{context, create, gram_of, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::rng::SplitMix;
    use taskweave_plugin_api::serde_json::json;

    #[test]
    fn unclipped_weights_solve_the_bargaining_system() {
        for (name, grads) in instances() {
            let t = grads.len();
            let mut nash = create("nash-mtl", json!({ "max_norm": 0.0 }), &context(t, 0));
            let out = weigh(&mut *nash, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let alpha = values(&out.weights.unwrap());
            let m = gram_of(&grads);
            let frobenius = (0..t * t)
                .map(|k| m[(k / t, k % t)].powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(alpha.iter().all(|&a| a > 0.0), "{name}: {alpha:?}");
            let inverse: Vec<f64> = alpha.iter().map(|a| 1.0 / a).collect();
            let residual: Vec<f64> = m
                .mul_vec(&alpha)
                .iter()
                .zip(&inverse)
                .map(|(ma, inv)| ma / frobenius - inv)
                .collect();
            let relative = (dot(&residual, &residual) / dot(&inverse, &inverse)).sqrt();
            assert!(
                relative < 1e-6,
                "{name}: relative residual {relative} with the default optim_niter"
            );
        }
    }

    #[test]
    fn the_update_is_clipped_to_max_norm() {
        let grads = vec![vec![30.0, 0.0], vec![0.0, 40.0]];
        let mut nash = create("nash-mtl", json!({ "max_norm": 2.0 }), &context(2, 0));
        let out = weigh(&mut *nash, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        let d = values(&out.combined);
        assert!((dot(&d, &d).sqrt() - 2.0).abs() < 1e-5, "{d:?}");
        // Orthogonal gradients: equal contributions α_i‖g_i‖.
        assert!((d[0] - d[1]).abs() < 1e-9, "{d:?}");
        let one = vec![vec![3.0, 4.0]];
        let mut nash = create("nash-mtl", json!({ "max_norm": 0.0 }), &context(1, 0));
        let out = weigh(&mut *nash, 0, &tensor_of(&one, Kind::Double), None).unwrap();
        let d = values(&out.combined);
        assert!(
            (d[0] - 3.0).abs() < 1e-9 && (d[1] - 4.0).abs() < 1e-9,
            "{d:?}"
        );
    }

    /// A stream of gradients that changes every step.
    fn steps(t: usize) -> Vec<Tensor> {
        let mut rng = SplitMix::at(21, 0);
        (0..8)
            .map(|_| {
                tensor_of(
                    &crate::gradient::testing::random_grads(&mut rng, t, 12),
                    Kind::Float,
                )
            })
            .collect()
    }

    #[test]
    fn weights_are_reused_between_updates() {
        let grads = steps(3);
        let mut nash = create(
            "nash-mtl",
            json!({ "update_weights_every": 3 }),
            &context(3, 0),
        );
        let alpha: Vec<Vec<f64>> = grads
            .iter()
            .enumerate()
            .map(|(s, g)| {
                weigh(&mut *nash, s as u64, g, None).unwrap();
                Vec::<f64>::try_from(&nash.state().unwrap().tensors[0].1).unwrap()
            })
            .collect();
        assert_eq!(alpha[0], alpha[1]);
        assert_eq!(alpha[1], alpha[2]);
        assert_ne!(alpha[2], alpha[3]);
        assert_eq!(alpha[3], alpha[5]);
        assert_ne!(alpha[5], alpha[6]);
    }

    #[test]
    fn a_resumed_run_is_bitwise_identical() {
        let grads = steps(4);
        let ctx = context(4, 0);
        let config = json!({ "update_weights_every": 2, "optim_niter": 3 });
        let mut straight = create("nash-mtl", config.clone(), &ctx);
        let mut resumed = create("nash-mtl", config, &ctx);
        assert!(resumed.state().unwrap().is_empty());
        for (s, g) in grads.iter().enumerate() {
            let out = weigh(&mut *straight, s as u64, g, None).unwrap();
            if s == 2 {
                resumed.load_state(straight.state().unwrap()).unwrap();
            }
            if s > 2 {
                let again = weigh(&mut *resumed, s as u64, g, None).unwrap();
                assert!(
                    out.combined.equal(&again.combined),
                    "step {s}: updates differ"
                );
                assert!(
                    out.weights.unwrap().equal(&again.weights.unwrap()),
                    "step {s}: weights differ"
                );
            }
        }
    }

    #[test]
    fn malformed_state_is_refused() {
        let mut nash = create("nash-mtl", json!({}), &context(2, 0));
        let bad = State {
            tensors: vec![("alpha".into(), Tensor::from_slice(&[1.0, -1.0]))],
            meta: Value::Null,
        };
        assert!(nash
            .load_state(bad)
            .unwrap_err()
            .to_string()
            .contains("positive numbers"));
        let short = State {
            tensors: vec![("alpha".into(), Tensor::from_slice(&[1.0]))],
            meta: Value::Null,
        };
        assert!(nash.load_state(short).is_err());
        let other = State {
            tensors: vec![("beta".into(), Tensor::from_slice(&[1.0, 1.0]))],
            meta: Value::Null,
        };
        assert!(nash
            .load_state(other)
            .unwrap_err()
            .to_string()
            .contains("no tensor `alpha`"));
    }
}
