//! What the pipeline tells every method it creates, and parameter groups.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

use crate::{Error, Result};

/// The element type of a batch input.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// float32 values (`features`, `image`).
    Float,
    /// int64 ids (`fields`, `seq.<name>`, `tokens`, `t`), each below its
    /// column's vocabulary size.
    Index,
    /// bool flags (`seq.<name>.mask`: which positions of a padded sequence
    /// hold an item).
    Mask,
}

impl InputKind {
    /// The libtorch element type of inputs of this kind.
    pub fn dtype(self) -> tch::Kind {
        match self {
            InputKind::Float => tch::Kind::Float,
            InputKind::Index => tch::Kind::Int64,
            InputKind::Mask => tch::Kind::Bool,
        }
    }

    /// The element type's name in messages (`float32`, `int64`, `bool`).
    pub fn name(self) -> &'static str {
        crate::kind_name(self.dtype())
    }
}

/// What a batch input called `name` holds per example: the data kind
/// declares it, architectures read it from [`MethodContext::inputs`].
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// `features`, `fields`, `seq.<name>`, `image`, `t`, `tokens`, ...
    pub name: String,
    /// Its element type.
    pub kind: InputKind,
    /// Its shape per example (`[D]`, `[F]`, `[L]`, `[C, H, W]`, `[]` for a scalar).
    pub shape: Vec<usize>,
    /// For [`InputKind::Index`] inputs: the number of ids of each column of the
    /// last dimension (a single entry is shared by every column).
    pub vocab: Vec<usize>,
}

impl InputSpec {
    /// A float input of per-example shape `shape`.
    pub fn float(name: impl Into<String>, shape: Vec<usize>) -> InputSpec {
        InputSpec {
            name: name.into(),
            kind: InputKind::Float,
            shape,
            vocab: Vec::new(),
        }
    }

    /// An id input of per-example shape `shape` with vocabulary sizes `vocab`.
    pub fn index(name: impl Into<String>, shape: Vec<usize>, vocab: Vec<usize>) -> InputSpec {
        InputSpec {
            name: name.into(),
            kind: InputKind::Index,
            shape,
            vocab,
        }
    }

    /// A bool input of per-example shape `shape`.
    pub fn mask(name: impl Into<String>, shape: Vec<usize>) -> InputSpec {
        InputSpec {
            name: name.into(),
            kind: InputKind::Mask,
            shape,
            vocab: Vec::new(),
        }
    }

    /// The vocabulary size of column `column` of the last dimension.
    pub fn vocab_of(&self, column: usize) -> Option<usize> {
        self.vocab.get(column).or(self.vocab.first()).copied()
    }
}

/// [`InputSpec`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiInputSpec {
    name: RString,
    kind: InputKind,
    shape: RVec<usize>,
    vocab: RVec<usize>,
}

impl From<&InputSpec> for FfiInputSpec {
    fn from(spec: &InputSpec) -> FfiInputSpec {
        FfiInputSpec {
            name: spec.name.as_str().into(),
            kind: spec.kind,
            shape: spec.shape.iter().copied().collect(),
            vocab: spec.vocab.iter().copied().collect(),
        }
    }
}

impl From<&FfiInputSpec> for InputSpec {
    fn from(spec: &FfiInputSpec) -> InputSpec {
        InputSpec {
            name: spec.name.to_string(),
            kind: spec.kind,
            shape: spec.shape.to_vec(),
            vocab: spec.vocab.to_vec(),
        }
    }
}

/// Facts about the pipeline a method is created in. A method uses what it needs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct MethodContext {
    /// Task names, in the order of every per-task tensor (losses, gradient rows).
    pub tasks: RVec<RString>,
    /// `"cpu"` or `"cuda:N"`: where the method's tensors must live.
    pub device: RString,
    /// The run's seed. Methods with randomness derive their streams from it.
    pub seed: u64,
    /// Width of the features an [`Architecture`](crate::Architecture) receives
    /// from the backbone's last layer; 0 where it does not apply.
    pub feature_dim: usize,
    /// The width (last dimension, or channels of a feature map) of every
    /// backbone layer's output, first to last.
    pub layer_dims: RVec<usize>,
    /// The dimensions of every backbone layer's output beside the batch,
    /// first to last: 1 for flat features `[B, C]`, 2 for tokens `[B, N,
    /// C]`, 3 for feature maps `[B, C, H, W]`. An architecture that reads
    /// one kind checks it here, before training.
    pub layer_ranks: RVec<usize>,
    /// The batch inputs the data provide.
    pub inputs: RVec<FfiInputSpec>,
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

    /// The batch inputs the data provide, by name.
    pub fn inputs(&self) -> Vec<InputSpec> {
        self.inputs.iter().map(InputSpec::from).collect()
    }

    /// The batch input called `name`.
    pub fn input(&self, name: &str) -> Option<InputSpec> {
        self.inputs
            .iter()
            .find(|i| i.name.as_str() == name)
            .map(InputSpec::from)
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
