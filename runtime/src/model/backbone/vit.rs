//! `kind = "vit"`: a vision transformer over a float image input: the image
//! cut into `patch`×`patch` patches, each projected to a token (one strided
//! convolution), plus a learned position embedding, then the blocks of
//! [`Stack`]. Every block's tokens `[B, N, dim]` are an output, in row-major
//! patch order (no class token: heads average the tokens, per-pixel heads lay
//! them back on the patch grid).

use taskweave_plugin_api::nn::Conv2d;
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::stack::{positions, Stack, StackSpec};
use super::{input, require, Backbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::VitBackbone;

/// The image's channels and the number of patches.
fn patches(config: &VitBackbone, inputs: &[InputSpec]) -> Result<(usize, usize)> {
    let image = require(inputs, "vit", &config.input, InputKind::Float, 3)?;
    let (c, h, w, p) = (
        image.shape[0],
        image.shape[1],
        image.shape[2],
        config.patch as usize,
    );
    if h % p != 0 || w % p != 0 {
        return Err(Error::Input(format!(
            "model.backbone.patch: patches of {p}×{p} do not tile the {h}×{w} input `{}`; pick a patch size that divides both",
            config.input
        )));
    }
    Ok((c, (h / p) * (w / p)))
}

pub fn plan(config: &VitBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let (c, n) = patches(config, inputs)?;
    let (dim, p) = (config.dim as usize, config.patch as usize);
    let mut sizes = vec![(
        format!("model.backbone.dim = {dim} (patch embedding of {n} patches)"),
        Conv2d::size(c, dim, p, true) + (n * dim) as u128,
    )];
    sizes.extend(StackSpec::new(config.blocks(), false).sizes()?);
    Ok(Plan {
        layer_dims: vec![dim; config.depth as usize],
        layer_ranks: vec![2; config.depth as usize],
        sizes,
        spatial: true,
    })
}

/// The built `vit` backbone.
pub struct VitTrunk {
    input: String,
    embed: Conv2d,
    positions: Tensor,
    stack: Stack,
}

impl VitTrunk {
    pub fn new(config: &VitBackbone, inputs: &[InputSpec], device: Device) -> Result<VitTrunk> {
        let (c, n) = patches(config, inputs)?;
        let (dim, p) = (config.dim as usize, config.patch as usize);
        Ok(VitTrunk {
            input: config.input.clone(),
            embed: Conv2d::new(c, dim, p, p, 0, true, device)?,
            positions: positions(n, dim, device)?,
            stack: Stack::new(&StackSpec::new(config.blocks(), false), device)?,
        })
    }
}

impl Backbone for VitTrunk {
    fn forward(&self, inputs: &Inputs, _train: bool, _update_stats: bool) -> Result<Vec<Tensor>> {
        // [B, dim, H/p, W/p] → [B, N, dim].
        let tokens = self
            .embed
            .forward(input(inputs, &self.input)?)?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        self.stack.forward(tokens.f_add(&self.positions)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.embed.parameters("backbone.patch_embedding");
        out.push(("backbone.positions".into(), self.positions.shallow_clone()));
        out.extend(self.stack.parameters());
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
