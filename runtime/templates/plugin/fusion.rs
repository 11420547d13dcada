//! `__METHOD__`: a logit fusion for decoding. It starts as proxy tuning with
//! a constant coefficient: large + α·Σ_t (expert_t − small); change `fuse`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Kind;
use taskweave_plugin_api::{
    register_method, Constructor, Fusion, FusionInput, FusionOutput, Host, Method, MethodContext,
    Result,
};

/// The config: what `fusion = { kind = "__METHOD__", ... }` may say.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub struct Config {
    /// Coefficient α of every expert's offset.
    #[schemars(range(min = 0.0))]
    pub alpha: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { alpha: 1.0 }
    }
}

/// The fusion.
pub struct __TYPE__ {
    alpha: f64,
}

impl Fusion for __TYPE__ {
    fn fuse(&mut self, input: &FusionInput<'_>) -> Result<FusionOutput> {
        let mut logits = input.large.shallow_clone();
        for expert in input.experts {
            logits = logits.f_add(&expert.f_sub(input.small)?.f_mul_scalar(self.alpha)?)?;
        }
        let rows = input.large.size()[0];
        let experts = input.experts.len() as i64;
        let alpha = input
            .large
            .f_new_full([rows, experts], self.alpha, (Kind::Float, input.large.device()))?;
        Ok(FusionOutput {
            log_probs: logits.f_log_softmax(-1, Kind::Float)?,
            alpha,
        })
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Fusion>> {
    let Config { alpha } = typed(config)?;
    Ok(Box::new(__TYPE__ { alpha }))
}

register_method!(Method::new(
    "__METHOD__",
    env!("CARGO_PKG_VERSION"),
    "A logit fusion written with `taskweave plugin new`",
    schema_for::<Config>,
    Constructor::Fusion(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::tch::{Device, Tensor};

    #[test]
    fn alpha_zero_is_the_large_model() {
        let large = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        let small = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        let expert = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        let experts = [expert];
        let input = FusionInput {
            large: &large,
            small: &small,
            experts: &experts,
        };
        let out = __TYPE__ { alpha: 0.0 }.fuse(&input).unwrap();
        assert!(out.log_probs.allclose(&large.log_softmax(-1, Kind::Float), 1e-6, 1e-6, false));
        assert_eq!(out.alpha.size(), [2, 1]);
    }
}
