//! Equal weighting: the plain sum of the task losses.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::{num_tasks, weighted_sum};

/// Σ_t L_t (every weight 1).
struct Ew;

impl Weighting for Ew {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        weighted_sum(input.losses, &vec![1.0; num_tasks(input.losses)])
    }
}

fn create(_config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    Ok(Box::new(Ew))
}

register_method!(Method::new(
    "ew",
    env!("CARGO_PKG_VERSION"),
    "Equal weighting: the sum of the task losses",
    schema_for::<NoKeys>,
    Constructor::Weighting(create),
));
