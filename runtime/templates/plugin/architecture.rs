//! `__METHOD__`: an architecture between the backbone and the task heads. It
//! starts as one trainable linear layer per task on the backbone's last
//! output; change `forward`. `backbone()` says which backbone outputs
//! `forward` receives (the last, all, or none when the architecture reads the
//! batch's named inputs itself), and `ctx.inputs()` lists those inputs.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, Constructor, Group, Host, Method,
    MethodContext, Parameter, Result,
};

/// The config: what `architecture = { kind = "__METHOD__", ... }` may say.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub struct Config {
    /// Width of each task's features.
    #[schemars(range(min = 1))]
    pub width: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { width: 16 }
    }
}

/// The architecture.
pub struct __TYPE__ {
    layers: Vec<Linear>,
    width: usize,
}

impl Architecture for __TYPE__ {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        // Task t's layer belongs to task t's group (SAM-MTL and the gradient
        // weightings treat the groups differently).
        let mut out = Vec::new();
        for (t, layer) in self.layers.iter().enumerate() {
            for (name, tensor) in layer.parameters(&format!("task{t}")) {
                out.push(Parameter {
                    name,
                    tensor,
                    group: Group::Task(t),
                });
            }
        }
        Ok(out)
    }

    fn output_dim(&self) -> usize {
        self.width
    }

    // The forward pass draws no random numbers and keeps nothing between
    // calls, so the runtime may train copies side by side
    // (`run.batch_threads`). Return false (the default) if yours does.
    fn replicable(&self) -> bool {
        true
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let features = input.last_layer()?;
        self.layers
            .iter()
            .map(|layer| Ok(layer.forward(features)?.f_relu()?))
            .collect()
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Architecture>> {
    let Config { width } = typed(config)?;
    let device = ctx.device()?;
    let layers = (0..ctx.num_tasks())
        .map(|_| Linear::new(ctx.feature_dim, width, device))
        .collect::<Result<_>>()?;
    Ok(Box::new(__TYPE__ { layers, width }))
}

register_method!(Method::new(
    "__METHOD__",
    env!("CARGO_PKG_VERSION"),
    "An architecture written with `taskweave plugin new`",
    schema_for::<Config>,
    Constructor::Architecture(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use taskweave_plugin_api::tch::{Device, Kind};

    #[test]
    fn one_feature_tensor_per_task_of_the_configured_width() {
        let layers = (0..3).map(|_| Linear::new(8, 5, Device::Cpu).unwrap()).collect();
        let mut method = __TYPE__ { layers, width: 5 };
        let features = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let layers = [features];
        let input = ArchitectureInput {
            inputs: &[],
            layers: &layers,
            train: true,
        };
        let out = method.forward(&input).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|t| t.size() == [4, 5]));
        assert_eq!(method.parameters().unwrap().len(), 6);
    }
}
