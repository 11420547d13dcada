//! A multi-task dataset in memory: the tasks and three splits of tensors.

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The target value of a `dense-multiclass` pixel that has no label: it
/// counts in neither loss nor metric (255, as in PASCAL VOC and NYUD-v2).
pub const IGNORE_PIXEL: i64 = 255;

/// The target value of a `token-multiclass` position that has no label
/// (padding after a document's end): it counts in neither loss nor metric.
/// PyTorch's `ignore_index` default, so exported targets mean the same there.
pub const IGNORE_TOKEN: i64 = -100;

/// What a task predicts, which fixes its head, loss and metrics. The target
/// of one example is a scalar for the first three types, a vector of labels
/// for `Multilabel` and an image for the dense types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskType {
    /// A real number; loss MSE or MAE; metrics MSE and MAE (in original units).
    Regression,
    /// `n` real numbers (target float32 `[n]`), such as the noise a diffusion
    /// model predicts; loss MSE or MAE over the values; metrics MSE and MAE
    /// over the values.
    Vector(usize),
    /// 0 or 1; loss binary cross-entropy on a logit; metrics BCE, accuracy, AUC.
    Binary,
    /// One of `n` classes; loss cross-entropy; metrics CE and accuracy.
    Multiclass(usize),
    /// `n` independent 0/1 labels (target float32 `[n]`); loss binary
    /// cross-entropy averaged over the labels; metrics BCE, accuracy over
    /// labels and micro-averaged F1.
    Multilabel(usize),
    /// One of `classes` classes per pixel (target int64 `[height, width]`,
    /// [`IGNORE_PIXEL`] where unlabelled); loss cross-entropy over the
    /// labelled pixels; metrics CE, mIoU and pixel accuracy.
    DenseMulticlass {
        /// Number of classes.
        classes: usize,
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
    },
    /// `channels` real numbers per pixel (target float32 `[channels, height,
    /// width]`, NaN where unlabelled, such as missing depth); loss L1 (or
    /// MSE) over the labelled values; metrics the mean absolute error
    /// `abs_err`, the mean squared error `mse` and the mean relative error
    /// `rel_err` = |ŷ − y| / |y| over labelled non-zero values.
    DenseRegression {
        /// Values per pixel (1 for depth, 3 for surface normals).
        channels: usize,
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
    },
    /// One of `classes` classes per position of a sequence (target int64
    /// `[length]`, [`IGNORE_TOKEN`] where unlabelled), such as the next byte
    /// of a text; the head gives `[length, classes]` logits per example; loss
    /// cross-entropy over the labelled positions; metrics CE (nats per
    /// token), `bits` (bits per token: bits per byte on byte-level text),
    /// `perplexity` and next-token `accuracy`.
    TokenMulticlass {
        /// Number of classes.
        classes: usize,
        /// Positions per example.
        length: usize,
    },
}

impl TaskType {
    /// The name pipelines write in `type = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            TaskType::Regression => "regression",
            TaskType::Vector(_) => "vector",
            TaskType::Binary => "binary",
            TaskType::Multiclass(_) => "multiclass",
            TaskType::Multilabel(_) => "multilabel",
            TaskType::DenseMulticlass { .. } => "dense-multiclass",
            TaskType::DenseRegression { .. } => "dense-regression",
            TaskType::TokenMulticlass { .. } => "token-multiclass",
        }
    }

    /// The output size `(height, width)` of a per-pixel task.
    pub fn dense(self) -> Option<(usize, usize)> {
        match self {
            TaskType::DenseMulticlass { height, width, .. }
            | TaskType::DenseRegression { height, width, .. } => Some((height, width)),
            _ => None,
        }
    }

    /// The dtype and per-example shape of the target.
    pub fn target(self) -> (Kind, Vec<i64>) {
        match self {
            TaskType::Regression | TaskType::Binary => (Kind::Float, vec![]),
            TaskType::Multiclass(_) => (Kind::Int64, vec![]),
            TaskType::Multilabel(n) | TaskType::Vector(n) => (Kind::Float, vec![n as i64]),
            TaskType::DenseMulticlass { height, width, .. } => {
                (Kind::Int64, vec![height as i64, width as i64])
            }
            TaskType::DenseRegression {
                channels,
                height,
                width,
            } => (
                Kind::Float,
                vec![channels as i64, height as i64, width as i64],
            ),
            TaskType::TokenMulticlass { length, .. } => (Kind::Int64, vec![length as i64]),
        }
    }

    /// The training loss of a task with real-valued targets unless the
    /// pipeline picks one: L1 per pixel (depth maps, as the dense
    /// multi-task literature trains them), MSE otherwise.
    pub fn default_loss(self) -> RegressionLoss {
        match self {
            TaskType::DenseRegression { .. } => RegressionLoss::Mae,
            _ => RegressionLoss::Mse,
        }
    }

    /// The metric Δm compares by default.
    pub fn primary(self) -> &'static str {
        match self {
            TaskType::Regression | TaskType::Vector(_) => "mse",
            TaskType::Binary => "auc",
            TaskType::Multiclass(_) => "accuracy",
            TaskType::Multilabel(_) => "f1",
            TaskType::DenseMulticlass { .. } => "miou",
            TaskType::DenseRegression { .. } => "abs_err",
            TaskType::TokenMulticlass { .. } => "bits",
        }
    }
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
    /// The loss of tasks with real-valued targets (regression, vector and
    /// dense-regression).
    pub loss: RegressionLoss,
    /// For regression targets stored standardised: (mean, std) to report
    /// metrics in original units.
    pub scale: Option<(f64, f64)>,
    /// The metric Δm compares for this task.
    pub primary: &'static str,
}

