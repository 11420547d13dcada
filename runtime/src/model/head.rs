//! Task heads, by task type: an MLP from the architecture's features for the
//! task to its outputs for tasks with one target per example, and a small
//! upsampling decoder for per-pixel tasks.

use taskweave_plugin_api::nn::{same_tensor, Activation, Conv2d, Mlp, MlpSpec};
use tch::{Device, Kind, Tensor};

use crate::data::{Task, TaskType};
use crate::error::{Error, Result};
use crate::model::backbone::Plan;
use crate::sections::HeadConfig;

/// One task's head.
pub enum Head {
    /// Features pooled to `[B, C]`, then an MLP to `[B, out]`.
    Flat(Mlp),
    /// Tokens `[B, L, C]`, each through the same MLP: `[B, L, out]` (a
    /// language model's next-token logits). L may be shorter than the
    /// targets' length: a causal model decoding reads a prefix of a window.
    Tokens {
        /// The positions the task's targets have: the most it reads.
        length: usize,
        mlp: Mlp,
    },
    /// Feature maps (or tokens laid on their grid) through 3×3 convolutions
    /// at their resolution, a 1×1 convolution to the outputs, then bilinear
    /// upsampling to the target's size: `[B, out, H, W]`.
    Dense {
        /// The name of the task, for errors.
        task: String,
        hidden: Vec<Conv2d>,
        activation: Activation,
        out: Conv2d,
        size: (usize, usize),
    },
}

/// The widths of a dense head's convolutions, input first.
fn dense_dims(config: &HeadConfig, width: usize, task: &Task) -> Vec<usize> {
    std::iter::once(width)
        .chain(config.hidden.iter().map(|&w| w as usize))
        .chain(std::iter::once(task.output_dim()))
        .collect()
}

/// Refuses a per-pixel task over features without positions, and a
/// per-token task over features without tokens.
pub fn check_fit(task: &Task, plan: &Plan, backbone: &str) -> Result<()> {
    if let TaskType::TokenMulticlass { .. } = task.kind {
        if plan.layer_ranks.last() != Some(&2) {
            return Err(Error::Input(format!(
                "model.backbone: task `{}` is token-multiclass (one output per position), but backbone `{backbone}` gives no tokens; use backbone `transformer-lm`",
                task.name
            )));
        }
    }
    if task.kind.dense().is_some() && !plan.spatial {
        return Err(Error::Input(format!(
            "model.backbone: task `{}` is {} (one output per pixel), but backbone `{backbone}` gives one feature vector per example; per-pixel heads decode feature maps or image tokens: use backbone `conv` (without `flatten`) or `vit`",
            task.name,
            task.kind.name()
        )));
    }
    Ok(())
}

impl Head {
    /// The parameter counts of the heads of `tasks` over inputs `width` wide,
    /// with what sets each.
    pub fn sizes(config: &HeadConfig, width: usize, tasks: &[Task]) -> Vec<(String, u128)> {
        let mut sizes = Vec::new();
        for task in tasks {
            let dims = dense_dims(config, width, task);
            let last = dims.len() - 2;
            for (i, pair) in dims.windows(2).enumerate() {
                let (from, to) = (pair[0], pair[1]);
                // Hidden layers of a dense head are 3×3 convolutions.
                let taps = if task.kind.dense().is_some() && i < last {
                    9
                } else {
                    1
                };
                let n = Conv2d::size(from, to, 1, true) + (taps - 1) * (from * to) as u128;
                let key = match (i < last, task.kind) {
                    (true, _) => format!("model.head.hidden[{i}] = {to}"),
                    (
                        false,
                        TaskType::Multiclass(n)
                        | TaskType::DenseMulticlass { classes: n, .. }
                        | TaskType::TokenMulticlass { classes: n, .. },
                    ) => {
                        format!("the {n} classes of task `{}`", task.name)
                    }
                    (false, _) => format!("the head of task `{}`", task.name),
                };
                sizes.push((key, n));
            }
        }
        sizes
    }

    /// The head of `task` over features `width` wide.
    pub fn new(config: &HeadConfig, width: usize, task: &Task, device: Device) -> Result<Head> {
        let dims = dense_dims(config, width, task);
        let Some(size) = task.kind.dense() else {
            let spec = MlpSpec {
                activation: config.activation,
                dropout: 0.0,
                batch_norm: false,
                activate_last: false,
            };
            let mlp = Mlp::new(&dims, spec, device)?;
            return Ok(match task.kind {
                TaskType::TokenMulticlass { length, .. } => Head::Tokens { length, mlp },
                _ => Head::Flat(mlp),
            });
        };
        let hidden = dims[..dims.len() - 1]
            .windows(2)
            .map(|p| Conv2d::new(p[0], p[1], 3, 1, 1, true, device))
            .collect::<taskweave_plugin_api::Result<_>>()?;
        let n = dims.len();
        Ok(Head::Dense {
            task: task.name.clone(),
            hidden,
            activation: config.activation,
            out: Conv2d::new(dims[n - 2], dims[n - 1], 1, 1, 0, true, device)?,
            size,
        })
    }

