//! A multi-task dataset in memory: the tasks and three splits of tensors.

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// What a task predicts, which fixes its head, loss and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskType {
    /// A real number; loss MSE or MAE; metrics MSE and MAE (in original units).
    Regression,
    /// 0 or 1; loss binary cross-entropy on a logit; metrics BCE, accuracy, AUC.
    Binary,
    /// One of `n` classes; loss cross-entropy; metrics CE and accuracy.
    Multiclass(usize),
}

/// The training loss of a regression task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegressionLoss {
    /// Mean squared error.
    #[default]
    Mse,
    /// Mean absolute error.
    Mae,
}

/// One task of a dataset.
#[derive(Clone, Debug)]
pub struct Task {
    /// Name, as in metrics and tables.
    pub name: String,
    /// What it predicts.
    pub kind: TaskType,
    /// The loss for regression tasks.
    pub loss: RegressionLoss,
    /// For regression targets stored standardised: (mean, std) to report
    /// metrics in original units.
    pub scale: Option<(f64, f64)>,
    /// The metric Δm compares for this task.
    pub primary: &'static str,
}

impl Task {
    /// The width of the task head's output.
    pub fn output_dim(&self) -> usize {
        match self.kind {
            TaskType::Multiclass(n) => n,
            _ => 1,
        }
    }

    /// A regression task with MSE loss reported unscaled.
    pub fn regression(name: impl Into<String>) -> Task {
        Task {
            name: name.into(),
            kind: TaskType::Regression,
            loss: RegressionLoss::Mse,
            scale: None,
            primary: "mse",
        }
    }
}

/// One split: inputs `[N, D]` (float32) and one target tensor `[N]` per task
/// (float32, or int64 for multiclass).
pub struct Split {
    /// Inputs.
    pub inputs: Tensor,
    /// Targets, in task order.
    pub targets: Vec<Tensor>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.inputs.size().first().copied().unwrap_or(0) as usize
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `index` (an int64 tensor on the split's device).
    pub fn rows(&self, index: &Tensor) -> Result<Split> {
        Ok(Split {
            inputs: self.inputs.f_index_select(0, index)?,
            targets: self
                .targets
                .iter()
                .map(|t| t.f_index_select(0, index))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The rows `start..start + len`, without copying.
    pub fn slice(&self, start: usize, len: usize) -> Result<Split> {
        let (s, l) = (start as i64, len as i64);
        Ok(Split {
            inputs: self.inputs.f_narrow(0, s, l)?,
            targets: self
                .targets
                .iter()
                .map(|t| t.f_narrow(0, s, l))
                .collect::<Result<_, _>>()?,
        })
    }

    fn to_device(&self, device: Device) -> Result<Split> {
        Ok(Split {
            inputs: self.inputs.f_to_device(device)?,
            targets: self
                .targets
                .iter()
                .map(|t| t.f_to_device(device))
                .collect::<Result<_, _>>()?,
        })
    }

    fn only(&self, task: usize) -> Split {
        Split {
            inputs: self.inputs.shallow_clone(),
            targets: vec![self.targets[task].shallow_clone()],
        }
    }
}

/// A multi-task dataset: the tasks and three splits.
pub struct Dataset {
    /// The tasks, in the order of every per-task tensor.
    pub tasks: Vec<Task>,
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Split,
}

impl Dataset {
    /// The input width D.
    pub fn input_dim(&self) -> usize {
        self.train.inputs.size().get(1).copied().unwrap_or(0) as usize
    }

    /// The same data on `device`.
    pub fn to_device(&self, device: Device) -> Result<Dataset> {
        Ok(Dataset {
            tasks: self.tasks.clone(),
            train: self.train.to_device(device)?,
            val: self.val.to_device(device)?,
            test: self.test.to_device(device)?,
        })
    }

    /// The single-task dataset of task `task` (for single-task baselines).
    pub fn only_task(&self, task: usize) -> Dataset {
        Dataset {
            tasks: vec![self.tasks[task].clone()],
            train: self.train.only(task),
            val: self.val.only(task),
            test: self.test.only(task),
        }
    }

    /// The split called `name` (`train`, `val` or `test`).
    pub fn split(&self, name: &str) -> Result<&Split> {
        match name {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            "test" => Ok(&self.test),
            other => Err(Error::config(
                "split",
                format!("unknown split `{other}`; the splits are train, val and test"),
            )),
        }
    }
}

/// A float32 `[rows, cols]` tensor from row-major values.
pub(crate) fn matrix(values: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(&values).f_reshape([rows as i64, cols as i64])?)
}

/// Standardises the columns of `splits` with the statistics of the first
/// (training) split; constant columns are only centred.
pub(crate) fn standardize(splits: [&mut Tensor; 3]) -> Result<()> {
    let [train, val, test] = splits;
    let mean = train.f_mean_dim(0, true, Kind::Float)?;
    let std = train.f_std_dim(0, false, true)?;
    let std = std.f_where_scalarother(&std.f_gt(1e-12)?, 1.0)?;
    for t in [train, val, test] {
        *t = t.f_sub(&mean)?.f_div(&std)?;
    }
    Ok(())
}
