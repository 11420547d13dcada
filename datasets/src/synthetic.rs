//! `mmoe-synthetic`: the correlated-regression generator of the MMoE paper (Ma et
//! al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
//! Mixture-of-Experts", KDD 2018, §4.1).
//!
//! With orthonormal u_1..u_T in R^d, scale c and correlation p:
//! w_1 = c·u_1 and w_k = c·(p·u_1 + √(1−p²)·u_k), so cos(w_1, w_k) = p (for two
//! tasks exactly the paper's pair; with more, every task correlates p with the
//! first). For x ~ N(0, I_d):
//! y_k = w_kᵀx + Σ_{j=1..m} sin(α_j·w_kᵀx + β_j) + ε, with α_j, β_j ~ N(0, 1)
//! shared by all tasks and ε ~ N(0, noise²). The paper uses d = 100, c = 1,
//! m = 10, noise variance 0.01 — the defaults here.

use std::path::Path;

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use crate::dataset::matrix;
use crate::error::{Error, Result};
use crate::FEATURES;
use crate::{DataKind, Dataset, Footprint, InputSpec, Source, Split, Task};

/// `[data] kind = "mmoe-synthetic"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Number of regression tasks.
    #[schemars(range(min = 1, max = 4096))]
    pub tasks: u32,
    /// Cosine p between the first task's label direction and each other's.
    #[schemars(range(min = -1.0, max = 1.0))]
    pub correlation: f64,
    /// Input width d.
    #[schemars(range(min = 1, max = 1_048_576))]
    pub input_dim: u32,
    /// Number m of sine terms.
    #[schemars(range(max = 1024))]
    pub sinusoids: u32,
    /// Norm c of each label direction (at most 1e6: the squared errors of
    /// larger labels overflow float32).
    #[schemars(range(max = 1e6), extend("exclusiveMinimum" = 0))]
    pub scale: f64,
    /// Standard deviation of the label noise (at most 1e6, as `scale`).
    #[schemars(range(min = 0.0, max = 1e6))]
    pub noise: f64,
    /// Training examples.
    #[schemars(range(min = 1))]
    pub train: u64,
    /// Validation examples.
    #[schemars(range(min = 1))]
    pub val: u64,
    /// Test examples.
    #[schemars(range(min = 1))]
    pub test: u64,
    /// Generator seed (independent of run.seed, so model seeds vary over fixed data).
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> SyntheticConfig {
        SyntheticConfig {
            tasks: 2,
            correlation: 0.5,
            input_dim: 100,
            sinusoids: 10,
            scale: 1.0,
            noise: 0.1,
            train: 10000,
            val: 1000,
            test: 1000,
            seed: 0,
        }
    }
}

/// The `mmoe-synthetic` data kind.
pub struct Synthetic;

inventory::submit! { DataKind::of::<Synthetic>() }

