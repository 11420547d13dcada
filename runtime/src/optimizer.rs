//! Optimizers over the flat parameter buffer, with state that checkpoints hold
//! (tch's own optimizers do not expose their moments, so resume could not be exact).
//!
//! The update formulas are PyTorch's (`torch.optim.Adam`, `AdamW`, `SGD`),
//! operation for operation, so the two frameworks train the same model alike.

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use taskweave_plugin_api::State;

use crate::error::{Error, Result};

/// Config schema of optimizer `kind`.
pub fn schema(kind: &str) -> Option<Value> {
    let lr = |d: f64| json!({"type": "number", "exclusiveMinimum": 0, "default": d, "description": "learning rate"});
    let wd = json!({"type": "number", "minimum": 0, "default": 0.0, "description": "weight decay"});
    match kind {
        "adam" | "adamw" => Some(json!({"type": "object", "properties": {
            "lr": lr(1e-3),
            "betas": {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                      "minItems": 2, "maxItems": 2, "default": [0.9, 0.999]},
            "eps": {"type": "number", "exclusiveMinimum": 0, "default": 1e-8},
            "weight_decay": if kind == "adamw" { json!({"type": "number", "minimum": 0, "default": 0.01}) } else { wd.clone() }
        }})),
        "sgd" => Some(json!({"type": "object", "properties": {
            "lr": lr(1e-2),
            "momentum": {"type": "number", "minimum": 0, "default": 0.0},
            "nesterov": {"type": "boolean", "default": false},
            "weight_decay": wd
        }})),
        _ => None,
    }
}

/// Every optimizer kind.
pub fn kinds() -> Vec<String> {
    vec!["adam".into(), "adamw".into(), "sgd".into()]
}

/// An optimizer with its state.
pub enum Optimizer {
    /// Adam, or AdamW when `decoupled`.
    Adam {
        /// Learning rate.
        lr: f64,
        /// β₁, β₂.
        betas: (f64, f64),
        /// ε.
        eps: f64,
        /// Weight decay.
        weight_decay: f64,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
        /// Steps taken.
        steps: u64,
        /// First moment.
        m: Tensor,
        /// Second moment.
        v: Tensor,
    },
    /// SGD with optional (Nesterov) momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// Weight decay.
        weight_decay: f64,
        /// Momentum buffer (allocated at the first step, as in PyTorch).
        buf: Option<Tensor>,
    },
}

impl Optimizer {
    /// The optimizer a validated `[train].optimizer` table describes, for a
    /// buffer like `params`.
    pub fn new(config: &Value, params: &Tensor) -> Result<Optimizer> {
        let f = |k: &str| config[k].as_f64().unwrap_or(0.0);
        match config["kind"].as_str() {
            Some(kind @ ("adam" | "adamw")) => Ok(Optimizer::Adam {
                lr: f("lr"),
                betas: (
                    config["betas"][0].as_f64().unwrap_or(0.9),
                    config["betas"][1].as_f64().unwrap_or(0.999),
                ),
                eps: f("eps"),
                weight_decay: f("weight_decay"),
                decoupled: kind == "adamw",
                steps: 0,
                m: params.f_zeros_like()?,
                v: params.f_zeros_like()?,
            }),
            Some("sgd") => Ok(Optimizer::Sgd {
                lr: f("lr"),
                momentum: f("momentum"),
                nesterov: config["nesterov"].as_bool().unwrap_or(false),
                weight_decay: f("weight_decay"),
                buf: None,
            }),
            other => Err(Error::Input(format!(
                "unknown optimizer `{}`",
                other.unwrap_or("")
            ))),
        }
    }

