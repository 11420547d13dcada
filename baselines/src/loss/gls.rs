//! GLS, the geometric loss strategy (Chennupati, Sistu, Yogamani, Rawashdeh,
//! "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
//! for Multi-Task Learning", CVPR Workshops 2019): the loss is the geometric
//! mean `(Π_t L_t)^(1/T)`, computed as `exp(mean_t log L_t)` so that the
//! product cannot under- or overflow. Its gradient weights task t by
//! `GLS/(T·L_t)`, which is what is reported (LibMTL reports
//! `L_t/(T·Π L)`, not the weight its loss applies). Losses must be positive.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Kind;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::{check_positive, values};

struct Gls;

impl Weighting for Gls {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let losses = values(input.losses)?;
        check_positive("gls", &losses)?;
        let combined = input
            .losses
            .f_log()?
            .f_mean(Kind::Float)?
            .f_exp()?
            .f_to_kind(input.losses.kind())?;
        let value = combined.f_double_value(&[])?;
        let t = losses.len() as f64;
        let weights: Vec<f64> = losses.iter().map(|l| value / (t * l)).collect();
        let weights = taskweave_plugin_api::tch::Tensor::f_from_slice(&weights)?
            .f_to_kind(input.losses.kind())?
            .f_to_device(input.losses.device())?;
        Ok(WeightingOutput {
            combined,
            weights: Some(weights),
        })
    }
}

fn create(_config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    Ok(Box::new(Gls))
}

register_method!(Method::new(
    "gls",
    env!("CARGO_PKG_VERSION"),
    "GLS: the geometric mean of the task losses (Chennupati et al., CVPR Workshops 2019)",
    schema_for::<NoKeys>,
    Constructor::Weighting(create),
));
