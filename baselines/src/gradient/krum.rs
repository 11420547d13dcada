//! Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
//! Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017), as
//! TorchJD 0.18 ships it: each gradient is scored by the sum of its
//! distances to its `T − f − 2` nearest other gradients (`f` =
//! `n_byzantine`), and the update is the mean of the `n_selected` gradients
//! with the lowest scores (Multi-Krum for `n_selected > 1`). Distances come
//! from the Gramian, `‖g_i − g_j‖² = M_ii + M_jj − 2M_ij` (clamped at 0).
//!
//! Needs `T ≥ f + 3` and `T ≥ n_selected` (exit 2 otherwise). Equal scores
//! select the lower task index first (TorchJD leaves that to `torch.topk`).

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{combine, Tasks};
use super::solvers::Matrix;

/// The Krum weighting.
struct Krum {
    tasks: Tasks,
    n_byzantine: usize,
    n_selected: usize,
}

impl Krum {
    fn coefficients(&self, gram: &Matrix) -> Vec<f64> {
        let t = gram.n();
        let neighbours = t - self.n_byzantine - 2;
        let scores: Vec<f64> = (0..t)
            .map(|i| {
                let mut distances: Vec<f64> = (0..t)
                    .filter(|&j| j != i)
                    .map(|j| {
                        (gram[(i, i)] + gram[(j, j)] - 2.0 * gram[(i, j)])
                            .max(0.0)
                            .sqrt()
                    })
                    .collect();
                distances.sort_by(f64::total_cmp);
                distances[..neighbours].iter().sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..t).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        let mut weights = vec![0.0; t];
        for &i in &order[..self.n_selected] {
            weights[i] = 1.0 / self.n_selected as f64;
        }
        weights
    }
}

impl Weighting for Krum {
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
    /// How many task gradients may be arbitrarily bad (f); needs T ≥ f + 3.
    n_byzantine: usize,
    /// How many of the best-scored gradients are averaged (1 = Krum, more = Multi-Krum).
    #[schemars(range(min = 1))]
    n_selected: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            n_byzantine: 0,
            n_selected: 1,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let Config {
        n_byzantine,
        n_selected,
    } = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let t = tasks.len();
    if t < n_byzantine + 3 {
        return Err(Error::input(format!(
            "krum with n_byzantine = {n_byzantine} needs at least {} tasks (n_byzantine + 3), there are {t}",
            n_byzantine + 3
        )));
    }
    if n_selected == 0 || n_selected > t {
        return Err(Error::input(format!(
            "krum's n_selected must be between 1 and the number of tasks ({t}), got {n_selected}"
        )));
    }
    Ok(Box::new(Krum {
        tasks,
        n_byzantine,
        n_selected,
    }))
}

register_method!(Method::new(
    "krum",
    env!("CARGO_PKG_VERSION"),
    "Krum: the task gradient(s) closest to their nearest neighbours, robust to f bad ones (Blanchard et al., NeurIPS 2017)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn an_outlier_is_never_selected() {
        let grads = vec![
            vec![1.0, 0.0],
            vec![1.1, 0.1],
            vec![0.9, -0.1],
            vec![1.0, 0.05],
            vec![-50.0, 80.0],
        ];
        for (f, selected) in [(0, 1), (1, 1), (1, 3), (2, 2)] {
            let config = json!({ "n_byzantine": f, "n_selected": selected });
            let mut krum = create("krum", config, &context(5, 0));
            let out = weigh(&mut *krum, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
            let weights = values(&out.weights.unwrap());
            assert_eq!(weights[4], 0.0, "f={f}: {weights:?}");
            assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(weights.iter().filter(|&&w| w > 0.0).count(), selected);
        }
    }

    #[test]
    fn too_few_tasks_is_an_input_error() {
        let method = taskweave_plugin_api::method::registered()
            .find(|m| m.name == "krum")
            .unwrap();
        let host = taskweave_plugin_api::Host::standalone();
        for (config, message) in [
            (
                json!({ "n_byzantine": 1, "n_selected": 1 }),
                "needs at least 4 tasks",
            ),
            (
                json!({ "n_byzantine": 0, "n_selected": 4 }),
                "between 1 and the number of tasks (3)",
            ),
        ] {
            let err = method.create(&config, &context(3, 0), &host).err().unwrap();
            assert!(err.is_input() && err.to_string().contains(message), "{err}");
        }
    }
}
