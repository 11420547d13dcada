//! `Grouping`: a partition of many tasks into a few groups.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RSlice, RString, RVec, Tuple2};
use abi_stable::StableAbi;
use tch::Tensor;

use super::{state_adapters, Guarded};
use crate::{guard, Error, Result, State, TensorRef};

/// What a grouping partitions.
pub struct GroupingInput<'a> {
    /// The number of tasks to partition.
    pub num_tasks: usize,
    /// Named per-task signals the method may use, for example `"snr"` `[T]` or a
    /// task-affinity matrix `"affinity"` `[T, T]`.
    pub signals: &'a [(String, Tensor)],
}

/// What a grouping returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partition {
    /// The group index of every task, `num_tasks` entries, groups numbered from 0.
    pub groups: Vec<usize>,
    /// Named numbers the method reports about its partition, such as the
    /// objective it minimised (`cost`); `taskweave call grouping` writes them.
    pub scores: Vec<(String, f64)>,
}

impl From<Vec<usize>> for Partition {
    /// A partition without scores.
    fn from(groups: Vec<usize>) -> Partition {
        Partition {
            groups,
            scores: Vec::new(),
        }
    }
}

/// A method that partitions tasks into groups.
pub trait Grouping: Send {
    /// The partition of the input's tasks.
    fn partition(&mut self, input: &GroupingInput<'_>) -> Result<Partition>;

    /// Everything needed to continue exactly after a resume.
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }

    /// Restores what [`Grouping::state`] exported.
    fn load_state(&mut self, state: State) -> Result<()> {
        super::load_no_state(state)
    }
}

/// [`GroupingInput`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiGroupingInput<'a> {
    num_tasks: usize,
    signals: RSlice<'a, Tuple2<RString, TensorRef<'a>>>,
}

/// [`Partition`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiPartition {
    groups: RVec<usize>,
    scores: RVec<Tuple2<RString, f64>>,
}

/// The FFI twin of [`Grouping`].
#[sabi_trait]
pub trait FfiGrouping: Send {
    /// See [`Grouping::partition`].
    fn partition(&mut self, input: FfiGroupingInput<'_>) -> RResult<FfiPartition, Error>;
    /// See [`Grouping::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Grouping::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
}

/// An owned [`FfiGrouping`] trait object.
pub type FfiGroupingBox = FfiGrouping_TO<'static, RBox<()>>;

impl FfiGrouping for Guarded<dyn Grouping> {
    fn partition(&mut self, input: FfiGroupingInput<'_>) -> RResult<FfiPartition, Error> {
        guard(&self.label, "Grouping::partition", || {
            let signals: Vec<(String, Tensor)> = input
                .signals
                .iter()
                .map(|Tuple2(name, t)| (name.to_string(), t.get().shallow_clone()))
                .collect();
            let partition = self.inner.partition(&GroupingInput {
                num_tasks: input.num_tasks,
                signals: &signals,
            })?;
            Ok(FfiPartition {
                groups: partition.groups.into(),
                scores: partition
                    .scores
                    .into_iter()
                    .map(|(name, value)| Tuple2(name.into(), value))
                    .collect(),
            })
        })
    }

    state_adapters!(guarded Grouping);
}

impl Grouping for FfiGroupingBox {
    fn partition(&mut self, input: &GroupingInput<'_>) -> Result<Partition> {
        let signals: Vec<Tuple2<RString, TensorRef<'_>>> = input
            .signals
            .iter()
            .map(|(n, t)| Tuple2(n.as_str().into(), t.into()))
            .collect();
        let ffi = FfiGroupingInput {
            num_tasks: input.num_tasks,
            signals: signals.as_slice().into(),
        };
        let out = FfiGrouping::partition(self, ffi).into_result()?;
        Ok(Partition {
            groups: out.groups.into(),
            scores: out
                .scores
                .into_iter()
                .map(|Tuple2(name, value)| (name.into(), value))
                .collect(),
        })
    }

    state_adapters!(foreign FfiGrouping);
}