    /// The task's outputs from its features: flat `[B, C]`, tokens `[B, N,
    /// C]` or maps `[B, C, H, W]`. Flat heads average tokens and positions;
    /// dense heads need tokens or maps.
    pub fn forward(&self, features: &Tensor, train: bool, update_stats: bool) -> Result<Tensor> {
        let shape_error = |what: &str| {
            Error::Method(format!(
                "the architecture gave features of shape {:?}; {what}",
                features.size()
            ))
        };
        match self {
            Head::Flat(mlp) => Ok(mlp.forward(&pooled(features)?, train, update_stats)?),
            Head::Tokens { length, mlp } => {
                if features.dim() != 3 || features.size()[1] > *length as i64 {
                    return Err(shape_error(&format!(
                        "a per-token head reads tokens [B, L ≤ {length}, C]"
                    )));
                }
                Ok(mlp.forward(features, train, update_stats)?)
            }
            Head::Dense {
                task,
                hidden,
                activation,
                out,
                size,
            } => {
                let mut x = match features.dim() {
                    4 => features.shallow_clone(),
                    3 => on_grid(features, *size).map_err(|e| {
                        Error::Method(format!("task `{task}`: {e}"))
                    })?,
                    _ => {
                        return Err(shape_error(&format!(
                            "the per-pixel head of task `{task}` reads tokens [B, N, C] or maps [B, C, H, W]"
                        )))
                    }
                };
                for conv in hidden {
                    x = activation.apply(&conv.forward(&x)?)?;
                }
                let (h, w) = (size.0 as i64, size.1 as i64);
                Ok(out
                    .forward(&x)?
                    .f_upsample_bilinear2d([h, w], false, None, None)?)
            }
        }
    }

    /// Every task's output from its features when all heads are flat: their
    /// MLPs applied together as batched products ([`Mlp::forward_many`]),
    /// with features that several tasks share (hard sharing) pooled once.
    /// `None` when some head is per-token or per-pixel.
    pub fn forward_flat(
        heads: &[Head],
        features: &[Tensor],
        train: bool,
        update_stats: bool,
    ) -> Result<Option<Vec<Tensor>>> {
        let mlps: Option<Vec<&Mlp>> = heads
            .iter()
            .map(|h| match h {
                Head::Flat(mlp) => Some(mlp),
                _ => None,
            })
            .collect();
        let Some(mlps) = mlps else {
            return Ok(None);
        };
        let mut inputs: Vec<Tensor> = Vec::with_capacity(features.len());
        for (t, f) in features.iter().enumerate() {
            inputs.push(match t {
                t if t > 0 && same_tensor(f, &features[t - 1]) => inputs[t - 1].shallow_clone(),
                _ => pooled(f)?,
            });
        }
        Ok(Some(Mlp::forward_many(
            &mlps,
            &inputs,
            train,
            update_stats,
        )?))
    }

    /// The output of a flat head's last hidden layer (its pooled input when
    /// it has none): the features a classifier's Fréchet distance compares.
    /// Evaluation mode.
    pub fn hidden(&self, features: &Tensor) -> Result<Tensor> {
        let Head::Flat(mlp) = self else {
            return Err(Error::Input(
                "a per-pixel or per-token head has no hidden features per example".into(),
            ));
        };
        let pooled = pooled(features)?;
        let mut layers = mlp.forward_layers(&pooled, false, false)?;
        layers.pop();
        Ok(layers.pop().unwrap_or(pooled))
    }

    /// Every trainable tensor, named `prefix.*`.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        match self {
            Head::Flat(mlp) | Head::Tokens { mlp, .. } => mlp.parameters(prefix),
            Head::Dense { hidden, out, .. } => {
                let mut params: Vec<(String, Tensor)> = hidden
                    .iter()
                    .enumerate()
                    .flat_map(|(i, c)| c.parameters(&format!("{prefix}.{i}")))
                    .collect();
                params.extend(out.parameters(&format!("{prefix}.out")));
                params
            }
        }
    }

    /// Non-trainable tensors, named `prefix.*`.
    pub fn buffers(&self, prefix: &str) -> Vec<(String, Tensor)> {
        match self {
            Head::Flat(mlp) | Head::Tokens { mlp, .. } => mlp.buffers(prefix),
            Head::Dense { .. } => Vec::new(),
        }
    }
}

/// Features `[B, C]`, tokens `[B, N, C]` or maps `[B, C, H, W]` as `[B, C]`:
/// tokens and positions averaged.
fn pooled(features: &Tensor) -> Result<Tensor> {
    Ok(match features.dim() {
        2 => features.shallow_clone(),
        3 => features.f_mean_dim(1, false, Kind::Float)?,
        4 => features.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?,
        _ => {
            return Err(Error::Method(format!(
                "the architecture gave features of shape {:?}; heads read [B, C], [B, N, C] or [B, C, H, W]",
                features.size()
            )))
        }
    })
}

/// Tokens `[B, N, C]` in row-major patch order as maps `[B, C, h, w]` on the
/// grid of the target's aspect ratio.
fn on_grid(tokens: &Tensor, (height, width): (usize, usize)) -> Result<Tensor> {
    let (b, n, c) = tokens.size3()?;
    let h = ((n as f64 * height as f64 / width as f64).sqrt().round() as i64).max(1);
    let w = n / h;
    if h * w != n {
        return Err(Error::Method(format!(
            "{n} tokens do not lie on a grid of the {height}×{width} target's aspect ratio"
        )));
    }
    Ok(tokens.f_transpose(1, 2)?.f_reshape([b, c, h, w])?)
}
