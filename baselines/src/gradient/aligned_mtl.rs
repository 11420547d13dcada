//! Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin, "Independent
//! Component Alignment for Multi-Task Learning", CVPR 2023).
//!
//! The update aligns the task gradients' principal components: with the
//! Gramian `M = VΛVᵀ` (the `r` eigenvalues above `λ_max·T·ε` kept, ε that of
//! the Gramian's precision), the weights are `α = σ·V Λ^(−1/2) Vᵀ u`, so the
//! rows of `diag(α)`-free update directions `B G` have an isotropic Gramian
//! (`σ²` times the identity on the gradients' span): no task dominates, and
//! the condition number of the combined system is 1.
//!
//! `σ²` is the smallest kept eigenvalue (`scale_mode = "min"`, the paper's
//! and both libraries' default), their median (`"median"`, the lower middle
//! one for an even count, as `torch.median`) or mean (`"rmse"`). `u` is the
//! preference vector: `1/T` each by default as in TorchJD 0.18
//! (`AlignedMTL`); LibMTL sums `B`'s columns, which is `pref_vector` all ones
//! (T times larger). All-zero gradients (rank 0) give `α = u`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::combine::{combine, Step, Tasks};
use super::preference::preference;
use super::solvers::symmetric_eigen;

/// Which eigenvalue sets the scale `σ²`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", rename_all = "lowercase")]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
enum ScaleMode {
    /// The smallest kept eigenvalue.
    Min,
    /// The median kept eigenvalue.
    Median,
    /// The mean kept eigenvalue.
    Rmse,
}

/// The Aligned-MTL weighting.
struct AlignedMtl {
    tasks: Tasks,
    pref: Vec<f64>,
    scale_mode: ScaleMode,
}

impl AlignedMtl {
    fn coefficients(&self, step: &Step<'_>) -> Vec<f64> {
        let gram = &step.gram;
        let t = gram.n();
        let (values, vectors) = symmetric_eigen(gram);
        let tol = values[0] * t as f64 * step.rounding;
        let rank = values.iter().take_while(|&&l| l > tol).count();
        if rank == 0 {
            return self.pref.clone();
        }
        let kept = &values[..rank];
        let scale = match self.scale_mode {
            ScaleMode::Min => kept[rank - 1],
            // Descending order: the lower middle one sits at index rank / 2.
            ScaleMode::Median => kept[rank / 2],
            ScaleMode::Rmse => kept.iter().sum::<f64>() / rank as f64,
        };
        // α = σ·V_r Λ_r^(−1/2) V_rᵀ u.
        let projected: Vec<f64> = (0..rank)
            .map(|k| (0..t).map(|i| vectors[(i, k)] * self.pref[i]).sum::<f64>() / kept[k].sqrt())
            .collect();
        (0..t)
            .map(|i| {
                scale.sqrt()
                    * (0..rank)
                        .map(|k| vectors[(i, k)] * projected[k])
                        .sum::<f64>()
            })
            .collect()
    }
}

impl Weighting for AlignedMtl {
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
    /// Weights of the aligned task directions, one per task in the order of
    /// [tasks] (default: 1/T each; LibMTL's convention is 1 each).
    pref_vector: Option<Vec<f64>>,
    /// Which eigenvalue of the Gramian sets the update's scale: "min", "median" or "rmse" (the mean).
    scale_mode: ScaleMode,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pref_vector: None,
            scale_mode: ScaleMode::Min,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = Tasks::new(ctx, host)?;
    let pref = preference(
        config.pref_vector.as_deref(),
        tasks.len(),
        1.0 / tasks.len() as f64,
    )?;
    Ok(Box::new(AlignedMtl {
        tasks,
        pref,
        scale_mode: config.scale_mode,
    }))
}

register_method!(Method::new(
    "aligned-mtl",
    env!("CARGO_PKG_VERSION"),
    "Aligned-MTL: task gradients aligned to an isotropic Gramian by its eigendecomposition (Senushkin et al., CVPR 2023)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    /// The Gramian of the aligned directions `BG` (B symmetric, from the
    /// weights for each unit preference) is σ² times a projector: on the
    /// gradients' span it is isotropic.
    #[test]
    fn the_aligned_directions_have_an_isotropic_gramian() {
        for (what, grads) in instances()
            .into_iter()
            .filter(|(n, _)| n.starts_with("random"))
        {
            let t = grads.len();
            if t > grads[0].len() {
                continue;
            }
            // Row i of B is α for the preference e_i.
            let rows: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    let mut pref = vec![0.0; t];
                    pref[i] = 1.0;
                    let mut method = create(
                        "aligned-mtl",
                        json!({ "pref_vector": pref }),
                        &context(t, 0),
                    );
                    values(
                        &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None)
                            .unwrap()
                            .combined,
                    )
                })
                .collect();
            let gram: Vec<Vec<f64>> = rows
                .iter()
                .map(|a| rows.iter().map(|b| dot(a, b)).collect())
                .collect();
            let sigma2 = gram[0][0];
            for i in 0..t {
                for j in 0..t {
                    let expected = if i == j { sigma2 } else { 0.0 };
                    assert!(
                        (gram[i][j] - expected).abs() < 1e-8 * sigma2,
                        "{what} ({i}, {j}): {gram:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_scale_is_the_chosen_eigenvalue() {
        // Orthogonal gradients with norms 1, 2, 4: eigenvalues 16, 4, 1; the
        // aligned update (u = 1/3 each) is σ/3 times the sum of unit gradients.
        let grads = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 2.0, 0.0],
            vec![0.0, 0.0, 4.0],
        ];
        for (mode, sigma2) in [("min", 1.0), ("median", 4.0), ("rmse", 7.0)] {
            let mut method = create("aligned-mtl", json!({ "scale_mode": mode }), &context(3, 0));
            let d = values(
                &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .combined,
            );
            let expected = f64::sqrt(sigma2) / 3.0;
            for x in &d {
                assert!((x - expected).abs() < 1e-12, "{mode}: {d:?}");
            }
        }
    }
}
