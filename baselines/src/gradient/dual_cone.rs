//! UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective
//! Optimization", 2024) and DualProj (the projection of Lopez-Paz & Ranzato,
//! "Gradient Episodic Memory for Continual Learning", NeurIPS 2017, eq. 11):
//! both project onto the dual cone of the task gradients `{d : g_iᵀd ≥ 0 ∀i}`,
//! so that the update conflicts with no task.
//!
//! - `dualproj`: the preference-weighted gradient `Gᵀu` projected onto the cone.
//! - `upgrad`: every task's weighted gradient `u_i g_i` projected on its own,
//!   the projections summed.
//!
//! By Proposition 1 of the UPGrad paper the projection of `Gᵀu` is `Gᵀv`
//! with `v = argmin vᵀMv` subject to `v ≥ u`, a T×T problem on the Gramian:
//! with `v = u + x` it is the non-negative QP `min xᵀMx + 2(Mu)ᵀx`, `x ≥ 0`,
//! solved exactly by [`nonnegative_qp`].
//!
//! Conventions are TorchJD's (0.18, `UPGrad`, `DualProj` with its
//! `QuadprogProjector`), checked against it in the tests: `pref_vector`
//! defaults to `1/T` for every task; the Gramian is divided by its trace (the
//! squared Frobenius norm of G) unless that trace is below `norm_eps`, in
//! which case it is taken as 0 (the projection then returns `u` itself), and
//! `reg_eps` is added to its diagonal to keep the QP strictly convex. Both
//! are options, 1e-4 by default as in TorchJD. LibMTL's UPGrad solves the same
//! problem on the unnormalised Gramian with `reg_eps = 0`: set `norm_eps = 0`
//! and a tiny `reg_eps` for that.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::combine::{combine, Tasks};
use super::preference::preference;
use super::solvers::{nonnegative_qp, Matrix};

/// Which of the two projections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Projection {
    /// Each task's weighted gradient projected on its own, then summed.
    EachTask,
    /// The weighted sum of the gradients projected once.
    Sum,
}

/// UPGrad or DualProj.
struct DualCone {
    tasks: Tasks,
    projection: Projection,
    pref: Vec<f64>,
    norm_eps: f64,
    reg_eps: f64,
}

impl DualCone {
    /// The weights `v` with `Gᵀv` the projection of `Gᵀu` onto the dual cone.
    fn project(gram: &Matrix, u: &[f64]) -> Vec<f64> {
        let q = gram.mul_vec(u);
        let x = nonnegative_qp(gram, &q);
        u.iter().zip(x).map(|(u, x)| u + x).collect()
    }

    fn coefficients(&self, gram: &Matrix) -> Vec<f64> {
        let t = gram.n();
        let trace: f64 = (0..t).map(|i| gram[(i, i)]).sum();
        let scale = if trace < self.norm_eps {
            0.0
        } else {
            1.0 / trace
        };
        let regular = Matrix::from_fn(t, |i, j| {
            gram[(i, j)] * scale + if i == j { self.reg_eps } else { 0.0 }
        });
        match self.projection {
            Projection::Sum => DualCone::project(&regular, &self.pref),
            Projection::EachTask => {
                let mut total = vec![0.0; t];
                for i in 0..t {
                    let mut u = vec![0.0; t];
                    u[i] = self.pref[i];
                    for (sum, v) in total.iter_mut().zip(DualCone::project(&regular, &u)) {
                        *sum += v;
                    }
                }
                total
            }
        }
    }
}

impl Weighting for DualCone {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| Ok(self.coefficients(&step.gram)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Weights of the tasks' gradients before the projection, one per task in
    /// the order of [tasks] (default: 1/T each).
    pref_vector: Option<Vec<f64>>,
    /// The Gramian is divided by its trace unless the trace is below this
    /// (then it is taken as zero).
    #[schemars(range(min = 0.0))]
    norm_eps: f64,
    /// Added to the diagonal of the normalised Gramian so that the QP is
    /// strictly convex.
    #[schemars(range(min = 0.0))]
    reg_eps: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pref_vector: None,
            norm_eps: 1e-4,
            reg_eps: 1e-4,
        }
    }
}

