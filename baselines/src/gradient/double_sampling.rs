//! MoDo (Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective
//! Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS
//! 2023 / JMLR 2024) and SDMGrad (Xiao, Ban, Ji, "Direction-oriented
//! Multi-objective Learning: Simple and Provable Stochastic Algorithms",
//! NeurIPS 2023): stochastic MGDA variants whose weights `λ` on the simplex
//! follow projected gradient steps carried across training steps.
//!
//! The papers estimate products of gradients without bias from independent
//! batches (double sampling): with `double_sampling = true` (the default, as
//! the papers and LibMTL) the weighting reads three batches per step
//! ([`Weighting::samples`] = 3; the standard strategy draws the two extra
//! ones), the step's batch `G` and two more, `G₁` and `G₂`, and `M = G₁G₂ᵀ`
//! (the cross-Gramian) drives the weights while `G` gives the update. With
//! `double_sampling = false` all three are the step's batch, `M = GGᵀ`: the
//! single-batch forms TorchJD 0.18 ships (`MoDoWeighting`,
//! `SDMGradWeighting`), for strategies that draw one batch (`sam-mtl`), at a
//! third of the backward passes.
//!
//! - `modo`: `λ ← Π(λ − γ(Mλ + ρλ))`, update `Σ λ_i g_i`; `gamma` 0.1, `rho` 0.1.
//! - `sdmgrad`: with `A = M/(mean_i sqrt(max(M_ii, 0)))²` and the preference
//!   `w̃` (1/T each), `n_iter` projected steps with momentum on
//!   `w ← Π(w − lr·v)`, `v ← momentum·v + A(w + λw̃)`; update
//!   `Σ (w_i + λw̃_i)/(1 + λ) g_i`; `lr` 10, `momentum` 0.5, `n_iter` 20,
//!   `lambda` 0.3.
//!
//! `Π` is the projection onto the simplex. Both start from `1/T` each; the
//! current `λ` (or `w`) is the weighting's state (tensor `lambda`), so a
//! resumed run continues exactly (the extra batches are drawn from the seed
//! and the step, so it draws the same).

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, cross_gramian, Step, Tasks};
use super::preference::preference;
use super::solvers::{simplex_projection, Matrix};
use crate::vectors::{load_vector, vector_state};

/// Which of the two methods, with its options.
enum Rule {
    Modo {
        gamma: f64,
        rho: f64,
    },
    SdmGrad {
        lr: f64,
        momentum: f64,
        n_iter: usize,
        lambda: f64,
        pref: Vec<f64>,
    },
}

/// MoDo or SDMGrad.
struct DoubleSampling {
    name: &'static str,
    tasks: Tasks,
    rule: Rule,
    /// The simplex point carried across steps.
    lambda: Vec<f64>,
    /// Whether the weights follow the cross-Gramian of two extra batches.
    double_sampling: bool,
}

impl DoubleSampling {
    fn coefficients(rule: &Rule, lambda: &mut Vec<f64>, gram: &Matrix) -> Vec<f64> {
        match rule {
            Rule::Modo { gamma, rho } => {
                let grad = gram.mul_vec(lambda);
                let moved: Vec<f64> = lambda
                    .iter()
                    .zip(&grad)
                    .map(|(l, g)| l - gamma * (g + rho * l))
                    .collect();
                *lambda = simplex_projection(&moved);
                lambda.clone()
            }
            Rule::SdmGrad {
                lr,
                momentum,
                n_iter,
                lambda: mix,
                pref,
            } => {
                let t = gram.n();
                let scale = (0..t).map(|i| gram[(i, i)].max(0.0).sqrt()).sum::<f64>() / t as f64;
                let a = Matrix::from_fn(t, |i, j| gram[(i, j)] / (scale * scale + 1e-8));
                let mut velocity: Option<Vec<f64>> = None;
                for _ in 0..*n_iter {
                    let mixed: Vec<f64> =
                        lambda.iter().zip(pref).map(|(w, p)| w + mix * p).collect();
                    let grad = a.mul_vec(&mixed);
                    let v = match velocity {
                        None => grad,
                        Some(v) => v.iter().zip(&grad).map(|(v, g)| momentum * v + g).collect(),
                    };
                    let moved: Vec<f64> = lambda.iter().zip(&v).map(|(w, v)| w - lr * v).collect();
                    *lambda = simplex_projection(&moved);
                    velocity = Some(v);
                }
                lambda
                    .iter()
                    .zip(pref)
                    .map(|(w, p)| (w + mix * p) / (1.0 + mix))
                    .collect()
            }
        }
    }
}

