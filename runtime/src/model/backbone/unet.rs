//! `kind = "unet"`: a U-Net denoiser over a float image input and
//! per-example conditioning features, giving one feature map at the input's
//! resolution (see [`UnetBackbone`] for the layout). The layout is worked
//! out once ([`Layout`]), and both the plan's parameter counts and the
//! built modules are read from it.

use taskweave_plugin_api::nn::{Conv2d, GroupNorm, Linear};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::{input, require, Backbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::UnetBackbone;

/// The channels (in, out) of every convolution and residual block, level
/// by level, and the conditioning MLP's widths.
struct Layout {
    image: usize,
    condition: usize,
    embed: usize,
    /// Per level, finest first: its blocks' (in, out) on the way down.
    down: Vec<Vec<(usize, usize)>>,
    /// The channels of the deepest level (the middle block's in and out).
    middle: usize,
    /// Per level, deepest first: the channels arriving from below, and its
    /// blocks' (in, out) on the way up (the first reads the skip as well).
    up: Vec<(usize, Vec<(usize, usize)>)>,
    channels: Vec<usize>,
    groups: usize,
}

impl Layout {
    fn new(config: &UnetBackbone, inputs: &[InputSpec]) -> Result<Layout> {
        let image = require(inputs, "unet", &config.input, InputKind::Float, 3)?.shape[0];
        let condition = require(inputs, "unet", &config.condition, InputKind::Float, 1)?.shape[0];
        let channels: Vec<usize> = config.channels.iter().map(|&c| c as usize).collect();
        let groups = config.groups as usize;
        if let Some(c) = channels.iter().find(|&&c| !c.is_multiple_of(groups)) {
            return Err(Error::Input(format!(
                "model.backbone.groups: {groups} groups do not divide the {c} channels of a level; pick groups that divide every entry of channels"
            )));
        }
        let blocks = config.blocks as usize;
        let mut down = Vec::new();
        let mut from = channels[0];
        for &c in &channels {
            let level: Vec<(usize, usize)> = (0..blocks)
                .map(|b| (if b == 0 { from } else { c }, c))
                .collect();
            down.push(level);
            from = c;
        }
        let middle = from;
        let up = channels
            .iter()
            .rev()
            .map(|&c| {
                let arriving = from;
                from = c;
                let level = (0..blocks)
                    .map(|b| (if b == 0 { arriving + c } else { c }, c))
                    .collect();
                (arriving, level)
            })
            .collect();
        Ok(Layout {
            image,
            condition,
            embed: 4 * channels[0],
            down,
            middle,
            up,
            channels,
            groups,
        })
    }

    /// Each level's parameter count with the key that sets it; the stem,
    /// the conditioning MLP and the last norm count for the first level.
    fn sizes(&self) -> Vec<(String, u128)> {
        let block = |&(cin, cout): &(usize, usize)| ResBlock::size(cin, cout, self.embed);
        let c0 = self.channels[0];
        let levels = self.channels.len();
        self.channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut n: u128 = self.down[i].iter().map(block).sum::<u128>()
                    + self.up[levels - 1 - i].1.iter().map(block).sum::<u128>();
                if i + 1 < levels {
                    // The stride-2 convolution down from this level, and
                    // the one after upsampling from the level below.
                    let below = self.channels[i + 1];
                    n += Conv2d::size(c, c, 3, true) + Conv2d::size(below, below, 3, true);
                } else {
                    n += ResBlock::size(self.middle, self.middle, self.embed);
                }
                if i == 0 {
                    n += Conv2d::size(self.image, c0, 3, true)
                        + (Linear::size(self.condition, self.embed)
                            + Linear::size(self.embed, self.embed))
                        + GroupNorm::size(c0);
                }
                (format!("model.backbone.channels[{i}] = {c}"), n)
            })
            .collect()
    }
}

pub fn plan(config: &UnetBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let layout = Layout::new(config, inputs)?;
    Ok(Plan {
        layer_dims: vec![layout.channels[0]],
        layer_ranks: vec![3],
        sizes: layout.sizes(),
        spatial: true,
    })
}

/// DDPM's residual block: two (group norm, SiLU, 3×3 convolution), the
/// conditioning's projection added per channel between them, and a 1×1
/// shortcut when the channels change.
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    condition: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResBlock {
    fn new(cin: usize, cout: usize, embed: usize, groups: usize, device: Device) -> Result<Self> {
        Ok(ResBlock {
            norm1: GroupNorm::new(cin, groups, device)?,
            conv1: Conv2d::new(cin, cout, 3, 1, 1, true, device)?,
            condition: Linear::new(embed, cout, device)?,
            norm2: GroupNorm::new(cout, groups, device)?,
            conv2: Conv2d::new(cout, cout, 3, 1, 1, true, device)?,
            shortcut: (cin != cout)
                .then(|| Conv2d::new(cin, cout, 1, 1, 0, true, device))
                .transpose()?,
        })
    }

    fn size(cin: usize, cout: usize, embed: usize) -> u128 {
        GroupNorm::size(cin)
            + Conv2d::size(cin, cout, 3, true)
            + Linear::size(embed, cout)
            + GroupNorm::size(cout)
            + Conv2d::size(cout, cout, 3, true)
            + if cin != cout {
                Conv2d::size(cin, cout, 1, true)
            } else {
                0
            }
    }

    /// `x` `[B, cin, H, W]` with the activated conditioning `embed` `[B, E]`.
    fn forward(&self, x: &Tensor, embed: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.f_silu()?)?;
        let shift = self
            .condition
            .forward(embed)?
            .f_unsqueeze(-1)?
            .f_unsqueeze(-1)?;
        let h = self
            .conv2
            .forward(&self.norm2.forward(&h.f_add(&shift)?)?.f_silu()?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.shallow_clone(),
        };
        Ok(h.f_add(&skip)?)
    }

    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.extend(self.norm1.parameters(&format!("{prefix}.norm1")));
        out.extend(self.conv1.parameters(&format!("{prefix}.conv1")));
        out.extend(self.condition.parameters(&format!("{prefix}.condition")));
        out.extend(self.norm2.parameters(&format!("{prefix}.norm2")));
        out.extend(self.conv2.parameters(&format!("{prefix}.conv2")));
        if let Some(s) = &self.shortcut {
            out.extend(s.parameters(&format!("{prefix}.shortcut")));
        }
    }
}

