//! `Weighting`: one update for the shared parameters from per-task losses or gradients.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, ROption, RResult, RVec};
use abi_stable::StableAbi;
use tch::Tensor;

use super::{named_from_ffi, named_to_ffi, state_adapters, FfiNamedTensors, Guarded};
use crate::{guard, Error, Result, State, TensorOwned, TensorRef};

/// What a weighting combines.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightingKind {
    /// Combines the per-task losses into one scalar loss that the host
    /// differentiates once (EW, UW, DWA, RLW). Never sees gradients.
    Loss,
    /// Combines the per-task gradients of the shared parameters (a T×P matrix)
    /// into one update of length P (PCGrad, CAGrad, MGDA, IMTL-G, Nash-MTL).
    Gradient,
}

/// One call's input.
pub struct WeightingInput<'a> {
    /// The training step, from 0.
    pub step: u64,
    /// Per-task losses, shape `[T]`. For [`WeightingKind::Loss`] they carry the
    /// autograd graph; for [`WeightingKind::Gradient`] they are detached values.
    pub losses: &'a Tensor,
    /// Per-task gradients of the shared parameters, shape `[T, P]`, one row per
    /// task. `Some` exactly when the weighting's kind is [`WeightingKind::Gradient`].
    pub grads: Option<&'a Tensor>,
    /// Per-task gradients `[T, P]` of the same parameters on further batches,
    /// drawn independently of the step's batch and of each other: one for
    /// each sample beyond the first that [`Weighting::samples`] asks for
    /// (double-sampling methods estimate products of gradients without bias
    /// from them). Empty for every other weighting, and where the strategy
    /// draws one batch per step.
    pub more_grads: &'a [Tensor],
}

/// One call's result.
pub struct WeightingOutput {
    /// A scalar loss with its graph ([`WeightingKind::Loss`]) or an update of
    /// shape `[P]` for the shared parameters ([`WeightingKind::Gradient`]).
    pub combined: Tensor,
    /// The weights chosen for each task, shape `[T]`, detached, where the method
    /// defines them. The runtime logs them in `metrics.jsonl`.
    pub weights: Option<Tensor>,
}

/// A method that combines per-task losses or gradients.
pub trait Weighting: Send {
    /// What [`Weighting::weigh`] combines; constant for an object.
    fn kind(&self) -> WeightingKind;

    /// Combines one step's losses (and gradients, for [`WeightingKind::Gradient`]).
    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput>;

    /// How many independent batches' gradients one [`Weighting::weigh`] call
    /// reads: 1 (the step's batch), or more for a gradient weighting that
    /// samples twice or three times per step (MoDo, SDMGrad), which then
    /// finds the others in [`WeightingInput::more_grads`]. Constant for an
    /// object. A weighting asking for more than the strategy gives must
    /// refuse the call with an error that says so.
    fn samples(&self) -> usize {
        1
    }

    /// Trainable parameters of the weighting itself (UW's log-variances), which
    /// the host's optimizer updates alongside the model. Shares storage.
    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Everything needed to continue exactly after a resume.
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }

    /// Restores what [`Weighting::state`] exported.
    fn load_state(&mut self, state: State) -> Result<()> {
        super::load_no_state(state)
    }
}

/// Combines per-task gradients `grads` `[T, P]` with any weighting: a
/// [`WeightingKind::Gradient`] weighting's own update, or, for a
/// [`WeightingKind::Loss`] weighting, `Σ_t w_t g_t` with the task weights it
/// reports for `losses` (`[T]`, detached). This is how strategies use "the
/// pipeline's weighting" as a gradient aggregator whatever its kind.
pub fn aggregate(
    weighting: &mut dyn Weighting,
    step: u64,
    losses: &Tensor,
    grads: &Tensor,
) -> Result<WeightingOutput> {
    Ok(aggregate_and_loss(weighting, step, losses, grads)?.0)
}

