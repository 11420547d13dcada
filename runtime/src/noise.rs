//! Diffusion noise schedules over T timesteps: the cumulative signal level
//! ᾱ_t and the signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t), t = 1..T.
//! What timestep clustering reads (`taskweave call grouping --schedule`),
//! and what a diffusion pipeline trains and samples with.

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;

/// A noise schedule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NoiseSchedule {
    /// DDPM's (Ho et al. 2020): β linear from 1e-4 to 0.02.
    Linear,
    /// Improved DDPM's (Nichol & Dhariwal 2021): ᾱ_t = f(t)/f(0),
    /// f(t) = cos²((t/T + 0.008)/1.008 · π/2), each β clipped at 0.999.
    Cosine,
}

impl NoiseSchedule {
    /// ᾱ_1 .. ᾱ_T.
    pub fn alpha_bar(self, steps: usize) -> Vec<f64> {
        let t_max = steps as f64;
        let f = |t: f64| {
            ((t / t_max + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let mut level = 1.0;
        (1..=steps)
            .map(|t| {
                let beta = match self {
                    NoiseSchedule::Linear => {
                        1e-4 + (0.02 - 1e-4) * (t - 1) as f64 / (steps.max(2) - 1) as f64
                    }
                    NoiseSchedule::Cosine => (1.0 - f(t as f64) / f(t as f64 - 1.0)).min(0.999),
                };
                level *= 1.0 - beta;
                level
            })
            .collect()
    }

    /// SNR(1) .. SNR(T).
    pub fn snr(self, steps: usize) -> Vec<f64> {
        self.alpha_bar(steps)
            .into_iter()
            .map(|a| a / (1.0 - a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::NoiseSchedule;

    #[test]
    fn both_schedules_fall_from_almost_clean_to_almost_pure_noise() {
        for schedule in [NoiseSchedule::Linear, NoiseSchedule::Cosine] {
            let a = schedule.alpha_bar(1000);
            assert!(
                a[0] > 0.999 && a[999] < 1e-3,
                "{schedule:?}: {} .. {}",
                a[0],
                a[999]
            );
            assert!(a.windows(2).all(|w| w[1] < w[0]), "{schedule:?} decreases");
            let snr = schedule.snr(1000);
            assert!(
                snr.iter().all(|s| s.is_finite() && *s > 0.0),
                "{schedule:?}"
            );
        }
        // DDPM's linear schedule: ᾱ_1 = 1 − 1e-4, ᾱ_1000 ≈ 4.0e-5.
        let a = NoiseSchedule::Linear.alpha_bar(1000);
        assert!(
            (a[0] - 0.9999).abs() < 1e-12 && (a[999] - 4.04e-5).abs() < 1e-6,
            "{}",
            a[999]
        );
    }
}
