//! `taskweave call weighting|grouping|fusion`: one method call on tensors
//! from files, to cross-check a method against another framework on the same
//! numbers: a gradient weighting's own update, or a loss weighting's weights
//! applied to the gradients; a grouping's partition of the tasks; a logit
//! fusion's distribution and choices for one decoding step.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use taskweave::registry::KindTable;
use taskweave::spec::{validate, Node, NodeValue, Origin, Source};
use taskweave::train::checkpoint::{self, Checkpoint};
use taskweave::{Error, Result, Runtime};
use taskweave_plugin_api::{aggregate, FusionInput, GroupingInput, MethodContext, Role};
use taskweave_report::{render_png, Panel, Series};
use tch::{Device, Kind, Tensor};

use super::{check_inputs, check_out, check_outs, check_png, dirs_or_default, Env};
use crate::args::{FusionArgs, GroupingArgs, WeightingArgs};
use crate::output::Failure;

pub fn weighting(env: &Env, args: &WeightingArgs, out: &mut dyn Write) -> Result<(), Failure> {
    run(&env.runtime(&dirs_or_default(args.plugins.clone())), args)?;
    writeln!(out, "wrote {}", args.out.display())?;
    Ok(())
}

fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    let (tensors, _) = checkpoint::read_file(path)?;
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let listed = names.join(", ");
    tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            Error::Input(format!(
                "{} has no tensor `{name}` (it has: {listed})",
                path.display()
            ))
        })
}