impl Task {
    /// The width of the task head's output (channels per pixel for the
    /// dense types).
    pub fn output_dim(&self) -> usize {
        match self.kind {
            TaskType::Multiclass(n) | TaskType::Multilabel(n) | TaskType::Vector(n) => n,
            TaskType::DenseMulticlass { classes, .. }
            | TaskType::TokenMulticlass { classes, .. } => classes,
            TaskType::DenseRegression { channels, .. } => channels,
            TaskType::Regression | TaskType::Binary => 1,
        }
    }

    /// A task of type `kind` reporting its metrics as they are (no scale),
    /// with its type's primary metric; regression tasks train on MSE.
    pub fn new(name: impl Into<String>, kind: TaskType) -> Task {
        Task {
            name: name.into(),
            kind,
            loss: kind.default_loss(),
            scale: None,
            primary: kind.primary(),
        }
    }

    /// A binary task; Δm compares its AUC.
    pub fn binary(name: impl Into<String>) -> Task {
        Task::new(name, TaskType::Binary)
    }

    /// A regression task with MSE loss reported unscaled.
    pub fn regression(name: impl Into<String>) -> Task {
        Task::new(name, TaskType::Regression)
    }
}

/// One split: named inputs (each `[N, ...]`), one target tensor `[N]` per task
/// (float32, or int64 for multiclass) and, per task, which rows have a label.
pub struct Split {
    /// The inputs, by name, in the dataset's [`InputSpec`] order.
    pub inputs: Vec<(String, Tensor)>,
    /// Targets, in task order. A row without a label holds a placeholder.
    pub targets: Vec<Tensor>,
    /// Per task, a bool `[N]` mask of the rows that have a label, or `None`
    /// when all do. Rows without a label count in neither loss nor metric.
    pub masks: Vec<Option<Tensor>>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.inputs
            .first()
            .map(|(_, t)| t)
            .or(self.targets.first())
            .and_then(|t| t.size().first().copied())
            .unwrap_or(0) as usize
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Every tensor of the split through `f` (which keeps dimension 0 the rows).
    fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor, tch::TchError>) -> Result<Split> {
        Ok(Split {
            inputs: self
                .inputs
                .iter()
                .map(|(n, t)| Ok((n.clone(), f(t)?)))
                .collect::<Result<_>>()?,
            targets: self.targets.iter().map(&f).collect::<Result<_, _>>()?,
            masks: self
                .masks
                .iter()
                .map(|m| m.as_ref().map(&f).transpose())
                .collect::<Result<_, _>>()?,
        })
    }

    /// The rows `index` (an int64 tensor on the split's device).
    pub fn rows(&self, index: &Tensor) -> Result<Split> {
        self.map(|t| t.f_index_select(0, index))
    }

    /// The rows `start..start + len`, without copying.
    pub fn slice(&self, start: usize, len: usize) -> Result<Split> {
        self.map(|t| t.f_narrow(0, start as i64, len as i64))
    }

    fn to_device(&self, device: Device) -> Result<Split> {
        self.map(|t| t.f_to_device(device))
    }

    /// Per task, how many rows have a label.
    pub fn labelled(&self) -> Result<Vec<usize>> {
        let n = self.len();
        self.masks
            .iter()
            .map(|m| match m {
                Some(m) => Ok(m.f_sum(Kind::Int64)?.f_int64_value(&[])? as usize),
                None => Ok(n),
            })
            .collect()
    }

    /// The Pearson correlation of every pair of scalar tasks' labels
    /// (regression and binary: one number per row) over the rows where both
    /// have one; `None` for a pair with another task type, fewer than two
    /// such rows, or a constant label. Standardised targets give the
    /// correlations of the original units.
    pub fn label_correlations(&self, tasks: &[Task]) -> Result<Vec<Vec<Option<f64>>>> {
        let scalar = |t: usize| matches!(tasks[t].kind, TaskType::Regression | TaskType::Binary);
        let values = |t: usize| -> Result<Vec<f64>> {
            let y = self.targets[t]
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?;
            Ok(Vec::<f64>::try_from(y.f_reshape([-1])?)?)
        };
        let has = |t: usize| -> Result<Option<Vec<bool>>> {
            self.masks[t]
                .as_ref()
                .map(|m| Ok(Vec::<bool>::try_from(m.f_to_device(Device::Cpu)?)?))
                .transpose()
        };
        // Per scalar task, its labels and which rows have one.
        type Labels = (Vec<f64>, Option<Vec<bool>>);
        let columns: Vec<Option<Labels>> = (0..tasks.len())
            .map(|t| match scalar(t) {
                true => Ok(Some((values(t)?, has(t)?))),
                false => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut out = vec![vec![None; tasks.len()]; tasks.len()];
        for a in 0..tasks.len() {
            for b in a..tasks.len() {
                let (Some((x, mx)), Some((y, my))) = (&columns[a], &columns[b]) else {
                    continue;
                };
                let both =
                    |r: usize| mx.as_ref().is_none_or(|m| m[r]) && my.as_ref().is_none_or(|m| m[r]);
                let rows: Vec<usize> = (0..x.len()).filter(|&r| both(r)).collect();
                let r = pearson(rows.iter().map(|&r| (x[r], y[r])));
                out[a][b] = r;
                out[b][a] = r;
            }
        }
        Ok(out)
    }

    fn only(&self, task: usize) -> Split {
        Split {
            inputs: self
                .inputs
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            targets: vec![self.targets[task].shallow_clone()],
            masks: vec![self.masks[task].as_ref().map(Tensor::shallow_clone)],
        }
    }
}

/// Pearson's r of the pairs (two passes, in f64); `None` below two pairs or
/// for a constant side.
fn pearson(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let n = pairs.clone().count() as f64;
    if n < 2.0 {
        return None;
    }
    let (sx, sy) = pairs
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        xy += (x - mx) * (y - my);
        xx += (x - mx) * (x - mx);
        yy += (y - my) * (y - my);
    }
    (xx > 0.0 && yy > 0.0).then(|| (xy / (xx * yy).sqrt()).clamp(-1.0, 1.0))
}

