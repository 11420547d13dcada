//! `Architecture`: trainable modules between the backbone and the task heads.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RString, RVec, Tuple2};
use abi_stable::StableAbi;
use tch::Tensor;

use super::{state_adapters, Guarded};
use crate::{guard, Error, Group, Result, State, TensorOwned, TensorRef};

/// A trainable tensor an architecture registers with the host, so that the
/// optimizer updates it, checkpoints hold it and strategies find it by group.
pub struct Parameter {
    /// Name, unique within the architecture (`"expert0.w"`).
    pub name: String,
    /// The tensor (a leaf with `requires_grad`); the host shares its storage and
    /// writes restored values into it in place.
    pub tensor: Tensor,
    /// Which tasks use it.
    pub group: Group,
}

/// Which of the backbone's outputs an architecture reads.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackboneUse {
    /// The last layer's output (hard sharing, MMoE on a trunk).
    #[default]
    Last,
    /// Every layer's output, first to last (TaskExpert on every block's tokens).
    All,
    /// None: the architecture replaces the backbone and reads the batch's
    /// inputs itself (DTRN's trunk from raw fields and sequences); the host
    /// does not run the backbone.
    None,
}

/// What an architecture's forward pass sees.
pub struct ArchitectureInput<'a> {
    /// The batch's named inputs (`features`, `fields`, `seq.<name>`, `image`,
    /// `t`, `tokens`, ...), as [`MethodContext::inputs`](crate::MethodContext::inputs) declares them.
    pub inputs: &'a [(String, Tensor)],
    /// The backbone's outputs [`Architecture::backbone`] asks for: the last
    /// layer's (`[B, C]`, tokens `[B, N, C]` or maps `[B, C, H, W]`), every
    /// layer's, or none.
    pub layers: &'a [Tensor],
    /// False during evaluation.
    pub train: bool,
}

impl ArchitectureInput<'_> {
    /// The input called `name`, or an error naming the inputs there are.
    pub fn input(&self, name: &str) -> Result<&Tensor> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<&str> = self.inputs.iter().map(|(n, _)| n.as_str()).collect();
                Error::msg(format!(
                    "the batch has no input `{name}` (it has: {})",
                    names.join(", ")
                ))
            })
    }

    /// The backbone's last output, or an error when there is none.
    pub fn last_layer(&self) -> Result<&Tensor> {
        self.layers
            .last()
            .ok_or_else(|| Error::msg("the architecture was given no backbone output"))
    }
}

/// A method that maps the backbone's outputs (and the batch's inputs) to one
/// feature tensor per task, which the task heads read.
pub trait Architecture: Send {
    /// Every trainable tensor, created on the context's device at construction.
    fn parameters(&self) -> Result<Vec<Parameter>>;

    /// The width of each per-task output: its last dimension, or its channels
    /// for a feature map `[B, C, H, W]` (what the task heads are built for).
    /// Constant for an object: the host reads it once, after creating it.
    fn output_dim(&self) -> usize;

    /// Which backbone outputs [`Architecture::forward`] needs; constant for
    /// an object.
    fn backbone(&self) -> BackboneUse {
        BackboneUse::Last
    }

    /// T tensors, in task order, each with the batch as its first dimension.
    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>>;

    /// Named numbers about the evaluation that just ended (TaskExpert's mean
    /// gate weight per task, layer and slot), which the host writes to
    /// `metrics.jsonl` under `architecture` after every evaluation. An
    /// architecture gathers them over the forward passes with `train =
    /// false` and starts afresh after each call. None by default.
    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    /// Auxiliary losses of the last forward pass with `train = true`, one
    /// per task (`[T]`, float, differentiable: TaskExpert's load-balancing
    /// term of each task's gates). The host adds entry t to task t's loss
    /// before any weighting or strategy sees the losses, so every method
    /// treats it as part of the task's objective. The host asks once after
    /// every training forward pass; an architecture returns what that pass
    /// made and forgets it. None (the default): no auxiliary loss.
    fn aux_losses(&mut self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Whether a second instance built from the same config, given this
    /// one's parameters, computes what this one does on any rows, on any
    /// thread: its forward pass draws no random numbers and keeps nothing
    /// from one call to the next beyond [`Architecture::aux_losses`] and
    /// [`Architecture::eval_metrics`]. The host then may train copies of
    /// the model side by side (`run.batch_threads`, and a meta-learner's
    /// inner loops). False (the default): it never does. Constant for an
    /// object.
    fn replicable(&self) -> bool {
        false
    }

    /// Everything besides the parameters needed to continue after a resume.
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }

    /// Restores what [`Architecture::state`] exported.
    fn load_state(&mut self, state: State) -> Result<()> {
        super::load_no_state(state)
    }
}

/// [`Parameter`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiParameter {
    name: RString,
    tensor: TensorOwned,
    group: Group,
}

