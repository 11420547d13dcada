//! `[diffusion]`: train a denoising diffusion model on the data's samples.

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;

use crate::noise::NoiseSchedule;

/// `[diffusion]`: the data's input `input` holds clean samples; the model
/// learns to predict the noise added to them at timesteps 1..=`steps`, one
/// task per interval of `[train] grouping` (one task without it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionConfig {
    /// The data input holding the clean samples (float, any shape).
    pub input: String,
    /// The noise schedule.
    pub schedule: NoiseSchedule,
    /// Diffusion timesteps T.
    #[schemars(range(min = 2, max = 100_000))]
    pub steps: u32,
    /// Sinusoidal timestep features the denoiser reads beside the noisy sample (even).
    #[schemars(range(min = 2, max = 4096))]
    pub time_features: u32,
    /// A safetensors file of further signals for `[train] grouping`, relative
    /// to the pipeline file: `tas` `[T, T]` from `taskweave affinity` for
    /// `cost = "gradient"` (the schedule's `snr` is always given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signals: Option<String>,
}

impl Default for DiffusionConfig {
    fn default() -> DiffusionConfig {
        DiffusionConfig {
            input: "x".into(),
            schedule: NoiseSchedule::Linear,
            steps: 1000,
            time_features: 32,
            signals: None,
        }
    }
}

impl DiffusionConfig {
    /// What the schema cannot say: `time_features` is even (a sine and a
    /// cosine per frequency). Checked at `validate` and by the objective.
    pub fn check(&self) -> Result<(), String> {
        match self.time_features.is_multiple_of(2) {
            true => Ok(()),
            false => Err(format!(
                "diffusion.time_features = {}: it must be even (a sine and a cosine per frequency)",
                self.time_features
            )),
        }
    }
}
