//! `kind = "mlp"`: an MLP over the float input `features`.

use taskweave_plugin_api::nn::{Linear, Mlp, MlpSpec};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::{input, require, Backbone, Inputs, Plan};
use crate::error::Result;
use crate::sections::MlpBackbone;

/// The name of the input an MLP reads.
pub const FEATURES: &str = "features";

/// The MLP that ends every backbone built of one: its hidden widths and layers.
pub struct Trunk<'a> {
    pub hidden: &'a [u32],
    pub spec: MlpSpec,
}

impl Trunk<'_> {
    /// The plan of the MLP after `sizes` (the layers before it), whose input is
    /// `width` wide.
    pub fn plan(&self, width: usize, mut sizes: Vec<(String, u128)>) -> Plan {
        let mut layer_dims = Vec::new();
        let mut from = width;
        for (i, &w) in self.hidden.iter().enumerate() {
            let w = w as usize;
            sizes.push((
                format!("model.backbone.hidden[{i}] = {w}"),
                Linear::size(from, w),
            ));
            layer_dims.push(w);
            from = w;
        }
        if layer_dims.is_empty() {
            // The identity: its one "layer" is its input.
            layer_dims.push(width);
        }
        Plan {
            layer_ranks: vec![1; layer_dims.len()],
            layer_dims,
            sizes,
            spatial: false,
        }
    }

    /// The MLP, over `width` inputs.
    pub fn build(&self, width: usize, device: Device) -> Result<Mlp> {
        let dims: Vec<usize> = std::iter::once(width)
            .chain(self.hidden.iter().map(|&w| w as usize))
            .collect();
        Ok(Mlp::new(&dims, self.spec, device)?)
    }
}

/// Every layer of `mlp` applied to `x` (just `x` for the identity).
pub fn layers(mlp: &Mlp, x: &Tensor, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
    let layers = mlp.forward_layers(x, train, update_stats)?;
    Ok(if layers.is_empty() {
        vec![x.shallow_clone()]
    } else {
        layers
    })
}

fn trunk(config: &MlpBackbone) -> Trunk<'_> {
    Trunk {
        hidden: &config.hidden,
        spec: config.mlp_spec(),
    }
}

fn width(inputs: &[InputSpec]) -> Result<usize> {
    Ok(require(inputs, "mlp", FEATURES, InputKind::Float, 1)?.shape[0])
}

pub fn plan(config: &MlpBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    Ok(trunk(config).plan(width(inputs)?, Vec::new()))
}

/// The built `mlp` backbone.
pub struct MlpTrunk {
    mlp: Mlp,
}

impl MlpTrunk {
    pub fn new(config: &MlpBackbone, inputs: &[InputSpec], device: Device) -> Result<MlpTrunk> {
        Ok(MlpTrunk {
            mlp: trunk(config).build(width(inputs)?, device)?,
        })
    }
}

impl Backbone for MlpTrunk {
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
        layers(&self.mlp, input(inputs, FEATURES)?, train, update_stats)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.mlp.parameters("backbone")
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.mlp.buffers("backbone")
    }
}