/// The FFI twin of [`Architecture`].
#[sabi_trait]
pub trait FfiArchitecture: Send {
    /// See [`Architecture::parameters`].
    fn parameters(&self) -> RResult<RVec<FfiParameter>, Error>;
    /// See [`Architecture::output_dim`].
    fn output_dim(&self) -> usize;
    /// See [`Architecture::backbone`].
    fn backbone(&self) -> BackboneUse;
    /// See [`Architecture::forward`].
    fn forward(
        &mut self,
        inputs: RSlice<'_, Tuple2<RString, TensorRef<'_>>>,
        layers: RSlice<'_, TensorRef<'_>>,
        train: bool,
    ) -> RResult<RVec<TensorOwned>, Error>;
    /// See [`Architecture::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Architecture::load_state`].
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
    /// See [`Architecture::eval_metrics`].
    #[sabi(last_prefix_field)]
    fn eval_metrics(&mut self) -> RResult<RVec<Tuple2<RString, f64>>, Error>;
    /// See [`Architecture::aux_losses`]. Added after the last prefix field:
    /// a plugin built before it lacks the entry, and this default (no
    /// auxiliary loss) stands in for it.
    fn aux_losses(&mut self) -> RResult<ROption<TensorOwned>, Error> {
        RResult::ROk(ROption::RNone)
    }
    /// See [`Architecture::replicable`]; false for a plugin built before it.
    fn replicable(&self) -> bool {
        false
    }
}

/// An owned [`FfiArchitecture`] trait object.
pub type FfiArchitectureBox = FfiArchitecture_TO<'static, RBox<()>>;

/// What an architecture's infallible calls return, constant for an object.
pub(crate) struct Constants {
    output_dim: usize,
    backbone: BackboneUse,
    replicable: bool,
}

impl Constants {
    pub(crate) fn of(architecture: &dyn Architecture) -> Constants {
        Constants {
            output_dim: architecture.output_dim(),
            backbone: architecture.backbone(),
            replicable: architecture.replicable(),
        }
    }
}

impl FfiArchitecture for Guarded<dyn Architecture, Constants> {
    fn parameters(&self) -> RResult<RVec<FfiParameter>, Error> {
        guard(&self.label, "Architecture::parameters", || {
            Ok(self
                .inner
                .parameters()?
                .into_iter()
                .map(|p| FfiParameter {
                    name: p.name.into(),
                    tensor: p.tensor.into(),
                    group: p.group,
                })
                .collect())
        })
    }

    fn output_dim(&self) -> usize {
        self.constants.output_dim
    }

    fn backbone(&self) -> BackboneUse {
        self.constants.backbone
    }

    fn forward(
        &mut self,
        inputs: RSlice<'_, Tuple2<RString, TensorRef<'_>>>,
        layers: RSlice<'_, TensorRef<'_>>,
        train: bool,
    ) -> RResult<RVec<TensorOwned>, Error> {
        guard(&self.label, "Architecture::forward", || {
            let inputs: Vec<(String, Tensor)> = inputs
                .iter()
                .map(|Tuple2(n, t)| (n.to_string(), t.get().shallow_clone()))
                .collect();
            let layers: Vec<Tensor> = layers.iter().map(|t| t.get().shallow_clone()).collect();
            let outs = self.inner.forward(&ArchitectureInput {
                inputs: &inputs,
                layers: &layers,
                train,
            })?;
            Ok(outs.into_iter().map(TensorOwned::from).collect())
        })
    }

    fn eval_metrics(&mut self) -> RResult<RVec<Tuple2<RString, f64>>, Error> {
        guard(&self.label, "Architecture::eval_metrics", || {
            Ok(self
                .inner
                .eval_metrics()?
                .into_iter()
                .map(|(n, v)| Tuple2(n.into(), v))
                .collect())
        })
    }

    fn aux_losses(&mut self) -> RResult<ROption<TensorOwned>, Error> {
        guard(&self.label, "Architecture::aux_losses", || {
            Ok(self.inner.aux_losses()?.map(TensorOwned::from).into())
        })
    }

    fn replicable(&self) -> bool {
        self.constants.replicable
    }

    state_adapters!(guarded Architecture);
}

impl Architecture for FfiArchitectureBox {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        let params = FfiArchitecture::parameters(self).into_result()?;
        Ok(params
            .into_iter()
            .map(|p| Parameter {
                name: p.name.into_string(),
                tensor: p.tensor.into_tensor(),
                group: p.group,
            })
            .collect())
    }

    fn output_dim(&self) -> usize {
        FfiArchitecture::output_dim(self)
    }

    fn backbone(&self) -> BackboneUse {
        FfiArchitecture::backbone(self)
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let inputs: Vec<Tuple2<RString, TensorRef<'_>>> = input
            .inputs
            .iter()
            .map(|(n, t)| Tuple2(n.as_str().into(), t.into()))
            .collect();
        let layers: Vec<TensorRef<'_>> = input.layers.iter().map(TensorRef::from).collect();
        let outs = FfiArchitecture::forward(
            self,
            inputs.as_slice().into(),
            layers.as_slice().into(),
            input.train,
        )
        .into_result()?;
        Ok(outs.into_iter().map(TensorOwned::into_tensor).collect())
    }

    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        Ok(FfiArchitecture::eval_metrics(self)
            .into_result()?
            .into_iter()
            .map(|Tuple2(n, v)| (n.into_string(), v))
            .collect())
    }

    fn aux_losses(&mut self) -> Result<Option<Tensor>> {
        let aux = FfiArchitecture::aux_losses(self).into_result()?;
        Ok(aux.into_option().map(TensorOwned::into_tensor))
    }

    fn replicable(&self) -> bool {
        FfiArchitecture::replicable(self)
    }

    state_adapters!(foreign FfiArchitecture);
}
