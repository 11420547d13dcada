//! GradVac (Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and
//! Improving Multi-task Optimization in Massively Multilingual Models", ICLR
//! 2021).
//!
//! Each task keeps an exponential moving average `φ̂_ij` of its gradient's
//! cosine with every other task's. Per step, each task's gradient `g_i` (a
//! working copy) visits the others in a random order; where its cosine with
//! `g_j` is below the target `φ̂_ij`, it gets `g_j` added with the weight that
//! raises the cosine exactly to the target:
//! `w = ‖g_i‖(φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²) + ε)`, and then
//! `φ̂_ij ← (1−β)φ̂_ij + βφ`. The update is the sum of the working copies.
//! Everything runs on the Gramian: each working copy is a coefficient row.
//!
//! Conventions follow TorchJD 0.18 (`GradVac`) and LibMTL (`GradVac` with
//! `GradVac_group_type = 0`, the whole shared model as one group; the
//! per-layer groups are not offered, the ABI passing one flat gradient):
//! `β = 0.5`, `ε = 1e-8`, targets start at 0. The visiting orders are a pure
//! function of (seed, step), as PCGrad's; the targets are the weighting's
//! state (tensor `phi`, `[T, T]` f64), so a resumed run continues exactly.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Tasks};
use super::solvers::{dot, Matrix};
use crate::vectors::load_vector;

/// The GradVac weighting.
struct GradVac {
    tasks: Tasks,
    vaccine: Vaccine,
}

/// Everything but the task names, borrowed mutably while [`combine`] holds them.
struct Vaccine {
    seed: u64,
    beta: f64,
    eps: f64,
    /// The cosine targets `φ̂`, row-major `[T, T]`.
    phi: Vec<f64>,
}

impl Vaccine {
    fn coefficients(&mut self, gram: &Matrix, step: u64) -> Vec<f64> {
        let t = gram.n();
        let mut rng = SplitMix::at(self.seed, step);
        let mut total = vec![0.0; t];
        for i in 0..t {
            let mut c = vec![0.0; t];
            c[i] = 1.0;
            // cg = Mc: the working copy's inner products with every g_j.
            let mut cg = gram.mul_vec(&c);
            let mut others: Vec<usize> = (0..t).filter(|&j| j != i).collect();
            rng.shuffle(&mut others);
            for j in others {
                let norm_i = dot(&cg, &c).max(0.0).sqrt();
                let norm_j = gram[(j, j)].max(0.0).sqrt();
                let phi = cg[j] / (norm_i * norm_j + self.eps);
                let target = self.phi[i * t + j];
                if phi < target {
                    let w = norm_i
                        * (target * (1.0 - phi * phi).max(0.0).sqrt()
                            - phi * (1.0 - target * target).max(0.0).sqrt())
                        / (norm_j * (1.0 - target * target).max(0.0).sqrt() + self.eps);
                    c[j] += w;
                    for (k, x) in cg.iter_mut().enumerate() {
                        *x += w * gram[(j, k)];
                    }
                }
                self.phi[i * t + j] = (1.0 - self.beta) * target + self.beta * phi;
            }
            for (sum, x) in total.iter_mut().zip(c) {
                *sum += x;
            }
        }
        total
    }
}

impl Weighting for GradVac {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let vaccine = &mut self.vaccine;
        combine(input, &self.tasks, |step| {
            Ok(vaccine.coefficients(&step.gram, step.step))
        })
    }

    fn state(&self) -> Result<State> {
        let t = self.tasks.len() as i64;
        Ok(State {
            tensors: vec![(
                "phi".into(),
                Tensor::f_from_slice(&self.vaccine.phi)?.f_reshape([t, t])?,
            )],
            meta: Value::Null,
        })
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        self.vaccine.phi =
            load_vector(&mut state, "gradvac", "phi", t * t)?.unwrap_or(vec![0.0; t * t]);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Weight of the newest cosine in the moving-average targets.
    #[schemars(range(min = 0.0, max = 1.0))]
    beta: f64,
    /// Added to the denominators.
    #[schemars(range(min = 0.0))]
    eps: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            beta: 0.5,
            eps: 1e-8,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    Ok(Box::new(GradVac {
        tasks,
        vaccine: Vaccine {
            seed: ctx.seed,
            beta: config.beta,
            eps: config.eps,
            phi: vec![0.0; t * t],
        },
    }))
}

register_method!(Method::new(
    "gradvac",
    env!("CARGO_PKG_VERSION"),
    "GradVac: raises each pair's gradient cosine to its running average (Wang et al., ICLR 2021)",
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
    fn with_two_tasks_each_copy_reaches_the_target_cosine() {
        // Targets start at 0, so the first step acts like PCGrad: a
        // conflicting pair is projected to orthogonal.
        let grads = vec![vec![1.0, 0.0], vec![-1.0, 1.0]];
        let mut method = create("gradvac", json!({ "eps": 0.0 }), &context(2, 0));
        let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        let d = values(&out.combined);
        // Copy 0 becomes (0.5, 0.5), copy 1 becomes (0, 1): sum (0.5, 1.5).
        assert!(
            (d[0] - 0.5).abs() < 1e-12 && (d[1] - 1.5).abs() < 1e-12,
            "{d:?}"
        );
    }

    #[test]
    fn resuming_from_the_state_continues_exactly() {
        let (_, grads) = instances().swap_remove(7);
        let t = grads.len();
        let g = tensor_of(&grads, Kind::Float);
        let mut straight = create("gradvac", json!({}), &context(t, 3));
        let mut first = create("gradvac", json!({}), &context(t, 3));
        for step in 0..3 {
            weigh(&mut *straight, step, &g, None).unwrap();
            weigh(&mut *first, step, &g, None).unwrap();
        }
        let mut resumed = create("gradvac", json!({}), &context(t, 3));
        resumed.load_state(first.state().unwrap()).unwrap();
        let a = weigh(&mut *straight, 3, &g, None).unwrap();
        let b = weigh(&mut *resumed, 3, &g, None).unwrap();
        assert!(a.combined.equal(&b.combined));
        assert!(dot(&values(&a.combined), &values(&a.combined)) > 0.0);
    }
}
