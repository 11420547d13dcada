//! `__METHOD__`: a training strategy. It starts as the standard step, which
//! it creates through the host and delegates to: one forward pass, the
//! pipeline's `train.weighting` combining the task losses (or their
//! gradients), one optimizer step. Write your own `step` with the
//! [`StepOps`] calls (`next_batch`, `losses`, `grads`, `backward`,
//! `set_grads`, `optimizer_step`, ...), keeping what it needs of the inner
//! strategy or none of it.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, State, StepOps,
    StepReport, Strategy,
};

/// The strategy.
pub struct __TYPE__ {
    /// The standard step, with the pipeline's weighting.
    standard: Box<dyn Strategy>,
}

impl Strategy for __TYPE__ {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        self.standard.step(ops)
    }

    // The weighting's own parameters (UW's) train with the model, and its
    // state is saved in checkpoints: pass both on.
    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.standard.parameters()
    }

    fn state(&self) -> Result<State> {
        let mut state = State::default();
        state.nest("standard", self.standard.state()?);
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        self.standard.load_state(state.unnest("standard"))
    }
}

fn create(_config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Strategy>> {
    Ok(Box::new(__TYPE__ {
        standard: host.strategy(&json!({"kind": "standard"}), ctx)?,
    }))
}

register_method!(Method::new(
    "__METHOD__",
    env!("CARGO_PKG_VERSION"),
    "A training strategy written with `taskweave plugin new`",
    schema_for::<NoKeys>,
    Constructor::Strategy(create),
));

#[cfg(test)]
mod tests {
    use taskweave_plugin_api::method::registered;

    #[test]
    fn the_method_is_registered_as_a_strategy() {
        let method = registered().find(|m| m.name == "__METHOD__").unwrap();
        assert_eq!(method.manifest().role, taskweave_plugin_api::Role::Strategy);
    }
}