/// [`aggregate`], also returning a loss weighting's combined loss (`None` for
/// a gradient weighting). With `losses` detached, that loss depends only on
/// the weighting's own trainable parameters (UW's log-variances, IMTL-L's
/// scales): a strategy that aggregates with a loss weighting passes it to
/// [`StepOps::backward`](crate::StepOps::backward) so that they learn, and
/// exposes them through [`Strategy::parameters`](crate::Strategy::parameters).
pub fn aggregate_and_loss(
    weighting: &mut dyn Weighting,
    step: u64,
    losses: &Tensor,
    grads: &Tensor,
) -> Result<(WeightingOutput, Option<Tensor>)> {
    match weighting.kind() {
        WeightingKind::Gradient => Ok((
            weighting.weigh(&WeightingInput {
                step,
                losses,
                grads: Some(grads),
                more_grads: &[],
            })?,
            None,
        )),
        WeightingKind::Loss => {
            let out = weighting.weigh(&WeightingInput {
                step,
                losses,
                grads: None,
                more_grads: &[],
            })?;
            let weights = out.weights.ok_or_else(|| {
                Error::msg(
                    "this loss weighting reports no task weights, so it cannot aggregate gradients",
                )
            })?;
            let weights = weights.f_detach()?.f_to_kind(grads.kind())?;
            let update = WeightingOutput {
                combined: weights.f_matmul(grads)?,
                weights: Some(weights),
            };
            Ok((update, Some(out.combined)))
        }
    }
}

/// [`WeightingInput`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiWeightingInput<'a> {
    step: u64,
    losses: TensorRef<'a>,
    grads: ROption<TensorRef<'a>>,
    more_grads: RVec<TensorRef<'a>>,
}

/// [`WeightingOutput`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiWeightingOutput {
    combined: TensorOwned,
    weights: ROption<TensorOwned>,
}

/// The FFI twin of [`Weighting`].
#[sabi_trait]
pub trait FfiWeighting: Send {
    /// See [`Weighting::kind`].
    fn kind(&self) -> WeightingKind;
    /// See [`Weighting::weigh`].
    fn weigh(&mut self, input: FfiWeightingInput<'_>) -> RResult<FfiWeightingOutput, Error>;
    /// See [`Weighting::parameters`].
    fn parameters(&self) -> RResult<FfiNamedTensors, Error>;
    /// See [`Weighting::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Weighting::load_state`].
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
    /// See [`Weighting::samples`].
    #[sabi(last_prefix_field)]
    fn samples(&self) -> usize;
}

/// An owned [`FfiWeighting`] trait object.
pub type FfiWeightingBox = FfiWeighting_TO<'static, RBox<()>>;

/// What a weighting's infallible calls return, constant for an object.
pub(crate) struct Constants {
    kind: WeightingKind,
    samples: usize,
}

impl Constants {
    pub(crate) fn of(weighting: &dyn Weighting) -> Constants {
        Constants {
            kind: weighting.kind(),
            samples: weighting.samples(),
        }
    }
}

impl FfiWeighting for Guarded<dyn Weighting, Constants> {
    fn kind(&self) -> WeightingKind {
        self.constants.kind
    }

    fn weigh(&mut self, input: FfiWeightingInput<'_>) -> RResult<FfiWeightingOutput, Error> {
        guard(&self.label, "Weighting::weigh", || {
            let losses = input.losses.get();
            let grads = input.grads.into_option().map(TensorRef::get);
            // New handles on the same storage: the slice the trait takes.
            let more: Vec<Tensor> = input
                .more_grads
                .iter()
                .map(|g| g.get().shallow_clone())
                .collect();
            let out = self.inner.weigh(&WeightingInput {
                step: input.step,
                losses: &losses,
                grads: grads.as_deref(),
                more_grads: &more,
            })?;
            Ok(FfiWeightingOutput {
                combined: out.combined.into(),
                weights: out.weights.map(TensorOwned::from).into(),
            })
        })
    }

    fn parameters(&self) -> RResult<FfiNamedTensors, Error> {
        guard(&self.label, "Weighting::parameters", || {
            Ok(named_to_ffi(self.inner.parameters()?))
        })
    }

    fn samples(&self) -> usize {
        self.constants.samples
    }

    state_adapters!(guarded Weighting);
}

impl Weighting for FfiWeightingBox {
    fn kind(&self) -> WeightingKind {
        FfiWeighting::kind(self)
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let ffi = FfiWeightingInput {
            step: input.step,
            losses: input.losses.into(),
            grads: input.grads.map(TensorRef::from).into(),
            more_grads: input.more_grads.iter().map(TensorRef::from).collect(),
        };
        let out = FfiWeighting::weigh(self, ffi).into_result()?;
        Ok(WeightingOutput {
            combined: out.combined.into_tensor(),
            weights: out.weights.into_option().map(TensorOwned::into_tensor),
        })
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(named_from_ffi(
            FfiWeighting::parameters(self).into_result()?,
        ))
    }

    fn samples(&self) -> usize {
        FfiWeighting::samples(self)
    }

    state_adapters!(foreign FfiWeighting);
}
