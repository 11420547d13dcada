//! STCH, smooth Tchebycheff scalarisation (Lin, Zhang, Zhang, Liu, Wang, Zhang,
//! "Smooth Tchebycheff Scalarization for Multi-Objective Optimization", ICML
//! 2024), as LibMTL runs it for multi-task learning: the losses are
//! normalised by a nadir vector `z` (their mean over a calibration window)
//! and the loss is the smooth maximum
//! `T·μ·log Σ_t exp(log(L_t/z_t)/μ)` (shifted by its largest term, which
//! changes no gradient); `μ` → 0 approaches the plain Tchebycheff (worst
//! task) scalarisation.
//!
//! Before that, the loss is `Σ_t log L_t`: for `warmup` steps, then for
//! `nadir_steps` more whose losses are averaged into `z`. LibMTL counts
//! these in epochs (4 and then 1); set them to that many steps per epoch to
//! match. Reported weights: the gradient weight of each task loss, what a
//! gradient row is scaled by (`1/L_t` before the nadir is known,
//! `T·softmax_t / L_t` after, up to the logarithms' ε). Losses must be
//! positive. The
//! step count, the running sum and `z` are the weighting's state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::{check_positive, values};
use crate::vectors::{load_vector, vector_state};

/// Added inside the logarithms, as the reference.
const EPS: f64 = 1e-20;

struct Stch {
    mu: f64,
    warmup: u64,
    nadir_steps: u64,
    steps: u64,
    sum: Vec<f64>,
    nadir: Option<Vec<f64>>,
}

impl Weighting for Stch {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let losses = values(input.losses)?;
        check_positive("stch", &losses)?;
        let t = losses.len();
        let (kind, device) = (input.losses.kind(), input.losses.device());
        let to_tensor = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(v)?
                .f_to_kind(kind)?
                .f_to_device(device)?)
        };
        let out = match &self.nadir {
            None => {
                if self.steps >= self.warmup {
                    self.sum.iter_mut().zip(&losses).for_each(|(s, l)| *s += l);
                }
                self.steps += 1;
                if self.steps == self.warmup + self.nadir_steps {
                    self.nadir = Some(
                        self.sum
                            .iter()
                            .map(|s| s / self.nadir_steps as f64)
                            .collect(),
                    );
                }
                // d log(L + ε) / dL.
                let weights: Vec<f64> = losses.iter().map(|l| 1.0 / (l + EPS)).collect();
                WeightingOutput {
                    combined: input
                        .losses
                        .f_add_scalar(EPS)?
                        .f_log()?
                        .f_sum(Kind::Float)?,
                    weights: Some(to_tensor(&weights)?),
                }
            }
            Some(nadir) => {
                self.steps += 1;
                let logs = input
                    .losses
                    .f_div(&to_tensor(nadir)?)?
                    .f_add_scalar(EPS)?
                    .f_log()?;
                let top = logs.f_max()?.f_detach()?;
                let shifted = logs.f_sub(&top)?.f_div_scalar(self.mu)?;
                let combined = shifted
                    .f_logsumexp([0].as_slice(), false)?
                    .f_mul_scalar(self.mu * t as f64)?;
                // T·softmax times d log(L/z + ε) / dL = 1 / (L + ε·z).
                let scale: Vec<f64> = losses
                    .iter()
                    .zip(nadir)
                    .map(|(l, z)| 1.0 / (l + EPS * z))
                    .collect();
                let weights = shifted
                    .f_softmax(0, Kind::Float)?
                    .f_mul_scalar(t as f64)?
                    .f_mul(&to_tensor(&scale)?)?
                    .f_detach()?;
                WeightingOutput {
                    combined,
                    weights: Some(weights),
                }
            }
        };
        Ok(out)
    }

    fn state(&self) -> Result<State> {
        let mut state = match &self.nadir {
            Some(nadir) => vector_state(&[("sum", &self.sum), ("nadir", nadir)])?,
            None => vector_state(&[("sum", &self.sum)])?,
        };
        state.meta = json!({ "steps": self.steps });
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.sum.len();
        if state.is_empty() {
            (self.steps, self.sum, self.nadir) = (0, vec![0.0; t], None);
            return Ok(());
        }
        self.steps = state.meta["steps"]
            .as_u64()
            .ok_or_else(|| Error::msg("stch state: `steps` missing"))?;
        let has_nadir = state.tensors.iter().any(|(n, _)| n == "nadir");
        self.nadir = if has_nadir {
            load_vector(&mut state, "stch", "nadir", t)?
        } else {
            None
        };
        self.sum = load_vector(&mut state, "stch", "sum", t)?.unwrap_or(vec![0.0; t]);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Smoothing μ of the maximum (smaller: closer to the worst task alone).
    #[schemars(extend("exclusiveMinimum" = 0))]
    mu: f64,
    /// Steps of the plain log-loss sum before the nadir is measured (LibMTL: 4 epochs).
    warmup: u64,
    /// Steps whose losses are averaged into the nadir vector (LibMTL: 1 epoch).
    #[schemars(range(min = 1))]
    nadir_steps: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mu: 1.0,
            warmup: 0,
            nadir_steps: 100,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    Ok(Box::new(Stch {
        mu: config.mu,
        warmup: config.warmup,
        nadir_steps: config.nadir_steps.max(1),
        steps: 0,
        sum: vec![0.0; ctx.num_tasks()],
        nadir: None,
    }))
}

register_method!(Method::new(
    "stch",
    env!("CARGO_PKG_VERSION"),
    "STCH: a smooth maximum of the nadir-normalised log losses (Lin et al., ICML 2024)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));
