//! Dynamic logit fusion (Fan et al., "On Giant's Shoulders: Effortless Weak
//! to Strong by Dynamic Logits Fusion", 2024) as a `Fusion`:
//! at each decoding step a small expert steers a large model,
//! `P̃ = softmax(M^L + a·(M^S_t − M^S))`, with one expert `t` active and `a`
//! on a grid, chosen per row to make the large model's shift match the
//! small one's: the minimum over (t, a) of
//! `Σ_t' (KL(P̃‖P) − KL(Q_t'‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t'))²`.
//!
//! The grid search is the host's `fusion_grid` (one fused kernel on CUDA,
//! the libtorch composite on the CPU): ties go to the earliest grid value,
//! then the smallest expert index; a token that is −∞ in an expert and in
//! the small model (a masked vocabulary entry) moves nothing and, with
//! 0·log 0 = 0, adds nothing to any KL.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Fusion, FusionInput, FusionOutput, Host, Method,
    MethodContext, Result,
};

/// The most grid values the kernel takes.
const MAX_ALPHAS: usize = 64;

/// `logit-fusion`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The coefficients `a` tried for each expert, in order of preference
    /// on ties (the paper's grid: 0, 0.1, ..., 2.0).
    #[schemars(length(min = 1, max = 64))]
    alphas: Vec<f64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            alphas: (0..=20).map(|i| i as f64 / 10.0).collect(),
        }
    }
}

struct LogitFusion {
    host: Host,
    alphas: Vec<f64>,
}

impl Fusion for LogitFusion {
    fn fuse(&mut self, input: &FusionInput<'_>) -> Result<FusionOutput> {
        let grid = self
            .host
            .fusion_grid(input.large, input.small, input.experts, &self.alphas)?;
        Ok(FusionOutput {
            log_probs: grid.log_probs,
            alpha: grid.alpha,
        })
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Fusion>> {
    let Config { alphas } = typed(config)?;
    // The context's tasks are the experts.
    if ctx.tasks.is_empty() {
        return Err(Error::input(
            "logit-fusion picks among experts, and there are none: name at least one (models.experts)",
        ));
    }
    if alphas.is_empty() || alphas.len() > MAX_ALPHAS {
        return Err(Error::input(format!(
            "alphas: {} values; give 1 to {MAX_ALPHAS}",
            alphas.len()
        )));
    }
    // The grid runs in float32: a coefficient beyond its range would be ±inf there.
    if let Some(a) = alphas
        .iter()
        .find(|a| !a.is_finite() || a.abs() > f32::MAX as f64)
    {
        return Err(Error::input(format!(
            "alphas: {a} is not a finite float32 number"
        )));
    }
    Ok(Box::new(LogitFusion {
        host: host.clone(),
        alphas,
    }))
}

register_method!(Method::new(
    "logit-fusion",
    env!("CARGO_PKG_VERSION"),
    "Dynamic logit fusion: per row, the expert and coefficient whose shift of the large model matches the small model's (Fan et al. 2024)",
    schema_for::<Config>,
    Constructor::Fusion(create),
));
