//! Scale-invariant loss (the "SI" baseline of Navon et al., "Multi-Task
//! Learning as a Bargaining Game", ICML 2022): minimise `Σ_t log L_t`, whose
//! gradient weighs each task by `1/L_t`, so rescaling a task's loss changes
//! nothing.
//!
//! This file is the plugin template: one method, its schema, its constructor,
//! and the registration line. Everything comes from `taskweave-plugin-api`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Kind;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput, WeightingKind,
    WeightingOutput,
};

struct ScaleInvariant {
    /// Added to every loss before the logarithm, so a zero loss stays finite.
    epsilon: f64,
}

impl Weighting for ScaleInvariant {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        // Use tch's fallible f_* methods: an Err becomes an error in the host,
        // and a panic is caught by the API's guard (never unwinds into the host).
        let shifted = input.losses.f_add_scalar(self.epsilon)?;
        let loss = shifted.f_log()?.f_sum(Kind::Float)?;
        // dL/dL_t = 1 / (L_t + ε): the effective task weights.
        let weights = shifted.f_detach()?.f_reciprocal()?;
        // `tracing` works inside plugins: the API forwards records to the host's log.
        taskweave_plugin_api::tracing::trace!(step = input.step, "si combined the task losses");
        Ok(WeightingOutput { combined: loss, weights: Some(weights) })
    }
}

/// The method's config: a serde struct whose JSON Schema (doc comments,
/// bounds and defaults included) is what pipelines are validated against.
/// The two `crate = ...` lines let the derives find serde and schemars
/// through taskweave-plugin-api, the only dependency a plugin needs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Added to each loss before taking logarithms.
    #[schemars(range(min = 0.0))]
    epsilon: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { epsilon: 1e-8 }
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    // The host validated `config` against the schema and filled in defaults.
    let Config { epsilon } = typed(config)?;
    Ok(Box::new(ScaleInvariant { epsilon }))
}

register_method!(Method::new(
    "si",
    env!("CARGO_PKG_VERSION"),
    "Scale-invariant loss: the sum of the log task losses (the SI baseline of Navon et al., 2022)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));
