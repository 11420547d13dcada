//! The baselines of dynamic logit fusion (Fan et al. 2024), as `Fusion`s:
//!
//! - `large`: the large model alone, `softmax(M^L)`;
//! - `proxy`: proxy tuning (Liu et al., "Tuning Language Models by Proxy",
//!   2024): `softmax(M^L + α·(M^S_t − M^S))` with a fixed expert `t` and
//!   `α` (1);
//! - `expert`: the small expert `t` alone, `softmax(M^S_t)`.
//!
//! A token that is −∞ in the expert and the small model (a masked vocabulary
//! entry) moves nothing, as in `logit-fusion`. The reported `alpha` is `α` at
//! the expert for `proxy` and 0 for the other two, which do not steer the
//! large model.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema, NoKeys};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Fusion, FusionInput, FusionOutput, Host, Method,
    MethodContext, Result,
};

/// Which fusion, with its options.
enum Rule {
    Large,
    Proxy { expert: usize, alpha: f64 },
    Expert { expert: usize },
}

struct Baseline {
    rule: Rule,
}

/// The logits' float kind for the output: f64 stays f64, the rest is f32.
fn out_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Expert `t` of `input`, refusing an index beyond the experts given.
fn expert<'a>(input: &'a FusionInput<'_>, t: usize) -> Result<&'a Tensor> {
    input.experts.get(t).ok_or_else(|| {
        Error::input(format!(
            "expert = {t}, but there are {} experts (0-based)",
            input.experts.len()
        ))
    })
}

impl Fusion for Baseline {
    fn fuse(&mut self, input: &FusionInput<'_>) -> Result<FusionOutput> {
        let kind = out_kind(input.large);
        let large = input.large.f_to_kind(kind)?;
        let (rows, n) = (large.size()[0], input.experts.len() as i64);
        let mut alpha = Tensor::f_zeros([rows, n], (kind, large.device()))?;
        let logits = match self.rule {
            Rule::Large => large,
            Rule::Expert { expert: t } => expert(input, t)?.f_to_kind(kind)?,
            Rule::Proxy {
                expert: t,
                alpha: a,
            } => {
                let e = expert(input, t)?.f_to_kind(kind)?;
                let s = input.small.f_to_kind(kind)?;
                // −∞ − −∞ = 0: a token both rule out moves nothing.
                let delta = e.f_sub(&s)?.f_where_scalarother(&e.f_ne_tensor(&s)?, 0.0)?;
                let _ = alpha.f_select(1, t as i64)?.f_fill_(a)?;
                large.f_add(&delta.f_mul_scalar(a)?)?
            }
        };
        if alpha.kind() != kind {
            alpha = alpha.f_to_kind(kind)?;
        }
        Ok(FusionOutput {
            log_probs: logits.f_log_softmax(-1, kind)?,
            alpha,
        })
    }
}

/// `proxy`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct ProxyConfig {
    /// The expert that steers the large model (0-based).
    expert: u32,
    /// Its coefficient (proxy tuning: 1).
    alpha: f64,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            expert: 0,
            alpha: 1.0,
        }
    }
}

/// `expert`'s config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct ExpertConfig {
    /// The expert whose distribution is the output (0-based).
    expert: u32,
}

fn create_large(_config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Fusion>> {
    Ok(Box::new(Baseline { rule: Rule::Large }))
}

fn create_proxy(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Fusion>> {
    let ProxyConfig { expert, alpha } = typed(config)?;
    // The coefficient multiplies float32 logits.
    if !alpha.is_finite() || alpha.abs() > f32::MAX as f64 {
        return Err(Error::input(format!(
            "alpha = {alpha} is not a finite float32 number"
        )));
    }
    Ok(Box::new(Baseline {
        rule: Rule::Proxy {
            expert: expert as usize,
            alpha,
        },
    }))
}

fn create_expert(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Fusion>> {
    let ExpertConfig { expert } = typed(config)?;
    Ok(Box::new(Baseline {
        rule: Rule::Expert {
            expert: expert as usize,
        },
    }))
}

register_method!(Method::new(
    "large",
    env!("CARGO_PKG_VERSION"),
    "The large model alone (a logit-fusion baseline)",
    schema_for::<NoKeys>,
    Constructor::Fusion(create_large),
));

register_method!(Method::new(
    "proxy",
    env!("CARGO_PKG_VERSION"),
    "Proxy tuning: the large model plus one expert's offset from the small model, fixed coefficient (Liu et al. 2024)",
    schema_for::<ProxyConfig>,
    Constructor::Fusion(create_proxy),
));

register_method!(Method::new(
    "expert",
    env!("CARGO_PKG_VERSION"),
    "One small expert alone (a logit-fusion baseline)",
    schema_for::<ExpertConfig>,
    Constructor::Fusion(create_expert),
));

#[cfg(test)]
mod tests {
    use super::*;

    fn input_of<'a>(
        large: &'a Tensor,
        small: &'a Tensor,
        experts: &'a [Tensor],
    ) -> FusionInput<'a> {
        FusionInput {
            large,
            small,
            experts,
        }
    }

    #[test]
    fn proxy_adds_the_expert_offset_and_leaves_masked_tokens_alone() {
        let large = Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0]).view([1, 4]);
        let small = Tensor::from_slice(&[0.0f32, 1.0, f32::NEG_INFINITY, 0.0]).view([1, 4]);
        let experts = [
            Tensor::from_slice(&[5.0f32, 5.0, 5.0, 5.0]).view([1, 4]),
            Tensor::from_slice(&[1.0f32, 0.0, f32::NEG_INFINITY, 2.0]).view([1, 4]),
        ];
        let mut proxy = Baseline {
            rule: Rule::Proxy {
                expert: 1,
                alpha: 1.0,
            },
        };
        let out = proxy.fuse(&input_of(&large, &small, &experts)).unwrap();
        let expected = Tensor::from_slice(&[2.0f32, 1.0, 0.5, 1.0])
            .view([1, 4])
            .log_softmax(-1, Kind::Float);
        assert!(out.log_probs.allclose(&expected, 1e-6, 1e-6, false));
        assert_eq!(
            Vec::<f32>::try_from(out.alpha.view([-1])).unwrap(),
            [0.0, 1.0]
        );
        let mut large_only = Baseline { rule: Rule::Large };
        let out = large_only
            .fuse(&input_of(&large, &small, &experts))
            .unwrap();
        assert!(out
            .log_probs
            .allclose(&large.log_softmax(-1, Kind::Float), 1e-6, 1e-6, false));
        let mut alone = Baseline {
            rule: Rule::Expert { expert: 2 },
        };
        let e = alone
            .fuse(&input_of(&large, &small, &experts))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expert = 2, but there are 2 experts"), "{e}");
    }

    #[test]
    fn an_alpha_beyond_float32_is_refused_not_a_panic() {
        let ctx = MethodContext::default();
        for alpha in [1e39, -1e39] {
            let config = taskweave_plugin_api::serde_json::json!({ "alpha": alpha });
            let e = create_proxy(&config, &ctx, &Host::standalone())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("is not a finite float32 number"), "{e}");
        }
    }
}
