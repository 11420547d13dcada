//! Task heads: per task, an MLP from the architecture's output for that task
//! to the task's outputs.

use taskweave_plugin_api::nn::{Mlp, MlpSpec};
use tch::{Device, Kind, Tensor};

use crate::data::Task;
use crate::error::{Error, Result};
use crate::sections::HeadConfig;

/// One task's head.
pub struct Head {
    mlp: Mlp,
}

impl Head {
    /// The parameter counts of the heads of `tasks` over inputs `width` wide,
    /// with what sets each.
    pub fn sizes(config: &HeadConfig, width: usize, tasks: &[Task]) -> Vec<(String, u128)> {
        let mut sizes = Vec::new();
        for task in tasks {
            let mut from = width as u128;
            for (i, &w) in config.hidden.iter().enumerate() {
                let w = w as u128;
                sizes.push((format!("model.head.hidden[{i}] = {w}"), from * w + w));
                from = w;
            }
            let out = task.output_dim() as u128;
            let key = match task.kind {
                crate::data::TaskType::Multiclass(n) => {
                    format!("the {n} classes of task `{}`", task.name)
                }
                _ => format!("the head of task `{}`", task.name),
            };
            sizes.push((key, from * out + out));
        }
        sizes
    }

    /// The head of `task` over inputs `width` wide.
    pub fn new(config: &HeadConfig, width: usize, task: &Task, device: Device) -> Result<Head> {
        let dims: Vec<usize> = std::iter::once(width)
            .chain(config.hidden.iter().map(|&w| w as usize))
            .chain(std::iter::once(task.output_dim()))
            .collect();
        let spec = MlpSpec {
            activation: config.activation,
            dropout: 0.0,
            batch_norm: false,
            activate_last: false,
        };
        Ok(Head {
            mlp: Mlp::new(&dims, spec, device)?,
        })
    }

    /// The task's outputs `[B, out]` from its features: flat `[B, C]`, tokens
    /// `[B, N, C]` (averaged over the tokens) or maps `[B, C, H, W]`
    /// (averaged over the positions).
    pub fn forward(&self, features: &Tensor, train: bool, update_stats: bool) -> Result<Tensor> {
        let pooled = match features.dim() {
            2 => features.shallow_clone(),
            3 => features.f_mean_dim(1, false, Kind::Float)?,
            4 => features.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?,
            _ => {
                return Err(Error::Method(format!(
                    "the architecture gave features of shape {:?}; heads read [B, C], [B, N, C] or [B, C, H, W]",
                    features.size()
                )))
            }
        };
        Ok(self.mlp.forward(&pooled, train, update_stats)?)
    }

    /// Every trainable tensor, named `prefix.*`.
    pub fn parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.mlp.parameters(prefix)
    }

    /// Non-trainable tensors, named `prefix.*`.
    pub fn buffers(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.mlp.buffers(prefix)
    }
}
