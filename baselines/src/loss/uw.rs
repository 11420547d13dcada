//! Uncertainty weighting (Kendall, Gal, Cipolla, "Multi-Task Learning Using
//! Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

/// Σ_t ½(e^(−s_t) L_t + s_t), with learned log-variances s_t (trained by the
/// host's optimizer with the model).
struct Uw {
    log_var: Tensor,
}

impl Weighting for Uw {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let precision = self.log_var.f_neg()?.f_exp()?;
        let terms = precision
            .f_mul(input.losses)?
            .f_add(&self.log_var)?
            .f_mul_scalar(0.5)?;
        let loss = terms.f_sum(Kind::Float)?;
        let weights = precision.f_mul_scalar(0.5)?.f_detach()?;
        Ok(WeightingOutput {
            combined: loss,
            weights: Some(weights),
        })
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![("log_var".into(), self.log_var.shallow_clone())])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Initial log-variance of every task.
    init: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { init: 0.0 }
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { init } = typed(config)?;
    let log_var = Tensor::f_full([ctx.num_tasks() as i64], init, (Kind::Float, ctx.device()?))?
        .set_requires_grad(true);
    Ok(Box::new(Uw { log_var }))
}

register_method!(Method::new(
    "uw",
    env!("CARGO_PKG_VERSION"),
    "Uncertainty weighting: learned log-variances s, loss Σ ½(e^-s L + s) (Kendall et al., CVPR 2018)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_variance_gradient_points_toward_log_of_the_loss() {
        // d/ds ½(e^-s L + s) = ½(1 − e^-s L): negative (s grows) when L > e^s.
        let mut uw = Uw {
            log_var: Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true),
        };
        let losses = Tensor::from_slice(&[4.0f32, 0.25]);
        let out = uw
            .weigh(&WeightingInput {
                step: 0,
                losses: &losses,
                grads: None,
                more_grads: &[],
            })
            .unwrap();
        out.combined.backward();
        let g = Vec::<f32>::try_from(uw.log_var.grad()).unwrap();
        assert!(
            (g[0] - 0.5 * (1.0 - 4.0)).abs() < 1e-6 && (g[1] - 0.5 * (1.0 - 0.25)).abs() < 1e-6,
            "{g:?}"
        );
        assert_eq!(
            Vec::<f32>::try_from(out.weights.unwrap()).unwrap(),
            vec![0.5, 0.5]
        );
    }
}
