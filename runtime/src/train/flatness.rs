//! Flatness of a trained model: how much the loss rises when the shared
//! parameters move in random directions of a fixed relative size. Flat minima
//! (what SAM-style methods seek) rise less.

use taskweave_plugin_api::Group;
use tch::{Kind, Tensor};

use super::generator::{self, step_seed};
use super::metrics::split_losses;
use super::params::FlatParams;
use super::Trainer;
use crate::error::Result;

/// Per-task losses at the trained point and, averaged over random
/// perturbations, at perturbed points.
#[derive(Debug, Clone)]
pub struct Flatness {
    /// Task names.
    pub tasks: Vec<String>,
    /// Mean loss per task at the trained parameters.
    pub base: Vec<f64>,
    /// Mean loss per task at perturbed parameters, averaged over the samples.
    pub perturbed: Vec<f64>,
    /// The relative size ‖δ‖ / ‖θ_shared‖ of each perturbation.
    pub radius: f64,
    /// Number of random directions.
    pub samples: usize,
}

impl Flatness {
    /// Mean over tasks of the loss increase.
    pub fn mean_increase(&self) -> f64 {
        let n = self.base.len().max(1) as f64;
        self.perturbed
            .iter()
            .zip(&self.base)
            .map(|(p, b)| p - b)
            .sum::<f64>()
            / n
    }
}

impl Trainer {
    /// Measures [`Flatness`] on `split`: `samples` Gaussian directions (drawn
    /// from `seed`) scaled to `radius`·‖θ_shared‖, each added to the shared
    /// parameters and removed again (the parameters are restored bit for bit).
    pub fn flatness(
        &mut self,
        split: &str,
        radius: f64,
        samples: usize,
        seed: u64,
        batch: usize,
    ) -> Result<Flatness> {
        let _guard = tch::no_grad_guard();
        let tasks: Vec<String> = self.data.tasks.iter().map(|t| t.name.clone()).collect();
        let base = split_losses(
            &mut self.model,
            self.data.split(split)?,
            &self.data.tasks,
            batch,
        )?;
        let range = self.params.range(Group::Shared)?;
        let theta = FlatParams::slice(self.params.data(), &range)?;
        let mut saved = theta.f_empty_like()?;
        saved.f_copy_(&theta)?;
        let norm = theta.f_norm()?.f_double_value(&[])?;
        let mut sums = vec![0.0; tasks.len()];
        for k in 0..samples {
            let direction = {
                let _generator = generator::seeded(step_seed(seed, k as u64));
                Tensor::f_randn(theta.size(), (Kind::Float, theta.device()))?
            };
            let scale = radius * norm / direction.f_norm()?.f_double_value(&[])?.max(1e-30);
            let _ = theta
                .shallow_clone()
                .f_add_(&direction.f_mul_scalar(scale)?)?;
            let losses = split_losses(
                &mut self.model,
                self.data.split(split)?,
                &self.data.tasks,
                batch,
            );
            theta.shallow_clone().f_copy_(&saved)?;
            for (s, l) in sums.iter_mut().zip(losses?) {
                *s += l;
            }
        }
        let perturbed = sums.iter().map(|s| s / samples.max(1) as f64).collect();
        Ok(Flatness {
            tasks,
            base,
            perturbed,
            radius,
            samples,
        })
    }
}
