//! Convolution and group normalisation layers over images `[B, C, H, W]`.

use tch::{Device, Tensor};

use crate::{Error, Result};

use super::uniform;

/// A 2-D convolution with a square kernel, as `torch.nn.Conv2d` (one group,
/// no dilation).
pub struct Conv2d {
    /// `[outputs, inputs, kernel, kernel]`.
    pub weight: Tensor,
    /// `[outputs]`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// Step between positions.
    pub stride: i64,
    /// Zeros added on each side.
    pub padding: i64,
}

impl Conv2d {
    /// A layer initialised like `torch.nn.Conv2d` (weight and bias uniform in
    /// ±1/√(inputs·kernel²)), drawing from libtorch's global generator.
    pub fn new(
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: Device,
    ) -> Result<Conv2d> {
        let k = kernel as i64;
        let bound = 1.0 / ((inputs * kernel * kernel).max(1) as f64).sqrt();
        Ok(Conv2d {
            weight: uniform(&[outputs as i64, inputs as i64, k, k], bound, device)?,
            bias: if bias {
                Some(uniform(&[outputs as i64], bound, device)?)
            } else {
                None
            },
            stride: stride as i64,
            padding: padding as i64,
        })
    }

    /// Applies the layer to `x` `[B, inputs, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride; 2],
            [self.padding; 2],
            [1i64; 2],
            1,
        )?)
    }

    /// `prefix.weight` and, with a bias, `prefix.bias`, sharing storage.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{prefix}.weight"), self.weight.shallow_clone())];
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}.bias"), b.shallow_clone()));
        }
        out
    }

    /// The number of trainable values of a layer built with these arguments.
    pub fn size(inputs: usize, outputs: usize, kernel: usize, bias: bool) -> u128 {
        let weights = (inputs * kernel * kernel * outputs) as u128;
        weights + if bias { outputs as u128 } else { 0 }
    }
}

/// Group normalisation over maps, as `torch.nn.GroupNorm`: the channels in
/// `groups` equal groups, each normalised over its channels and positions
/// per example, then scaled and shifted per channel. Unlike batch norm it
/// keeps no statistics, so a denoiser behaves the same in training and
/// evaluation.
pub struct GroupNorm {
    /// Scale γ, `[channels]`, initially 1.
    pub weight: Tensor,
    /// Shift β, `[channels]`, initially 0.
    pub bias: Tensor,
    /// Number of groups; divides the channels.
    pub groups: i64,
}

impl GroupNorm {
    const EPS: f64 = 1e-5;

    /// γ = 1, β = 0; refuses `groups` that do not divide `channels`.
    pub fn new(channels: usize, groups: usize, device: Device) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::input(format!(
                "group normalisation: {groups} groups do not divide {channels} channels"
            )));
        }
        let (weight, bias) = super::identity_affine(channels, device)?;
        Ok(GroupNorm {
            weight,
            bias,
            groups: groups as i64,
        })
    }

    /// Normalises `x` `[B, channels, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            Self::EPS,
            false,
        )?)
    }

    /// `prefix.weight` and `prefix.bias`, sharing storage.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        super::weight_and_bias(prefix, &self.weight, &self.bias)
    }

    /// The number of trainable values of a layer over `channels` channels.
    pub fn size(channels: usize) -> u128 {
        2 * channels as u128
    }
}
