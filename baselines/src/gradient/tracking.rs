//! The gradient weightings that track a moving average of the task gradients
//! themselves (a `[T, P]` state, checkpointed in the gradients' dtype):
//!
//! - `db-mtl` (Lin, Ye, Xu, Shi, Zhang, Kwok, "Dual-Balancing for
//!   Multi-Task Learning", 2023; LibMTL's `DB_MTL`): the gradients of the
//!   log-losses, `g_t/(L_t + 1e-8)`, are averaged as
//!   `b ← g + (β/k^σ)(b − g)` (step k from 1, `b` from 0; `beta` 0.9,
//!   `beta_sigma` 0), and each average is scaled to the largest one's norm:
//!   `d = Σ_t (max_s ‖b_s‖/(‖b_t‖ + 1e-8)) b_t`. Reported weights: those
//!   scales.
//! - `moco` (Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating
//!   Gradient Bias in Multi-objective Learning: A Provably Convergent
//!   Approach", ICLR 2023; LibMTL's `MoCo`): each gradient is rescaled to
//!   norm `L_t`, tracked as `y ← y − (β/k^σβ)(y − ĝ)`, the weights move as
//!   `λ ← softmax(λ − (γ/k^σγ)(YYᵀ + ρI)λ)` from `1/T`, and `d = Yᵀλ`
//!   (`beta` 0.5, `beta_sigma` 0.5, `gamma` 0.1, `gamma_sigma` 0.5, `rho` 0).
//!   Reported weights: `λ`.
//!
//! Neither update is a combination of this step's gradients alone, so the
//! reported weights do not reproduce it.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{checked, finite_or_named, task_names};
use crate::vectors::{load_vector, softmax, vector_state};

/// Which rule, with its options.
enum Rule {
    DbMtl {
        beta: f64,
        sigma: f64,
    },
    MoCo {
        beta: f64,
        beta_sigma: f64,
        gamma: f64,
        gamma_sigma: f64,
        rho: f64,
    },
}

/// DB-MTL or MoCo.
struct Tracking {
    name: &'static str,
    tasks: Vec<String>,
    rule: Rule,
    /// The tracked gradients; `None` before the first step (zeros).
    tracked: Option<Tensor>,
    /// MoCo's weights.
    lambda: Vec<f64>,
    steps: u64,
}

/// The rows' L2 norms, in f64 (f32 squares overflow beyond 1e19).
fn row_norms(rows: &Tensor) -> Result<Vec<f64>> {
    let wide = rows.f_to_kind(Kind::Double)?;
    Ok(Vec::<f64>::try_from(&wide.f_norm_scalaropt_dim(
        2,
        [1].as_slice(),
        false,
    )?)?)
}

impl Tracking {
    fn update(&mut self, grads: &Tensor, losses: &[f64]) -> Result<(Tensor, Vec<f64>)> {
        self.steps += 1;
        let k = self.steps as f64;
        let (kind, device) = (grads.f_kind()?, grads.device());
        let column = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(v)?
                .f_to_kind(kind)?
                .f_to_device(device)?
                .f_unsqueeze(1)?)
        };
        let g = grads.f_detach()?;
        let target = match self.rule {
            Rule::DbMtl { .. } => {
                // The gradients of log-losses: a loss at or below 0 has none
                // (and a negative one would turn its task's gradient round).
                crate::loss::check_positive("db-mtl", losses)?;
                let inverse: Vec<f64> = losses.iter().map(|l| 1.0 / (l + 1e-8)).collect();
                g.f_mul(&column(&inverse)?)?
            }
            Rule::MoCo { .. } => {
                let norms = row_norms(&g)?;
                let scale: Vec<f64> = norms
                    .iter()
                    .zip(losses)
                    .map(|(n, l)| l / (n + 1e-8))
                    .collect();
                g.f_mul(&column(&scale)?)?
            }
        };
        let rate = match self.rule {
            Rule::DbMtl { beta, sigma } => beta / k.powf(sigma),
            Rule::MoCo {
                beta, beta_sigma, ..
            } => 1.0 - beta / k.powf(beta_sigma),
        };
        // DB-MTL: b ← g + r(b − g); MoCo: y ← y − β_k(y − ĝ) = ĝ + (1 − β_k)(y − ĝ).
        let tracked = match self.tracked.take() {
            // A resumed state is loaded on the CPU.
            Some(b) if b.size() == target.size() => {
                let b = b.f_to_device(device)?.f_to_kind(kind)?;
                target.f_add(&b.f_sub(&target)?.f_mul_scalar(rate)?)?
            }
            Some(b) => {
                return Err(Error::msg(format!(
                    "{}: the gradients have shape {:?}, its state {:?}",
                    self.name,
                    target.size(),
                    b.size()
                )))
            }
            None => target.f_mul_scalar(1.0 - rate)?,
        };
        let weights = match self.rule {
            Rule::DbMtl { .. } => {
                let norms = row_norms(&tracked)?;
                let top = norms.iter().copied().fold(0.0, f64::max);
                norms.iter().map(|n| top / (n + 1e-8)).collect()
            }
            Rule::MoCo {
                gamma,
                gamma_sigma,
                rho,
                ..
            } => {
                let t = self.tasks.len();
                let wide = tracked.f_to_kind(Kind::Double)?;
                let gram = wide.f_matmul(&wide.f_tr()?)?;
                let gram = Vec::<f64>::try_from(&gram.f_reshape([-1])?)?;
                let step = gamma / k.powf(gamma_sigma);
                let moved: Vec<f64> = (0..t)
                    .map(|i| {
                        let mv: f64 = (0..t)
                            .map(|j| gram[i * t + j] * self.lambda[j])
                            .sum::<f64>()
                            + rho * self.lambda[i];
                        self.lambda[i] - step * mv
                    })
                    .collect();
                self.lambda = softmax(&moved);
                self.lambda.clone()
            }
        };
        let combined = Tensor::f_from_slice(&weights)?
            .f_to_kind(kind)?
            .f_to_device(device)?
            .f_matmul(&tracked)?;
        self.tracked = Some(tracked);
        Ok((combined, weights))
    }
}

