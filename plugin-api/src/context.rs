//! What the pipeline tells every method it creates, and parameter groups.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

use crate::{Error, Result};

/// Facts about the pipeline a method is created in. A method uses what it needs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct MethodContext {
    /// Task names, in the order of every per-task tensor (losses, gradient rows).
    pub tasks: RVec<RString>,
    /// `"cpu"` or `"cuda:N"`: where the method's tensors must live.
    pub device: RString,
    /// The run's seed. Methods with randomness derive their streams from it.
    pub seed: u64,
    /// Width of the features an [`Architecture`](crate::Architecture) receives
    /// from the backbone; 0 where it does not apply.
    pub feature_dim: usize,
    /// The pipeline's `[train].weighting` table as JSON (`{"kind": "ew", ...}`).
    /// A strategy that aggregates gradients itself builds it with
    /// [`Host::create`](crate::Host::create) unless its own config names another.
    pub weighting: RString,
}

impl MethodContext {
    /// The number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// [`MethodContext::device`] as a tch device.
    pub fn device(&self) -> Result<tch::Device> {
        match self.device.as_str() {
            "cpu" => Ok(tch::Device::Cpu),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(tch::Device::Cuda)
                .ok_or_else(|| Error::msg(format!("unknown device `{other}`"))),
        }
    }

    /// The pipeline's weighting table, parsed.
    pub fn weighting_table(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.weighting)?)
    }
}

/// A group of trainable parameters the host can differentiate, perturb and update
/// as one flat vector.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// Parameters every task uses: the backbone and the shared part of the architecture.
    Shared,
    /// Parameters only task `t` uses: its head and its part of the architecture.
    Task(usize),
}
