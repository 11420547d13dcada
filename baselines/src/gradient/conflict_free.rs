//! ConFIG (Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of
//! Physics Informed Neural Networks", ICLR 2025): conflict-free inverse
//! gradients.
//!
//! With the unit gradients `U` (rows `g_i/‖g_i‖`, zero rows for zero
//! gradients), the direction `b = U⁺ w` has the same inner product `w_i` with
//! every unit gradient (the least-norm one when they are dependent), and the
//! update is `b/‖b‖` scaled to the sum of the gradients' projections on it:
//! `d = (Σ_i g_iᵀb̂) b̂`. In Gramian form, `U⁺ = Uᵀ C⁺` with the cosine matrix
//! `C = UUᵀ`, so `b = Uᵀy` with `y = C⁺w` and `‖b‖² = yᵀCy`.
//!
//! Conventions are TorchJD's (0.18, `ConFIG`): `w` (the preference vector)
//! is 1 for every task by default; the pseudo-inverse drops singular values
//! of `U` at or below `max(T, P)·ε` times the largest, as
//! `torch.linalg.pinv` does by default (ε of the Gramian's precision);
//! `b̂ = b/max(‖b‖, 1e-12)`, as `F.normalize`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::preference::preference;
use super::solvers::{psd_pinv, Matrix};

/// The smallest norm `b` is divided by, as `F.normalize`'s `eps`.
const NORMALIZE_EPS: f64 = 1e-12;

/// The ConFIG weighting.
struct ConFig {
    tasks: Tasks,
    pref: Vec<f64>,
}

impl ConFig {
    fn coefficients(&self, step: &Step<'_>) -> Vec<f64> {
        let gram = &step.gram;
        let t = gram.n();
        let norms: Vec<f64> = (0..t).map(|i| gram[(i, i)].max(0.0).sqrt()).collect();
        let inverse = |i: usize| if norms[i] > 0.0 { 1.0 / norms[i] } else { 0.0 };
        let cosines = Matrix::from_fn(t, |i, j| gram[(i, j)] * inverse(i) * inverse(j));
        let rtol = t.max(step.params) as f64 * step.rounding;
        let y = psd_pinv(&cosines, rtol * rtol).mul_vec(&self.pref);
        let length_b = cosines.quad(&y).max(0.0).sqrt().max(NORMALIZE_EPS);
        // d = (Σ_j g_jᵀb̂) b̂ with b̂ = Σ_i y_i g_i / (‖g_i‖·‖b‖).
        let unit: Vec<f64> = (0..t).map(|i| y[i] * inverse(i) / length_b).collect();
        let length: f64 = gram.mul_vec(&unit).iter().sum();
        unit.iter().map(|c| length * c).collect()
    }
}

impl Weighting for ConFig {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| Ok(self.coefficients(step)))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The inner product the direction should have with each unit gradient,
    /// one per task in the order of [tasks] (default: 1 each).
    pref_vector: Option<Vec<f64>>,
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let pref = preference(config.pref_vector.as_deref(), tasks.len(), 1.0)?;
    Ok(Box::new(ConFig { tasks, pref }))
}

register_method!(Method::new(
    "config",
    env!("CARGO_PKG_VERSION"),
    "ConFIG: the direction with equal cosine to every task gradient, scaled to their projections (Liu et al., ICLR 2025)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot as inner;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn the_update_has_equal_cosine_with_every_task() {
        for (what, grads) in instances()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("low-rank"))
        {
            let t = grads.len();
            if t > grads[0].len() {
                continue;
            }
            let mut method = create("config", json!({}), &context(t, 0));
            let d = values(
                &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .combined,
            );
            let norm_d = inner(&d, &d).sqrt();
            let cosines: Vec<f64> = grads
                .iter()
                .map(|g| inner(g, &d) / (inner(g, g).sqrt() * norm_d))
                .collect();
            for c in &cosines {
                assert!(
                    (c - cosines[0]).abs() < 1e-8 && *c > 0.0,
                    "{what}: {cosines:?}"
                );
            }
            // Its length is the sum of the gradients' projections on it.
            let projections: f64 = grads.iter().map(|g| inner(g, &d) / norm_d).sum();
            assert!((norm_d - projections).abs() < 1e-9 * norm_d, "{what}");
        }
    }
}
