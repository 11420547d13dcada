//! Dynamic weight average (Liu, Johns, Davison, "End-to-End Multi-Task Learning
//! with Attention", CVPR 2019).
//!
//! w_t = T·exp(r_t/τ) / Σ_i exp(r_i/τ), r_t = L̄_t(k−1) / L̄_t(k−2), where L̄(k)
//! is the mean loss over the k-th window. The paper's window is an epoch; the
//! runtime steps without epochs, so the window is `window` steps (set it to the
//! steps per epoch to match the paper). Weights are 1 until two windows have
//! completed.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::{values, weighted_sum};
use crate::vectors::softmax;

struct Dwa {
    temperature: f64,
    window: u64,
    /// Loss sums of the current window.
    sum: Vec<f64>,
    count: u64,
    /// Mean losses of the last two completed windows, oldest first.
    history: Vec<Vec<f64>>,
}

impl Dwa {
    fn weights(&self, tasks: usize) -> Vec<f64> {
        let [older, newer] = self.history.as_slice() else {
            return vec![1.0; tasks];
        };
        let r: Vec<f64> = newer
            .iter()
            .zip(older)
            .map(|(n, o)| n / o.max(1e-12) / self.temperature)
            .collect();
        softmax(&r).iter().map(|x| tasks as f64 * x).collect()
    }
}

impl Weighting for Dwa {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let values = values(input.losses)?;
        let out = weighted_sum(input.losses, &self.weights(values.len()))?;
        if self.sum.len() != values.len() {
            self.sum = vec![0.0; values.len()];
        }
        self.sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
        self.count += 1;
        if self.count == self.window {
            self.history
                .push(self.sum.iter().map(|s| s / self.window as f64).collect());
            if self.history.len() > 2 {
                self.history.remove(0);
            }
            self.sum.iter_mut().for_each(|s| *s = 0.0);
            self.count = 0;
        }
        Ok(out)
    }

    fn state(&self) -> Result<State> {
        Ok(State {
            tensors: Vec::new(),
            meta: json!({"sum": self.sum, "count": self.count, "history": self.history}),
        })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let parse = |v: &Value| -> Result<Vec<f64>> {
            v.as_array()
                .ok_or_else(|| Error::msg("bad DWA state"))?
                .iter()
                .map(|x| x.as_f64().ok_or_else(|| Error::msg("bad DWA state")))
                .collect()
        };
        self.sum = parse(&state.meta["sum"])?;
        self.count = state.meta["count"].as_u64().unwrap_or(0);
        self.history = state.meta["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(parse)
            .collect::<Result<_>>()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Softmax temperature τ.
    #[schemars(extend("exclusiveMinimum" = 0))]
    temperature: f64,
    /// Steps per averaging window (the paper's epoch).
    #[schemars(range(min = 1))]
    window: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            temperature: 2.0,
            window: 100,
        }
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    Ok(Box::new(Dwa {
        temperature: config.temperature,
        window: config.window.max(1),
        sum: Vec::new(),
        count: 0,
        history: Vec::new(),
    }))
}

register_method!(Method::new(
    "dwa",
    env!("CARGO_PKG_VERSION"),
    "Dynamic weight average: weights from the ratio of recent mean losses (Liu et al., CVPR 2019)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::tch::Tensor;

    fn dwa() -> Dwa {
        Dwa {
            temperature: 2.0,
            window: 2,
            sum: Vec::new(),
            count: 0,
            history: Vec::new(),
        }
    }

    fn step(d: &mut Dwa, l: [f32; 2]) -> Vec<f32> {
        let losses = Tensor::from_slice(&l);
        let out = d
            .weigh(&WeightingInput {
                step: 0,
                losses: &losses,
                grads: None,
                more_grads: &[],
            })
            .unwrap();
        Vec::<f32>::try_from(out.weights.unwrap()).unwrap()
    }

    #[test]
    fn the_task_whose_loss_falls_slower_gets_more_weight() {
        let mut d = dwa();
        for _ in 0..2 {
            assert_eq!(step(&mut d, [1.0, 1.0]), vec![1.0, 1.0]);
        }
        for _ in 0..2 {
            step(&mut d, [0.9, 0.5]);
        }
        // Ratios 0.9 and 0.5: task 0 gets 2·e^0.45/(e^0.45+e^0.25).
        let w = step(&mut d, [0.9, 0.5]);
        let expected = 2.0 * (0.45f64).exp() / ((0.45f64).exp() + (0.25f64).exp());
        assert!(
            (w[0] as f64 - expected).abs() < 1e-5 && (w[0] + w[1] - 2.0).abs() < 1e-5,
            "{w:?}"
        );
    }

    #[test]
    fn state_round_trip_gives_the_same_weights() {
        let mut a = dwa();
        for l in [[1.0, 2.0], [1.5, 1.0], [0.5, 1.0]] {
            step(&mut a, l);
        }
        let mut b = dwa();
        b.load_state(a.state().unwrap()).unwrap();
        for l in [[0.3, 0.2], [0.2, 0.4], [0.1, 0.1]] {
            assert_eq!(step(&mut a, l), step(&mut b, l));
        }
    }
}
