//! Drawing samples from a trained denoiser: DDPM's ancestral sampler (Ho et
//! al. 2020, Algorithm 2, σ_t² = β_t) over every timestep, or DDIM's
//! deterministic one (Song et al. 2021, η = 0) over a subsequence of them.

use tch::{Kind, Tensor};

use super::Denoising;
use crate::error::{Error, Result};

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampler {
    /// DDPM ancestral sampling: T denoiser calls, fresh noise at each.
    Ancestral,
    /// DDIM with η = 0: `steps` denoiser calls, no noise after the start.
    Ddim,
}

/// What to draw.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    /// Number of samples.
    pub count: usize,
    /// The sampler.
    pub sampler: Sampler,
    /// DDIM's number of timesteps (ignored by the ancestral sampler).
    pub ddim_steps: usize,
    /// Seed of the starting noise and of every later draw.
    pub seed: u64,
}

/// Samples `[count, D]` (flattened) from pure noise, with `predict(x_t, t)`
/// the denoiser's ε̂ for a batch at timestep `t`. Draws come from libtorch's
/// generator, which the caller seeds.
pub fn sample(
    denoising: &Denoising,
    request: &SampleRequest,
    mut predict: impl FnMut(&Tensor, i64) -> Result<Tensor>,
) -> Result<Tensor> {
    if request.count == 0 {
        return Err(Error::Input("--n 0: draw at least one sample".into()));
    }
    let shape = [request.count as i64, denoising.dim() as i64];
    let mut x = Tensor::f_randn(shape, (Kind::Float, denoising.device()))?;
    let level = |t: i64| -> Result<f64> {
        Ok(if t == 0 {
            1.0
        } else {
            denoising.levels(t)?.0.powi(2)
        })
    };
    match request.sampler {
        Sampler::Ancestral => {
            for t in (1..=denoising.steps() as i64).rev() {
                let eps = predict(&x, t)?;
                let (abar, abar_prev) = (level(t)?, level(t - 1)?);
                let beta = 1.0 - abar / abar_prev;
                let mean = x
                    .f_sub(&eps.f_mul_scalar(beta / (1.0 - abar).sqrt())?)?
                    .f_div_scalar((1.0 - beta).sqrt())?;
                x = if t > 1 {
                    mean.f_add(&x.f_randn_like()?.f_mul_scalar(beta.sqrt())?)?
                } else {
                    mean
                };
            }
        }
        Sampler::Ddim => {
            // `ddim_steps` timesteps evenly spaced, T and 1 included, descending.
            let mut ts = super::timestep_grid(denoising.steps(), request.ddim_steps);
            ts.reverse();
            for (i, &t) in ts.iter().enumerate() {
                let eps = predict(&x, t)?;
                let abar = level(t)?;
                let abar_prev = level(ts.get(i + 1).copied().unwrap_or(0))?;
                let x0 = x
                    .f_sub(&eps.f_mul_scalar((1.0 - abar).sqrt())?)?
                    .f_div_scalar(abar.sqrt())?;
                x = x0
                    .f_mul_scalar(abar_prev.sqrt())?
                    .f_add(&eps.f_mul_scalar((1.0 - abar_prev).sqrt())?)?;
            }
        }
    }
    Ok(x)
}
