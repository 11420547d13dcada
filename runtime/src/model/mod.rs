//! The multi-task model: a shared backbone (a kind, see [`backbone`]), an
//! [`Architecture`] method between the backbone and the heads, and one head
//! per task.

pub mod backbone;
mod head;

use taskweave_plugin_api::nn::{same_tensor, KvCache};
use taskweave_plugin_api::{Architecture, BackboneUse, Group, InputSpec};
use tch::{Device, Tensor};

use crate::data::Task;
use crate::error::{Error, Result};
use crate::sections::ModelConfig;
use backbone::{Backbone, Inputs, Plan};
use head::Head;

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
    /// None when the architecture replaces the backbone (`BackboneUse::None`).
    backbone: Option<Box<dyn Backbone>>,
    /// What the architecture reads of the backbone (asked once: it is fixed).
    uses: BackboneUse,
    architecture: Box<dyn Architecture>,
    /// One head per task, or one for all (`model.head.shared`).
    heads: Vec<Head>,
    shared_head: bool,
    task_names: Vec<String>,
}

/// The tasks that get a head of their own: the first alone when one head
/// is shared.
fn headed<'a>(config: &ModelConfig, tasks: &'a [Task]) -> &'a [Task] {
    match config.head.shared {
        true => &tasks[..tasks.len().min(1)],
        false => tasks,
    }
}

/// Refuses a backbone and heads whose `copies` float32 values per parameter
/// (the weights, their gradients, the optimizer's state, and the copy of
/// weights and state a checkpoint writes) cannot fit on `device`, before
/// anything is allocated, naming the widest layer's key. The architecture
/// between them is the method's to size; the heads are counted as if it kept
/// the backbone's width.
pub fn check_size(
    config: &ModelConfig,
    plan: &Plan,
    tasks: &[Task],
    device: Device,
    copies: u128,
) -> Result<()> {
    let mut layers = plan.sizes.clone();
    let width = plan.layer_dims.last().copied().unwrap_or(0);
    layers.extend(Head::sizes(&config.head, width, headed(config, tasks)));
    let total: u128 = layers.iter().map(|(_, n)| n).sum();
    let widest = layers
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(key, n)| format!("a model of {total} parameters ({key} makes a layer of {n})"));
    crate::device::ensure_fits(device, total * 4 * copies, || widest.unwrap_or_default())
}

impl Model {
    /// Builds the backbone (unless the architecture replaces it) and heads
    /// from the validated `[model]` table, over the data's `inputs`, around an
    /// already created `architecture`.
    pub fn new(
        config: &ModelConfig,
        inputs: &[InputSpec],
        tasks: &[Task],
        architecture: Box<dyn Architecture>,
        device: Device,
    ) -> Result<Model> {
        let uses = architecture.backbone();
        let backbone = match uses {
            BackboneUse::None => None,
            _ => {
                // An architecture that replaces the backbone answers for its
                // features' shape at the first batch instead.
                let plan = backbone::plan(&config.backbone, inputs)?;
                for task in tasks {
                    head::check_fit(task, &plan, config.backbone.kind())?;
                }
                Some(backbone::build(&config.backbone, inputs, device)?)
            }
        };
        if config.head.shared {
            if let Some(other) = tasks.iter().find(|t| t.kind != tasks[0].kind) {
                // The widths tell apart two tasks of one type (multiclass with 3 and 5 classes).
                let kind = |t: &Task| format!("{} ({} outputs)", t.kind.name(), t.output_dim());
                return Err(Error::Input(format!(
                    "model.head.shared: one head serves every task, but task `{}` is {} and task `{}` is {}",
                    tasks[0].name,
                    kind(&tasks[0]),
                    other.name,
                    kind(other)
                )));
            }
        }
        let heads = headed(config, tasks)
            .iter()
            .map(|task| Head::new(&config.head, architecture.output_dim(), task, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            backbone,
            uses,
            architecture,
            heads,
            shared_head: config.head.shared,
            task_names: tasks.iter().map(|t| t.name.clone()).collect(),
        })
    }

    /// Per-task outputs (`[B, out_t]`, or `[B, out_t, H, W]` for per-pixel
    /// tasks) for a batch's named inputs.
    /// `update_stats = false` keeps normalisation statistics unchanged
    /// (passes at perturbed weights).
    pub fn forward(
        &mut self,
        inputs: &Inputs,
        train: bool,
        update_stats: bool,
    ) -> Result<Vec<Tensor>> {
        let per_task = self.task_features(inputs, train, update_stats)?;
        self.head_outputs(&per_task, train, update_stats)
    }

