//! FAMO, fast adaptive multitask optimisation (Liu, Liu, Stone, Liu, NeurIPS
//! 2023): the loss `Σ_t z_t log(L_t + ε)/c` with `z = softmax(ξ)` and
//! `c = Σ_t z_t/(L_t + ε)`, which weights each task's gradient by
//! `z_t/(c(L_t + ε))`, so that all log-losses fall at about the same rate.
//! After each step, `ξ` moves by Adam (`w_lr` 0.025, weight decay `w_gamma`
//! 1e-3, LibMTL's defaults) along `J_softmax(ξ)ᵀ δ`, with
//! `δ_t = log(L_t⁻ + ε) − log(L_t + ε)` the drop of each log-loss.
//!
//! The official code and LibMTL measure that drop on the same batch after
//! the optimizer step (one extra forward pass); a weighting sees one loss
//! vector per step, so here `δ` compares the previous step's losses with this
//! step's, which come from the next batch: the same expectation, more noise.
//! `ε` = 1e-8 and the losses' lower bounds are 0, as in LibMTL. Losses must
//! be positive. `ξ`, Adam's moments and the last losses are the state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::{check_positive, values};
use crate::adam::Adam;
use crate::vectors::{load_vector, softmax, vector_state};

const EPS: f64 = 1e-8;

struct Famo {
    logits: Vec<f64>,
    adam: Adam,
    previous: Option<Vec<f64>>,
}

impl Weighting for Famo {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let losses = values(input.losses)?;
        check_positive("famo", &losses)?;
        if let Some(previous) = &self.previous {
            let delta: Vec<f64> = previous
                .iter()
                .zip(&losses)
                .map(|(p, l)| (p + EPS).ln() - (l + EPS).ln())
                .collect();
            // J_softmaxᵀδ = z∘(δ − zᵀδ).
            let z = softmax(&self.logits);
            let mean: f64 = z.iter().zip(&delta).map(|(z, d)| z * d).sum();
            let grad: Vec<f64> = z.iter().zip(&delta).map(|(z, d)| z * (d - mean)).collect();
            self.adam.step(&mut self.logits, &grad);
        }
        let z = softmax(&self.logits);
        let c: f64 = z.iter().zip(&losses).map(|(z, l)| z / (l + EPS)).sum();
        let factors: Vec<f64> = z.iter().map(|z| z / c).collect();
        let (kind, device) = (input.losses.kind(), input.losses.device());
        let factors = Tensor::f_from_slice(&factors)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        let combined = input
            .losses
            .f_add_scalar(EPS)?
            .f_log()?
            .f_mul(&factors)?
            .f_sum(Kind::Float)?;
        let weights: Vec<f64> = z
            .iter()
            .zip(&losses)
            .map(|(z, l)| z / (c * (l + EPS)))
            .collect();
        self.previous = Some(losses);
        Ok(WeightingOutput {
            combined,
            weights: Some(
                Tensor::f_from_slice(&weights)?
                    .f_to_kind(kind)?
                    .f_to_device(device)?,
            ),
        })
    }

    fn state(&self) -> Result<State> {
        let Some(previous) = &self.previous else {
            return Ok(State::default());
        };
        let (adam, steps) = self.adam.state()?;
        let mut state = vector_state(&[("logits", &self.logits), ("previous", previous)])?;
        state.tensors.extend(adam.tensors);
        state.meta = json!({ "adam_steps": steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.logits.len();
        if state.is_empty() {
            (self.logits, self.previous) = (vec![0.0; t], None);
            self.adam = Adam::new(t, self.adam.lr, self.adam.weight_decay);
            return Ok(());
        }
        let steps = state.meta["adam_steps"].clone();
        self.logits = load_vector(&mut state, "famo", "logits", t)?.unwrap_or(vec![0.0; t]);
        self.previous = load_vector(&mut state, "famo", "previous", t)?;
        self.adam.load(&mut state, "famo", &steps)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Adam learning rate of the task-weight logits.
    #[schemars(range(min = 0.0))]
    w_lr: f64,
    /// Weight decay of the task-weight logits.
    #[schemars(range(min = 0.0))]
    w_gamma: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            w_lr: 0.025,
            w_gamma: 1e-3,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { w_lr, w_gamma } = typed(config)?;
    let t = ctx.num_tasks();
    Ok(Box::new(Famo {
        logits: vec![0.0; t],
        adam: Adam::new(t, w_lr, w_gamma),
        previous: None,
    }))
}

register_method!(Method::new(
    "famo",
    env!("CARGO_PKG_VERSION"),
    "FAMO: task weights adapted so that every log-loss falls at the same rate (Liu et al., NeurIPS 2023)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));