/// Orthonormal vectors by Gram-Schmidt on Gaussian draws.
fn orthonormal(count: usize, dim: usize, rng: &mut SplitMix) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(count);
    while basis.len() < count {
        let mut v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        for b in &basis {
            let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-6 {
            basis.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    basis
}

impl Source for Synthetic {
    const NAME: &'static str = "mmoe-synthetic";
    type Config = SyntheticConfig;

    fn footprint(c: &SyntheticConfig, _dir: &Path) -> Footprint {
        let rows = (c.train + c.val + c.test) as u128;
        // Generated as f32 rows, then copied into tensors.
        let bytes = rows * (c.input_dim + c.tasks) as u128 * 4 * 2;
        let what = format!(
            "data.train + data.val + data.test = {rows} rows of data.input_dim = {}",
            c.input_dim
        );
        Some((bytes, what))
    }

    fn load(c: &SyntheticConfig, _dir: &Path) -> Result<Dataset> {
        generate(c)
    }
}

fn generate(c: &SyntheticConfig) -> Result<Dataset> {
    let (tasks, dim, m) = (c.tasks as usize, c.input_dim as usize, c.sinusoids as usize);
    let (p, noise, seed) = (c.correlation, c.noise, c.seed);
    let c_scale = c.scale;
    if dim < tasks {
        return Err(Error::config(
            "input_dim",
            format!(
                "{dim} must be at least data.tasks ({tasks}): each task needs its own orthogonal direction"
            ),
        ));
    }
    let mut rng = SplitMix::at(seed, 0);
    let u = orthonormal(tasks, dim, &mut rng);
    let w: Vec<Vec<f64>> = (0..tasks)
        .map(|k| {
            (0..dim)
                .map(|i| {
                    if k == 0 {
                        c_scale * u[0][i]
                    } else {
                        c_scale * (p * u[0][i] + (1.0 - p * p).sqrt() * u[k][i])
                    }
                })
                .collect()
        })
        .collect();
    let alpha: Vec<f64> = (0..m).map(|_| rng.normal()).collect();
    let beta: Vec<f64> = (0..m).map(|_| rng.normal()).collect();

    let sizes = [c.train as usize, c.val as usize, c.test as usize];
    let mut draw = SplitMix::at(seed, 1);
    let mut make_split = |rows: usize| -> Result<Split> {
        let mut x = Vec::with_capacity(rows * dim);
        let mut y = vec![Vec::with_capacity(rows); tasks];
        for _ in 0..rows {
            let row: Vec<f64> = (0..dim).map(|_| draw.normal()).collect();
            for (k, wk) in w.iter().enumerate() {
                let z: f64 = wk.iter().zip(&row).map(|(a, b)| a * b).sum();
                let waves: f64 = alpha
                    .iter()
                    .zip(&beta)
                    .map(|(a, b)| (a * z + b).sin())
                    .sum();
                y[k].push((z + waves + noise * draw.normal()) as f32);
            }
            x.extend(row.into_iter().map(|v| v as f32));
        }
        Ok(Split {
            inputs: vec![(FEATURES.to_string(), matrix(x, rows, dim)?)],
            targets: y.iter().map(|t| Tensor::from_slice(t)).collect(),
            masks: (0..tasks).map(|_| None).collect(),
        })
    };
    let (train, val, test) = (
        make_split(sizes[0])?,
        make_split(sizes[1])?,
        make_split(sizes[2])?,
    );
    let tasks = (1..=tasks)
        .map(|k| Task::regression(format!("task{k}")))
        .collect();
    Ok(Dataset {
        tasks,
        inputs: vec![InputSpec::float(FEATURES, vec![dim])],
        train,
        val,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(p: f64) -> SyntheticConfig {
        SyntheticConfig {
            correlation: p,
            input_dim: 16,
            sinusoids: 0,
            noise: 0.0,
            train: 4000,
            val: 10,
            test: 10,
            seed: 3,
            ..SyntheticConfig::default()
        }
    }

    fn label_correlation(p: f64) -> f64 {
        let d = generate(&config(p)).unwrap();
        d.train.label_correlations(&d.tasks).unwrap()[0][1].unwrap()
    }

    #[test]
    fn without_sinusoids_or_noise_label_correlation_is_p() {
        // With m = 0 the labels are linear in x, so their Pearson correlation is p.
        for p in [0.0, 0.5, 0.9] {
            let r = label_correlation(p);
            assert!((r - p).abs() < 0.05, "p = {p}, measured {r}");
        }
    }

    #[test]
    fn same_seed_same_data() {
        let a = generate(&config(0.5)).unwrap();
        let b = generate(&config(0.5)).unwrap();
        assert!(a.test.inputs[0].1.equal(&b.test.inputs[0].1));
        assert!(a.test.targets[1].equal(&b.test.targets[1]));
        assert_eq!(a.train.len(), 4000);
        assert_eq!(a.inputs, [InputSpec::float("features", vec![16])]);
    }
}
