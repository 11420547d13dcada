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

/// Refuses a backbone whose last output is feature maps `[B, C, H, W]` for
/// the mixture `name`, whose experts and gates act on the last dimension
/// (flat features `[B, C]` or tokens `[B, N, C]`).
fn refuse_maps(ctx: &MethodContext, name: &str) -> Result<()> {
    match ctx.layer_ranks.last() {
        Some(3) => Err(taskweave_plugin_api::Error::input(format!(
            "model.architecture: {name} mixes flat features [B, C] or tokens [B, N, C] (its experts and \
             gates act on the last dimension), but the backbone gives feature maps [B, C, H, W]; use \
             a `vit` backbone or hard sharing (or, where every task has one output per example, a \
             `conv` backbone with `flatten = true`)"
        ))),
        _ => Ok(()),
    }
}

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

#[cfg(test)]
mod tests {
    use taskweave_plugin_api::serde_json::json;

    use super::*;

    #[test]
    fn the_mixtures_refuse_feature_maps_as_input_errors_naming_the_key() {
        let maps = MethodContext {
            layer_ranks: vec![3].into(),
            ..testing::context(2, 8)
        };
        let config = json!({"expert_hidden": [4]});
        for (name, create) in [
            (
                "MMoE",
                mmoe::create as fn(&Value, &MethodContext, &Host) -> _,
            ),
            ("PLE", ple::create),
        ] {
            let err = create(&config, &maps, &Host::standalone()).err().unwrap();
            assert!(err.is_input(), "{name}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("model.architecture: {name} mixes")),
                "{err}"
            );
            let tokens = MethodContext {
                layer_ranks: vec![2].into(),
                ..testing::context(2, 8)
            };
            assert!(
                create(&config, &tokens, &Host::standalone()).is_ok(),
                "{name}"
            );
        }
    }
}
