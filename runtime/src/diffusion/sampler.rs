//! Drawing samples from a trained denoiser: DDPM's ancestral sampler (Ho et
//! al. 2020, Algorithm 2, σ_t² = β_t) over every timestep, or DDIM's
//! deterministic one (Song et al. 2021, η = 0) over a subsequence of them.
//! Both go through the predicted clean sample x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t,
//! which `clip` keeps in [−1, 1] (the pixel range of image data, as DDPM's
//! sampler clips); the ancestral step is then the posterior mean
//! μ = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x̂₀ + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t plus
//! σ_t·z, which equals Algorithm 2's when nothing is clipped.

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
    /// Keep every predicted clean sample in [−1, 1].
    pub clip: bool,
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
    let steps = denoising.steps();
    if request.sampler == Sampler::Ddim && !(1..=steps).contains(&request.ddim_steps) {
        return Err(Error::Input(format!(
            "--ddim-steps {}: DDIM takes 1 to {steps} timesteps (the run's diffusion.steps)",
            request.ddim_steps
        )));
    }
    let shape = [request.count as i64, denoising.dim() as i64];
    let mut x = Tensor::f_randn(shape, (Kind::Float, denoising.device())).map_err(|e| {
        Error::Input(format!(
            "--n {}: {} samples of {} values do not fit in memory ({e})",
            request.count,
            request.count,
            denoising.dim()
        ))
    })?;
    let level = |t: i64| -> Result<f64> {
        Ok(if t == 0 {
            1.0
        } else {
            denoising.levels(t)?.0.powi(2)
        })
    };
    let clean = |x: &Tensor, eps: &Tensor, abar: f64| -> Result<Tensor> {
        let x0 = x
            .f_sub(&eps.f_mul_scalar((1.0 - abar).sqrt())?)?
            .f_div_scalar(abar.sqrt())?;
        Ok(if request.clip {
            x0.f_clamp(-1.0, 1.0)?
        } else {
            x0
        })
    };
    match request.sampler {
        Sampler::Ancestral => {
            for t in (1..=denoising.steps() as i64).rev() {
                let eps = predict(&x, t)?;
                let (abar, abar_prev) = (level(t)?, level(t - 1)?);
                let beta = 1.0 - abar / abar_prev;
                let x0 = clean(&x, &eps, abar)?;
                let mean = x0
                    .f_mul_scalar(abar_prev.sqrt() * beta / (1.0 - abar))?
                    .f_add(
                        &x.f_mul_scalar((1.0 - beta).sqrt() * (1.0 - abar_prev) / (1.0 - abar))?,
                    )?;
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
                let x0 = clean(&x, &eps, abar)?;
                // The noise direction that x̂₀ implies (ε̂ itself unless clipped).
                let eps = x
                    .f_sub(&x0.f_mul_scalar(abar.sqrt())?)?
                    .f_div_scalar((1.0 - abar).sqrt())?;
                x = x0
                    .f_mul_scalar(abar_prev.sqrt())?
                    .f_add(&eps.f_mul_scalar((1.0 - abar_prev).sqrt())?)?;
            }
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::objective::fixture;

    fn request(sampler: Sampler, clip: bool) -> SampleRequest {
        SampleRequest {
            count: 64,
            sampler,
            ddim_steps: 4,
            seed: 0,
            clip,
        }
    }

    #[test]
    fn the_ancestral_sampler_is_ddpm_algorithm_2_and_clipping_bounds_the_clean_predictions() {
        let (denoising, _) = fixture(vec![(1, 10)]);
        // A denoiser that calls a third of x_t noise.
        let predict = |x: &Tensor, _t: i64| -> Result<Tensor> { Ok(x.f_mul_scalar(1.0 / 3.0)?) };
        tch::manual_seed(7);
        let ours = sample(&denoising, &request(Sampler::Ancestral, false), predict).unwrap();
        // Algorithm 2, written out: x_{t−1} = (x_t − β_t/√(1 − ᾱ_t)·ε̂)/√α_t + √β_t·z.
        tch::manual_seed(7);
        let mut x = Tensor::randn([64, 2], (Kind::Float, tch::Device::Cpu));
        let level = |t: i64| {
            if t == 0 {
                1.0
            } else {
                denoising.levels(t).unwrap().0.powi(2)
            }
        };
        for t in (1..=10).rev() {
            let (abar, beta) = (level(t), 1.0 - level(t) / level(t - 1));
            let eps = &x / 3.0;
            let mean = (&x - eps * (beta / (1.0 - abar).sqrt())) / (1.0 - beta).sqrt();
            x = if t > 1 {
                mean + x.randn_like() * beta.sqrt()
            } else {
                mean
            };
        }
        assert!(ours.allclose(&x, 1e-4, 1e-5, false));
        // A denoiser that predicts no noise leaves x̂₀ = x_t/√ᾱ_t, far outside
        // [−1, 1] at large t; clipped, every DDIM step stays inside it.
        let none = |x: &Tensor, _t: i64| -> Result<Tensor> { Ok(x.f_zeros_like()?) };
        let clipped = sample(&denoising, &request(Sampler::Ddim, true), none).unwrap();
        assert!(clipped.abs().max().double_value(&[]) <= 1.0 + 1e-6);
        let free = sample(&denoising, &request(Sampler::Ddim, false), none).unwrap();
        assert!(free.abs().max().double_value(&[]) > 1.5);
    }
}
