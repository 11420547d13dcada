//! MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective
//! Optimization", NeurIPS 2018): the update is the min-norm point of the
//! convex hull of the task gradients, `Σ_i w_i g_i` with
//! `w = argmin_{w ∈ simplex} wᵀMw`, found by Frank-Wolfe on the Gramian
//! ([`simplex_qp`]).
//!
//! `normalization` (named as in LibMTL, values as in the official
//! `gradient_normalizers`) scales each gradient before the weights are chosen:
//! `l2` by `1/‖g_i‖`, `loss` by `1/L_i`, `loss+` by `1/(L_i‖g_i‖)`. In Gramian
//! space that is `M_ij / (s_i s_j)`. A zero scale (a zero gradient or a zero
//! loss) leaves its row unscaled; `loss` and `loss+` refuse negative losses.
//!
//! Convention: the weights found on the normalised gradients are applied to
//! the *original* gradients, `update = Σ_i w_i g_i`, with `Σ_i w_i = 1`. This
//! is what the official code does (its trainer re-weights the task losses with
//! the solution and backpropagates once) and what the paper describes
//! (normalisation is a heuristic for choosing weights, not part of the
//! objective); LibMTL instead applies them to the normalised gradients, which
//! changes the update's scale with the normalisation. The official sample
//! configurations use `loss+`; the default here is `none` (the plain method,
//! LibMTL's default).

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::solvers::{simplex_qp, Matrix};

/// How gradients are scaled before the weights are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde")]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
enum Normalization {
    /// Unscaled.
    #[default]
    #[serde(rename = "none")]
    None,
    /// 1/‖g_i‖.
    #[serde(rename = "l2")]
    L2,
    /// 1/L_i.
    #[serde(rename = "loss")]
    Loss,
    /// 1/(L_i‖g_i‖).
    #[serde(rename = "loss+")]
    LossPlus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Scale gradient i by 1, 1/‖g_i‖, 1/L_i or 1/(L_i‖g_i‖) when choosing the
    /// weights; the update always combines the original gradients.
    normalization: Normalization,
}

/// The MGDA weighting.
struct Mgda {
    tasks: Tasks,
    normalization: Normalization,
}

impl Mgda {
    /// The min-norm weights of the normalised gradients.
    fn coefficients(&self, step: &Step<'_>) -> Result<Vec<f64>> {
        let gram = &step.gram;
        let t = gram.n();
        let mut scales = Vec::with_capacity(t);
        for i in 0..t {
            let (norm, loss) = (gram[(i, i)].sqrt(), step.losses[i]);
            if matches!(
                self.normalization,
                Normalization::Loss | Normalization::LossPlus
            ) && loss < 0.0
            {
                // The losses the method was given do not suit the setting: input.
                return Err(Error::input(format!(
                    "mgda's `normalization` divides by the loss, but {} has a negative loss ({loss}): \
                     use normalization = \"l2\" or \"none\"",
                    step.task(i)
                )));
            }
            let scale = match self.normalization {
                Normalization::None => 1.0,
                Normalization::L2 => norm,
                Normalization::Loss => loss,
                Normalization::LossPlus => loss * norm,
            };
            scales.push(if scale > 0.0 { scale } else { 1.0 });
        }
        let scaled = Matrix::from_fn(t, |i, j| gram[(i, j)] / (scales[i] * scales[j]));
        Ok(simplex_qp(&scaled, &vec![0.0; t], None))
    }
}

impl Weighting for Mgda {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| self.coefficients(step))
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { normalization } = typed(config)?;
    Ok(Box::new(Mgda {
        tasks: Tasks::new(ctx, host)?,
        normalization,
    }))
}

register_method!(Method::new(
    "mgda",
    env!("CARGO_PKG_VERSION"),
    "MGDA: the min-norm point of the convex hull of the task gradients (Sener & Koltun, NeurIPS 2018)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{
        context, create, instances, max_abs_diff, tensor_of, values, weigh,
    };
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{Kind, Tensor};

    #[test]
    fn the_update_is_the_min_norm_point_of_the_hull() {
        for (name, grads) in instances() {
            let t = grads.len();
            let mut mgda = create("mgda", json!({}), &context(t, 0));
            let out = weigh(&mut *mgda, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let (w, d) = (values(&out.weights.unwrap()), values(&out.combined));
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{name}: {w:?}");
            // The min-norm point d has d·g_i ≥ ‖d‖² for every i (it separates 0 from the hull).
            let norm_sq = dot(&d, &d);
            let scale = grads.iter().map(|g| dot(g, g)).fold(0.0, f64::max);
            for (i, g) in grads.iter().enumerate() {
                assert!(dot(&d, g) >= norm_sq - 1e-9 * scale, "{name}: task {i}");
            }
        }
    }

    #[test]
    fn normalised_weights_apply_to_the_original_gradients() {
        let grads = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let stretched = vec![vec![10.0, 0.0], vec![0.0, 1.0]];
        let run = |normalization: &str, grads: &[Vec<f64>], losses: [f64; 2]| {
            let mut mgda = create(
                "mgda",
                json!({ "normalization": normalization }),
                &context(2, 0),
            );
            let losses = Tensor::from_slice(&losses);
            let out = weigh(
                &mut *mgda,
                0,
                &tensor_of(grads, Kind::Double),
                Some(&losses),
            )
            .unwrap();
            (values(&out.weights.unwrap()), values(&out.combined))
        };
        // l2: the weights ignore the norms, the update keeps them.
        let (w, d) = run("l2", &stretched, [1.0, 1.0]);
        assert!(max_abs_diff(&w, &[0.5, 0.5]) < 1e-12, "{w:?}");
        assert!(max_abs_diff(&d, &[5.0, 0.5]) < 1e-12, "{d:?}");
        // none: the min-norm point favours the short gradient.
        let (w, _) = run("none", &stretched, [1.0, 1.0]);
        assert!(
            max_abs_diff(&w, &[1.0 / 101.0, 100.0 / 101.0]) < 1e-12,
            "{w:?}"
        );
        // loss: scaling by 1/L_i = scaling the gradient by 1/L_i.
        let (w, _) = run("loss", &grads, [1.0, 10.0]);
        assert!(
            max_abs_diff(&w, &[1.0 / 101.0, 100.0 / 101.0]) < 1e-12,
            "{w:?}"
        );
        // loss+: norms out, then losses.
        let (w, _) = run("loss+", &stretched, [1.0, 10.0]);
        assert!(
            max_abs_diff(&w, &[1.0 / 101.0, 100.0 / 101.0]) < 1e-12,
            "{w:?}"
        );
    }

    #[test]
    fn loss_normalization_refuses_negative_losses() {
        let mut mgda = create("mgda", json!({ "normalization": "loss" }), &context(2, 0));
        let losses = Tensor::from_slice(&[1.0, -0.5]);
        let grads = tensor_of(&[vec![1.0], vec![2.0]], Kind::Double);
        let err = weigh(&mut *mgda, 0, &grads, Some(&losses))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("task `task1` (row 1) has a negative loss"),
            "{err}"
        );
    }
}
