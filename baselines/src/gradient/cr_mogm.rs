//! CR-MOGM (Zhou, Zhang, Chen, Wang, Lin, Ji, Zhang, "On the Convergence of
//! Stochastic Multi-Objective Gradient Manipulation and Beyond", NeurIPS
//! 2022; TorchJD 0.18's `CRMOGMWeighting`): any gradient weighting whose
//! weights are smoothed across steps, `λ ← αλ + (1 − α)λ̂`, with `λ̂` the
//! `base` weighting's weights this step, which lowers the bias of the
//! stochastic update. The update is `Σ λ_i g_i`. `λ` starts as the first `λ̂`
//! (or `initial_weights`). The `base` must report per-task weights (every
//! built-in gradient weighting but `trimmed-mean` and `graddrop`). Its state
//! and `λ` are both checkpointed. (Tested in tests/peer.rs: creating the
//! base needs the runtime's registry.)

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::Kind;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{checked, task_names, weighted};
use super::preference::preference;
use crate::vectors::{load_vector, vector_state};

/// The CR-MOGM weighting.
struct CrMogm {
    tasks: Vec<String>,
    base: Box<dyn Weighting>,
    alpha: f64,
    /// The smoothed weights; `None` before the first step (unless given).
    lambda: Option<Vec<f64>>,
}

impl Weighting for CrMogm {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (grads, _) = checked(input, &self.tasks)?;
        let out = self.base.weigh(input)?;
        let fresh = out.weights.ok_or_else(|| {
            Error::input("cr-mogm's `base` reports no per-task weights (trimmed-mean and graddrop do not): choose a weighting that does")
        })?;
        let fresh = Vec::<f64>::try_from(
            &fresh
                .f_to_kind(Kind::Double)?
                .f_to_device(taskweave_plugin_api::tch::Device::Cpu)?,
        )?;
        let lambda = match self.lambda.take() {
            None => fresh,
            Some(previous) => previous
                .iter()
                .zip(&fresh)
                .map(|(p, f)| self.alpha * p + (1.0 - self.alpha) * f)
                .collect(),
        };
        let update = weighted(grads, &lambda);
        self.lambda = Some(lambda);
        update
    }

    fn state(&self) -> Result<State> {
        let mut state = match &self.lambda {
            Some(lambda) => vector_state(&[("lambda", lambda)])?,
            None => State::default(),
        };
        state.nest("base", self.base.state()?);
        if state.meta.is_null() {
            state.meta = json!({});
        }
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        self.base.load_state(state.unnest("base"))?;
        state.meta = Value::Null;
        self.lambda = load_vector(&mut state, "cr-mogm", "lambda", self.tasks.len())?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The gradient weighting whose weights are smoothed.
    #[schemars(extend("x-taskweave-role" = "Weighting"))]
    base: Value,
    /// Weight of the previous smoothed weights, in [0, 1].
    #[schemars(range(min = 0.0, max = 1.0))]
    alpha: f64,
    /// The smoothed weights before the first step, one per task (default: the base's first weights).
    initial_weights: Option<Vec<f64>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            base: json!({ "kind": "mgda" }),
            alpha: 0.9,
            initial_weights: None,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = task_names(ctx)?;
    let base = host.weighting(&config.base, ctx)?;
    if base.kind() != WeightingKind::Gradient {
        return Err(Error::input(format!(
            "cr-mogm's `base` must be a gradient weighting, got the loss weighting {}",
            config.base
        )));
    }
    let lambda = match config.initial_weights.as_deref() {
        Some(w) => Some(preference(Some(w), tasks.len(), 0.0).map_err(|_| {
            Error::input(format!(
                "cr-mogm's `initial_weights` needs {} finite numbers, got {w:?}",
                tasks.len()
            ))
        })?),
        None => None,
    };
    Ok(Box::new(CrMogm {
        tasks,
        base,
        alpha: config.alpha,
        lambda,
    }))
}

register_method!(Method::new(
    "cr-mogm",
    env!("CARGO_PKG_VERSION"),
    "CR-MOGM: any gradient weighting's weights smoothed by a moving average across steps (Zhou et al., NeurIPS 2022)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));
