//! Per-task losses (what training minimises) and metrics (what evaluation
//! reports), and Δm, the mean relative improvement over single-task baselines.

use std::collections::BTreeMap;

use tch::{Kind, Reduction, Tensor};

use crate::data::{RegressionLoss, Split, Task, TaskType, IGNORE_PIXEL, IGNORE_TOKEN};

use crate::error::{Error, Result};
use crate::model::Model;

/// Metric name → value, for one task.
pub type TaskMetrics = BTreeMap<String, f64>;

/// The per-example shape of a task's head output.
fn output_shape(kind: TaskType) -> Vec<i64> {
    match kind {
        TaskType::Regression | TaskType::Binary => vec![1],
        TaskType::Multiclass(n) | TaskType::Multilabel(n) | TaskType::Vector(n) => vec![n as i64],
        TaskType::DenseMulticlass {
            classes,
            height,
            width,
        } => {
            vec![classes as i64, height as i64, width as i64]
        }
        TaskType::DenseRegression {
            channels,
            height,
            width,
        } => {
            vec![channels as i64, height as i64, width as i64]
        }
        TaskType::TokenMulticlass { classes, length } => vec![length as i64, classes as i64],
    }
}

/// A regression head's predictions in its target's shape: `[B]` for a
/// scalar task (heads give `[B, 1]`), `[B, n]` for a vector task.
fn values(task: &Task, output: &Tensor) -> Result<Tensor> {
    Ok(match task.kind {
        TaskType::Regression => output.f_squeeze_dim(-1)?,
        _ => output.shallow_clone(),
    })
}

/// Refuses outputs and targets whose shapes differ from what the task type
/// fixes, rather than letting libtorch broadcast them (a `[B]` target
/// against `[B, 1]` predictions would silently become a `[B, B]` loss).
fn check_shapes(task: &Task, output: &Tensor, target: &Tensor) -> Result<()> {
    let (out, want) = (output.size(), target.size());
    let rows = out.first().copied().unwrap_or(-1);
    let fits = out[1..] == output_shape(task.kind)[..]
        && want.first() == Some(&rows)
        && want[1..] == task.kind.target().1[..];
    if fits {
        return Ok(());
    }
    Err(Error::Run(format!(
        "task `{}`: the model gives outputs of shape {out:?} for targets of shape {want:?}",
        task.name
    )))
}

/// The per-element training loss of `task` and, when some elements carry no
/// label (rows outside `mask`, ignored pixels, NaN values), the 0/1 weight
/// of each element.
fn elements(
    task: &Task,
    output: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    check_shapes(task, output, target)?;
    let none = Reduction::None;
    // Per pixel or value: which elements have a label, and the target with
    // a harmless stand-in where they do not.
    let (valid, target) = match task.kind {
        TaskType::DenseMulticlass { .. } | TaskType::TokenMulticlass { .. } => {
            let ignored = match task.kind {
                TaskType::DenseMulticlass { .. } => IGNORE_PIXEL,
                _ => IGNORE_TOKEN,
            };
            let valid = target.f_ne(ignored)?;
            (
                Some(valid.shallow_clone()),
                target.f_where_scalarother(&valid, 0)?,
            )
        }
        TaskType::DenseRegression { .. } => {
            let valid = target.f_isnan()?.f_logical_not()?;
            (
                Some(valid.shallow_clone()),
                target.f_where_scalarother(&valid, 0.0)?,
            )
        }
        _ => (None, target.shallow_clone()),
    };
    let loss = match task.kind {
        TaskType::Regression | TaskType::Vector(_) | TaskType::DenseRegression { .. } => {
            let pred = values(task, output)?;
            match task.loss {
                RegressionLoss::Mse => pred.f_mse_loss(&target, none)?,
                RegressionLoss::Mae => pred.f_l1_loss(&target, none)?,
            }
        }
        TaskType::Binary => output
            .f_squeeze_dim(-1)?
            .f_binary_cross_entropy_with_logits(&target, None::<Tensor>, None::<Tensor>, none)?,
        TaskType::Multilabel(_) => output.f_binary_cross_entropy_with_logits(
            &target,
            None::<Tensor>,
            None::<Tensor>,
            none,
        )?,
        TaskType::Multiclass(_) | TaskType::DenseMulticlass { .. } => {
            output.f_cross_entropy_loss(&target, None::<Tensor>, none, -100, 0.0)?
        }
        // Logits `[B, L, classes]`; cross-entropy reads the classes at dimension 1.
        TaskType::TokenMulticlass { .. } => output.f_transpose(1, 2)?.f_cross_entropy_loss(
            &target,
            None::<Tensor>,
            none,
            -100,
            0.0,
        )?,
    };
    // The row mask, broadcast over each row's elements.
    let rows = match mask {
        None => None,
        Some(mask) => {
            let mut shape = vec![mask.size()[0]];
            shape.resize(loss.dim(), 1);
            Some(mask.f_view(shape.as_slice())?)
        }
    };
    let weight = match (valid, rows) {
        (None, None) => None,
        (Some(w), None) | (None, Some(w)) => Some(w),
        (Some(v), Some(r)) => Some(v.f_logical_and(&r)?),
    };
    let weight = weight
        .map(|w| w.f_expand_as(&loss)?.f_to_kind(loss.kind()))
        .transpose()?;
    Ok((loss, weight))
}

/// The summed loss and the number of labelled elements, as tensors.
pub(crate) fn loss_sums(
    task: &Task,
    output: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (loss, weight) = elements(task, output, target, mask)?;
    let kind = loss.kind();
    Ok(match weight {
        None => (
            loss.f_sum(kind)?,
            Tensor::from(loss.numel() as f32).f_to_device(loss.device())?,
        ),
        Some(w) => (loss.f_mul(&w)?.f_sum(kind)?, w.f_sum(kind)?),
    })
}

