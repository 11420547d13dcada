//! `Fusion`: one decoding step's distribution from the logits of several models.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RSlice};
use abi_stable::StableAbi;
use tch::Tensor;

use super::{state_adapters, Guarded};
use crate::{guard, Error, Result, State, TensorOwned, TensorRef};

/// One decoding step's logits, each `[B, V]` over the same vocabulary.
pub struct FusionInput<'a> {
    /// The large base model.
    pub large: &'a Tensor,
    /// The small base model.
    pub small: &'a Tensor,
    /// The small experts, one per task.
    pub experts: &'a [Tensor],
}

/// One decoding step's fused distribution.
pub struct FusionOutput {
    /// Fused log-probabilities, `[B, V]`.
    pub log_probs: Tensor,
    /// The coefficient chosen for each expert on each row, `[B, T]`.
    pub alpha: Tensor,
}

/// A method that fuses several models' logits at one decoding step.
pub trait Fusion: Send {
    /// Fuses one step's logits.
    fn fuse(&mut self, input: &FusionInput<'_>) -> Result<FusionOutput>;

    /// Everything needed to continue exactly after a resume.
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }

    /// Restores what [`Fusion::state`] exported.
    fn load_state(&mut self, state: State) -> Result<()> {
        super::load_no_state(state)
    }
}

/// [`FusionInput`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiFusionInput<'a> {
    large: TensorRef<'a>,
    small: TensorRef<'a>,
    experts: RSlice<'a, TensorRef<'a>>,
}

/// [`FusionOutput`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiFusionOutput {
    log_probs: TensorOwned,
    alpha: TensorOwned,
}

/// The FFI twin of [`Fusion`].
#[sabi_trait]
pub trait FfiFusion: Send {
    /// See [`Fusion::fuse`].
    fn fuse(&mut self, input: FfiFusionInput<'_>) -> RResult<FfiFusionOutput, Error>;
    /// See [`Fusion::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Fusion::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
}

/// An owned [`FfiFusion`] trait object.
pub type FfiFusionBox = FfiFusion_TO<'static, RBox<()>>;

impl FfiFusion for Guarded<dyn Fusion> {
    fn fuse(&mut self, input: FfiFusionInput<'_>) -> RResult<FfiFusionOutput, Error> {
        guard(&self.label, "Fusion::fuse", || {
            let experts: Vec<Tensor> = input
                .experts
                .iter()
                .map(|e| e.get().shallow_clone())
                .collect();
            let out = self.inner.fuse(&FusionInput {
                large: &input.large.get(),
                small: &input.small.get(),
                experts: &experts,
            })?;
            Ok(FfiFusionOutput {
                log_probs: out.log_probs.into(),
                alpha: out.alpha.into(),
            })
        })
    }

    state_adapters!(guarded Fusion);
}

impl Fusion for FfiFusionBox {
    fn fuse(&mut self, input: &FusionInput<'_>) -> Result<FusionOutput> {
        let experts: Vec<TensorRef<'_>> = input.experts.iter().map(TensorRef::new).collect();
        let ffi = FfiFusionInput {
            large: input.large.into(),
            small: input.small.into(),
            experts: experts.as_slice().into(),
        };
        let out = FfiFusion::fuse(self, ffi).into_result()?;
        Ok(FusionOutput {
            log_probs: out.log_probs.into_tensor(),
            alpha: out.alpha.into_tensor(),
        })
    }

    state_adapters!(foreign FfiFusion);
}
