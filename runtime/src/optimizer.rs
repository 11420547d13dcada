//! Optimizers over the flat parameter buffer, with state that checkpoints hold
//! (tch's own optimizers do not expose their moments, so resume could not be exact).
//!
//! The update formulas are PyTorch's (`torch.optim.Adam`, `AdamW`, `SGD`),
//! operation for operation, so the two frameworks train the same model alike.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskweave_plugin_api::config::JsonSchema;
use tch::{Kind, Tensor};

use taskweave_plugin_api::State;

use crate::error::{Error, Result};

/// `[train] optimizer`: which optimizer, with its keys (PyTorch's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Adam (`torch.optim.Adam`).
    Adam(AdamConfig),
    /// AdamW, Adam with decoupled weight decay (`torch.optim.AdamW`).
    AdamW(AdamWConfig),
    /// SGD with optional (Nesterov) momentum (`torch.optim.SGD`).
    Sgd(SgdConfig),
}

impl OptimizerConfig {
    /// How many tensors the size of the parameters the optimizer keeps:
    /// Adam's two moments, SGD's momentum buffer.
    pub fn state_copies(&self) -> u128 {
        match self {
            OptimizerConfig::Adam(_) | OptimizerConfig::AdamW(_) => 2,
            OptimizerConfig::Sgd(c) if c.momentum > 0.0 => 1,
            OptimizerConfig::Sgd(_) => 0,
        }
    }

    /// The configured learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adam(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> OptimizerConfig {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

/// Adam's and AdamW's keys; only the weight decay's default differs.
macro_rules! adam_config {
    ($(#[$doc:meta])* $name:ident, weight_decay = $decay:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Learning rate.
            #[schemars(extend("exclusiveMinimum" = 0))]
            pub lr: f64,
            /// β₁ and β₂, the decay rates of the moment estimates, in [0, 1)
            /// as PyTorch requires (at 1 a moment never forgets its start).
            #[schemars(extend("items" = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}))]
            pub betas: [f64; 2],
            /// ε, added to the denominator.
            #[schemars(extend("exclusiveMinimum" = 0))]
            pub eps: f64,
            /// Weight decay.
            #[schemars(range(min = 0.0))]
            pub weight_decay: f64,
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    lr: 1e-3,
                    betas: [0.9, 0.999],
                    eps: 1e-8,
                    weight_decay: $decay,
                }
            }
        }
    };
}

adam_config!(
    /// `kind = "adam"`.
    AdamConfig,
    weight_decay = 0.0
);
adam_config!(
    /// `kind = "adamw"`.
    AdamWConfig,
    weight_decay = 0.01
);

