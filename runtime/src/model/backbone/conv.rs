//! `kind = "conv"`: a small CNN over a float image input, one feature map per
//! stage: plain stages (convolution, batch norm, ReLU, 2×2 max-pool: a
//! LeNet-like net) or residual ones (ResNet basic blocks, stride 2 from the
//! second stage on).

use taskweave_plugin_api::nn::{BatchNorm, Conv2d};
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use super::{input, require, Backbone, Inputs, Plan};
use crate::error::{Error, Result};
use crate::sections::{ConvBackbone, ConvStyle};

/// A convolution with its optional batch norm.
struct ConvNorm {
    conv: Conv2d,
    norm: Option<BatchNorm>,
}

impl ConvNorm {
    fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        bn: bool,
        device: Device,
    ) -> Result<ConvNorm> {
        Ok(ConvNorm {
            // Batch norm's shift makes a bias redundant.
            conv: Conv2d::new(cin, cout, kernel, stride, kernel / 2, !bn, device)?,
            norm: bn.then(|| BatchNorm::new(cout, device)).transpose()?,
        })
    }

    fn size(cin: usize, cout: usize, kernel: usize, bn: bool) -> u128 {
        Conv2d::size(cin, cout, kernel, !bn) + if bn { 2 * cout as u128 } else { 0 }
    }

    fn forward(&self, x: &Tensor, train: bool, update_stats: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        Ok(match &self.norm {
            Some(norm) => norm.forward(&y, train, update_stats)?,
            None => y,
        })
    }

    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.extend(self.conv.parameters(&format!("{prefix}.conv")));
        if let Some(norm) = &self.norm {
            out.extend(norm.parameters(&format!("{prefix}.norm")));
        }
    }

    fn buffers(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        if let Some(norm) = &self.norm {
            out.extend(norm.buffers(&format!("{prefix}.norm")));
        }
    }
}

/// One stage: its layers in order, and a projected shortcut (residual only).
struct Stage {
    layers: Vec<ConvNorm>,
    residual: bool,
    shortcut: Option<ConvNorm>,
}

/// The image spec's (channels, height, width).
fn image(config: &ConvBackbone, inputs: &[InputSpec]) -> Result<(usize, usize, usize)> {
    let spec = require(inputs, "conv", &config.input, InputKind::Float, 3)?;
    Ok((spec.shape[0], spec.shape[1], spec.shape[2]))
}

/// The side of a map of side `side` after stage `stage`.
fn shrink(config: &ConvBackbone, stage: usize, side: usize) -> usize {
    match config.style {
        ConvStyle::Plain => side / 2,
        ConvStyle::Residual if stage == 0 => side,
        // A stride-2 convolution padded by kernel / 2.
        ConvStyle::Residual => (side - 1) / 2 + 1,
    }
}

pub fn plan(config: &ConvBackbone, inputs: &[InputSpec]) -> Result<Plan> {
    let (mut cin, ih, iw) = image(config, inputs)?;
    let (mut h, mut w) = (ih, iw);
    let (k, bn) = (config.kernel as usize, config.batch_norm);
    if k % 2 == 0 {
        return Err(Error::Input(format!(
            "model.backbone.kernel: {k} is even; use an odd kernel so that the padding keeps the size"
        )));
    }
    let mut sizes = Vec::new();
    for (i, &c) in config.channels.iter().enumerate() {
        let c = c as usize;
        let mut n = ConvNorm::size(cin, c, k, bn);
        if config.style == ConvStyle::Residual {
            n += ConvNorm::size(c, c, k, bn);
            if i > 0 || cin != c {
                n += ConvNorm::size(cin, c, 1, bn);
            }
        }
        sizes.push((format!("model.backbone.channels[{i}] = {c}"), n));
        let (nh, nw) = (shrink(config, i, h), shrink(config, i, w));
        if nh == 0 || nw == 0 {
            return Err(Error::Input(format!(
                "model.backbone.channels: the {ih}×{iw} input `{}` shrinks to nothing at stage {i} of {}; use fewer stages or larger images",
                config.input,
                config.channels.len()
            )));
        }
        (cin, h, w) = (c, nh, nw);
    }
    let mut layer_dims: Vec<usize> = config.channels.iter().map(|&c| c as usize).collect();
    if let (true, Some(last)) = (config.flatten, layer_dims.last_mut()) {
        *last = cin * h * w;
    }
    let mut layer_ranks = vec![3; layer_dims.len()];
    if let (true, Some(last)) = (config.flatten, layer_ranks.last_mut()) {
        *last = 1;
    }
    Ok(Plan {
        layer_dims,
        layer_ranks,
        sizes,
        spatial: !config.flatten,
    })
}