fn create_with(
    projection: Projection,
    config: &Value,
    ctx: &MethodContext,
    host: &Host,
) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let pref = preference(
        config.pref_vector.as_deref(),
        tasks.len(),
        1.0 / tasks.len() as f64,
    )?;
    Ok(Box::new(DualCone {
        tasks,
        projection,
        pref,
        norm_eps: config.norm_eps,
        reg_eps: config.reg_eps,
    }))
}

fn create_upgrad(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    create_with(Projection::EachTask, config, ctx, host)
}

fn create_dualproj(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    create_with(Projection::Sum, config, ctx, host)
}

register_method!(Method::new(
    "upgrad",
    env!("CARGO_PKG_VERSION"),
    "UPGrad: every task's gradient projected onto the dual cone of all of them, summed (Quinton & Rey, 2024)",
    schema_for::<Config>,
    Constructor::Weighting(create_upgrad),
));

register_method!(Method::new(
    "dualproj",
    env!("CARGO_PKG_VERSION"),
    "DualProj: the mean gradient projected onto the dual cone of the task gradients (Lopez-Paz & Ranzato, NeurIPS 2017)",
    schema_for::<Config>,
    Constructor::Weighting(create_dualproj),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{
        context, create, degenerate, instances, tensor_of, values, weigh,
    };
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn the_update_conflicts_with_no_task() {
        // reg_eps = 0 and no normalisation floor: the exact projection.
        for name in ["upgrad", "dualproj"] {
            for (what, grads) in instances().into_iter().chain(degenerate()) {
                let t = grads.len();
                let config = json!({ "norm_eps": 0.0, "reg_eps": 0.0 });
                let mut method = create(name, config, &context(t, 0));
                let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
                let d = values(&out.combined);
                let weights = values(&out.weights.unwrap());
                let size: f64 = weights
                    .iter()
                    .zip(&grads)
                    .map(|(w, g)| w.abs() * dot(g, g).sqrt())
                    .sum::<f64>()
                    .max(f64::MIN_POSITIVE);
                for (i, g) in grads.iter().enumerate() {
                    let norm = dot(g, g).sqrt();
                    assert!(
                        dot(g, &d) >= -1e-9 * size * norm,
                        "{name} {what}: g_{i}ᵀd = {} (weights {weights:?})",
                        dot(g, &d)
                    );
                }
                // The projections only add to the preference: every weight ≥ 1/T.
                assert!(
                    weights.iter().all(|&w| w >= 1.0 / t as f64 - 1e-12),
                    "{name} {what}: {weights:?}"
                );
            }
        }
    }

    #[test]
    fn without_conflict_the_projection_changes_nothing() {
        // All pairwise inner products positive: the mean is in the cone.
        let grads = vec![
            vec![1.0, 0.2, 0.0],
            vec![0.8, 1.0, 0.1],
            vec![0.5, 0.3, 1.0],
        ];
        for name in ["upgrad", "dualproj"] {
            let mut method = create(name, json!({ "reg_eps": 0.0 }), &context(3, 0));
            let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let weights = values(&out.weights.unwrap());
            for w in &weights {
                assert!((w - 1.0 / 3.0).abs() < 1e-12, "{name}: {weights:?}");
            }
        }
    }

    #[test]
    fn a_preference_of_the_wrong_length_is_an_input_error() {
        let method = taskweave_plugin_api::method::registered()
            .find(|m| m.name == "upgrad")
            .unwrap();
        let err = method
            .create(
                &json!({ "pref_vector": [1.0, 2.0], "norm_eps": 1e-4, "reg_eps": 1e-4 }),
                &context(3, 0),
                &taskweave_plugin_api::Host::standalone(),
            )
            .err()
            .unwrap();
        assert!(err.is_input(), "{err}");
        assert!(
            err.to_string()
                .contains("has 2 entries, but there are 3 tasks"),
            "{err}"
        );
    }
}
