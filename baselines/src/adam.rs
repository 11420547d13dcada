//! Adam on a small f64 vector (the task-weight logits of FAMO and GradNorm),
//! as `torch.optim.Adam` computes it: L2 `weight_decay` added to the
//! gradient, bias-corrected moments, `eps` outside the square root.

use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::{Error, Result, State};

use crate::vectors::{load_vector, vector_state};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Adam's moments and step count for one parameter vector.
#[derive(Debug, Clone)]
pub(crate) struct Adam {
    pub lr: f64,
    pub weight_decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    steps: u64,
}

impl Adam {
    /// Fresh moments for `n` parameters.
    pub(crate) fn new(n: usize, lr: f64, weight_decay: f64) -> Adam {
        Adam {
            lr,
            weight_decay,
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
        }
    }

    /// One step on `params` along `grad`.
    pub(crate) fn step(&mut self, params: &mut [f64], grad: &[f64]) {
        self.steps += 1;
        let t = self.steps.min(i32::MAX as u64) as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            let g = g + self.weight_decay * *p;
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
        }
    }

    /// The moments as state (`adam_m`, `adam_v`) and the step count as meta.
    pub(crate) fn state(&self) -> Result<(State, Value)> {
        Ok((
            vector_state(&[("adam_m", &self.m), ("adam_v", &self.v)])?,
            json!(self.steps),
        ))
    }

    /// Restores what [`Adam::state`] exported from `state` and `steps`.
    pub(crate) fn load(&mut self, state: &mut State, method: &str, steps: &Value) -> Result<()> {
        let n = self.m.len();
        let m = load_vector(state, method, "adam_m", n)?;
        let v = load_vector(state, method, "adam_v", n)?;
        let steps = steps
            .as_u64()
            .ok_or_else(|| Error::msg(format!("{method} state: Adam's step count missing")))?;
        (self.m, self.v, self.steps) =
            (m.unwrap_or(vec![0.0; n]), v.unwrap_or(vec![0.0; n]), steps);
        Ok(())
    }
}