impl Weighting for DoubleSampling {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let cross = match (self.double_sampling, input.more_grads, input.grads) {
            (false, _, _) => None,
            (true, [a, b], Some(like)) => Some(cross_gramian(a, b, like, &self.tasks)?),
            (true, more, _) => {
                // A setting that does not fit the strategy (or `call weighting`): bad input.
                return Err(Error::input(format!(
                    "`{}` with double_sampling = true reads the gradients of 3 independent batches per step, but was given {}; the `standard` strategy draws them, strategies that draw one batch (such as `sam-mtl`) and `taskweave call weighting` need `double_sampling = false`",
                    self.name,
                    1 + more.len()
                )));
            }
        };
        let (rule, lambda) = (&self.rule, &mut self.lambda);
        combine(input, &self.tasks, |step: &Step<'_>| {
            let gram = cross.as_ref().unwrap_or(&step.gram);
            Ok(DoubleSampling::coefficients(rule, lambda, gram))
        })
    }

    fn samples(&self) -> usize {
        if self.double_sampling {
            3
        } else {
            1
        }
    }

    fn state(&self) -> Result<State> {
        vector_state(&[("lambda", &self.lambda)])
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        self.lambda = load_vector(&mut state, self.name, "lambda", t)?
            .unwrap_or_else(|| vec![1.0 / t as f64; t]);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct ModoConfig {
    /// Step size of the weights' projected gradient step.
    #[schemars(range(min = 0.0))]
    gamma: f64,
    /// Weight of the ridge term ρλ in that step.
    #[schemars(range(min = 0.0))]
    rho: f64,
    /// Weights from the cross-Gramian of two extra batches per step (the
    /// paper's double sampling), or from the step's own Gramian (TorchJD's
    /// single-batch form).
    double_sampling: bool,
}

impl Default for ModoConfig {
    fn default() -> ModoConfig {
        ModoConfig {
            gamma: 0.1,
            rho: 0.1,
            double_sampling: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct SdmGradConfig {
    /// Step size of the inner projected gradient steps.
    #[schemars(range(min = 0.0))]
    lr: f64,
    /// Momentum of the inner steps.
    #[schemars(range(min = 0.0, max = 1.0))]
    momentum: f64,
    /// Inner steps per training step.
    #[schemars(range(min = 1, max = 10_000))]
    n_iter: u32,
    /// How strongly the update is pulled toward the preferred direction.
    #[schemars(range(min = 0.0))]
    lambda: f64,
    /// The preferred weighting w̃, one per task in the order of [tasks] (default: 1/T each).
    pref_vector: Option<Vec<f64>>,
    /// Weights from the cross-Gramian of two extra batches per step (the
    /// paper's double sampling), or from the step's own Gramian (TorchJD's
    /// single-batch form).
    double_sampling: bool,
}

impl Default for SdmGradConfig {
    fn default() -> SdmGradConfig {
        SdmGradConfig {
            lr: 10.0,
            momentum: 0.5,
            n_iter: 20,
            lambda: 0.3,
            pref_vector: None,
            double_sampling: true,
        }
    }
}

fn start(
    name: &'static str,
    rule: Rule,
    double_sampling: bool,
    ctx: &MethodContext,
    host: &Host,
) -> Result<Box<dyn Weighting>> {
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    Ok(Box::new(DoubleSampling {
        name,
        tasks,
        rule,
        lambda: vec![1.0 / t as f64; t],
        double_sampling,
    }))
}

fn create_modo(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let ModoConfig {
        gamma,
        rho,
        double_sampling,
    } = typed(config)?;
    start(
        "modo",
        Rule::Modo { gamma, rho },
        double_sampling,
        ctx,
        host,
    )
}

fn create_sdmgrad(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: SdmGradConfig = typed(config)?;
    let t = ctx.tasks.len();
    let pref = preference(config.pref_vector.as_deref(), t, 1.0 / t.max(1) as f64)?;
    let rule = Rule::SdmGrad {
        lr: config.lr,
        momentum: config.momentum,
        n_iter: config.n_iter.max(1) as usize,
        lambda: config.lambda,
        pref,
    };
    start("sdmgrad", rule, config.double_sampling, ctx, host)
}

register_method!(Method::new(
    "modo",
    env!("CARGO_PKG_VERSION"),
    "MoDo: MGDA weights tracked by projected gradient steps across training steps (Chen et al., NeurIPS 2023; double sampling, or TorchJD's single-batch form)",
    schema_for::<ModoConfig>,
    Constructor::Weighting(create_modo),
));

register_method!(Method::new(
    "sdmgrad",
    env!("CARGO_PKG_VERSION"),
    "SDMGrad: direction-oriented MGDA weights by momentum projected steps (Xiao et al., NeurIPS 2023; double sampling, or TorchJD's single-batch form)",
    schema_for::<SdmGradConfig>,
    Constructor::Weighting(create_sdmgrad),
));

#[cfg(test)]
mod tests {
    use super::super::solvers::simplex_projection;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{Kind, Tensor};
    use taskweave_plugin_api::WeightingInput;

    fn single() -> taskweave_plugin_api::serde_json::Value {
        json!({ "double_sampling": false })
    }

    /// One call with the step's gradients `g` and the extra batches' `more`.
    fn weigh_sampled(
        method: &mut dyn taskweave_plugin_api::Weighting,
        g: &Tensor,
        more: &[Tensor],
    ) -> taskweave_plugin_api::Result<taskweave_plugin_api::WeightingOutput> {
        method.weigh(&WeightingInput {
            step: 0,
            losses: &Tensor::ones([g.size()[0]], (g.kind(), g.device())),
            grads: Some(g),
            more_grads: more,
        })
    }

    #[test]
    fn double_sampling_steps_on_the_cross_gramian_and_updates_along_the_step_s_batch() {
        // G₁G₂ᵀ = [[2, 3], [-1, 4]] with G₁ = I: λ₁ = Π(λ₀ − γ(Mλ₀ + ρλ₀)).
        let g1 = tensor_of(&[vec![1.0, 0.0], vec![0.0, 1.0]], Kind::Double);
        let g2 = tensor_of(&[vec![2.0, -1.0], vec![3.0, 4.0]], Kind::Double);
        let g = tensor_of(&[vec![1.0, 5.0], vec![-2.0, 1.0]], Kind::Double);
        let mut method = create("modo", json!({ "gamma": 0.1, "rho": 0.1 }), &context(2, 0));
        assert_eq!(method.samples(), 3);
        let out = weigh_sampled(&mut *method, &g, &[g1, g2]).unwrap();
        let m = [[2.0, 3.0], [-1.0, 4.0]];
        let moved: Vec<f64> = (0..2)
            .map(|i| 0.5 - 0.1 * (0.5 * (m[i][0] + m[i][1]) + 0.1 * 0.5))
            .collect();
        let expected = simplex_projection(&moved);
        let w = values(out.weights.as_ref().unwrap());
        assert!((w[0] - expected[0]).abs() < 1e-12, "{w:?} vs {expected:?}");
        let update = values(&out.combined);
        let along = [
            expected[0] - 2.0 * expected[1],
            5.0 * expected[0] + expected[1],
        ];
        assert!((update[0] - along[0]).abs() < 1e-12 && (update[1] - along[1]).abs() < 1e-12);
    }

    #[test]
    fn three_copies_of_one_batch_give_the_single_batch_form() {
        let (_, grads) = instances().swap_remove(6);
        let t = grads.len();
        let g = tensor_of(&grads, Kind::Float);
        for name in ["modo", "sdmgrad"] {
            let mut double = create(name, json!({}), &context(t, 0));
            let mut single_batch = create(name, single(), &context(t, 0));
            assert_eq!(single_batch.samples(), 1);
            let a = weigh_sampled(&mut *double, &g, &[g.copy(), g.copy()]).unwrap();
            let b = weigh(&mut *single_batch, 0, &g, None).unwrap();
            let (a, b) = (values(&a.weights.unwrap()), values(&b.weights.unwrap()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-9, "{name}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn double_sampling_without_the_extra_batches_says_what_to_change() {
        let g = tensor_of(&[vec![1.0, 0.0], vec![0.0, 1.0]], Kind::Float);
        let mut method = create("sdmgrad", json!({}), &context(2, 0));
        let e = weigh_sampled(&mut *method, &g, &[]).err().unwrap();
        assert!(e.is_input(), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("3 independent batches per step, but was given 1")
                && e.contains("double_sampling = false"),
            "{e}"
        );
        let bad = tensor_of(&[vec![f64::NAN, 0.0], vec![0.0, 1.0]], Kind::Float);
        let e = weigh_sampled(&mut *method, &g, &[bad, g.copy()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("row 0") && e.contains("non-finite"), "{e}");
    }

    #[test]
    fn modo_approaches_the_regularised_min_norm_point() {
        // Fixed gradients: λ converges to the minimiser of ½λᵀ(M + ρI)λ on the simplex.
        let grads = vec![vec![1.0, 0.0], vec![0.0, 2.0]];
        let mut method = create(
            "modo",
            json!({ "gamma": 0.1, "rho": 0.1, "double_sampling": false }),
            &context(2, 0),
        );
        let mut last = vec![];
        for step in 0..500 {
            last = values(
                &weigh(&mut *method, step, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .weights
                    .unwrap(),
            );
        }
        // (1 + ρ)λ_0 = (4 + ρ)λ_1, λ_0 + λ_1 = 1.
        let expected = 4.1 / 5.2;
        assert!((last[0] - expected).abs() < 1e-9, "{last:?}");
    }

    #[test]
    fn the_weights_stay_on_the_simplex_and_resume_exactly() {
        for name in ["modo", "sdmgrad"] {
            let (_, grads) = instances().swap_remove(6);
            let t = grads.len();
            let g = tensor_of(&grads, Kind::Float);
            let mut straight = create(name, single(), &context(t, 0));
            for step in 0..3 {
                let w = values(
                    &weigh(&mut *straight, step, &g, None)
                        .unwrap()
                        .weights
                        .unwrap(),
                );
                assert!(
                    (w.iter().sum::<f64>() - 1.0).abs() < 1e-6 && w.iter().all(|&x| x >= 0.0),
                    "{name}: {w:?}"
                );
            }
            let mut resumed = create(name, single(), &context(t, 0));
            resumed.load_state(straight.state().unwrap()).unwrap();
            let a = weigh(&mut *straight, 3, &g, None).unwrap();
            let b = weigh(&mut *resumed, 3, &g, None).unwrap();
            assert!(a.combined.equal(&b.combined), "{name}");
        }
    }
}
