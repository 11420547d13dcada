//! CAGrad (Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for
//! Multi-task Learning", NeurIPS 2021).
//!
//! The update maximises the worst task's improvement within a ball around the
//! average gradient `g_0 = (1/T) Σ_i g_i`: `max_d min_i g_iᵀd` subject to
//! `‖d − g_0‖ ≤ c‖g_0‖`. Through its dual:
//!
//! - `w* = argmin_{w ∈ simplex} g_wᵀg_0 + c‖g_0‖·‖g_w‖`, with `g_w = Σ_i w_i g_i`
//!   (in Gramian form `wᵀM1/T + sqrt(c²‖g_0‖²)·sqrt(wᵀMw)`, as the official
//!   code writes it);
//! - `d = g_0 + c‖g_0‖/‖g_w*‖ · g_w*`, divided by `1 + c²` (`rescale = 1`, the
//!   official default), `1 + c` (`rescale = 2`) or nothing (`rescale = 0`).
//!
//! Conventions checked against the official code (github.com/Cranial-XIX/CAGrad,
//! `cagrad()` in `nyuv2/utils.py`) and LibMTL's port: the same objective,
//! rescaling and `λ = c‖g_0‖/‖g_w‖`; `d` is on the scale of the *mean*
//! gradient, as in LibMTL (the official trainer multiplies every method's
//! update by T afterwards "to match the sum loss"; here that factor belongs to
//! the learning rate). Where the official code adds 1e-8 to avoid dividing by
//! zero, this one handles the degenerate cases exactly: `g_0 = 0` or `c = 0`
//! give `d = g_0`, and so does a dual optimum at `g_w = 0` (the correction's
//! direction is then undefined; this needs a Pareto-stationary point, such as
//! a task with a zero gradient), as the official code does when `g_w` is
//! exactly 0. The dual is solved to near machine precision by [`cagrad_dual`]
//! instead of SLSQP.
//!
//! With one task `d = (1 + c)g`, so the update is `(1 + c)/(1 + c²)·g` under
//! the default rescaling and exactly `g` under `rescale = 2`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Tasks};
use super::solvers::{cagrad_dual, dot, Matrix};

const DEFAULT_C: f64 = 0.4;

/// The CAGrad weighting.
struct CaGrad {
    tasks: Tasks,
    /// The radius of the ball, relative to `‖g_0‖`.
    c: f64,
    /// What `d` is divided by.
    divisor: f64,
}

impl CaGrad {
    /// The coefficients of `d` in terms of the task gradients.
    fn coefficients(&self, gram: &Matrix) -> Vec<f64> {
        let t = gram.n();
        let uniform = vec![1.0 / t as f64; t];
        let b = gram.mul_vec(&uniform);
        let k = self.c * dot(&uniform, &b).max(0.0).sqrt();
        let mut coef = uniform;
        if k > 0.0 {
            if let Some(w) = cagrad_dual(gram, &b, k) {
                let norm = gram.quad(&w).max(0.0).sqrt();
                if norm > 0.0 {
                    coef.iter_mut()
                        .zip(&w)
                        .for_each(|(c, w)| *c += k / norm * w);
                }
            }
        }
        coef.iter().map(|c| c / self.divisor).collect()
    }
}

impl Weighting for CaGrad {
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
    /// Radius of the ball around the mean gradient, relative to its norm (0 =
    /// plain gradient descent on the mean).
    #[schemars(range(min = 0.0))]
    c: f64,
    /// Divide the update by 1 (0), 1 + c² (1, the official default) or 1 + c (2).
    #[schemars(extend("enum" = [0, 1, 2]))]
    rescale: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            c: DEFAULT_C,
            rescale: 1,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { c, rescale } = typed(config)?;
    let divisor = match rescale {
        0 => 1.0,
        1 => 1.0 + c * c,
        2 => 1.0 + c,
        other => {
            return Err(Error::msg(format!(
                "`rescale` must be 0, 1 or 2, got {other}"
            )))
        }
    };
    Ok(Box::new(CaGrad {
        tasks: Tasks::new(ctx, host)?,
        c,
        divisor,
    }))
}

