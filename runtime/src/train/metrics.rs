//! Per-task losses (what training minimises) and metrics (what evaluation
//! reports), and Δm, the mean relative improvement over single-task baselines.

use std::collections::BTreeMap;

use tch::{Kind, Reduction, Tensor};

use crate::data::{RegressionLoss, Split, Task, TaskType};
use crate::error::{Error, Result};
use crate::model::Model;

/// Metric name → value, for one task.
pub type TaskMetrics = BTreeMap<String, f64>;

/// Refuses outputs and targets whose shapes differ, rather than letting
/// libtorch broadcast them (a `[B]` target against `[B, 1]` predictions
/// would silently become a `[B, B]` loss).
fn check_shapes(task: &Task, output: &Tensor, target: &Tensor) -> Result<()> {
    let (out, want) = (output.size(), target.size());
    let fits = match task.kind {
        TaskType::Multiclass(k) => {
            out.len() == 2 && out[1] == k as i64 && want.len() == 1 && want[0] == out[0]
        }
        TaskType::Regression | TaskType::Binary => {
            out.len() == 2 && out[1] == 1 && want == [out[0]]
        }
    };
    if fits {
        return Ok(());
    }
    Err(Error::Run(format!(
        "task `{}`: the model gives outputs of shape {out:?} for targets of shape {want:?}",
        task.name
    )))
}

/// The training loss of `task` for head output `output` `[B, out]` and
/// `target` `[B]`: the mean over the rows `mask` marks as labelled (all rows
/// without a mask; 0 when no row of the batch has a label).
pub fn task_loss(
    task: &Task,
    output: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    check_shapes(task, output, target)?;
    let reduction = match mask {
        Some(_) => Reduction::None,
        None => Reduction::Mean,
    };
    let loss = match task.kind {
        TaskType::Regression => {
            let pred = output.f_squeeze_dim(-1)?;
            match task.loss {
                RegressionLoss::Mse => pred.f_mse_loss(target, reduction)?,
                RegressionLoss::Mae => pred.f_l1_loss(target, reduction)?,
            }
        }
        TaskType::Binary => output
            .f_squeeze_dim(-1)?
            .f_binary_cross_entropy_with_logits(
                target,
                None::<Tensor>,
                None::<Tensor>,
                reduction,
            )?,
        TaskType::Multiclass(_) => {
            output.f_cross_entropy_loss(target, None::<Tensor>, reduction, -100, 0.0)?
        }
    };
    Ok(match mask {
        None => loss,
        Some(mask) => {
            let weight = mask.f_to_kind(loss.kind())?;
            let count = weight.f_sum(loss.kind())?.f_clamp_min(1.0)?;
            loss.f_mul(&weight)?.f_sum(loss.kind())?.f_div(&count)?
        }
    })
}

/// Whether smaller values of `metric` are better.
pub fn lower_is_better(metric: &str) -> bool {
    !matches!(metric, "accuracy" | "auc")
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
    match task.kind {
        TaskType::Regression => {
            let std = task.scale.map_or(1.0, |(_, s)| s);
            let err = output.f_squeeze_dim(-1)?.f_sub(target)?.f_mul_scalar(std)?;
            m.insert("mse".into(), scalar(err.f_square()?.f_mean(Kind::Double)?)?);
            m.insert("mae".into(), scalar(err.f_abs()?.f_mean(Kind::Double)?)?);
        }
        TaskType::Binary => {
            let logits = output.f_squeeze_dim(-1)?;
            m.insert(
                "bce".into(),
                scalar(task_loss(task, output, target, None)?)?,
            );
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
            m.insert("ce".into(), scalar(task_loss(task, output, target, None)?)?);
            let hits = output.f_argmax(-1, false)?.f_eq_tensor(target)?;
            m.insert(
                "accuracy".into(),
                scalar(hits.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?)?,
            );
        }
    }
    Ok(m)
}