impl Weighting for Tracking {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (grads, losses) = checked(input, &self.tasks)?;
        let (combined, weights) = self.update(grads, &losses)?;
        let weights = Tensor::f_from_slice(&weights)?
            .f_to_kind(grads.f_kind()?)?
            .f_to_device(grads.device())?;
        finite_or_named(
            WeightingOutput {
                combined,
                weights: Some(weights),
            },
            grads,
            &self.tasks,
        )
    }

    fn state(&self) -> Result<State> {
        let Some(tracked) = &self.tracked else {
            return Ok(State::default());
        };
        let mut state = vector_state(&[("lambda", &self.lambda)])?;
        state
            .tensors
            .push(("tracked".into(), tracked.f_detach_copy()?));
        state.meta = json!({ "steps": self.steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        if state.is_empty() {
            (self.tracked, self.lambda, self.steps) = (None, vec![1.0 / t as f64; t], 0);
            return Ok(());
        }
        let steps = state.meta["steps"]
            .as_u64()
            .ok_or_else(|| Error::msg(format!("{} state: `steps` missing", self.name)))?;
        let tracked = state.take_tensor("tracked")?;
        if tracked.size().first() != Some(&(t as i64)) {
            return Err(Error::msg(format!(
                "{} state: `tracked` must have {t} rows, got {:?}",
                self.name,
                tracked.size()
            )));
        }
        self.lambda =
            load_vector(&mut state, self.name, "lambda", t)?.unwrap_or(vec![1.0 / t as f64; t]);
        (self.tracked, self.steps) = (Some(tracked), steps);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct DbConfig {
    /// Weight of the previous average at step 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    beta: f64,
    /// The weight decays as beta/k^beta_sigma with the step k.
    #[schemars(range(min = 0.0))]
    beta_sigma: f64,
}

impl Default for DbConfig {
    fn default() -> DbConfig {
        DbConfig {
            beta: 0.9,
            beta_sigma: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct MoCoConfig {
    /// Step size of the gradient tracking at step 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    beta: f64,
    /// The tracking step decays as beta/k^beta_sigma.
    #[schemars(range(min = 0.0))]
    beta_sigma: f64,
    /// Step size of the weights at step 1.
    #[schemars(range(min = 0.0))]
    gamma: f64,
    /// The weights' step decays as gamma/k^gamma_sigma.
    #[schemars(range(min = 0.0))]
    gamma_sigma: f64,
    /// L2 regularisation of the weights' update.
    #[schemars(range(min = 0.0))]
    rho: f64,
}

impl Default for MoCoConfig {
    fn default() -> MoCoConfig {
        MoCoConfig {
            beta: 0.5,
            beta_sigma: 0.5,
            gamma: 0.1,
            gamma_sigma: 0.5,
            rho: 0.0,
        }
    }
}

fn start(name: &'static str, rule: Rule, ctx: &MethodContext) -> Result<Box<dyn Weighting>> {
    let tasks = task_names(ctx)?;
    let t = tasks.len();
    Ok(Box::new(Tracking {
        name,
        tasks,
        rule,
        tracked: None,
        lambda: vec![1.0 / t as f64; t],
        steps: 0,
    }))
}

fn create_db_mtl(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let DbConfig { beta, beta_sigma } = typed(config)?;
    start(
        "db-mtl",
        Rule::DbMtl {
            beta,
            sigma: beta_sigma,
        },
        ctx,
    )
}

fn create_moco(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let MoCoConfig {
        beta,
        beta_sigma,
        gamma,
        gamma_sigma,
        rho,
    } = typed(config)?;
    start(
        "moco",
        Rule::MoCo {
            beta,
            beta_sigma,
            gamma,
            gamma_sigma,
            rho,
        },
        ctx,
    )
}

register_method!(Method::new(
    "db-mtl",
    env!("CARGO_PKG_VERSION"),
    "DB-MTL: averaged log-loss gradients scaled to the largest one's norm (Lin et al., 2023)",
    schema_for::<DbConfig>,
    Constructor::Weighting(create_db_mtl),
));

register_method!(Method::new(
    "moco",
    env!("CARGO_PKG_VERSION"),
    "MoCo: tracked task gradients combined by MGDA-like weights (Fernando et al., ICLR 2023)",
    schema_for::<MoCoConfig>,
    Constructor::Weighting(create_moco),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{Kind, Tensor};

    #[test]
    fn db_mtl_balances_the_tracked_gradients_to_the_largest_norm() {
        let (_, grads) = instances().swap_remove(8);
        let t = grads.len();
        let losses = Tensor::from_slice(&(0..t).map(|i| 0.5 + i as f64).collect::<Vec<_>>());
        let mut method = create("db-mtl", json!({}), &context(t, 0));
        for step in 0..3 {
            weigh(
                &mut *method,
                step,
                &tensor_of(&grads, Kind::Double),
                Some(&losses),
            )
            .unwrap();
        }
        // With constant inputs the average is (1 − β^k)·g_t/L_t.
        let out = weigh(
            &mut *method,
            3,
            &tensor_of(&grads, Kind::Double),
            Some(&losses),
        )
        .unwrap();
        let alpha = values(&out.weights.unwrap());
        let shrink = 1.0 - 0.9f64.powi(4);
        let norms: Vec<f64> = grads
            .iter()
            .enumerate()
            .map(|(i, g)| alpha[i] * shrink * dot(g, g).sqrt() / (0.5 + i as f64 + 1e-8))
            .collect();
        for n in &norms {
            assert!((n - norms[0]).abs() < 1e-6 * norms[0], "{norms:?}");
        }
    }

    #[test]
    fn db_mtl_refuses_losses_that_have_no_logarithm() {
        let grads = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        for bad in [0.0, -2.0] {
            let losses = Tensor::from_slice(&[1.0f64, bad]);
            let mut method = create("db-mtl", json!({}), &context(2, 0));
            let e = weigh(
                &mut *method,
                0,
                &tensor_of(&grads, Kind::Double),
                Some(&losses),
            )
            .err()
            .unwrap();
            assert!(
                e.is_input() && e.to_string().contains("task 1's loss is"),
                "{e}"
            );
        }
    }

    #[test]
    fn moco_tracks_the_rescaled_gradients_and_resumes_exactly() {
        let grads = vec![vec![3.0, 0.0], vec![0.0, 0.5]];
        let losses = Tensor::from_slice(&[2.0f64, 1.0]);
        let mut method = create("moco", json!({}), &context(2, 0));
        for step in 0..400 {
            weigh(
                &mut *method,
                step,
                &tensor_of(&grads, Kind::Double),
                Some(&losses),
            )
            .unwrap();
        }
        let mut resumed = create("moco", json!({}), &context(2, 0));
        resumed.load_state(method.state().unwrap()).unwrap();
        let a = weigh(
            &mut *method,
            400,
            &tensor_of(&grads, Kind::Double),
            Some(&losses),
        )
        .unwrap();
        let b = weigh(
            &mut *resumed,
            400,
            &tensor_of(&grads, Kind::Double),
            Some(&losses),
        )
        .unwrap();
        assert!(a.combined.equal(&b.combined));
        // y → (L_t·g_t/‖g_t‖) = (2, 0), (0, 1); d = Yᵀλ with λ on the simplex.
        let (d, lambda) = (values(&a.combined), values(&a.weights.unwrap()));
        assert!((lambda.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(
            (d[0] - 2.0 * lambda[0]).abs() < 1e-3 && (d[1] - lambda[1]).abs() < 1e-3,
            "{d:?} {lambda:?}"
        );
        // The smaller tracked gradient gets the larger weight (min-norm direction).
        assert!(lambda[1] > lambda[0], "{lambda:?}");
    }
}