register_method!(Method::new(
    "cagrad",
    env!("CARGO_PKG_VERSION"),
    "CAGrad: the update in a ball around the mean gradient that most improves the worst task (Liu et al., NeurIPS 2021)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::rng::SplitMix;
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn the_update_is_the_best_direction_in_the_ball() {
        let mut rng = SplitMix::at(4, 0);
        for (name, grads) in instances() {
            let (t, p) = (grads.len(), grads[0].len());
            let mut cagrad = create("cagrad", json!({ "rescale": 0 }), &context(t, 0));
            let out = weigh(&mut *cagrad, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let d = values(&out.combined);
            let g0: Vec<f64> = (0..p)
                .map(|k| grads.iter().map(|g| g[k]).sum::<f64>() / t as f64)
                .collect();
            let radius = DEFAULT_C * dot(&g0, &g0).sqrt();
            let offset: Vec<f64> = d.iter().zip(&g0).map(|(d, g)| d - g).collect();
            assert!(
                (dot(&offset, &offset).sqrt() - radius).abs() < 1e-9 * radius,
                "{name}: d is not on the sphere"
            );
            let worst = |d: &[f64]| {
                grads
                    .iter()
                    .map(|g| dot(g, d))
                    .fold(f64::INFINITY, f64::min)
            };
            let best = worst(&d);
            for _ in 0..300 {
                let u: Vec<f64> = (0..p).map(|_| rng.normal()).collect();
                let scale = radius * rng.uniform().sqrt() / dot(&u, &u).sqrt();
                let other: Vec<f64> = g0.iter().zip(&u).map(|(g, u)| g + scale * u).collect();
                assert!(
                    worst(&other) <= best + 1e-9 * dot(&g0, &g0),
                    "{name}: a point of the ball beats d"
                );
            }
        }
    }

    #[test]
    fn rescaling_follows_the_official_code() {
        let grads = vec![vec![1.0, 0.0], vec![-0.5, 1.0], vec![0.2, 0.3]];
        let d = |rescale: u64| {
            let mut cagrad = create("cagrad", json!({ "rescale": rescale }), &context(3, 0));
            values(
                &weigh(&mut *cagrad, 0, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .combined,
            )
        };
        let (plain, one, two) = (d(0), d(1), d(2));
        for k in 0..2 {
            assert!((one[k] - plain[k] / 1.16).abs() < 1e-12);
            assert!((two[k] - plain[k] / 1.4).abs() < 1e-12);
        }
    }

    #[test]
    fn c_zero_is_the_mean_gradient_and_one_task_is_scaled() {
        let grads = vec![vec![1.0, 0.0], vec![-3.0, 1.0]];
        let mut cagrad = create("cagrad", json!({ "c": 0.0 }), &context(2, 0));
        let out = weigh(&mut *cagrad, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        assert_eq!(values(&out.combined), vec![-1.0, 0.5]);
        let mut cagrad = create("cagrad", json!({}), &context(1, 0));
        let out = weigh(
            &mut *cagrad,
            0,
            &tensor_of(&[vec![3.0, 4.0]], Kind::Double),
            None,
        )
        .unwrap();
        let factor = 1.4 / 1.16;
        let update = values(&out.combined);
        assert!(
            (update[0] - 3.0 * factor).abs() < 1e-12 && (update[1] - 4.0 * factor).abs() < 1e-12,
            "{update:?}"
        );
    }

    #[test]
    fn an_optimum_at_zero_falls_back_to_the_mean() {
        let grads = vec![vec![1.0, 2.0], vec![-1.0, -2.0]];
        let mut cagrad = create("cagrad", json!({ "c": 2.0, "rescale": 0 }), &context(2, 0));
        let out = weigh(&mut *cagrad, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        assert_eq!(values(&out.combined), vec![0.0, 0.0]);
        let grads = vec![vec![1.0, 2.0], vec![-1.0, -2.0], vec![0.0, 1.0]];
        let mut cagrad = create("cagrad", json!({ "c": 2.0, "rescale": 0 }), &context(3, 0));
        let out = weigh(&mut *cagrad, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        assert!(values(&out.combined).iter().all(|x| x.is_finite()));
    }
}
