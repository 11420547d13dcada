//! IMTL-G (Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial
//! Multi-task Learning", ICLR 2021), the gradient half of IMTL.
//!
//! The update `d = Σ_i α_i g_i`, `Σ_i α_i = 1`, has equal projections onto
//! every unit gradient `u_i = g_i/‖g_i‖`: `dᵀu_1 = dᵀu_i` for all i. The
//! paper (and LibMTL) solve this in closed form as
//! `α_{2..T} = g_1 Uᵀ (D Uᵀ)⁻¹`, `D` and `U` holding the differences
//! `g_1 − g_i` and `u_1 − u_i`. The same conditions in Gramian form, with
//! `β_j = ‖g_j‖ α_j` and the cosine matrix `C_ij = M_ij/(‖g_i‖‖g_j‖)`, are one
//! (T+1)×(T+1) linear system in `(β, s)`:
//!
//! ```text
//! Σ_j C_ij β_j − s = 0          (dᵀu_i = s for every i)
//! Σ_j β_j / ‖g_j‖  = 1          (Σ_j α_j = 1)
//! ```
//!
//! which is well scaled (C has a unit diagonal) and, solved with complete
//! pivoting, still has an answer when tasks share a gradient direction (the
//! paper's inverse does not exist there).
//!
//! A task with a zero gradient has no direction `u_i`; it gets weight 0 and
//! the others are balanced among themselves.
//!
//! `imtl` is the paper's hybrid, as LibMTL's `IMTL`: each loss is scaled
//! first, `e^{s_t} L_t − s_t` (IMTL-L), and IMTL-G balances the gradients of
//! the scaled losses, `e^{s_t} g_t`: on the Gramian, `M̃ = D M D` with
//! `D = diag(e^s)`; the update is `Σ α̃_t e^{s_t} g_t`. The scales learn from
//! the gradient of the scaled losses, `e^{s_t} L_t − 1`, by Adam (`lr`,
//! 1e-3, the runtime's default learning rate; in LibMTL they share the
//! model's optimizer). Heads get the gradient of their own unscaled loss (the
//! host sets them before the weighting runs), which only a positive factor
//! separates from the scaled one: Adam's steps are nearly the same, SGD's are
//! not. `s` and Adam's moments are the state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema, NoKeys};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::solvers::{solve_linear, Matrix};
use crate::adam::Adam;
use crate::vectors::{load_vector, vector_state};

/// The IMTL-G weighting.
struct ImtlG {
    tasks: Tasks,
}

/// The weights `α` (zero for zero gradients).
fn coefficients(step: &Step<'_>) -> Vec<f64> {
    let gram = &step.gram;
    let rows = step.nonzero_rows();
    let mut alpha = vec![0.0; gram.n()];
    let n = rows.len();
    if n == 0 {
        return alpha;
    }
    let norms: Vec<f64> = rows.iter().map(|&i| gram[(i, i)].sqrt()).collect();
    // Scaling the last row by the smallest norm keeps all its entries in (0, 1].
    let smallest = norms.iter().copied().fold(f64::INFINITY, f64::min);
    let system = Matrix::from_fn(n + 1, |i, j| match (i < n, j < n) {
        (true, true) => gram[(rows[i], rows[j])] / (norms[i] * norms[j]),
        (true, false) => -1.0,
        (false, true) => smallest / norms[j],
        (false, false) => 0.0,
    });
    let mut rhs = vec![0.0; n + 1];
    rhs[n] = smallest;
    let solution = solve_linear(system, rhs);
    for (k, &i) in rows.iter().enumerate() {
        alpha[i] = solution[k] / norms[k];
    }
    alpha
}

impl Weighting for ImtlG {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| Ok(coefficients(step)))
    }
}

fn create(_config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    Ok(Box::new(ImtlG {
        tasks: Tasks::new(ctx, host)?,
    }))
}

/// IMTL: IMTL-L's loss scales, then IMTL-G on the scaled gradients.
struct Imtl {
    tasks: Tasks,
    /// The log scales `s`.
    scales: Vec<f64>,
    adam: Adam,
}