    /// Per-task outputs in evaluation mode at the next positions of a causal
    /// backbone's sequences, whose earlier positions `cache` holds (empty at
    /// the start; it then holds these too): decoding without re-reading the
    /// window. `None` when the backbone is not causal or the architecture
    /// reads more than its last layer. The architecture sees the new
    /// positions only, which is exact for one that treats positions alike
    /// and independently (hard sharing).
    pub fn forward_cached(
        &mut self,
        inputs: &Inputs,
        cache: &mut Vec<KvCache>,
    ) -> Result<Option<Vec<Tensor>>> {
        let causal = self.backbone.as_ref().and_then(|b| b.causal());
        let (Some(causal), BackboneUse::Last) = (causal, self.uses) else {
            return Ok(None);
        };
        let last = causal.forward_cached(inputs, cache)?;
        let per_task = self.architecture_features(inputs, vec![last], false)?;
        self.head_outputs(&per_task, false, false).map(Some)
    }

    /// Each task's head over its features.
    fn head_outputs(
        &self,
        per_task: &[Tensor],
        train: bool,
        update_stats: bool,
    ) -> Result<Vec<Tensor>> {
        if !self.shared_head {
            if let Some(outputs) = Head::forward_flat(&self.heads, per_task, train, update_stats)? {
                return Ok(outputs);
            }
        }
        let mut outputs: Vec<Tensor> = Vec::with_capacity(per_task.len());
        for (t, (f, head)) in per_task.iter().zip(self.heads.iter().cycle()).enumerate() {
            // A shared head over the same features as the task before (hard
            // sharing hands every task one tensor) gives the same outputs.
            let same = self.shared_head && t > 0 && same_tensor(f, &per_task[t - 1]);
            outputs.push(if same {
                outputs[t - 1].shallow_clone()
            } else {
                head.forward(f, train, update_stats)?
            });
        }
        Ok(outputs)
    }

    /// The first task's head's last hidden layer `[B, C]` for a batch's
    /// named inputs, in evaluation mode (see `Head::hidden`): a trained
    /// classifier's feature space.
    pub fn hidden_features(&mut self, inputs: &Inputs) -> Result<Tensor> {
        let per_task = self.task_features(inputs, false, false)?;
        self.heads[0].hidden(&per_task[0])
    }

    /// The architecture's features for every task.
    fn task_features(
        &mut self,
        inputs: &Inputs,
        train: bool,
        update_stats: bool,
    ) -> Result<Vec<Tensor>> {
        let layers = match &self.backbone {
            None => Vec::new(),
            Some(backbone) => {
                let mut all = backbone.forward(inputs, train, update_stats)?;
                match self.uses {
                    BackboneUse::All => all,
                    _ => all.split_off(all.len().saturating_sub(1)),
                }
            }
        };
        self.architecture_features(inputs, layers, train)
    }

    /// The architecture over the backbone's `layers`: one feature tensor per task.
    fn architecture_features(
        &mut self,
        inputs: &Inputs,
        layers: Vec<Tensor>,
        train: bool,
    ) -> Result<Vec<Tensor>> {
        let per_task = self
            .architecture
            .forward(&taskweave_plugin_api::ArchitectureInput {
                inputs,
                layers: &layers,
                train,
            })?;
        if per_task.len() != self.task_names.len() {
            return Err(Error::Method(format!(
                "the architecture returned {} feature tensors for {} tasks",
                per_task.len(),
                self.task_names.len()
            )));
        }
        Ok(per_task)
    }

    /// Every trainable tensor with its group.
    pub fn parameters(&self) -> Result<Vec<Param>> {
        let mut params: Vec<Param> = self
            .backbone
            .iter()
            .flat_map(|b| b.parameters())
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
        for (t, head) in self.heads.iter().enumerate() {
            let (prefix, group) = self.head_name(t);
            for (name, tensor) in head.parameters(&prefix) {
                params.push(Param {
                    name,
                    tensor,
                    group: Some(group),
                });
            }
        }
        Ok(params)
    }

    /// Head `t`'s name prefix and parameter group: `heads.<task>` in the
    /// task's group, or `heads.shared` in the shared group.
    fn head_name(&self, t: usize) -> (String, Group) {
        if self.shared_head {
            ("heads.shared".into(), Group::Shared)
        } else {
            (format!("heads.{}", self.task_names[t]), Group::Task(t))
        }
    }

    /// Non-trainable tensors checkpoints must hold (batch-norm statistics).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.backbone.iter().flat_map(|b| b.buffers()).collect();
        for (t, head) in self.heads.iter().enumerate() {
            out.extend(head.buffers(&self.head_name(t).0));
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
