//! FairGrad (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning",
//! ICML 2024): α-fair utility maximisation over the tasks' improvements.
//!
//! The update `d = Σ_i w_i g_i` has weights `w > 0` with `(Mw)_i = w_i^(−1/α)`
//! for every task: at `α = 1` that is Nash-MTL's bargaining condition
//! (proportional fairness), `α → ∞` approaches max-min fairness, and `α = 0`
//! gives equal weights `1/T` (as both reference implementations special-case).
//!
//! The official code and LibMTL (and TorchJD 0.18's `FairGrad`) solve the
//! condition with SciPy's `least_squares` from `w = 1/T`, `max_iters`
//! function evaluations at most (default: SciPy's). Here it is the same
//! condition solved by Newton on its convex potential
//! ([`normalised_bargaining`]) on the Gramian divided by its Frobenius norm
//! `s`, the solution mapped back by `w = ŵ·s^(−α/(1+α))`, started from the
//! solution for orthogonal gradients `w_i = M_ii^(−α/(1+α))`; `max_iters`
//! bounds the Newton steps (100 by default, well beyond the usual 10 or so).
//! Where the tasks' gradient norms span several decades, `least_squares`
//! stops far from the solution (with norms 1e-3 to 1e3 TorchJD's weights give
//! one task `w_i·(Mw)_i = 62` instead of 1); Newton does not. Tasks with a zero gradient cannot satisfy
//! the condition; they get weight 0 and the others are solved among
//! themselves.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::solvers::normalised_bargaining;

/// The FairGrad weighting.
struct FairGrad {
    tasks: Tasks,
    alpha: f64,
    max_iters: usize,
}

impl FairGrad {
    fn coefficients(&self, step: &Step<'_>) -> Vec<f64> {
        let gram = &step.gram;
        let t = gram.n();
        if self.alpha == 0.0 {
            return vec![1.0 / t as f64; t];
        }
        let rows = step.nonzero_rows();
        let mut weights = vec![0.0; t];
        if rows.is_empty() {
            return weights;
        }
        // The solution for orthogonal gradients, M_ii·w_i = w_i^(−p): exact
        // up to the cross terms, so Newton starts near the answer even when
        // the norms span decades (uniform weights, SciPy's start, do not).
        let p = 1.0 / self.alpha;
        let start: Vec<f64> = rows
            .iter()
            .map(|&i| gram[(i, i)].powf(-1.0 / (1.0 + p)))
            .collect();
        let (solved, frobenius) =
            normalised_bargaining(gram, &rows, &start, self.max_iters, step.rounding, p);
        let back = frobenius.powf(-1.0 / (1.0 + p));
        for (&i, w) in rows.iter().zip(solved) {
            weights[i] = w * back;
        }
        weights
    }
}

impl Weighting for FairGrad {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| Ok(self.coefficients(step)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The fairness level α: 0 = equal weights, 1 = proportional fairness
    /// (Nash-MTL's solution), larger = closer to max-min fairness.
    #[schemars(range(min = 0.0))]
    alpha: f64,
    /// At most this many Newton steps per solve.
    #[schemars(range(min = 1, max = 10_000))]
    max_iters: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            alpha: 1.0,
            max_iters: 100,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    Ok(Box::new(FairGrad {
        tasks: Tasks::new(ctx, host)?,
        alpha: config.alpha,
        max_iters: config.max_iters.max(1) as usize,
    }))
}

register_method!(Method::new(
    "fairgrad",
    env!("CARGO_PKG_VERSION"),
    "FairGrad: alpha-fair allocation of the update among the tasks (Ban & Ji, ICML 2024)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    fn solve(alpha: f64, grads: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        let config = json!({ "alpha": alpha, "max_iters": 200 });
        let mut method = create("fairgrad", config, &context(grads.len(), 0));
        let out = weigh(&mut *method, 0, &tensor_of(grads, Kind::Double), None).unwrap();
        (values(&out.weights.unwrap()), values(&out.combined))
    }

    #[test]
    fn the_weights_meet_the_fairness_condition() {
        for (what, grads) in instances()
            .into_iter()
            .filter(|(n, _)| n.starts_with("random"))
        {
            if grads.len() > grads[0].len() {
                continue;
            }
            for alpha in [0.5, 1.0, 2.0, 5.0] {
                let (w, d) = solve(alpha, &grads);
                for (i, g) in grads.iter().enumerate() {
                    let gd: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
                    let target = w[i].powf(-1.0 / alpha);
                    assert!(
                        (gd - target).abs() < 1e-6 * target,
                        "{what} α={alpha}: {gd} vs {target}"
                    );
                }
            }
        }
    }

    #[test]
    fn norms_six_decades_apart_still_meet_the_condition_from_f32_input() {
        // The f32 Gramian's rounding is relative to each pair of norms, and
        // so is the ridge that covers it: the smallest task keeps its equation.
        let mut rng = taskweave_plugin_api::rng::SplitMix::at(7, 0);
        let grads: Vec<Vec<f64>> = (0..4)
            .map(|i| {
                (0..50)
                    .map(|_| rng.normal() * 10f64.powi(2 * i - 3))
                    .collect()
            })
            .collect();
        let rounded: Vec<Vec<f64>> = grads
            .iter()
            .map(|g| g.iter().map(|&x| x as f32 as f64).collect())
            .collect();
        for alpha in [1.0, 2.0] {
            let config = json!({ "alpha": alpha, "max_iters": 200 });
            let mut method = create("fairgrad", config, &context(4, 0));
            let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Float), None).unwrap();
            let w = values(&out.weights.unwrap());
            let d: Vec<f64> = (0..50)
                .map(|k| (0..4).map(|i| w[i] * rounded[i][k]).sum())
                .collect();
            for (i, g) in rounded.iter().enumerate() {
                let gd: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
                let product = gd * w[i].powf(1.0 / alpha);
                assert!(
                    (product - 1.0).abs() < 1e-4,
                    "α={alpha} task {i}: {product}"
                );
            }
        }
    }

    #[test]
    fn alpha_one_is_nash_mtls_solution_up_to_scale() {
        for (what, grads) in instances()
            .into_iter()
            .filter(|(n, _)| n.starts_with("random"))
            .take(6)
        {
            let t = grads.len();
            let (fair, _) = solve(1.0, &grads);
            let config = json!({ "max_norm": 0.0, "optim_niter": 200 });
            let mut nash = create("nash-mtl", config, &context(t, 0));
            let out = weigh(&mut *nash, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let nash = values(&out.weights.unwrap());
            let ratio = fair[0] / nash[0];
            for i in 0..t {
                assert!(
                    (fair[i] - ratio * nash[i]).abs() < 1e-7 * fair[i],
                    "{what}: {fair:?} vs {nash:?}"
                );
            }
        }
    }

    #[test]
    fn alpha_zero_is_the_mean() {
        let (w, _) = solve(0.0, &[vec![1.0, 2.0], vec![-3.0, 1.0], vec![0.0, 5.0]]);
        assert_eq!(w, vec![1.0 / 3.0; 3]);
    }
}
