//! `__METHOD__`: a training strategy. It starts as the plain step (the sum
//! of the task losses, one backward pass, one optimizer step); change `step`.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, StepOps, StepReport,
    Strategy,
};

/// The strategy.
pub struct __TYPE__;

impl Strategy for __TYPE__ {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        ops.next_batch()?;
        let losses = ops.losses(true)?;
        ops.backward(&losses.f_sum(None)?)?;
        ops.optimizer_step()?;
        Ok(StepReport {
            losses: losses.f_detach()?,
            weights: None,
        })
    }
}

fn create(_config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Strategy>> {
    Ok(Box::new(__TYPE__))
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
