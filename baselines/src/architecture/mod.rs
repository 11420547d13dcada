//! Baseline architectures between the backbone and the task heads: hard
//! sharing, MMoE and PLE. The mixtures work on any features whose last
//! dimension is the width: flat `[B, C]` and tokens `[B, N, C]` alike.

mod mmoe;
mod ple;

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, Constructor, Host, Method, MethodContext,
    Parameter, Result,
};

/// Hard parameter sharing: every head reads the backbone's last output.
struct HardSharing {
    dim: usize,
    tasks: usize,
}

impl Architecture for HardSharing {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        Ok(Vec::new())
    }

    // The backbone's features as they are.
    fn replicable(&self) -> bool {
        true
    }

    fn output_dim(&self) -> usize {
        self.dim
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let features = input.last_layer()?;
        Ok((0..self.tasks).map(|_| features.shallow_clone()).collect())
    }
}

fn create_hard(
    _config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Architecture>> {
    Ok(Box::new(HardSharing {
        dim: ctx.feature_dim,
        tasks: ctx.num_tasks(),
    }))
}

register_method!(Method::new(
    "hard-sharing",
    env!("CARGO_PKG_VERSION"),
    "Hard parameter sharing: the backbone's features go to every task head",
    schema_for::<NoKeys>,
    Constructor::Architecture(create_hard),
));

#[cfg(test)]
pub(crate) mod testing {
    use taskweave_plugin_api::tch::{Device, Kind, Tensor};
    use taskweave_plugin_api::{Architecture, ArchitectureInput, MethodContext};

    /// A context with `tasks` tasks on the CPU and backbone features of width `dim`.
    pub fn context(tasks: usize, dim: usize) -> MethodContext {
        MethodContext {
            tasks: (0..tasks).map(|t| format!("task{t}").into()).collect(),
            device: "cpu".into(),
            feature_dim: dim,
            layer_dims: vec![dim].into(),
            weighting: "{}".into(),
            ..Default::default()
        }
    }

    /// `arch`'s outputs for random backbone features of shape `shape`.
    pub fn forward(arch: &mut dyn Architecture, shape: &[i64]) -> Vec<Tensor> {
        let features = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let layers = [features];
        arch.forward(&ArchitectureInput {
            inputs: &[],
            layers: &layers,
            train: true,
        })
        .unwrap()
    }
}
