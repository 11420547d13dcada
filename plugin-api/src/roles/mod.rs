//! The five roles. Each file holds the plain Rust trait a method implements, its
//! `#[sabi_trait]` FFI twin, and the two adapters between them:
//!
//! - `Guarded<dyn Role>` implements the FFI trait over a plain trait object,
//!   every call under [`guard`](crate::guard) (used where the method lives);
//! - the FFI trait object implements the plain trait again (used by the caller).

use abi_stable::std_types::{RBox, RString, RVec, Tuple2};
use abi_stable::StableAbi;
use tch::Tensor;

use crate::{MethodBox, TensorOwned};

pub mod architecture;
pub mod fusion;
pub mod grouping;
pub mod strategy;
pub mod weighting;

/// A method object behind the FFI trait of its role, each call guarded with
/// `label` (which method, from which library) as the error context.
/// `constants` holds what the role's infallible calls return (a weighting's
/// kind, an architecture's output width, ...), read once when the object is
/// wrapped, inside the guarded `create`: those calls return no `Result`, so
/// a panic in them could not be caught later and would abort the process.
pub(crate) struct Guarded<T: ?Sized, C = ()> {
    label: RString,
    constants: C,
    inner: Box<T>,
}

/// A created method of any role, as it crosses the boundary.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum FfiMethod {
    /// A weighting.
    Weighting(weighting::FfiWeightingBox),
    /// A strategy.
    Strategy(strategy::FfiStrategyBox),
    /// An architecture.
    Architecture(architecture::FfiArchitectureBox),
    /// A fusion.
    Fusion(fusion::FfiFusionBox),
    /// A grouping.
    Grouping(grouping::FfiGroupingBox),
}

impl FfiMethod {
    /// Puts `method` behind its FFI trait; `label` names it in every error.
    /// Calls the method's infallible getters once (call it under
    /// [`guard`](crate::guard), as the plugin's `create` does).
    pub fn new(method: MethodBox, label: &str) -> FfiMethod {
        use abi_stable::sabi_trait::TD_Opaque;
        let label = RString::from(label);
        match method {
            MethodBox::Weighting(inner) => {
                FfiMethod::Weighting(weighting::FfiWeighting_TO::from_ptr(
                    Guarded::boxed(label, weighting::Constants::of(&*inner), inner),
                    TD_Opaque,
                ))
            }
            MethodBox::Strategy(inner) => FfiMethod::Strategy(strategy::FfiStrategy_TO::from_ptr(
                Guarded::boxed(label, (), inner),
                TD_Opaque,
            )),
            MethodBox::Architecture(inner) => {
                FfiMethod::Architecture(architecture::FfiArchitecture_TO::from_ptr(
                    Guarded::boxed(label, architecture::Constants::of(&*inner), inner),
                    TD_Opaque,
                ))
            }
            MethodBox::Fusion(inner) => FfiMethod::Fusion(fusion::FfiFusion_TO::from_ptr(
                Guarded::boxed(label, (), inner),
                TD_Opaque,
            )),
            MethodBox::Grouping(inner) => FfiMethod::Grouping(grouping::FfiGrouping_TO::from_ptr(
                Guarded::boxed(label, (), inner),
                TD_Opaque,
            )),
        }
    }
}

impl<T: ?Sized, C> Guarded<T, C> {
    /// `inner` guarded under `label`, boxed for its FFI trait object.
    fn boxed(label: RString, constants: C, inner: Box<T>) -> RBox<Guarded<T, C>> {
        RBox::new(Guarded {
            label,
            constants,
            inner,
        })
    }
}

impl From<FfiMethod> for MethodBox {
    fn from(method: FfiMethod) -> MethodBox {
        match method {
            FfiMethod::Weighting(m) => MethodBox::Weighting(Box::new(m)),
            FfiMethod::Strategy(m) => MethodBox::Strategy(Box::new(m)),
            FfiMethod::Architecture(m) => MethodBox::Architecture(Box::new(m)),
            FfiMethod::Fusion(m) => MethodBox::Fusion(Box::new(m)),
            FfiMethod::Grouping(m) => MethodBox::Grouping(Box::new(m)),
        }
    }
}

/// Named tensors as they cross the boundary.
pub(crate) type FfiNamedTensors = RVec<Tuple2<RString, TensorOwned>>;

pub(crate) fn named_to_ffi(tensors: Vec<(String, Tensor)>) -> FfiNamedTensors {
    tensors
        .into_iter()
        .map(|(n, t)| Tuple2(n.into(), t.into()))
        .collect()
}

pub(crate) fn named_from_ffi(tensors: FfiNamedTensors) -> Vec<(String, Tensor)> {
    tensors
        .into_iter()
        .map(|Tuple2(n, t)| (n.into_string(), t.into_tensor()))
        .collect()
}

/// The state methods every role shares, implemented once for both adapters.
macro_rules! state_adapters {
    (guarded $trait:ident) => {
        fn state(&self) -> abi_stable::std_types::RResult<crate::FfiState, crate::Error> {
            crate::guard(&self.label, concat!(stringify!($trait), "::state"), || {
                Ok(self.inner.state()?.into())
            })
        }
        fn load_state(
            &mut self,
            state: crate::FfiState,
        ) -> abi_stable::std_types::RResult<(), crate::Error> {
            crate::guard(
                &self.label,
                concat!(stringify!($trait), "::load_state"),
                || self.inner.load_state(crate::State::try_from(state)?),
            )
        }
    };
    (foreign $ffi:ident) => {
        fn state(&self) -> crate::Result<crate::State> {
            crate::State::try_from($ffi::state(self).into_result()?)
        }
        fn load_state(&mut self, state: crate::State) -> crate::Result<()> {
            $ffi::load_state(self, state.into()).into_result()
        }
    };
}
pub(crate) use state_adapters;

/// The default `load_state` of every role: a method without state accepts only
/// an empty one, so a checkpoint from another method is not silently ignored.
pub(crate) fn load_no_state(state: crate::State) -> crate::Result<()> {
    if state.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::msg(
            "this method has no state, but the checkpoint holds some",
        ))
    }
}