/// One level of either path: its blocks and the convolution that changes
/// resolution (after the blocks going down, before them going up).
struct Level {
    blocks: Vec<ResBlock>,
    resample: Option<Conv2d>,
}

/// The built `unet` backbone.
pub struct UnetTrunk {
    input: String,
    condition: String,
    embed: [Linear; 2],
    stem: Conv2d,
    down: Vec<Level>,
    middle: ResBlock,
    /// Deepest first.
    up: Vec<Level>,
    norm: GroupNorm,
}

impl UnetTrunk {
    pub fn new(config: &UnetBackbone, inputs: &[InputSpec], device: Device) -> Result<UnetTrunk> {
        let layout = Layout::new(config, inputs)?;
        let (e, g, levels) = (layout.embed, layout.groups, layout.channels.len());
        let blocks = |pairs: &[(usize, usize)]| -> Result<Vec<ResBlock>> {
            pairs
                .iter()
                .map(|&(cin, cout)| ResBlock::new(cin, cout, e, g, device))
                .collect()
        };
        let conv = |c: usize, stride: usize| Conv2d::new(c, c, 3, stride, 1, true, device);
        let down = layout
            .down
            .iter()
            .zip(&layout.channels)
            .enumerate()
            .map(|(i, (pairs, &c))| {
                Ok(Level {
                    blocks: blocks(pairs)?,
                    resample: (i + 1 < levels).then(|| conv(c, 2)).transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        let up = layout
            .up
            .iter()
            .enumerate()
            .map(|(i, (arriving, pairs))| {
                Ok(Level {
                    blocks: blocks(pairs)?,
                    resample: (i > 0).then(|| conv(*arriving, 1)).transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        let c0 = layout.channels[0];
        Ok(UnetTrunk {
            input: config.input.clone(),
            condition: config.condition.clone(),
            embed: [
                Linear::new(layout.condition, e, device)?,
                Linear::new(e, e, device)?,
            ],
            stem: Conv2d::new(layout.image, c0, 3, 1, 1, true, device)?,
            down,
            middle: ResBlock::new(layout.middle, layout.middle, e, g, device)?,
            up,
            norm: GroupNorm::new(c0, g, device)?,
        })
    }
}

/// The parameters of the levels of one path, named `backbone.{path}.{i}.*`.
fn level_parameters(path: &str, levels: &[Level], out: &mut Vec<(String, Tensor)>) {
    for (i, level) in levels.iter().enumerate() {
        for (j, block) in level.blocks.iter().enumerate() {
            block.parameters(&format!("backbone.{path}.{i}.{j}"), out);
        }
        if let Some(conv) = &level.resample {
            out.extend(conv.parameters(&format!("backbone.{path}.{i}.resample")));
        }
    }
}

impl Backbone for UnetTrunk {
    fn forward(&self, inputs: &Inputs, _train: bool, _update_stats: bool) -> Result<Vec<Tensor>> {
        let x = input(inputs, &self.input)?;
        let condition = input(inputs, &self.condition)?;
        let embed = self.embed[1]
            .forward(&self.embed[0].forward(condition)?.f_silu()?)?
            .f_silu()?;
        let mut h = self.stem.forward(x)?;
        let mut skips = Vec::with_capacity(self.down.len());
        for level in &self.down {
            for block in &level.blocks {
                h = block.forward(&h, &embed)?;
            }
            skips.push(h.shallow_clone());
            if let Some(conv) = &level.resample {
                h = conv.forward(&h)?;
            }
        }
        h = self.middle.forward(&h, &embed)?;
        for level in &self.up {
            let skip = skips.pop().expect("one skip per level");
            if let Some(conv) = &level.resample {
                let size = skip.size();
                h = conv.forward(&h.f_upsample_nearest2d([size[2], size[3]], None, None)?)?;
            }
            h = Tensor::f_cat(&[h, skip], 1)?;
            for block in &level.blocks {
                h = block.forward(&h, &embed)?;
            }
        }
        Ok(vec![self.norm.forward(&h)?.f_silu()?])
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, linear) in self.embed.iter().enumerate() {
            out.extend(linear.parameters(&format!("backbone.embed.{i}")));
        }
        out.extend(self.stem.parameters("backbone.stem"));
        level_parameters("down", &self.down, &mut out);
        self.middle.parameters("backbone.middle", &mut out);
        level_parameters("up", &self.up, &mut out);
        out.extend(self.norm.parameters("backbone.norm"));
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
