//! `Architecture`: trainable modules between the backbone and the task heads.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RString, RVec};
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

/// A method that maps backbone features to one feature tensor per task.
pub trait Architecture: Send {
    /// Every trainable tensor, created on the context's device at construction.
    fn parameters(&self) -> Result<Vec<Parameter>>;

    /// The width of each per-task output (what the task heads receive).
    fn output_dim(&self) -> usize;

    /// Maps `features` `[B, feature_dim]` to T tensors `[B, output_dim]`, in task
    /// order. `train` is false during evaluation.
    fn forward(&mut self, features: &Tensor, train: bool) -> Result<Vec<Tensor>>;

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
    /// See [`Architecture::forward`].
    fn forward(
        &mut self,
        features: TensorRef<'_>,
        train: bool,
    ) -> RResult<RVec<TensorOwned>, Error>;
    /// See [`Architecture::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Architecture::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
}

/// An owned [`FfiArchitecture`] trait object.
pub type FfiArchitectureBox = FfiArchitecture_TO<'static, RBox<()>>;

impl FfiArchitecture for Guarded<dyn Architecture> {
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
        self.inner.output_dim()
    }

    fn forward(
        &mut self,
        features: TensorRef<'_>,
        train: bool,
    ) -> RResult<RVec<TensorOwned>, Error> {
        guard(&self.label, "Architecture::forward", || {
            let outs = self.inner.forward(&features.get(), train)?;
            Ok(outs.into_iter().map(TensorOwned::from).collect())
        })
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

    fn forward(&mut self, features: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let outs = FfiArchitecture::forward(self, features.into(), train).into_result()?;
        Ok(outs.into_iter().map(TensorOwned::into_tensor).collect())
    }

    state_adapters!(foreign FfiArchitecture);
}