/// The built `conv` backbone.
pub struct ConvTrunk {
    input: String,
    stages: Vec<Stage>,
    flatten: bool,
}

impl ConvTrunk {
    pub fn new(config: &ConvBackbone, inputs: &[InputSpec], device: Device) -> Result<ConvTrunk> {
        plan(config, inputs)?;
        let (mut cin, _, _) = image(config, inputs)?;
        let (k, bn) = (config.kernel as usize, config.batch_norm);
        let mut stages = Vec::new();
        for (i, &c) in config.channels.iter().enumerate() {
            let c = c as usize;
            let stage = match config.style {
                ConvStyle::Plain => Stage {
                    layers: vec![ConvNorm::new(cin, c, k, 1, bn, device)?],
                    residual: false,
                    shortcut: None,
                },
                ConvStyle::Residual => {
                    let stride = if i == 0 { 1 } else { 2 };
                    Stage {
                        layers: vec![
                            ConvNorm::new(cin, c, k, stride, bn, device)?,
                            ConvNorm::new(c, c, k, 1, bn, device)?,
                        ],
                        residual: true,
                        shortcut: (stride != 1 || cin != c)
                            .then(|| ConvNorm::new(cin, c, 1, stride, bn, device))
                            .transpose()?,
                    }
                }
            };
            stages.push(stage);
            cin = c;
        }
        Ok(ConvTrunk {
            input: config.input.clone(),
            stages,
            flatten: config.flatten,
        })
    }
}

impl ConvTrunk {
    /// Every convolution with its name prefix.
    fn layers(&self) -> impl Iterator<Item = (String, &ConvNorm)> {
        self.stages.iter().enumerate().flat_map(|(i, stage)| {
            let main = stage
                .layers
                .iter()
                .enumerate()
                .map(move |(j, layer)| (format!("backbone.stages.{i}.{j}"), layer));
            let shortcut = stage
                .shortcut
                .iter()
                .map(move |s| (format!("backbone.stages.{i}.shortcut"), s));
            main.chain(shortcut)
        })
    }
}

/// `x` [B, C, H, W] laid out channels-last (NHWC strides, same values) on
/// the CPU, where oneDNN's convolutions, batch norm and pooling run faster on
/// it than on NCHW (bench/results/2026-12-05-speed-ceilings.md); every later
/// layer keeps the layout. The strides are set explicitly: with one channel,
/// libtorch's own channels-last copy keeps strides it reads as NCHW.
/// Elsewhere `x` as it is: unmeasured on CUDA.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    match *x.size().as_slice() {
        [b, c, h, w] if x.device() == Device::Cpu => {
            let nhwc = x.f_permute([0, 2, 3, 1])?.f_contiguous()?;
            Ok(nhwc.f_as_strided([b, c, h, w], [h * w * c, 1, w * c, c], None)?)
        }
        _ => Ok(x.shallow_clone()),
    }
}

impl Backbone for ConvTrunk {
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
        let mut x = channels_last(input(inputs, &self.input)?)?;
        let mut out = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = if stage.residual {
                let mut y = stage.layers[0].forward(&x, train, update_stats)?.f_relu()?;
                y = stage.layers[1].forward(&y, train, update_stats)?;
                let skip = match &stage.shortcut {
                    Some(s) => s.forward(&x, train, update_stats)?,
                    None => x,
                };
                y.f_add(&skip)?.f_relu()?
            } else {
                stage.layers[0]
                    .forward(&x, train, update_stats)?
                    .f_relu()?
                    .f_max_pool2d([2i64, 2], [2i64, 2], [0i64, 0], [1i64, 1], false)?
            };
            out.push(x.shallow_clone());
        }
        if let (true, Some(last)) = (self.flatten, out.last_mut()) {
            *last = last.f_flatten(1, -1)?;
        }
        Ok(out)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (prefix, layer) in self.layers() {
            layer.parameters(&prefix, &mut out);
        }
        out
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (prefix, layer) in self.layers() {
            layer.buffers(&prefix, &mut out);
        }
        out
    }
}
