//! `__METHOD__`: a loss weighting. It starts as equal weighting with a
//! constant factor; change `weigh` to compute your weights.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

/// The config: what `weighting = { kind = "__METHOD__", ... }` may say.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub struct Config {
    /// Factor on every task's loss.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub scale: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { scale: 1.0 }
    }
}

/// The weighting.
pub struct __TYPE__ {
    scale: f64,
}

impl Weighting for __TYPE__ {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let weights = input.losses.f_ones_like()?.f_mul_scalar(self.scale)?.f_detach()?;
        let combined = input.losses.f_mul(&weights)?.f_sum(None)?;
        Ok(WeightingOutput {
            combined,
            weights: Some(weights),
        })
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    // The host validated `config` against the schema and filled in defaults.
    let Config { scale } = typed(config)?;
    Ok(Box::new(__TYPE__ { scale }))
}

register_method!(Method::new(
    "__METHOD__",
    env!("CARGO_PKG_VERSION"),
    "A loss weighting written with `taskweave plugin new`",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::tch::Tensor;

    #[test]
    fn every_loss_gets_the_scale() {
        let mut method = __TYPE__ { scale: 2.0 };
        let losses = Tensor::from_slice(&[1.0f32, 3.0]);
        let input = WeightingInput {
            step: 0,
            losses: &losses,
            grads: None,
            more_grads: &[],
        };
        let out = method.weigh(&input).unwrap();
        assert_eq!(out.combined.double_value(&[]), 8.0);
        assert_eq!(Vec::<f32>::try_from(&out.weights.unwrap()).unwrap(), [2.0, 2.0]);
    }
}
