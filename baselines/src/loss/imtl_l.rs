//! IMTL-L, the loss half of IMTL (Liu, Li, Kuang, Xue, Chen, Yang, Liao,
//! Zhang, "Towards Impartial Multi-task Learning", ICLR 2021): a learned
//! scale per task, loss `Σ_t (e^(s_t) L_t − s_t)`, whose minimum over `s_t`
//! is at `e^(s_t) L_t = 1`, so every scaled loss is driven to the same
//! value. The `s_t` (start 0) are trained by the run's optimizer with the
//! model, as in LibMTL. (LibMTL's `IMTL` is this scaling with IMTL-G on the
//! scaled losses' gradients; here the two are separate weightings, `imtl-l`
//! and `imtl-g`.)

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

struct ImtlL {
    log_scale: Tensor,
}

impl Weighting for ImtlL {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let scale = self.log_scale.f_exp()?;
        let terms = scale.f_mul(input.losses)?.f_sub(&self.log_scale)?;
        Ok(WeightingOutput {
            combined: terms.f_sum(Kind::Float)?,
            weights: Some(scale.f_detach()?),
        })
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![("log_scale".into(), self.log_scale.shallow_clone())])
    }
}

fn create(_config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let log_scale = Tensor::f_zeros([ctx.num_tasks() as i64], (Kind::Float, ctx.device()?))?
        .set_requires_grad(true);
    Ok(Box::new(ImtlL { log_scale }))
}

register_method!(Method::new(
    "imtl-l",
    env!("CARGO_PKG_VERSION"),
    "IMTL-L: learned loss scales that drive every scaled loss to 1 (Liu et al., ICLR 2021)",
    schema_for::<NoKeys>,
    Constructor::Weighting(create),
));