impl Weighting for Imtl {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let Imtl {
            tasks,
            scales,
            adam,
        } = self;
        combine(input, tasks, |step| {
            let c: Vec<f64> = scales.iter().map(|s| s.exp()).collect();
            let scaled = Step {
                step: step.step,
                gram: Matrix::from_fn(c.len(), |i, j| c[i] * c[j] * step.gram[(i, j)]),
                rounding: step.rounding,
                params: step.params,
                losses: step.losses.clone(),
                tasks: step.tasks,
            };
            let alpha = coefficients(&scaled);
            let grad: Vec<f64> = c
                .iter()
                .zip(&step.losses)
                .map(|(c, l)| c * l - 1.0)
                .collect();
            adam.step(scales, &grad);
            Ok(alpha.iter().zip(&c).map(|(a, c)| a * c).collect())
        })
    }

    fn state(&self) -> Result<State> {
        let (adam, steps) = self.adam.state()?;
        let mut state = vector_state(&[("scales", &self.scales)])?;
        state.tensors.extend(adam.tensors);
        state.meta = json!({ "adam_steps": steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        if state.is_empty() {
            self.scales = vec![0.0; t];
            self.adam = Adam::new(t, self.adam.lr, 0.0);
            return Ok(());
        }
        let steps = state.meta["adam_steps"].clone();
        self.scales = load_vector(&mut state, "imtl", "scales", t)?.unwrap_or(vec![0.0; t]);
        self.adam.load(&mut state, "imtl", &steps)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct ImtlConfig {
    /// Adam learning rate of the log loss scales.
    #[schemars(range(min = 0.0))]
    lr: f64,
}

impl Default for ImtlConfig {
    fn default() -> ImtlConfig {
        ImtlConfig { lr: 1e-3 }
    }
}

fn create_hybrid(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let ImtlConfig { lr } = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    Ok(Box::new(Imtl {
        tasks,
        scales: vec![0.0; t],
        adam: Adam::new(t, lr, 0.0),
    }))
}

register_method!(Method::new(
    "imtl",
    env!("CARGO_PKG_VERSION"),
    "IMTL: IMTL-L's learned loss scales, then IMTL-G on the scaled gradients (Liu et al., ICLR 2021; LibMTL's IMTL)",
    schema_for::<ImtlConfig>,
    Constructor::Weighting(create_hybrid),
));

register_method!(Method::new(
    "imtl-g",
    env!("CARGO_PKG_VERSION"),
    "IMTL-G: the update with equal projections onto every task's unit gradient (Liu et al., ICLR 2021)",
    schema_for::<NoKeys>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{
        context, create, degenerate, instances, tensor_of, values, weigh,
    };
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    /// `dᵀu_i` for every task.
    fn projections(grads: &[Vec<f64>], d: &[f64]) -> Vec<f64> {
        grads.iter().map(|g| dot(g, d) / dot(g, g).sqrt()).collect()
    }

    #[test]
    fn the_hybrid_scales_the_imtl_g_update_and_learns_the_scales() {
        // With s = 0 the first step is IMTL-G's; the scales then move
        // against e^s L − 1 (losses 2 and 0.5: s_0 down, s_1 up).
        let (_, grads) = instances().swap_remove(3);
        let t = grads.len();
        let g = tensor_of(&grads, Kind::Double);
        let mut losses = vec![1.0; t];
        (losses[0], losses[1]) = (2.0, 0.5);
        let l = taskweave_plugin_api::tch::Tensor::from_slice(&losses);
        let mut hybrid = create("imtl", json!({ "lr": 0.1 }), &context(t, 0));
        let mut plain = create("imtl-g", json!({}), &context(t, 0));
        let a = weigh(&mut *hybrid, 0, &g, Some(&l)).unwrap();
        let b = weigh(&mut *plain, 0, &g, Some(&l)).unwrap();
        assert!(a.combined.allclose(&b.combined, 1e-12, 1e-12, false));
        let state = hybrid.state().unwrap();
        let scales = values(&state.tensors.iter().find(|(n, _)| n == "scales").unwrap().1);
        assert!(scales[0] < 0.0 && scales[1] > 0.0, "{scales:?}");
        // Afterwards the direction is still IMTL-G's (equal projections onto
        // the unit gradients) but the scale differs.
        let a = values(&weigh(&mut *hybrid, 1, &g, Some(&l)).unwrap().combined);
        let b = values(&weigh(&mut *plain, 1, &g, Some(&l)).unwrap().combined);
        let cos = dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt();
        assert!((cos - 1.0).abs() < 1e-9, "{cos}");
        assert!((dot(&a, &a) / dot(&b, &b) - 1.0).abs() > 1e-6);
    }

    #[test]
    fn projections_onto_the_unit_gradients_are_equal() {
        let degenerate = degenerate()
            .into_iter()
            .filter(|(name, _)| name != "zero row");
        for (name, grads) in instances().into_iter().chain(degenerate) {
            let t = grads.len();
            let mut imtl = create("imtl-g", json!({}), &context(t, 0));
            let out = weigh(&mut *imtl, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let (alpha, d) = (values(&out.weights.unwrap()), values(&out.combined));
            assert!(
                (alpha.iter().sum::<f64>() - 1.0).abs() < 1e-9,
                "{name}: {alpha:?}"
            );
            let p = projections(&grads, &d);
            // Rounding in d is relative to the terms it sums, not to d (which
            // is 0 when there are more tasks than dimensions).
            let scale: f64 = alpha
                .iter()
                .zip(&grads)
                .map(|(a, g)| a.abs() * dot(g, g).sqrt())
                .sum();
            let spread = p.iter().fold(f64::NEG_INFINITY, |m, x| m.max(*x))
                - p.iter().fold(f64::INFINITY, |m, x| m.min(*x));
            assert!(spread <= 1e-9 * scale, "{name}: projections {p:?}");
        }
    }

    #[test]
    fn duplicate_directions_and_zero_gradients_still_balance_the_rest() {
        // Tasks 0 and 2 share a direction; task 3 has no gradient.
        let grads = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 3.0, 1.0],
            vec![2.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.0],
        ];
        let mut imtl = create("imtl-g", json!({}), &context(4, 0));
        let out = weigh(&mut *imtl, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        let (alpha, d) = (values(&out.weights.unwrap()), values(&out.combined));
        assert_eq!(alpha[3], 0.0);
        assert!((alpha.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{alpha:?}");
        let p = projections(&grads[..3], &d);
        assert!(
            (p[0] - p[1]).abs() < 1e-12 && (p[0] - p[2]).abs() < 1e-12,
            "{p:?}"
        );
    }
}
