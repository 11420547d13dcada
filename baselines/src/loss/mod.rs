//! Loss weightings: they combine the per-task losses into one scalar loss.

mod dwa;
mod ew;
mod uw;

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Result, WeightingOutput};

/// `Σ_t w_t L_t` with constant weights `w`, reported as the task weights.
fn weighted_sum(losses: &Tensor, weights: &[f64]) -> Result<WeightingOutput> {
    let w = Tensor::from_slice(weights)
        .f_to_kind(losses.kind())?
        .f_to_device(losses.device())?;
    let loss = losses
        .f_mul(&w)?
        .f_sum(Kind::Float)?
        .f_to_kind(losses.kind())?;
    Ok(WeightingOutput {
        combined: loss,
        weights: Some(w),
    })
}

fn num_tasks(losses: &Tensor) -> usize {
    losses.size().first().copied().unwrap_or(0) as usize
}