/// A multi-task dataset: the tasks, what its inputs are, and three splits.
pub struct Dataset {
    /// The tasks, in the order of every per-task tensor.
    pub tasks: Vec<Task>,
    /// The inputs every split holds.
    pub inputs: Vec<InputSpec>,
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Split,
}

impl Dataset {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The device the data are on.
    pub fn device(&self) -> Device {
        self.train
            .targets
            .first()
            .or(self.train.inputs.first().map(|(_, t)| t))
            .map_or(Device::Cpu, Tensor::device)
    }

    /// The same data on `device`.
    pub fn to_device(&self, device: Device) -> Result<Dataset> {
        Ok(Dataset {
            tasks: self.tasks.clone(),
            inputs: self.inputs.clone(),
            train: self.train.to_device(device)?,
            val: self.val.to_device(device)?,
            test: self.test.to_device(device)?,
        })
    }

    /// The single-task dataset of task `task` (for single-task baselines).
    pub fn only_task(&self, task: usize) -> Dataset {
        Dataset {
            tasks: vec![self.tasks[task].clone()],
            inputs: self.inputs.clone(),
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

    /// Checks what a data kind produced against what it declared: every split
    /// holds every input with its dtype and shape, ids stay inside their
    /// vocabularies, targets and masks have one row per example, and every
    /// task has at least one label in the training split.
    pub fn check(&self, kind: &str) -> Result<()> {
        let bad = |message: String| Err(Error::config("kind", format!("`{kind}` data: {message}")));
        for (split_name, split) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            let rows = split.len() as i64;
            if split.inputs.len() != self.inputs.len() || split.targets.len() != self.tasks.len() {
                return bad(format!(
                    "the {split_name} split does not hold every input and task"
                ));
            }
            for (spec, (name, tensor)) in self.inputs.iter().zip(&split.inputs) {
                let mut expected = vec![rows];
                expected.extend(spec.shape.iter().map(|&d| d as i64));
                let dtype = spec.kind.dtype();
                if *name != spec.name || tensor.size() != expected || tensor.kind() != dtype {
                    return bad(format!(
                        "the {split_name} split's input `{name}` is {:?} {:?}, declared {} {expected:?}",
                        tensor.kind(),
                        tensor.size(),
                        spec.name
                    ));
                }
                if spec.kind == InputKind::Index && !spec.vocab.is_empty() && rows > 0 {
                    check_ids(kind, split_name, spec, tensor)?;
                }
            }
            for (t, (target, mask)) in split.targets.iter().zip(&split.masks).enumerate() {
                let name = &self.tasks[t].name;
                let (dtype, shape) = self.tasks[t].kind.target();
                let expected: Vec<i64> = std::iter::once(rows).chain(shape).collect();
                if target.size() != expected || target.kind() != dtype {
                    return bad(format!(
                        "the {split_name} split's targets of {} task `{name}` are {} {:?}, expected {} {expected:?}",
                        self.tasks[t].kind.name(),
                        taskweave_plugin_api::kind_name(target.kind()),
                        target.size(),
                        taskweave_plugin_api::kind_name(dtype),
                    ));
                }
                if let Some(mask) = mask {
                    if mask.size() != [rows] || mask.kind() != Kind::Bool {
                        return bad(format!("task `{name}`'s label mask is not bool [{rows}]"));
                    }
                }
            }
        }
        // A task no row of a split labels trains on nothing, or has no
        // validation score to select by, or no test metric to report.
        for (name, split) in [
            ("training", &self.train),
            ("validation", &self.val),
            ("test", &self.test),
        ] {
            if split.is_empty() {
                continue;
            }
            for ((task, mask), target) in self.tasks.iter().zip(&split.masks).zip(&split.targets) {
                if !labels_anything(task, target, mask.as_ref())? {
                    return Err(Error::config(
                        format!("tasks.{}", task.name),
                        format!(
                            "no {} of the {name} split has a label for this task",
                            match task.kind.dense() {
                                Some(_) => "pixel",
                                None if matches!(task.kind, TaskType::TokenMulticlass { .. }) =>
                                    "position",
                                None => "row",
                            }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether some row `mask` keeps (all without one) labels at least one of
/// its values: per-pixel and per-position targets mark an unlabelled value
/// in the value itself ([`IGNORE_PIXEL`], [`IGNORE_TOKEN`], NaN).
fn labels_anything(task: &Task, target: &Tensor, mask: Option<&Tensor>) -> Result<bool> {
    let target = match mask {
        Some(mask) => target.f_index(&[Some(mask)])?,
        None => target.shallow_clone(),
    };
    let labelled = match task.kind {
        TaskType::DenseMulticlass { .. } => target.f_ne(IGNORE_PIXEL)?,
        TaskType::TokenMulticlass { .. } => target.f_ne(IGNORE_TOKEN)?,
        TaskType::DenseRegression { .. } => target.f_isnan()?.f_logical_not()?,
        _ => return Ok(target.size().first().is_some_and(|&rows| rows > 0)),
    };
    Ok(bool::try_from(labelled.f_any()?)?)
}

/// Every id of `tensor` is in `0..vocab` of its column.
fn check_ids(kind: &str, split: &str, spec: &InputSpec, tensor: &Tensor) -> Result<()> {
    let columns = spec.shape.last().copied().unwrap_or(1).max(1);
    let flat = tensor.f_reshape([-1, columns as i64])?;
    for c in 0..columns {
        let vocab = spec.vocab_of(c).unwrap_or(0) as i64;
        let column = flat.f_select(1, c as i64)?;
        let (lo, hi) = (
            column.f_min()?.int64_value(&[]),
            column.f_max()?.int64_value(&[]),
        );
        if lo < 0 || hi >= vocab {
            return Err(Error::config(
                "kind",
                format!(
                    "`{kind}` data: the {split} split's input `{}` column {c} has ids in {lo}..={hi}, outside its vocabulary of {vocab}",
                    spec.name
                ),
            ));
        }
    }
    Ok(())
}

/// A float32 `[rows, cols]` tensor from row-major values.
pub(crate) fn matrix(values: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(&values).f_reshape([rows as i64, cols as i64])?)
}

/// Standardises the columns of `splits` with the statistics of the first
/// (training) split; constant columns are only centred. The statistics are
/// summed in float64: float32 sums overflow for columns near its limit.
pub(crate) fn standardize(splits: [&mut Tensor; 3]) -> Result<()> {
    let [train, val, test] = splits;
    let wide = train.f_to_kind(Kind::Double)?;
    let mean = wide.f_mean_dim(0, true, Kind::Double)?;
    let std = wide.f_std_dim(0, false, true)?;
    let std = std.f_where_scalarother(&std.f_gt(1e-12)?, 1.0)?;
    let (mean, std) = (mean.f_to_kind(train.kind())?, std.f_to_kind(train.kind())?);
    for t in [train, val, test] {
        *t = t.f_sub(&mean)?.f_div(&std)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_correlations_pair_the_rows_both_tasks_label() {
        let tasks = vec![
            Task::new("a", TaskType::Regression),
            Task::new("b", TaskType::Regression),
            Task::new("c", TaskType::Binary),
            Task::new("k", TaskType::Multiclass(3)),
        ];
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        // b = 2a + 1 where labelled; row 4's placeholder would break it.
        let b = [3.0f32, 5.0, 7.0, 9.0, -100.0];
        let c = [1.0f32, 1.0, 0.0, 0.0, 0.0];
        let split = Split {
            inputs: vec![],
            targets: vec![
                Tensor::from_slice(&a),
                Tensor::from_slice(&b),
                Tensor::from_slice(&c),
                Tensor::from_slice(&[0i64, 1, 2, 0, 1]),
            ],
            masks: vec![
                None,
                Some(Tensor::from_slice(&[true, true, true, true, false])),
                None,
                None,
            ],
        };
        assert_eq!(split.labelled().unwrap(), [5, 4, 5, 5]);
        let r = split.label_correlations(&tasks).unwrap();
        assert!((r[0][1].unwrap() - 1.0).abs() < 1e-12, "{r:?}");
        assert_eq!(r[0][1], r[1][0]);
        // a against c over all five rows: cov −3, variances 10 and 1.2.
        let want = -3.0 / (10.0f64 * 1.2).sqrt();
        assert!((r[0][2].unwrap() - want).abs() < 1e-12);
        assert!(
            r[0][3].is_none() && r[3][3].is_none(),
            "multiclass has none"
        );
        assert!((r[2][2].unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(
            pearson([(1.0, 2.0), (1.0, 3.0)].into_iter()),
            None,
            "constant side"
        );
        assert_eq!(pearson([(1.0, 2.0)].into_iter()), None);
    }

    fn dataset(ids: &[i64], vocab: Vec<usize>) -> Dataset {
        let split = || Split {
            inputs: vec![("fields".into(), Tensor::from_slice(ids).reshape([-1, 2]))],
            targets: vec![Tensor::zeros(
                [ids.len() as i64 / 2],
                (Kind::Float, Device::Cpu),
            )],
            masks: vec![None],
        };
        Dataset {
            tasks: vec![Task::binary("t")],
            inputs: vec![InputSpec::index("fields", vec![2], vocab)],
            train: split(),
            val: split(),
            test: split(),
        }
    }

    #[test]
    fn ids_outside_their_column_s_vocabulary_are_refused() {
        dataset(&[0, 4, 2, 0], vec![3, 5]).check("k").unwrap();
        let e = dataset(&[0, 4, 3, 0], vec![3, 5])
            .check("k")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "data.kind: `k` data: the train split's input `fields` column 0 has ids in 0..=3, outside its vocabulary of 3"
        );
        let e = dataset(&[0, -1, 1, 0], vec![3])
            .check("k")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("column 1 has ids in -1..=0"), "{e}");
    }

    #[test]
    fn inputs_of_another_shape_or_type_than_declared_are_refused() {
        let mut d = dataset(&[0, 1, 2, 0], vec![3, 3]);
        d.inputs[0].shape = vec![3];
        let e = d.check("k").err().unwrap().to_string();
        assert!(
            e.contains("input `fields` is Int64 [2, 2], declared fields [2, 3]"),
            "{e}"
        );
    }
}