/// Refuses NaN and infinity in the tensor `name` of `path` (a method given
/// them writes NaN with nothing said). Logits (`masked`) may hold −∞ for
/// masked entries, but each row `[.., V]` needs a finite one.
fn check_finite(path: &Path, name: &str, t: &Tensor, masked: bool) -> Result<()> {
    let t = t.f_to_kind(Kind::Double)?;
    let bad = match masked {
        true => t.f_isnan()?.f_logical_or(&t.f_isposinf()?)?,
        false => t.f_isfinite()?.f_logical_not()?,
    };
    let at = bad.f_nonzero()?;
    if at.size()[0] > 0 {
        let index = Vec::<i64>::try_from(at.f_get(0)?)?;
        // The first bad value in the same (row-major) order as `nonzero`.
        let value = t.f_masked_select(&bad)?.f_double_value(&[0])?;
        return Err(Error::Input(format!(
            "`{name}` in {} holds {value} at {index:?}: give finite values{}",
            path.display(),
            if masked {
                " (−inf only for masked entries)"
            } else {
                ""
            }
        )));
    }
    if masked && t.numel() > 0 {
        let empty = t.f_isneginf()?.f_all_dims(-1, false)?.f_nonzero()?;
        if empty.size()[0] > 0 {
            let row = Vec::<i64>::try_from(empty.f_get(0)?)?;
            return Err(Error::Input(format!(
                "`{name}` in {} is −inf everywhere in row {row:?}: a row needs at least one finite logit",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The method table `{ kind = name }` plus `sets`, validated like a
/// pipeline's `role_key` with `--set` locations in errors.
fn method_table(
    runtime: &Runtime,
    role: &str,
    role_key: &str,
    name: &str,
    sets: &[String],
) -> Result<serde_json::Value> {
    runtime.registry().warn_problems();
    let mut source = Source::string(String::new(), ".".into());
    let mut node = Node::table(Origin::Generated);
    source
        .apply_sets(&mut node, sets)
        .map_err(|d| source.error(vec![d]))?;
    if node.get("kind").is_some() {
        return Err(Error::Input(format!(
            "--set kind=...: the method is the argument after `{role_key}` (`{name}` here), not a key"
        )));
    }
    let kind = Node {
        value: NodeValue::String(name.to_string()),
        origin: Origin::Generated,
    };
    let _ = node.set_path(&["kind"], kind);
    validate(
        &node,
        &json!({ "x-taskweave-role": role }),
        role_key,
        &KindTable {
            registry: runtime.registry(),
        },
    )
    .map_err(|diagnostics| source.error(diagnostics))
}

/// Runs the weighting once on the given gradients (and losses) and writes its
/// update: a gradient weighting's own, or a loss weighting's weights applied to
/// the gradients.
fn run(runtime: &Runtime, call: &WeightingArgs) -> Result<()> {
    let mut inputs = vec![("--grads", call.grads.as_path())];
    inputs.extend(call.losses.as_deref().map(|l| ("--losses", l)));
    check_inputs(&inputs)?;
    let reads: Vec<&Path> = inputs.iter().map(|(_, p)| *p).collect();
    check_out(&call.out, &reads)?;
    let grads = read_tensor(&call.grads, "grads")?;
    if grads.dim() != 2
        || !matches!(
            grads.kind(),
            Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
        )
    {
        return Err(Error::Input(format!(
            "`grads` must be a floating-point matrix [T, P], got a {} tensor of shape {:?}",
            taskweave_plugin_api::kind_name(grads.kind()),
            grads.size()
        )));
    }
    let (tasks, values) = (grads.size()[0], grads.size()[1]);
    if tasks == 0 || values == 0 {
        return Err(Error::Input(format!(
            "`grads` in {} is [{tasks}, {values}]: a weighting needs at least one task and one parameter",
            &call.grads.display()
        )));
    }
    check_finite(&call.grads, "grads", &grads, false)?;
    let losses = match call.losses.as_deref() {
        Some(path) => {
            let losses = read_tensor(path, "losses")?;
            check_finite(path, "losses", &losses, false)?;
            losses
        }
        None => Tensor::f_ones([tasks], (grads.kind(), Device::Cpu))?,
    };
    if losses.size() != [tasks] {
        return Err(Error::Input(format!(
            "`losses` must have shape [{tasks}], got {:?}",
            losses.size()
        )));
    }

    let table = method_table(runtime, "Weighting", "weighting", &call.name, &call.sets)?;

    let ctx = MethodContext {
        tasks: (0..tasks)
            .map(|t| format!("task{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        seed: call.seed,
        weighting: table.to_string().into(),
        ..Default::default()
    };
    let mut method = runtime
        .create_method(Role::Weighting, &table, &ctx)?
        .into_weighting()?;
    let out = aggregate(
        method.as_mut(),
        call.step,
        &losses.f_to_kind(grads.kind())?,
        &grads,
    )?;
    let mut tensors = vec![("update".to_string(), out.combined)];
    if let Some(weights) = out.weights {
        tensors.push(("weights".to_string(), weights));
    }
    // Finite inputs can still overflow (values near float32's limit, a huge
    // preference or weight); training refuses such an update, so does this.
    for (name, t) in &tensors {
        if !bool::try_from(t.f_isfinite()?.f_all()?)? {
            return Err(Error::Input(format!(
                "`{}` computed a non-finite `{name}` from these inputs (values or settings beyond \
                 float32's range?); nothing was written",
                call.name
            )));
        }
    }
    checkpoint::write(
        &call.out,
        &Checkpoint {
            tensors,
            meta: json!({"weighting": table, "step": call.step}),
        },
    )
}

pub fn grouping(env: &Env, args: &GroupingArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let groups = run_grouping(&env.runtime(&dirs_or_default(args.plugins.clone())), args)?;
    writeln!(out, "wrote {} ({groups} groups)", args.out.display())?;
    Ok(())
}

/// The most tasks `call grouping` partitions: far beyond any diffusion
/// model's timesteps, and already terabytes for a pairwise cost.
const MAX_GROUPED_TASKS: usize = 1_000_000;

/// Runs the grouping once and writes `groups`, `intervals` when every group
/// is one contiguous run of tasks, and each score; returns the group count.
fn run_grouping(runtime: &Runtime, call: &GroupingArgs) -> Result<usize> {
    let inputs: Vec<(&str, &Path)> = call
        .signals
        .as_deref()
        .map(|s| ("--signals", s))
        .into_iter()
        .collect();
    check_inputs(&inputs)?;
    let reads: Vec<&Path> = inputs.iter().map(|(_, p)| *p).collect();
    let mut outs = vec![("--out", call.out.as_path())];
    outs.extend(call.plot.as_deref().map(|png| ("--plot", png)));
    check_outs(&outs, &reads)?;
    if let Some(png) = &call.plot {
        check_png("--plot", png)?;
    }
    if call.tasks == 0 {
        return Err(Error::Input(
            "--tasks 0: a grouping needs at least one task".into(),
        ));
    }
    // Before the tasks' names are made (tens of bytes each): a grouping's own
    // check of what it needs comes after them.
    if call.tasks > MAX_GROUPED_TASKS {
        return Err(Error::Input(format!(
            "--tasks {}: a grouping takes at most {MAX_GROUPED_TASKS} tasks (groupings compare tasks pairwise)",
            call.tasks
        )));
    }
    let mut signals = match &call.signals {
        Some(path) => checkpoint::read_file(path)?.0,
        None => Vec::new(),
    };
    if let Some(schedule) = call.schedule {
        signals = taskweave::diffusion::with_snr(
            signals,
            &schedule.snr(call.tasks),
            "--schedule gives the signal `snr`, but --signals has one too: drop one of them",
        )?;
    }
    let table = method_table(runtime, "Grouping", "grouping", &call.name, &call.sets)?;
    let ctx = MethodContext {
        tasks: (0..call.tasks)
            .map(|t| format!("task{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        ..Default::default()
    };
    let mut method = runtime
        .create_method(Role::Grouping, &table, &ctx)?
        .into_grouping()?;
    let partition = method.partition(&GroupingInput {
        num_tasks: call.tasks,
        signals: &signals,
    })?;
    let groups = &partition.groups;
    if groups.len() != call.tasks {
        return Err(Error::Method(format!(
            "`{}` returned {} groups for {} tasks",
            call.name,
            groups.len(),
            call.tasks
        )));
    }
    let as_i64: Vec<i64> = groups.iter().map(|&g| g as i64).collect();
    let mut tensors = vec![("groups".to_string(), Tensor::from_slice(&as_i64))];
    let count = groups.iter().max().map_or(0, |g| g + 1);
    if let Some(intervals) = taskweave::diffusion::intervals_of(groups) {
        let bounds: Vec<i64> = intervals.iter().flat_map(|&(a, b)| [a, b]).collect();
        tensors.push((
            "intervals".into(),
            Tensor::from_slice(&bounds).f_view([count as i64, 2])?,
        ));
    }
    for (name, value) in &partition.scores {
        tensors.push((name.clone(), Tensor::from(*value)));
    }
    if let Some(png) = &call.plot {
        let snr = signals.iter().find(|(n, _)| n == "snr").ok_or_else(|| {
            Error::Input(
                "--plot draws the signal `snr`: give --schedule or a --signals file holding it"
                    .into(),
            )
        })?;
        let values = Vec::<f64>::try_from(&snr.1.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
        std::fs::write(png, plot_groups(&call.name, groups, &values))
            .map_err(|e| Error::io(png, e))?;
    }
    checkpoint::write(
        &call.out,
        &Checkpoint {
            tensors,
            meta: json!({"grouping": table, "tasks": call.tasks}),
        },
    )?;
    Ok(count)
}

pub fn fusion(env: &Env, args: &FusionArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let rows = run_fusion(&env.runtime(&dirs_or_default(args.plugins.clone())), args)?;
    writeln!(out, "wrote {} ({rows} rows)", args.out.display())?;
    Ok(())
}

/// Runs the fusion once on the logits of `--logits` and writes `log_probs`,
/// `expert` and `alpha`; returns the number of rows.
fn run_fusion(runtime: &Runtime, call: &FusionArgs) -> Result<i64> {
    check_inputs(&[("--logits", call.logits.as_path())])?;
    check_out(&call.out, &[&call.logits])?;
    let float = |name: &str, t: &Tensor| -> Result<()> {
        match t.kind() {
            Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half => Ok(()),
            kind => Err(Error::Input(format!(
                "`{name}` must hold floating-point logits, got {}",
                taskweave_plugin_api::kind_name(kind)
            ))),
        }
    };
    let large = read_tensor(&call.logits, "large")?;
    float("large", &large)?;
    let [rows, vocab] = large.size()[..] else {
        return Err(Error::Input(format!(
            "`large` must be [B, V] logits, got shape {:?}",
            large.size()
        )));
    };
    let small = read_tensor(&call.logits, "small")?;
    float("small", &small)?;
    let experts = read_tensor(&call.logits, "experts")?;
    float("experts", &experts)?;
    for (name, t, want) in [
        ("small", &small, vec![rows, vocab]),
        ("experts", &experts, vec![experts.size()[0], rows, vocab]),
    ] {
        if t.size() != want {
            return Err(Error::Input(format!(
                "`{name}` is {:?}, but `large` is [B, V] = [{rows}, {vocab}]: `{name}` must be {}, over the same vocabulary",
                t.size(),
                if name == "small" { "[B, V]" } else { "[T, B, V]" }
            )));
        }
    }
    if experts.size()[0] == 0 {
        return Err(Error::Input("`experts` holds no expert (T = 0)".into()));
    }
    if rows == 0 || vocab == 0 {
        return Err(Error::Input(format!(
            "`large` is [B, V] = [{rows}, {vocab}]: a fusion needs at least one row and one token"
        )));
    }
    for (name, t) in [("large", &large), ("small", &small), ("experts", &experts)] {
        check_finite(&call.logits, name, t, true)?;
    }
    let kind = large.kind();
    if small.kind() != kind || experts.kind() != kind {
        return Err(Error::Input(format!(
            "`large`, `small` and `experts` must share one dtype, got {}, {} and {}",
            taskweave_plugin_api::kind_name(kind),
            taskweave_plugin_api::kind_name(small.kind()),
            taskweave_plugin_api::kind_name(experts.kind())
        )));
    }
    let table = method_table(runtime, "Fusion", "fusion", &call.name, &call.sets)?;
    // A fusion's tasks are its experts, as in a decoding pipeline.
    let ctx = MethodContext {
        device: "cpu".into(),
        tasks: (0..experts.size()[0])
            .map(|e| format!("expert{e}").as_str().into())
            .collect(),
        ..Default::default()
    };
    let mut method = runtime
        .create_method(Role::Fusion, &table, &ctx)?
        .into_fusion()?;
    let experts: Vec<Tensor> = experts.unbind(0);
    let fused = method.fuse(&FusionInput {
        large: &large,
        small: &small,
        experts: &experts,
    })?;
    let t = experts.len() as i64;
    if fused.log_probs.size() != [rows, vocab] || fused.alpha.size() != [rows, t] {
        return Err(Error::Method(format!(
            "`{}` returned log_probs {:?} and alpha {:?} for [B, V] = [{rows}, {vocab}] and {t} experts",
            call.name,
            fused.log_probs.size(),
            fused.alpha.size()
        )));
    }
    // From finite inputs: an overflow in the method's arithmetic (logits near
    // the float32 limit) or the method's fault; nothing to write either way.
    if fused.log_probs.f_isnan()?.f_any()?.f_int64_value(&[])? != 0 {
        return Err(Error::Method(format!(
            "`{}` returned NaN log-probabilities from finite logits (logits near the float32 \
             limit can overflow once combined)",
            call.name
        )));
    }
    let (expert, alpha) = taskweave::lm::active_expert(&fused.alpha)?;
    checkpoint::write(
        &call.out,
        &Checkpoint {
            tensors: vec![
                ("log_probs".into(), fused.log_probs),
                ("expert".into(), expert),
                ("alpha".into(), alpha),
            ],
            meta: json!({"fusion": table}),
        },
    )?;
    Ok(rows)
}

/// The SNR curve over timesteps 1..T, each group's timesteps in their own
/// colour (log scale).
fn plot_groups(method: &str, groups: &[usize], snr: &[f64]) -> Vec<u8> {
    let count = groups.iter().max().map_or(0, |g| g + 1);
    let series = (0..count)
        .map(|g| {
            let points: Vec<(f64, f64)> = groups
                .iter()
                .zip(snr)
                .enumerate()
                .filter(|(_, (group, _))| **group == g)
                .map(|(t, (_, &s))| ((t + 1) as f64, s))
                .collect();
            let first = points.first().map_or(0.0, |p| p.0);
            let last = points.last().map_or(0.0, |p| p.0);
            Series {
                label: format!("group {g}: {first}..{last}"),
                points,
            }
        })
        .collect();
    let panel = Panel {
        title: format!("{method}: groups on the SNR curve"),
        x_label: "timestep".into(),
        y_label: "SNR".into(),
        series,
        log_y: true,
        ..Default::default()
    };
    render_png(&[panel], 1)
}