/// The model's outputs for every row of `split`, per task, in evaluation mode
/// and batches of `batch` rows, without gradients.
fn outputs(model: &mut Model, split: &Split, tasks: usize, batch: usize) -> Result<Vec<Tensor>> {
    let _guard = tch::no_grad_guard();
    let mut outputs: Vec<Vec<Tensor>> = (0..tasks).map(|_| Vec::new()).collect();
    let mut start = 0;
    while start < split.len() {
        let len = batch.min(split.len() - start);
        let part = split.slice(start, len)?;
        for (t, out) in model
            .forward(&part.inputs, false, false)?
            .into_iter()
            .enumerate()
        {
            outputs[t].push(out);
        }
        start += len;
    }
    outputs.iter().map(|o| Ok(Tensor::f_cat(o, 0)?)).collect()
}

/// The labelled rows of `output` and `target` (all of them without a mask).
fn labelled(output: Tensor, target: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    Ok(match mask {
        None => (output, target.shallow_clone()),
        Some(mask) => {
            let rows = mask.f_nonzero()?.f_squeeze_dim(1)?;
            (
                output.f_index_select(0, &rows)?,
                target.f_index_select(0, &rows)?,
            )
        }
    })
}

/// The training loss of every task over all of `split`.
pub fn split_losses(
    model: &mut Model,
    split: &Split,
    tasks: &[Task],
    batch: usize,
) -> Result<Vec<f64>> {
    let outs = outputs(model, split, tasks.len(), batch)?;
    (0..tasks.len())
        .map(|t| {
            scalar(task_loss(
                &tasks[t],
                &outs[t],
                &split.targets[t],
                split.masks[t].as_ref(),
            )?)
        })
        .collect()
}

/// Evaluates `model` on `split` in batches of `batch` rows, without
/// gradients; a task's metrics count only the rows that have its label.
pub fn evaluate(
    model: &mut Model,
    split: &Split,
    tasks: &[Task],
    batch: usize,
) -> Result<Vec<TaskMetrics>> {
    let outputs = outputs(model, split, tasks.len(), batch)?;
    outputs
        .into_iter()
        .enumerate()
        .map(|(t, out)| {
            let (out, target) = labelled(out, &split.targets[t], split.masks[t].as_ref())?;
            task_metrics(&tasks[t], &out, &target)
        })
        .collect()
}

/// Δm (%): the mean over tasks of the relative improvement of each task's
/// primary metric over its single-task baseline, signed so that positive is
/// better (Maninis et al. 2019; Vandenhende et al. 2021).
pub fn delta_m(tasks: &[Task], metrics: &[TaskMetrics], baselines: &[TaskMetrics]) -> Result<f64> {
    let mut sum = 0.0;
    for ((task, m), b) in tasks.iter().zip(metrics).zip(baselines) {
        let (Some(&value), Some(&base)) = (m.get(task.primary), b.get(task.primary)) else {
            return Err(Error::Run(format!(
                "no `{}` for task `{}` to compute Δm",
                task.primary, task.name
            )));
        };
        let sign = if lower_is_better(task.primary) {
            -1.0
        } else {
            1.0
        };
        sum += sign * (value - base) / base.abs().max(1e-12);
    }
    Ok(100.0 * sum / tasks.len().max(1) as f64)
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
        let (out_m, target_m) = labelled(out.shallow_clone(), &target, Some(&mask)).unwrap();
        assert_eq!(
            task_metrics(&task, &out_m, &target_m).unwrap(),
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
    fn regression_metrics_are_in_original_units() {
        let mut task = Task::regression("y");
        task.scale = Some((10.0, 2.0));
        let out = Tensor::from_slice(&[1.0f32, 0.0]).f_unsqueeze(1).unwrap();
        let m = task_metrics(&task, &out, &Tensor::from_slice(&[0.0f32, 0.0])).unwrap();
        assert_eq!(m["mae"], 1.0);
        assert_eq!(m["mse"], 2.0);
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
}