    /// One update of `params` (the flat buffer) from `grad`.
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) -> Result<()> {
        let mut p = params.shallow_clone();
        match self {
            Optimizer::Adam {
                lr,
                betas,
                eps,
                weight_decay,
                decoupled,
                steps,
                m,
                v,
            } => {
                *steps += 1;
                let mut g = grad.shallow_clone();
                if *weight_decay != 0.0 {
                    if *decoupled {
                        let _ = p.f_mul_scalar_(1.0 - *lr * *weight_decay)?;
                    } else {
                        g = g.f_add(&p.f_mul_scalar(*weight_decay)?)?;
                    }
                }
                let _ = m.f_lerp_(&g, 1.0 - betas.0)?;
                let _ = v.f_mul_scalar_(betas.1)?;
                let _ = v.f_add_(&g.f_mul(&g)?.f_mul_scalar(1.0 - betas.1)?)?;
                let bias1 = 1.0 - betas.0.powi(*steps as i32);
                let bias2 = 1.0 - betas.1.powi(*steps as i32);
                let denom = v.f_sqrt()?.f_div_scalar(bias2.sqrt())?.f_add_scalar(*eps)?;
                let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(*lr / bias1)?)?;
            }
            Optimizer::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
                buf,
            } => {
                let mut g = grad.shallow_clone();
                if *weight_decay != 0.0 {
                    g = g.f_add(&p.f_mul_scalar(*weight_decay)?)?;
                }
                if *momentum != 0.0 {
                    let b = match buf {
                        Some(b) => {
                            let _ = b.f_mul_scalar_(*momentum)?.f_add_(&g)?;
                            b.shallow_clone()
                        }
                        None => {
                            let mut b = g.f_empty_like()?;
                            b.f_copy_(&g)?;
                            *buf = Some(b.shallow_clone());
                            b
                        }
                    };
                    g = if *nesterov {
                        g.f_add(&b.f_mul_scalar(*momentum)?)?
                    } else {
                        b
                    };
                }
                let _ = p.f_sub_(&g.f_mul_scalar(*lr)?)?;
            }
        }
        Ok(())
    }

    /// State tensors (named `optimizer.*`) and JSON for a checkpoint.
    pub fn state(&self) -> (Vec<(String, Tensor)>, Value) {
        match self {
            Optimizer::Adam { steps, m, v, .. } => (
                vec![
                    ("optimizer.exp_avg".into(), m.shallow_clone()),
                    ("optimizer.exp_avg_sq".into(), v.shallow_clone()),
                ],
                json!({"kind": "adam", "steps": steps}),
            ),
            Optimizer::Sgd { buf, .. } => (
                buf.iter()
                    .map(|b| ("optimizer.momentum_buffer".to_string(), b.shallow_clone()))
                    .collect(),
                json!({"kind": "sgd"}),
            ),
        }
    }

    /// Restores what [`Optimizer::state`] saved.
    pub fn load_state(&mut self, saved: &mut State, meta: &Value) -> Result<()> {
        let mut take = |name: &str| saved.take_tensor(name).ok();
        match self {
            Optimizer::Adam { steps, m, v, .. } => {
                let (Some(sm), Some(sv)) =
                    (take("optimizer.exp_avg"), take("optimizer.exp_avg_sq"))
                else {
                    return Err(Error::Input(
                        "the checkpoint has no Adam state; was it written with another optimizer?"
                            .into(),
                    ));
                };
                *steps = meta["steps"].as_u64().unwrap_or(0);
                m.f_copy_(&sm)?;
                v.f_copy_(&sv)?;
            }
            Optimizer::Sgd { buf, .. } => {
                *buf = take("optimizer.momentum_buffer")
                    .map(|b| b.f_to_kind(Kind::Float))
                    .transpose()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adam(extra: Value) -> Value {
        let mut c = json!({"kind": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn adam_first_step_moves_each_parameter_by_lr_against_the_gradient_sign() {
        let p = Tensor::from_slice(&[1.0f32, -1.0, 0.5]);
        let g = Tensor::from_slice(&[0.3f32, -2.0, 0.0]);
        let mut opt = Optimizer::new(&adam(json!({})), &p).unwrap();
        opt.step(&p, &g).unwrap();
        let got = Vec::<f32>::try_from(&p).unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-6 && (got[1] + 0.9).abs() < 1e-6 && got[2] == 0.5,
            "{got:?}"
        );
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let run = |split: bool| {
            let p = Tensor::from_slice(&[1.0f32, 2.0]);
            let mut opt = Optimizer::new(&adam(json!({"weight_decay": 0.1})), &p).unwrap();
            for step in 0..6 {
                if split && step == 3 {
                    let (mut tensors, meta) = opt.state();
                    let copies: Vec<(String, Tensor)> =
                        tensors.drain(..).map(|(n, t)| (n, t.copy())).collect();
                    opt = Optimizer::new(&adam(json!({"weight_decay": 0.1})), &p).unwrap();
                    opt.load_state(
                        &mut State {
                            tensors: copies,
                            meta: Value::Null,
                        },
                        &meta,
                    )
                    .unwrap();
                }
                let g = p.f_mul_scalar(0.5).unwrap().f_sin().unwrap();
                opt.step(&p, &g).unwrap();
            }
            Vec::<f32>::try_from(&p).unwrap()
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn sgd_momentum_matches_pytorch_recurrence() {
        let p = Tensor::from_slice(&[0.0f32]);
        let g = Tensor::from_slice(&[1.0f32]);
        let mut opt = Optimizer::new(
            &json!({"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": false, "weight_decay": 0.0}),
            &p,
        )
        .unwrap();
        opt.step(&p, &g).unwrap();
        opt.step(&p, &g).unwrap();
        // buf: 1, then 1.9 → p = -0.1 - 0.19
        assert!((p.double_value(&[0]) + 0.29).abs() < 1e-6);
    }
}