/// The training loss of `task` for head output `output` and `target`: the
/// mean over the labelled elements (the rows `mask` marks, and for dense
/// tasks the labelled pixels); 0 when the batch has none.
pub fn task_loss(
    task: &Task,
    output: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (sum, count) = loss_sums(task, output, target, mask)?;
    loss_means(&sum, &count)
}

/// Loss sums over their labelled counts: the mean, 0 where nothing is
/// labelled (an unlabelled batch adds nothing to training).
pub(crate) fn loss_means(sums: &Tensor, counts: &Tensor) -> Result<Tensor> {
    Ok(sums.f_div(&counts.f_clamp_min(1.0)?)?)
}

/// Every task's summed loss and number of labelled elements (float32 `[T]`
/// each) for its head output (`outputs`, in task order) on `batch`, as
/// [`loss_sums`] gives them task by task: sum over count (at least 1) is
/// each task's [`task_loss`]. When every task is
/// scalar regression under one loss, or every task is binary, they are
/// computed together on `[B, T]`: one elementwise loss and one masked sum
/// instead of a dozen small operations per task, which is most of a small
/// model's step with many tasks.
pub(crate) fn task_loss_sums(
    tasks: &[Task],
    outputs: &[Tensor],
    batch: &Split,
) -> Result<(Tensor, Tensor)> {
    if outputs.len() != tasks.len() {
        return Err(Error::Method(format!(
            "the model gave {} outputs for {} tasks",
            outputs.len(),
            tasks.len()
        )));
    }
    let together = tasks.len() > 1
        && tasks.iter().all(|t| match (t.kind, tasks[0].kind) {
            (TaskType::Regression, TaskType::Regression) => t.loss == tasks[0].loss,
            (TaskType::Binary, TaskType::Binary) => true,
            _ => false,
        });
    if !together {
        let mut sums = Vec::with_capacity(tasks.len());
        let mut counts = Vec::with_capacity(tasks.len());
        for (t, (task, output)) in tasks.iter().zip(outputs).enumerate() {
            let (sum, count) = loss_sums(task, output, &batch.targets[t], batch.masks[t].as_ref())?;
            sums.push(sum.f_to_kind(Kind::Float)?);
            counts.push(count.f_to_kind(Kind::Float)?);
        }
        return Ok((Tensor::f_stack(&sums, 0)?, Tensor::f_stack(&counts, 0)?));
    }
    for (t, (task, output)) in tasks.iter().zip(outputs).enumerate() {
        check_shapes(task, output, &batch.targets[t])?;
    }
    let pred = Tensor::f_cat(outputs, 1)?; // [B, T]
    let target = Tensor::f_stack(&batch.targets, 1)?;
    let none = Reduction::None;
    let loss = match (tasks[0].kind, tasks[0].loss) {
        (TaskType::Binary, _) => {
            pred.f_binary_cross_entropy_with_logits(&target, None::<Tensor>, None::<Tensor>, none)?
        }
        (_, RegressionLoss::Mse) => pred.f_mse_loss(&target, none)?,
        (_, RegressionLoss::Mae) => pred.f_l1_loss(&target, none)?,
    };
    let loss = loss.f_to_kind(Kind::Float)?;
    let rows = pred.size()[0];
    if batch.masks.iter().all(Option::is_none) {
        let counts = Tensor::f_full([tasks.len() as i64], rows, (Kind::Float, pred.device()))?;
        return Ok((loss.f_sum_dim_intlist(0, false, Kind::Float)?, counts));
    }
    let masks = batch
        .masks
        .iter()
        .map(|m| match m {
            Some(m) => Ok(m.shallow_clone()),
            None => Tensor::f_ones([rows], (Kind::Bool, pred.device())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let weight = Tensor::f_stack(&masks, 1)?.f_to_kind(Kind::Float)?;
    Ok((
        loss.f_mul(&weight)?
            .f_sum_dim_intlist(0, false, Kind::Float)?,
        weight.f_sum_dim_intlist(0, false, Kind::Float)?,
    ))
}

/// Every metric a task reports, and whether larger values are better: the
/// direction Δm and best-validation selection read.
const DIRECTIONS: [(&str, bool); 13] = [
    ("mse", false),
    ("mae", false),
    ("bce", false),
    ("ce", false),
    ("bits", false),
    ("perplexity", false),
    ("abs_err", false),
    ("rel_err", false),
    ("accuracy", true),
    ("auc", true),
    ("f1", true),
    ("miou", true),
    ("pixel_accuracy", true),
];

/// Whether smaller values of `metric` are better; `None` for a metric no
/// task reports.
pub fn lower_is_better(metric: &str) -> Option<bool> {
    DIRECTIONS
        .iter()
        .find(|(name, _)| *name == metric)
        .map(|&(_, higher)| !higher)
}

/// Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties
/// counted half. `None` when one class is absent.
fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l > 0.5)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

fn scalar(t: Tensor) -> Result<f64> {
    Ok(t.f_double_value(&[])?)
}

/// Metrics of one task from its concatenated outputs and targets.
fn task_metrics(task: &Task, output: &Tensor, target: &Tensor) -> Result<TaskMetrics> {
    check_shapes(task, output, target)?;
    let mut m = TaskMetrics::new();
    // The mean loss, NaN without rows like every other metric (the
    // training loss is 0 there, so that an unlabelled batch adds nothing).
    let mean_loss = || -> Result<f64> {
        match output.size()[0] {
            0 => Ok(f64::NAN),
            _ => scalar(task_loss(task, output, target, None)?),
        }
    };
    match task.kind {
        TaskType::Regression | TaskType::Vector(_) => {
            let std = task.scale.map_or(1.0, |(_, s)| s);
            // In float64: a squared error in original units can pass float32's range.
            let err = values(task, output)?
                .f_to_kind(Kind::Double)?
                .f_sub(&target.f_to_kind(Kind::Double)?)?
                .f_mul_scalar(std)?;
            m.insert("mse".into(), scalar(err.f_square()?.f_mean(Kind::Double)?)?);
            m.insert("mae".into(), scalar(err.f_abs()?.f_mean(Kind::Double)?)?);
        }
        TaskType::Binary => {
            let logits = output.f_squeeze_dim(-1)?;
            m.insert("bce".into(), mean_loss()?);
            let hits = logits
                .f_gt(0.0)?
                .f_to_kind(Kind::Float)?
                .f_eq_tensor(target)?;
            m.insert(
                "accuracy".into(),
                scalar(hits.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?)?,
            );
            let scores = Vec::<f32>::try_from(logits.f_to_device(tch::Device::Cpu)?)?;
            let labels = Vec::<f32>::try_from(target.f_to_device(tch::Device::Cpu)?)?;
            if let Some(auc) = auc(&scores, &labels) {
                m.insert("auc".into(), auc);
            }
        }
        TaskType::Multiclass(_) => {
            m.insert("ce".into(), mean_loss()?);
            let hits = output.f_argmax(-1, false)?.f_eq_tensor(target)?;
            m.insert(
                "accuracy".into(),
                scalar(hits.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?)?,
            );
        }
        TaskType::Multilabel(_) => {
            m.insert("bce".into(), mean_loss()?);
            let predicted = output.f_gt(0.0)?;
            let actual = target.f_gt(0.5)?;
            let count = |t: Tensor| -> Result<f64> { scalar(t.f_sum(Kind::Double)?) };
            let hits = count(predicted.f_eq_tensor(&actual)?)?;
            m.insert("accuracy".into(), hits / target.numel().max(1) as f64);
            // Micro-averaged F1 = 2TP / (2TP + FP + FN); 1 when nothing is
            // positive and nothing is predicted.
            let tp = count(predicted.f_logical_and(&actual)?)?;
            let wrong = count(predicted.f_logical_xor(&actual)?)?;
            m.insert(
                "f1".into(),
                if tp + wrong == 0.0 {
                    1.0
                } else {
                    2.0 * tp / (2.0 * tp + wrong)
                },
            );
        }
        TaskType::DenseMulticlass { .. }
        | TaskType::DenseRegression { .. }
        | TaskType::TokenMulticlass { .. } => {
            return Err(Error::Run(format!(
                "task `{}`: per-pixel and per-token metrics are accumulated per batch",
                task.name
            )))
        }
    }
    Ok(m)
}

/// Runs `model` over `split` in evaluation mode, in batches of `batch` rows
/// without gradients, handing each batch's rows and per-task outputs to `f`.
fn each_batch(
    model: &mut Model,
    split: &Split,
    batch: usize,
    mut f: impl FnMut(&Split, Vec<Tensor>) -> Result<()>,
) -> Result<()> {
    let _guard = tch::no_grad_guard();
    let mut start = 0;
    while start < split.len() {
        let len = batch.min(split.len() - start);
        let part = split.slice(start, len)?;
        let outputs = model.forward(&part.inputs, false, false)?;
        f(&part, outputs)?;
        start += len;
    }
    Ok(())
}

/// The training loss of every task over all of `split`: per task, the mean
/// over every labelled element of the split.
pub fn split_losses(
    model: &mut Model,
    split: &Split,
    tasks: &[Task],
    batch: usize,
) -> Result<Vec<f64>> {
    let mut sums = vec![(0.0, 0.0); tasks.len()];
    each_batch(model, split, batch, |part, outputs| {
        let (sum, count) = task_loss_sums(tasks, &outputs, part)?;
        let to_f64 = |t: Tensor| -> Result<Vec<f64>> {
            Ok(Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?)?)
        };
        for (t, (s, c)) in to_f64(sum)?.into_iter().zip(to_f64(count)?).enumerate() {
            sums[t].0 += s;
            sums[t].1 += c;
        }
        Ok(())
    })?;
    Ok(sums
        .iter()
        .map(|(sum, count)| sum / count.max(1.0))
        .collect())
}

/// What evaluation keeps of one task's batches.
enum Tally {
    /// The labelled rows' outputs and targets (AUC needs them all at once).
    Rows {
        outputs: Vec<Tensor>,
        targets: Vec<Tensor>,
    },
    /// Per-pixel classes: the confusion matrix `[target, predicted]` over
    /// labelled pixels, their summed cross-entropy and their count.
    Pixels {
        confusion: Tensor,
        ce: f64,
        count: f64,
    },
    /// Per-pixel values: summed absolute and squared errors over labelled
    /// values and their count; summed relative error over labelled non-zero
    /// values and theirs.
    Values {
        abs: f64,
        squared: f64,
        count: f64,
        rel: f64,
        nonzero: f64,
    },
    /// Per-token classes: summed cross-entropy over labelled positions, the
    /// correctly predicted ones and their count.
    Tokens { ce: f64, hits: f64, count: f64 },
}

impl Tally {
    fn new(task: &Task, device: tch::Device) -> Result<Tally> {
        Ok(match task.kind {
            TaskType::DenseMulticlass { classes, .. } => Tally::Pixels {
                confusion: Tensor::f_zeros(
                    [classes as i64, classes as i64],
                    (Kind::Int64, device),
                )?,
                ce: 0.0,
                count: 0.0,
            },
            TaskType::DenseRegression { .. } => Tally::Values {
                abs: 0.0,
                squared: 0.0,
                count: 0.0,
                rel: 0.0,
                nonzero: 0.0,
            },
            TaskType::TokenMulticlass { .. } => Tally::Tokens {
                ce: 0.0,
                hits: 0.0,
                count: 0.0,
            },
            _ => Tally::Rows {
                outputs: Vec::new(),
                targets: Vec::new(),
            },
        })
    }

    /// Adds one batch's output, target and row mask.
    fn add(
        &mut self,
        task: &Task,
        output: Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<()> {
        match self {
            Tally::Rows { outputs, targets } => {
                check_shapes(task, &output, target)?;
                let (output, target) = match mask {
                    None => (output, target.shallow_clone()),
                    Some(mask) => {
                        let rows = mask.f_nonzero()?.f_squeeze_dim(1)?;
                        (
                            output.f_index_select(0, &rows)?,
                            target.f_index_select(0, &rows)?,
                        )
                    }
                };
                outputs.push(output);
                targets.push(target);
            }
            Tally::Pixels {
                confusion,
                ce,
                count,
            } => {
                let (loss, weight) = elements(task, &output, target, mask)?;
                let labelled = match &weight {
                    Some(w) => w.f_gt(0.0)?,
                    None => loss.f_ones_like()?.f_to_kind(Kind::Bool)?,
                };
                let sums = loss_sums(task, &output, target, mask)?;
                *ce += scalar(sums.0)?;
                *count += scalar(sums.1)?;
                let classes = confusion.size()[0];
                let predicted = output.f_argmax(1, false)?.f_masked_select(&labelled)?;
                let actual = target.f_masked_select(&labelled)?;
                let pairs = actual
                    .f_mul_scalar(classes)?
                    .f_add(&predicted)?
                    .f_bincount(None::<Tensor>, classes * classes)?;
                *confusion = confusion.f_add(&pairs.f_view([classes, classes])?)?;
            }
            Tally::Values {
                abs,
                squared,
                count,
                rel,
                nonzero,
            } => {
                // The weights of the labelled values (the loss itself may be
                // squared: the errors are measured here).
                let (loss, weight) = elements(task, &output, target, mask)?;
                let weight = match weight {
                    Some(w) => w,
                    None => loss.f_ones_like()?,
                };
                let clean = target.f_nan_to_num(0.0, None, None)?;
                let error = output
                    .f_to_kind(Kind::Double)?
                    .f_sub(&clean.f_to_kind(Kind::Double)?)?
                    .f_abs()?;
                let nz = weight.f_mul(&clean.f_ne(0.0)?.f_to_kind(Kind::Float)?)?;
                let relative = error.f_div(&clean.f_abs()?.f_clamp_min(1e-12)?)?;
                *abs += scalar(error.f_mul(&weight)?.f_sum(Kind::Double)?)?;
                *squared += scalar(error.f_square()?.f_mul(&weight)?.f_sum(Kind::Double)?)?;
                *count += scalar(weight.f_sum(Kind::Double)?)?;
                *rel += scalar(relative.f_mul(&nz)?.f_sum(Kind::Double)?)?;
                *nonzero += scalar(nz.f_sum(Kind::Double)?)?;
            }
            Tally::Tokens { ce, hits, count } => {
                let (loss, weight) = elements(task, &output, target, mask)?;
                let weight = match weight {
                    Some(w) => w,
                    None => loss.f_ones_like()?,
                };
                let right = output
                    .f_argmax(-1, false)?
                    .f_eq_tensor(target)?
                    .f_to_kind(Kind::Float)?;
                *ce += scalar(loss.f_mul(&weight)?.f_sum(Kind::Double)?)?;
                *hits += scalar(right.f_mul(&weight)?.f_sum(Kind::Double)?)?;
                *count += scalar(weight.f_sum(Kind::Double)?)?;
            }
        }
        Ok(())
    }

    /// The tally of every rank's part of the split, in rank order.
    fn combined(mut self, world: crate::dist::World) -> Result<Tally> {
        if !world.is_parallel() {
            return Ok(self);
        }
        match &mut self {
            Tally::Rows { outputs, targets } => {
                for parts in [outputs, targets] {
                    *parts = vec![world.gather_rows(&Tensor::f_cat(parts, 0)?)?];
                }
            }
            Tally::Pixels {
                confusion,
                ce,
                count,
            } => {
                world.sum_(confusion)?;
                sum_each(world, [ce, count])?;
            }
            Tally::Values {
                abs,
                squared,
                count,
                rel,
                nonzero,
            } => sum_each(world, [abs, squared, count, rel, nonzero])?,
            Tally::Tokens { ce, hits, count } => sum_each(world, [ce, hits, count])?,
        }
        Ok(self)
    }

    fn finish(self, task: &Task) -> Result<TaskMetrics> {
        match self {
            Tally::Rows { outputs, targets } => task_metrics(
                task,
                &Tensor::f_cat(&outputs, 0)?,
                &Tensor::f_cat(&targets, 0)?,
            ),
            Tally::Pixels {
                confusion,
                ce,
                count,
            } => {
                let conf = confusion.f_to_kind(Kind::Double)?;
                let hits = conf.f_diagonal(0, 0, 1)?;
                let union = conf
                    .f_sum_dim_intlist(0, false, Kind::Double)?
                    .f_add(&conf.f_sum_dim_intlist(1, false, Kind::Double)?)?
                    .f_sub(&hits)?;
                // Classes absent from both targets and predictions do not count.
                let present = union.f_gt(0.0)?;
                let iou = hits
                    .f_masked_select(&present)?
                    .f_div(&union.f_masked_select(&present)?)?;
                let mut m = TaskMetrics::new();
                m.insert("ce".into(), ce / count.max(1.0));
                m.insert(
                    "pixel_accuracy".into(),
                    scalar(hits.f_sum(Kind::Double)?)? / count.max(1.0),
                );
                if iou.numel() > 0 {
                    m.insert("miou".into(), scalar(iou.f_mean(Kind::Double)?)?);
                }
                Ok(m)
            }
            Tally::Values {
                abs,
                squared,
                count,
                rel,
                nonzero,
            } => {
                let mut m = TaskMetrics::new();
                m.insert("abs_err".into(), abs / count.max(1.0));
                m.insert("mse".into(), squared / count.max(1.0));
                if nonzero > 0.0 {
                    m.insert("rel_err".into(), rel / nonzero);
                }
                Ok(m)
            }
            Tally::Tokens { ce, hits, count } => {
                let nats = ce / count.max(1.0);
                let mut m = TaskMetrics::new();
                m.insert("ce".into(), nats);
                m.insert("bits".into(), nats / std::f64::consts::LN_2);
                m.insert("perplexity".into(), nats.exp());
                m.insert("accuracy".into(), hits / count.max(1.0));
                Ok(m)
            }
        }
    }
}

/// Replaces each of `values` by its sum over the ranks.
fn sum_each<const N: usize>(world: crate::dist::World, values: [&mut f64; N]) -> Result<()> {
    let mut sums: Vec<f64> = values.iter().map(|v| **v).collect();
    world.sum_f64(&mut sums)?;
    for (value, sum) in values.into_iter().zip(sums) {
        *value = sum;
    }
    Ok(())
}

/// Evaluates `model` on `split` in batches of `batch` rows, without
/// gradients; a task's metrics count only its labelled rows (and pixels).
pub fn evaluate(
    model: &mut Model,
    split: &Split,
    tasks: &[Task],
    batch: usize,
) -> Result<Vec<TaskMetrics>> {
    let device = split
        .targets
        .first()
        .map_or(tch::Device::Cpu, Tensor::device);
    let mut tallies = tasks
        .iter()
        .map(|t| Tally::new(t, device))
        .collect::<Result<Vec<_>>>()?;
    // Under data-parallel training each rank evaluates its part of the
    // split, and the tallies are combined: every rank gets the metrics of
    // the whole split.
    let world = crate::dist::world();
    let part = world.shard(split.len());
    let own = split.slice(part.start, part.len())?;
    each_batch(model, &own, batch, |part, outputs| {
        for (t, out) in outputs.into_iter().enumerate() {
            tallies[t].add(&tasks[t], out, &part.targets[t], part.masks[t].as_ref())?;
        }
        Ok(())
    })?;
    tallies
        .into_iter()
        .zip(tasks)
        .map(|(tally, task)| tally.combined(world)?.finish(task))
        .collect()
}

/// Δm (%): the mean over tasks of the relative improvement of each task's
/// primary metric over its single-task baseline, signed so that positive is
/// better (Maninis et al. 2019; Vandenhende et al. 2021). A task whose
/// primary metric is undefined on the split (AUC where its rows hold one
/// class) is left out of the mean; with none left, Δm is an input error.
pub fn delta_m(tasks: &[Task], metrics: &[TaskMetrics], baselines: &[TaskMetrics]) -> Result<f64> {
    let (mut sum, mut counted) = (0.0, 0);
    for ((task, m), b) in tasks.iter().zip(metrics).zip(baselines) {
        let (Some(&value), Some(&base)) = (m.get(task.primary), b.get(task.primary)) else {
            continue;
        };
        counted += 1;
        let sign = match lower_is_better(task.primary) {
            Some(true) => -1.0,
            Some(false) => 1.0,
            None => {
                return Err(Error::Run(format!(
                    "task `{}`: Δm does not know whether `{}` is better high or low",
                    task.name, task.primary
                )))
            }
        };
        sum += sign * (value - base) / base.abs().max(1e-12);
    }
    if counted == 0 {
        let names: Vec<String> = tasks
            .iter()
            .map(|t| format!("`{}` of `{}`", t.primary, t.name))
            .collect();
        return Err(Error::Input(format!(
            "no task has its primary metric on this split ({}): an AUC needs both classes among \
             the split's labelled rows; give the split more rows, or check the labels",
            names.join(", ")
        )));
    }
    Ok(100.0 * sum / counted as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(auc(&[1.0, 2.0], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[1.0, 1.0], &[0.0, 1.0]), Some(0.5), "ties count half");
        assert_eq!(auc(&[1.0, 2.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn unlabelled_rows_count_in_neither_loss_nor_metric() {
        let task = Task::binary("b");
        let out = Tensor::from_slice(&[2.0f32, -1.0, 30.0, -4.0])
            .f_unsqueeze(1)
            .unwrap();
        // Row 2 has no label; its placeholder 0 against a logit of 30 would dominate.
        let target = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]);
        let mask = Tensor::from_slice(&[true, true, false, true]);
        let rows = Tensor::from_slice(&[0i64, 1, 3]);
        let (out_l, target_l) = (out.index_select(0, &rows), target.index_select(0, &rows));
        let masked = task_loss(&task, &out, &target, Some(&mask)).unwrap();
        let subset = task_loss(&task, &out_l, &target_l, None).unwrap();
        assert!(
            masked.allclose(&subset, 1e-6, 1e-7, false),
            "{masked} vs {subset}"
        );
        let mut tally = Tally::new(&task, tch::Device::Cpu).unwrap();
        tally
            .add(&task, out.shallow_clone(), &target, Some(&mask))
            .unwrap();
        assert_eq!(
            tally.finish(&task).unwrap(),
            task_metrics(&task, &out_l, &target_l).unwrap()
        );
        let none = Tensor::from_slice(&[false, false, false, false]);
        let zero = task_loss(&task, &out, &target, Some(&none)).unwrap();
        assert_eq!(
            zero.double_value(&[]),
            0.0,
            "a batch without labels adds nothing"
        );
    }

    #[test]
    fn task_loss_sums_together_equal_each_task_loss() {
        tch::manual_seed(0);
        let opts = (Kind::Float, tch::Device::Cpu);
        let rows = 9;
        let mae = Task {
            loss: RegressionLoss::Mae,
            ..Task::regression("m")
        };
        let groups: [Vec<Task>; 4] = [
            vec![
                Task::regression("a"),
                Task::regression("b"),
                Task::regression("c"),
            ],
            vec![mae.clone(), mae.clone()],
            vec![Task::binary("x"), Task::binary("y")],
            // Mixed: each task alone.
            vec![Task::regression("a"), Task::binary("y")],
        ];
        for tasks in &groups {
            let outputs: Vec<Tensor> = tasks
                .iter()
                .map(|_| Tensor::f_randn([rows, 1], opts).unwrap())
                .collect();
            let targets: Vec<Tensor> = tasks
                .iter()
                .map(|t| match t.kind {
                    TaskType::Binary => Tensor::f_randint(2, [rows], opts).unwrap(),
                    _ => Tensor::f_randn([rows], opts).unwrap(),
                })
                .collect();
            let some_rows =
                Tensor::from_slice(&[true, false, true, true, false, true, true, true, false]);
            let no_rows = Tensor::f_zeros([rows], (Kind::Bool, tch::Device::Cpu)).unwrap();
            for masks in [
                (0..tasks.len())
                    .map(|_| None)
                    .collect::<Vec<Option<Tensor>>>(),
                (0..tasks.len())
                    .map(|t| match t {
                        0 => Some(some_rows.shallow_clone()),
                        1 => Some(no_rows.shallow_clone()),
                        _ => None,
                    })
                    .collect(),
            ] {
                let batch = Split {
                    inputs: Vec::new(),
                    targets: targets.iter().map(Tensor::shallow_clone).collect(),
                    masks,
                };
                let (sums, counts) = task_loss_sums(tasks, &outputs, &batch).unwrap();
                let got = loss_means(&sums, &counts).unwrap();
                let want: Vec<Tensor> = (0..tasks.len())
                    .map(|t| {
                        task_loss(
                            &tasks[t],
                            &outputs[t],
                            &batch.targets[t],
                            batch.masks[t].as_ref(),
                        )
                        .unwrap()
                    })
                    .collect();
                let want = Tensor::stack(&want, 0);
                assert!(got.allclose(&want, 1e-6, 1e-7, false), "{got} vs {want}");
            }
        }
        // Shapes are still checked.
        let tasks = [Task::regression("a"), Task::regression("b")];
        let wrong = [
            Tensor::f_zeros([4, 1], opts).unwrap(),
            Tensor::f_zeros([4, 2], opts).unwrap(),
        ];
        let batch = Split {
            inputs: Vec::new(),
            targets: vec![
                Tensor::f_zeros([4], opts).unwrap(),
                Tensor::f_zeros([4], opts).unwrap(),
            ],
            masks: vec![None, None],
        };
        assert!(task_loss_sums(&tasks, &wrong, &batch).is_err());
        assert!(task_loss_sums(&tasks, &wrong[..1], &batch).is_err());
    }

    #[test]
    fn outputs_and_targets_of_different_shapes_are_refused_not_broadcast() {
        let task = Task::regression("y");
        let column = Tensor::zeros([4, 1], (Kind::Float, tch::Device::Cpu));
        // [B, 1] predictions against [B] targets are what heads give: fine.
        let _ = task_loss(
            &task,
            &column,
            &Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
            None,
        )
        .unwrap();
        // A [B, 1] target would broadcast to [B, B] in libtorch.
        let e = task_loss(&task, &column, &column, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "task `y`: the model gives outputs of shape [4, 1] for targets of shape [4, 1]"
        );
        let e = task_loss(
            &task,
            &Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu)),
            &Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[4, 3]"), "{e}");
    }

    #[test]
    fn vector_tasks_average_their_loss_and_metrics_over_every_value_of_the_labelled_rows() {
        let task = Task::new("eps", TaskType::Vector(2));
        let out = Tensor::from_slice(&[1.0f32, 3.0, 0.0, 0.0, 5.0, 5.0])
            .f_reshape([3, 2])
            .unwrap();
        let target = Tensor::zeros([3, 2], (Kind::Float, tch::Device::Cpu));
        let m = task_metrics(&task, &out, &target).unwrap();
        assert_eq!(m["mse"], (1.0 + 9.0 + 25.0 + 25.0) / 6.0);
        assert_eq!(m["mae"], (1.0 + 3.0 + 5.0 + 5.0) / 6.0);
        // Rows 0 and 1 labelled: the loss is the mean over their 4 values.
        let mask = Tensor::from_slice(&[true, true, false]);
        let loss = task_loss(&task, &out, &target, Some(&mask)).unwrap();
        assert_eq!(loss.double_value(&[]), 10.0 / 4.0);
        // A [B] target against [B, 2] outputs is refused, not broadcast.
        assert!(task_loss(
            &task,
            &out,
            &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
            None
        )
        .is_err());
    }

    #[test]
    fn regression_metrics_are_in_original_units() {
        let mut task = Task::regression("y");
        task.scale = Some((10.0, 2.0));
        let out = Tensor::from_slice(&[1.0f32, 0.0]).f_unsqueeze(1).unwrap();
        let m = task_metrics(&task, &out, &Tensor::from_slice(&[0.0f32, 0.0])).unwrap();
        assert_eq!(m["mae"], 1.0);
        assert_eq!(m["mse"], 2.0);
        // Squared errors beyond float32's range stay finite.
        task.scale = Some((0.0, 1e20));
        let m = task_metrics(&task, &out, &Tensor::from_slice(&[0.0f32, 0.0])).unwrap();
        assert_eq!(m["mse"], 0.5e40);
    }

    #[test]
    fn delta_m_signs_lower_and_higher_is_better() {
        let mut acc = Task::regression("b");
        acc.primary = "accuracy";
        let tasks = vec![Task::regression("a"), acc];
        let m = |a: f64, b: f64| {
            vec![
                TaskMetrics::from([("mse".into(), a)]),
                TaskMetrics::from([("accuracy".into(), b)]),
            ]
        };
        // mse 10% lower (+10%), accuracy 10% higher (+10%) → Δm = +10.
        let d = delta_m(&tasks, &m(0.9, 0.55), &m(1.0, 0.5)).unwrap();
        assert!((d - 10.0).abs() < 1e-9, "{d}");
    }

    fn tally(task: &Task, batches: &[(Tensor, Tensor, Option<Tensor>)]) -> TaskMetrics {
        let mut tally = Tally::new(task, tch::Device::Cpu).unwrap();
        for (out, target, mask) in batches {
            tally
                .add(task, out.shallow_clone(), target, mask.as_ref())
                .unwrap();
        }
        tally.finish(task).unwrap()
    }

    #[test]
    fn segmentation_ignores_unlabelled_pixels_and_rows_and_computes_miou_by_hand() {
        let kind = TaskType::DenseMulticlass {
            classes: 3,
            height: 1,
            width: 4,
        };
        let task = Task::new("seg", kind);
        // Logits [B = 2, 3 classes, 1, 4]: row 0 predicts 0, 1, 2, 2; row 1 predicts 1 everywhere.
        let onehot = |classes: &[i64]| {
            let t = Tensor::from_slice(classes).one_hot(3).to_kind(Kind::Float) * 10.0;
            t.transpose(0, 1).reshape([1, 3, 1, 4])
        };
        let out = Tensor::cat(&[onehot(&[0, 1, 2, 2]), onehot(&[1, 1, 1, 1])], 0);
        // Row 0: targets 0, 1, 1, ignored; row 1 has no label at all.
        let target = Tensor::from_slice(&[0i64, 1, 1, 255, 2, 2, 2, 2]).reshape([2, 1, 4]);
        let mask = Tensor::from_slice(&[true, false]);
        let m = tally(
            &task,
            &[(
                out.shallow_clone(),
                target.shallow_clone(),
                Some(mask.shallow_clone()),
            )],
        );
        // Labelled pixels: (0→0), (1→1), (1→2). IoU: class 0 = 1/1, class 1 = 1/2,
        // class 2 = 0/1 (predicted once, never right).
        assert!((m["pixel_accuracy"] - 2.0 / 3.0).abs() < 1e-12, "{m:?}");
        assert!((m["miou"] - (1.0 + 0.5 + 0.0) / 3.0).abs() < 1e-12, "{m:?}");
        // The loss is the mean over those 3 pixels only.
        let loss = task_loss(&task, &out, &target, Some(&mask))
            .unwrap()
            .double_value(&[]);
        assert!((loss - m["ce"]).abs() < 1e-6, "{loss} vs {}", m["ce"]);
        // Two batches tally as one.
        let halves = [0i64, 1].map(|r| {
            let i = Tensor::from_slice(&[r]);
            (
                out.index_select(0, &i),
                target.index_select(0, &i),
                Some(mask.index_select(0, &i)),
            )
        });
        assert_eq!(tally(&task, &halves), m);
    }

    #[test]
    fn dense_regression_skips_nan_values_reports_its_errors_and_trains_on_l1_or_mse() {
        let task = Task::new(
            "depth",
            TaskType::DenseRegression {
                channels: 1,
                height: 2,
                width: 2,
            },
        );
        let out = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([1, 1, 2, 2]);
        let target = Tensor::from_slice(&[2.0f32, f32::NAN, 0.0, 5.0]).reshape([1, 1, 2, 2]);
        let m = tally(
            &task,
            &[(out.shallow_clone(), target.shallow_clone(), None)],
        );
        // Errors 1, 3, 1 over labelled values; relative 1/2 and 1/5 over non-zero ones.
        assert!((m["abs_err"] - 5.0 / 3.0).abs() < 1e-6, "{m:?}");
        assert!((m["rel_err"] - (0.5 + 0.2) / 2.0).abs() < 1e-6, "{m:?}");
        let loss = task_loss(&task, &out, &target, None)
            .unwrap()
            .double_value(&[]);
        assert!(
            (loss - 5.0 / 3.0).abs() < 1e-6 && loss.is_finite(),
            "{loss}"
        );
        // Squared errors 1, 9, 1: reported, and the loss when MSE is picked
        // (the metrics stay the errors themselves).
        assert!((m["mse"] - 11.0 / 3.0).abs() < 1e-6, "{m:?}");
        let squared = Task {
            loss: RegressionLoss::Mse,
            ..task
        };
        let loss = task_loss(&squared, &out, &target, None)
            .unwrap()
            .double_value(&[]);
        assert!((loss - 11.0 / 3.0).abs() < 1e-6, "{loss}");
        let again = tally(&squared, &[(out, target, None)]);
        assert_eq!(again, m);
    }

    #[test]
    fn token_tasks_skip_ignored_positions_and_report_nats_bits_perplexity_and_accuracy() {
        let task = Task::new(
            "next",
            TaskType::TokenMulticlass {
                classes: 3,
                length: 2,
            },
        );
        // Row 0: position 0 logits favour class 2 (right), position 1 is
        // padding; row 1: uniform logits, then class 0 favoured (target 1).
        let out = Tensor::from_slice(&[
            0.0f32, 0.0, 2.0, 9.0, 9.0, 9.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
        ])
        .reshape([2, 2, 3]);
        let target = Tensor::from_slice(&[2i64, IGNORE_TOKEN, 0, 1]).reshape([2, 2]);
        let m = tally(
            &task,
            &[(out.shallow_clone(), target.shallow_clone(), None)],
        );
        let z =
            |logits: &[f64], k: usize| logits.iter().map(|l| l.exp()).sum::<f64>().ln() - logits[k];
        let ce = (z(&[0.0, 0.0, 2.0], 2) + z(&[0.0, 0.0, 0.0], 0) + z(&[1.0, 0.0, 0.0], 1)) / 3.0;
        assert!((m["ce"] - ce).abs() < 1e-6, "{m:?} vs {ce}");
        assert!(
            (m["bits"] - ce / std::f64::consts::LN_2).abs() < 1e-6,
            "{m:?}"
        );
        assert!((m["perplexity"] - ce.exp()).abs() < 1e-5, "{m:?}");
        // Right at (0, 0); a tie at (1, 0) goes to class 0 (right); wrong at (1, 1).
        assert!((m["accuracy"] - 2.0 / 3.0).abs() < 1e-12, "{m:?}");
        let loss = task_loss(&task, &out, &target, None)
            .unwrap()
            .double_value(&[]);
        assert!((loss - ce).abs() < 1e-6, "{loss} vs {ce}");
        // A row mask drops row 1 entirely.
        let mask = Tensor::from_slice(&[true, false]);
        let loss = task_loss(&task, &out, &target, Some(&mask))
            .unwrap()
            .double_value(&[]);
        assert!((loss - z(&[0.0, 0.0, 2.0], 2)).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn multilabel_metrics_count_labels() {
        let task = Task::new("tags", TaskType::Multilabel(3));
        let out = Tensor::from_slice(&[5.0f32, -5.0, 5.0, -5.0, -5.0, 5.0]).reshape([2, 3]);
        let target = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 1.0, 1.0]).reshape([2, 3]);
        let m = tally(&task, &[(out, target, None)]);
        // TP 2, FP 1, FN 1: F1 = 4 / 6; 4 of 6 labels right.
        assert!((m["f1"] - 4.0 / 6.0).abs() < 1e-12, "{m:?}");
        assert!((m["accuracy"] - 4.0 / 6.0).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn every_reported_metric_has_a_direction_and_an_unknown_one_is_an_error() {
        for (name, _) in DIRECTIONS {
            assert!(lower_is_better(name).is_some());
        }
        assert_eq!(lower_is_better("miou"), Some(false));
        assert_eq!(lower_is_better("abs_err"), Some(true));
        let mut task = Task::regression("a");
        task.primary = "bleu";
        let m = vec![TaskMetrics::from([("bleu".into(), 1.0)])];
        let e = delta_m(&[task], &m, &m).unwrap_err().to_string();
        assert!(e.contains("`bleu`"), "{e}");
    }

    #[test]
    fn delta_m_leaves_out_tasks_whose_metric_is_undefined_and_refuses_when_none_is_left() {
        let tasks = vec![Task::regression("a"), Task::binary("b")];
        let with_auc = |mse: f64, auc: Option<f64>| {
            let mut b = TaskMetrics::new();
            if let Some(auc) = auc {
                b.insert("auc".into(), auc);
            }
            vec![TaskMetrics::from([("mse".into(), mse)]), b]
        };
        // Task b's split holds one class: Δm is task a's alone.
        let d = delta_m(&tasks, &with_auc(0.9, None), &with_auc(1.0, None)).unwrap();
        assert!((d - 10.0).abs() < 1e-9, "{d}");
        let both = delta_m(&tasks, &with_auc(0.9, Some(0.6)), &with_auc(1.0, Some(0.5))).unwrap();
        assert!((both - 15.0).abs() < 1e-9, "{both}");
        let e = delta_m(
            &tasks[1..],
            &with_auc(1.0, None)[1..],
            &with_auc(1.0, None)[1..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("an AUC needs both classes"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn dense_outputs_of_another_size_are_refused() {
        let task = Task::new(
            "seg",
            TaskType::DenseMulticlass {
                classes: 2,
                height: 4,
                width: 4,
            },
        );
        let out = Tensor::zeros([1, 2, 4, 3], (Kind::Float, tch::Device::Cpu));
        let target = Tensor::zeros([1, 4, 4], (Kind::Int64, tch::Device::Cpu));
        let e = task_loss(&task, &out, &target, None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "task `seg`: the model gives outputs of shape [1, 2, 4, 3] for targets of shape [1, 4, 4]");
    }
}
