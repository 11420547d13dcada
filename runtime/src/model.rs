//! The multi-task model: a shared backbone, an [`Architecture`] method between
//! the backbone and the heads, and one head per task.

use taskweave_plugin_api::nn::{Mlp, MlpSpec};
use taskweave_plugin_api::{Architecture, Group};
use tch::{Device, Tensor};

use crate::data::Task;
use crate::error::{Error, Result};
use crate::sections::ModelConfig;

/// A trainable tensor of the model or of a method, with its group.
pub struct Param {
    /// Unique name, as in checkpoints (`backbone.0.weight`, `heads.task1.0.bias`).
    pub name: String,
    /// The leaf tensor (shares storage with the method that owns it).
    pub tensor: Tensor,
    /// Which parameter group it belongs to; `None` for method parameters
    /// (weighting and strategy parameters), which are in no task group.
    pub group: Option<Group>,
}

/// Backbone → architecture → heads.
pub struct Model {
    backbone: Mlp,
    architecture: Box<dyn Architecture>,
    heads: Vec<Mlp>,
    task_names: Vec<String>,
}

fn widths(hidden: &[u32]) -> Vec<usize> {
    hidden.iter().map(|&w| w as usize).collect()
}

/// Refuses a backbone and heads whose weights and gradients alone (the least
/// any optimizer keeps) cannot fit on `device`, before anything is allocated,
/// naming the widest layer's key. The architecture between them is the
/// method's to size; the heads are counted as if it kept the backbone's width.
pub fn check_size(
    config: &ModelConfig,
    input_dim: usize,
    tasks: &[Task],
    device: Device,
) -> Result<()> {
    let mut layers: Vec<(String, u128)> = Vec::new();
    let backbone = widths(&config.backbone.hidden);
    let mut width = input_dim as u128;
    for (i, w) in backbone.iter().enumerate() {
        let w = *w as u128;
        layers.push((format!("model.backbone.hidden[{i}] = {w}"), width * w + w));
        width = w;
    }
    let head = widths(&config.head.hidden);
    for task in tasks {
        let mut from = width;
        for (i, w) in head.iter().enumerate() {
            let w = *w as u128;
            layers.push((format!("model.head.hidden[{i}] = {w}"), from * w + w));
            from = w;
        }
        let out = task.output_dim() as u128;
        let key = match task.kind {
            crate::data::TaskType::Multiclass(n) => {
                format!("the {n} classes of task `{}`", task.name)
            }
            _ => format!("the head of task `{}`", task.name),
        };
        layers.push((key, from * out + out));
    }
    let total: u128 = layers.iter().map(|(_, n)| n).sum();
    let widest = layers
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(key, n)| format!("a model of {total} parameters ({key} makes a layer of {n})"));
    crate::device::ensure_fits(device, total * 4 * 2, || widest.unwrap_or_default())
}

impl Model {
    /// Builds the backbone and heads from the validated `[model]` table around
    /// an already created `architecture` (whose input is the backbone output).
    pub fn new(
        config: &ModelConfig,
        input_dim: usize,
        tasks: &[Task],
        architecture: Box<dyn Architecture>,
        device: Device,
    ) -> Result<Model> {
        let b = &config.backbone;
        let dims: Vec<usize> = std::iter::once(input_dim)
            .chain(widths(&b.hidden))
            .collect();
        let spec = MlpSpec {
            activation: b.activation,
            dropout: b.dropout,
            batch_norm: b.batch_norm,
            activate_last: true,
        };
        let backbone = Mlp::new(&dims, spec, device)?;
        let head = &config.head;
        let head_spec = MlpSpec {
            activation: head.activation,
            dropout: 0.0,
            batch_norm: false,
            activate_last: false,
        };
        let heads = tasks
            .iter()
            .map(|task| {
                let dims: Vec<usize> = std::iter::once(architecture.output_dim())
                    .chain(widths(&head.hidden))
                    .chain(std::iter::once(task.output_dim()))
                    .collect();
                Ok(Mlp::new(&dims, head_spec, device)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            backbone,
            architecture,
            heads,
            task_names: tasks.iter().map(|t| t.name.clone()).collect(),
        })
    }

    /// Width of the backbone's output (the architecture's input).
    pub fn feature_dim(config: &ModelConfig, input_dim: usize) -> usize {
        config
            .backbone
            .hidden
            .last()
            .map_or(input_dim, |&w| w as usize)
    }

    /// Per-task outputs `[B, out_t]` for inputs `[B, D]`. `update_stats = false`
    /// keeps normalisation statistics unchanged (passes at perturbed weights).
    pub fn forward(&mut self, x: &Tensor, train: bool, update_stats: bool) -> Result<Vec<Tensor>> {
        let features = self.backbone.forward(x, train, update_stats)?;
        let per_task = self.architecture.forward(&features, train)?;
        if per_task.len() != self.heads.len() {
            return Err(Error::Method(format!(
                "the architecture returned {} feature tensors for {} tasks",
                per_task.len(),
                self.heads.len()
            )));
        }
        per_task
            .iter()
            .zip(&self.heads)
            .map(|(f, head)| Ok(head.forward(f, train, update_stats)?))
            .collect()
    }

    /// Every trainable tensor with its group.
    pub fn parameters(&self) -> Result<Vec<Param>> {
        let mut params: Vec<Param> = self
            .backbone
            .parameters("backbone")
            .into_iter()
            .map(|(name, tensor)| Param {
                name,
                tensor,
                group: Some(Group::Shared),
            })
            .collect();
        for p in self.architecture.parameters()? {
            params.push(Param {
                name: format!("architecture.{}", p.name),
                tensor: p.tensor,
                group: Some(p.group),
            });
        }
        for (t, (head, name)) in self.heads.iter().zip(&self.task_names).enumerate() {
            for (pname, tensor) in head.parameters(&format!("heads.{name}")) {
                params.push(Param {
                    name: pname,
                    tensor,
                    group: Some(Group::Task(t)),
                });
            }
        }
        Ok(params)
    }

    /// Non-trainable tensors checkpoints must hold (batch-norm statistics).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = self.backbone.buffers("backbone");
        for (head, name) in self.heads.iter().zip(&self.task_names) {
            out.extend(head.buffers(&format!("heads.{name}")));
        }
        out
    }

    /// The architecture, for its state in checkpoints.
    pub fn architecture(&self) -> &dyn Architecture {
        self.architecture.as_ref()
    }

    /// The architecture, to restore its state.
    pub fn architecture_mut(&mut self) -> &mut dyn Architecture {
        self.architecture.as_mut()
    }
}