/// `kind = "sgd"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Learning rate.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub lr: f64,
    /// Momentum, below 1 (PyTorch takes any; at 1 or more the velocity
    /// never decays and the run diverges).
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1))]
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay.
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> SgdConfig {
        SgdConfig {
            lr: 1e-2,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// An optimizer with its state.
pub struct Optimizer {
    rule: Rule,
    /// (start, factor): the values from `start` on (the methods' own
    /// parameters, last in the flat buffer) move `factor` times as far.
    tail: Option<(i64, f64)>,
}

/// An update rule with its state.
enum Rule {
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
    /// The optimizer `config` describes, for a buffer like `params`.
    pub fn new(config: &OptimizerConfig, params: &Tensor) -> Result<Optimizer> {
        let adam = |lr, betas: [f64; 2], eps, weight_decay, decoupled| -> Result<Rule> {
            Ok(Rule::Adam {
                lr,
                betas: (betas[0], betas[1]),
                eps,
                weight_decay,
                decoupled,
                steps: 0,
                m: params.f_zeros_like()?,
                v: params.f_zeros_like()?,
            })
        };
        let rule = match config {
            OptimizerConfig::Adam(c) => adam(c.lr, c.betas, c.eps, c.weight_decay, false)?,
            OptimizerConfig::AdamW(c) => adam(c.lr, c.betas, c.eps, c.weight_decay, true)?,
            OptimizerConfig::Sgd(c) => Rule::Sgd {
                lr: c.lr,
                momentum: c.momentum,
                nesterov: c.nesterov,
                weight_decay: c.weight_decay,
                buf: None,
            },
        };
        Ok(Optimizer { rule, tail: None })
    }

    /// Makes the values from `start` on move `factor` times as far as the
    /// rest at every step (`train.method_lr` over `lr`).
    pub fn scale_tail(&mut self, start: i64, factor: f64) {
        self.tail = Some((start, factor));
    }

    /// `update` with its tail scaled, ready to subtract.
    fn scaled(&self, update: Tensor) -> Result<Tensor> {
        if let Some((start, factor)) = self.tail {
            let len = update.size()[0] - start;
            let _ = update.f_narrow(0, start, len)?.f_mul_scalar_(factor)?;
        }
        Ok(update)
    }

    /// Sets the learning rate of the next steps (the schedule's job).
    pub fn set_lr(&mut self, rate: f64) {
        match &mut self.rule {
            Rule::Adam { lr, .. } | Rule::Sgd { lr, .. } => *lr = rate,
        }
    }

    /// One update of `params` (the flat buffer) from `grad`.
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) -> Result<()> {
        let mut p = params.shallow_clone();
        let update = match &mut self.rule {
            Rule::Adam {
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
                m.f_div(&denom)?.f_mul_scalar(*lr / bias1)?
            }
            Rule::Sgd {
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
                g.f_mul_scalar(*lr)?
            }
        };
        let _ = p.f_sub_(&self.scaled(update)?)?;
        Ok(())
    }

    /// State tensors (named `optimizer.*`) and JSON for a checkpoint.
    pub fn state(&self) -> (Vec<(String, Tensor)>, Value) {
        match &self.rule {
            Rule::Adam { steps, m, v, .. } => (
                vec![
                    ("optimizer.exp_avg".into(), m.shallow_clone()),
                    ("optimizer.exp_avg_sq".into(), v.shallow_clone()),
                ],
                json!({"kind": "adam", "steps": steps}),
            ),
            Rule::Sgd { buf, .. } => (
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
        match &mut self.rule {
            Rule::Adam { steps, m, v, .. } => {
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
            Rule::Sgd { buf, .. } => {
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

    fn adam(weight_decay: f64) -> OptimizerConfig {
        OptimizerConfig::Adam(AdamConfig {
            lr: 0.1,
            weight_decay,
            ..AdamConfig::default()
        })
    }

    #[test]
    fn adam_first_step_moves_each_parameter_by_lr_against_the_gradient_sign() {
        let p = Tensor::from_slice(&[1.0f32, -1.0, 0.5]);
        let g = Tensor::from_slice(&[0.3f32, -2.0, 0.0]);
        let mut opt = Optimizer::new(&adam(0.0), &p).unwrap();
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
            let mut opt = Optimizer::new(&adam(0.1), &p).unwrap();
            for step in 0..6 {
                if split && step == 3 {
                    let (mut tensors, meta) = opt.state();
                    let copies: Vec<(String, Tensor)> =
                        tensors.drain(..).map(|(n, t)| (n, t.copy())).collect();
                    opt = Optimizer::new(&adam(0.1), &p).unwrap();
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
    fn a_scaled_tail_moves_its_values_that_many_times_as_far() {
        // Adam's first step moves every value by lr against its gradient's
        // sign; the tail from index 2 by 2.5 lr.
        let p = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]);
        let mut opt = Optimizer::new(&adam(0.1), &p).unwrap();
        opt.scale_tail(2, 2.5);
        opt.step(&p, &Tensor::from_slice(&[1.0f32, -3.0, 2.0, -0.5]))
            .unwrap();
        let moved = Vec::<f32>::try_from(&p).unwrap();
        for (got, want) in moved.iter().zip([-0.1, 0.1, -0.25, 0.25]) {
            assert!((got - want).abs() < 1e-6, "{moved:?}");
        }
    }

    #[test]
    fn sgd_momentum_matches_pytorch_recurrence() {
        let p = Tensor::from_slice(&[0.0f32]);
        let g = Tensor::from_slice(&[1.0f32]);
        let sgd = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..SgdConfig::default()
        };
        let mut opt = Optimizer::new(&OptimizerConfig::Sgd(sgd), &p).unwrap();
        opt.step(&p, &g).unwrap();
        opt.step(&p, &g).unwrap();
        // buf: 1, then 1.9 → p = -0.1 - 0.19
        assert!((p.double_value(&[0]) + 0.29).abs() < 1e-6);
    }
}
