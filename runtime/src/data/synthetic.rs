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

use serde_json::{json, Value};
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use super::{matrix, Dataset, Split, Task};
use crate::error::{Error, Result};

pub fn schema() -> Value {
    let size = |n: u64, what: &str| json!({"type": "integer", "minimum": 1, "default": n, "description": what});
    json!({
        "type": "object",
        "properties": {
            "tasks": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 2, "description": "number of regression tasks"},
            "correlation": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.5,
                            "description": "cosine p between the first task's label direction and each other's"},
            "input_dim": {"type": "integer", "minimum": 1, "maximum": 1048576, "default": 100, "description": "input width d"},
            "sinusoids": {"type": "integer", "minimum": 0, "maximum": 1024, "default": 10, "description": "number m of sine terms"},
            "scale": {"type": "number", "exclusiveMinimum": 0, "default": 1.0, "description": "norm c of each label direction"},
            "noise": {"type": "number", "minimum": 0, "default": 0.1, "description": "standard deviation of the label noise"},
            "train": size(10000, "training examples"),
            "val": size(1000, "validation examples"),
            "test": size(1000, "test examples"),
            "seed": {"type": "integer", "minimum": 0, "default": 0,
                     "description": "generator seed (independent of run.seed, so model seeds vary over fixed data)"}
        }
    })
}

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

fn int(config: &Value, key: &str) -> usize {
    config[key].as_u64().unwrap_or(0) as usize
}

pub fn load(config: &Value, _dir: &Path) -> Result<Dataset> {
    let (tasks, dim, m) = (
        int(config, "tasks"),
        int(config, "input_dim"),
        int(config, "sinusoids"),
    );
    let p = config["correlation"].as_f64().unwrap_or(0.0);
    let c = config["scale"].as_f64().unwrap_or(1.0);
    let noise = config["noise"].as_f64().unwrap_or(0.0);
    let seed = config["seed"].as_u64().unwrap_or(0);
    if dim < tasks {
        return Err(Error::Input(format!(
            "data.input_dim ({dim}) must be at least data.tasks ({tasks}): each task needs its own orthogonal direction"
        )));
    }
    let rows = (int(config, "train") + int(config, "val") + int(config, "test")) as u128;
    // Generated as f32 rows, then copied into tensors.
    crate::device::ensure_fits(
        tch::Device::Cpu,
        rows * (dim + tasks) as u128 * 4 * 2,
        || format!("data.train + data.val + data.test = {rows} rows of data.input_dim = {dim}"),
    )?;
    let mut rng = SplitMix::at(seed, 0);
    let u = orthonormal(tasks, dim, &mut rng);
    let w: Vec<Vec<f64>> = (0..tasks)
        .map(|k| {
            (0..dim)
                .map(|i| {
                    if k == 0 {
                        c * u[0][i]
                    } else {
                        c * (p * u[0][i] + (1.0 - p * p).sqrt() * u[k][i])
                    }
                })
                .collect()
        })
        .collect();
    let alpha: Vec<f64> = (0..m).map(|_| rng.normal()).collect();
    let beta: Vec<f64> = (0..m).map(|_| rng.normal()).collect();

    let sizes = [
        int(config, "train"),
        int(config, "val"),
        int(config, "test"),
    ];
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
            inputs: matrix(x, rows, dim)?,
            targets: y.iter().map(|t| Tensor::from_slice(t)).collect(),
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
        train,
        val,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(p: f64) -> Value {
        json!({"kind": "mmoe-synthetic", "tasks": 2, "correlation": p, "input_dim": 16, "sinusoids": 0,
               "scale": 1.0, "noise": 0.0, "train": 4000, "val": 10, "test": 10, "seed": 3})
    }

    fn label_correlation(p: f64) -> f64 {
        let d = load(&config(p), Path::new(".")).unwrap();
        let a = Vec::<f32>::try_from(&d.train.targets[0]).unwrap();
        let b = Vec::<f32>::try_from(&d.train.targets[1]).unwrap();
        let n = a.len() as f64;
        let (ma, mb) = (
            a.iter().sum::<f32>() as f64 / n,
            b.iter().sum::<f32>() as f64 / n,
        );
        let cov: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - ma) * (*y as f64 - mb))
            .sum::<f64>()
            / n;
        let sa = (a.iter().map(|x| (*x as f64 - ma).powi(2)).sum::<f64>() / n).sqrt();
        let sb = (b.iter().map(|y| (*y as f64 - mb).powi(2)).sum::<f64>() / n).sqrt();
        cov / (sa * sb)
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
        let a = load(&config(0.5), Path::new(".")).unwrap();
        let b = load(&config(0.5), Path::new(".")).unwrap();
        assert!(a.test.inputs.equal(&b.test.inputs));
        assert!(a.test.targets[1].equal(&b.test.targets[1]));
        assert_eq!(a.train.len(), 4000);
        assert_eq!(a.input_dim(), 16);
    }
}
