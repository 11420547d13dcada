//! The loop that fills a run directory: the resolved config, `metrics.jsonl`,
//! checkpoints, `curves.png` and `summary.json`, from step 0 or from the newest
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use taskweave_plugin_api::Host;
use tch::{Device, Kind};

use super::baselines::{baselines_dir, data_values, load_baselines};
use super::dir::{self, RunDir};
use super::interrupt;
use super::select::Selection;
use super::summary::Summary;
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::fsutil::{shell_word, write_atomic};
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::sections::{PipelineConfig, Select};
use crate::spec::to_toml;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::memory::MemoryLog;
use crate::train::metrics::{delta_m, TaskMetrics};
use crate::train::progress::Progress;
use crate::train::{Stepped, Trainer};
use taskweave_report::{render_png, Panel, Series};

/// Checkpoints kept per run (older ones are deleted).
const KEEP_CHECKPOINTS: usize = 2;
/// The checkpoint of the best validation score (`eval.select = "best-val"`).
const BEST: &str = "best.safetensors";

/// Everything the run loop needs besides the data.
pub struct RunContext<'a> {
    /// The resolved pipeline config.
    pub config: &'a PipelineConfig,
    /// The methods.
    pub registry: &'a Arc<Registry>,
    /// The host handed to methods.
    pub host: &'a Host,
    /// Where tensors live.
    pub device: Device,
    /// The pipeline's directory (recorded so that `resume` resolves paths alike).
    pub pipeline_dir: &'a Path,
    /// The runtime's plugin directories (recorded so that `resume` finds
    /// the plugins without `--plugins`).
    pub plugin_dirs: &'a [PathBuf],
    /// Show no progress.
    pub quiet: bool,
    /// The one task of the data a single-task baseline trains, recorded in
    /// run.json so that the run reopens (resume, flatness) with that task alone.
    pub task: Option<usize>,
    /// A [`StopHandle`](super::StopHandle)'s request, honoured (and cleared)
    /// at the next step boundary.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> RunContext<'a> {
    /// The context of `pipeline`'s runs: the process-wide settings of `[run]`
    /// (threads, the CUDA allocator) are applied here.
    pub fn new(pipeline: &'a Pipeline, quiet: bool) -> Result<RunContext<'a>> {
        let config = pipeline.config();
        let run = &config.run;
        if run.threads > 0 {
            tch::set_num_threads(run.threads as i32);
        }
        let device = crate::device::resolve("run.device", &run.device)?;
        crate::dist::train_on(device);
        if let Device::Cuda(ordinal) = device {
            crate::device::configure_allocator(
                ordinal,
                run.gpu_memory_fraction,
                &run.cuda_allocator,
            )?;
        }
        Ok(RunContext {
            config,
            registry: pipeline.registry(),
            host: pipeline.host(),
            device,
            pipeline_dir: pipeline.dir(),
            plugin_dirs: pipeline.runtime_plugin_dirs(),
            quiet,
            task: None,
            stop: None,
        })
    }

    /// `err`, naming `run.gpu_memory_fraction` when a capped CUDA run ran out
    /// of memory: libtorch's message gives bytes, not the setting to change.
    fn name_memory_cap(&self, err: Error) -> Error {
        let fraction = self.config.run.gpu_memory_fraction;
        if !err.is_out_of_memory() {
            return err;
        }
        let message = err.to_string();
        if self.device.is_cuda() && fraction > 0.0 {
            return Error::Run(format!(
                "the run needs more GPU memory than run.gpu_memory_fraction = {fraction} allows \
                 (that share of the device's memory is this process's cap): raise the fraction, \
                 or lower train.batch or eval.batch. {message}"
            ));
        }
        // What the model's size check before training cannot see: activations.
        Error::Run(format!(
            "the run ran out of memory on {}: lower train.batch or eval.batch, or the model's \
             widths. {}",
            crate::device::name(self.device),
            message.lines().next().unwrap_or_default()
        ))
    }

    /// A trainer for this pipeline over `data`.
    pub fn trainer(&self, data: Dataset) -> Result<Trainer> {
        Trainer::new(
            self.config,
            data,
            self.registry,
            self.host,
            self.device,
            self.pipeline_dir,
        )
    }
}

/// "1 task", "2 tasks".
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn metrics_json(tasks: &[Task], metrics: &[TaskMetrics]) -> Value {
    Value::Object(
        tasks
            .iter()
            .zip(metrics)
            .map(|(t, m)| (t.name.clone(), json!(m)))
            .collect(),
    )
}

/// Mean per-task losses and weights between two evaluations.
#[derive(Default)]
struct Running {
    loss: Vec<f64>,
    weights: Vec<f64>,
    steps: u64,
    weighted_steps: u64,
}

impl Running {
    fn add(&mut self, losses: &[f64], weights: Option<Vec<f64>>) {
        if self.loss.is_empty() {
            self.loss = vec![0.0; losses.len()];
        }
        self.loss.iter_mut().zip(losses).for_each(|(a, b)| *a += b);
        self.steps += 1;
        if let Some(w) = weights {
            if self.weights.is_empty() {
                self.weights = vec![0.0; w.len()];
            }
            self.weights.iter_mut().zip(&w).for_each(|(a, b)| *a += b);
            self.weighted_steps += 1;
        }
    }

    /// The sums as a checkpoint keeps them: each value's bits, so that a
    /// resumed run's means are the uninterrupted run's to the bit.
    fn state(&self) -> Value {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
        json!({"loss": bits(&self.loss), "weights": bits(&self.weights),
               "steps": self.steps, "weighted_steps": self.weighted_steps})
    }

    /// What [`Running::state`] kept (empty sums for a checkpoint without them).
    fn from_state(state: &Value) -> Running {
        let values = |key: &str| -> Vec<f64> {
            state[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(f64::from_bits)
                        .collect()
                })
                .unwrap_or_default()
        };
        Running {
            loss: values("loss"),
            weights: values("weights"),
            steps: u64_of(&state["steps"]),
            weighted_steps: u64_of(&state["weighted_steps"]),
        }
    }

    fn take(&mut self, tasks: &[Task]) -> (Value, Option<Value>) {
        let mean = |v: &[f64], n: u64| -> Value {
            Value::Object(
                tasks
                    .iter()
                    .zip(v)
                    .map(|(t, x)| (t.name.clone(), json!(x / n.max(1) as f64)))
                    .collect(),
            )
        };
        let loss = mean(&self.loss, self.steps);
        let weights = (self.weighted_steps > 0).then(|| mean(&self.weights, self.weighted_steps));
        *self = Running::default();
        (loss, weights)
    }
}

fn tensor_values(t: &tch::Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        t.f_detach()?
            .f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?
            .f_reshape([-1])?,
    )?)
}

/// The rows of `metrics.jsonl`, dropping unreadable lines with a warning (the
/// file is rewritten without them).
fn read_rows(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(
                "{} cannot be read ({}): the rows before the resumed step are lost; the run writes \
                 the rows from there on",
                path.display(),
                taskweave_plugin_api::io_reason(&e)
            );
            String::new()
        }
    };
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| match serde_json::from_str::<Value>(l) {
            Ok(row) => Some(row),
            Err(e) => {
                tracing::warn!(
                    "{} line {}: not a JSON row ({e}); dropped",
                    path.display(),
                    i + 1
                );
                None
            }
        })
        .collect()
}

/// Writes a file of the run directory: rank 0 does, the other ranks of a
/// data-parallel run write nothing.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    match crate::dist::world().is_root() {
        true => write_atomic(path, bytes),
        false => Ok(()),
    }
}

/// Writes a checkpoint of `trainer` to `path`: rank 0 does, after the
/// ranks agreed at this step (see [`Trainer::agree`]).
fn save(trainer: &Trainer, path: &Path, meta: Value) -> Result<()> {
    if crate::dist::world().is_root() {
        checkpoint::write(path, &trainer.checkpoint(meta)?)?;
    }
    Ok(())
}

fn write_history(path: &Path, history: &[Value]) -> Result<()> {
    let mut text = String::new();
    for record in history {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    write_file(path, text.as_bytes())
}

/// The summary.json of the run in `dir` (`Null` when missing or unreadable).
fn summary_of(dir: &Path) -> Value {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// On resuming from step `step`: the selection's best step before the last
/// (`total`; the last step's parameters are its own checkpoint) must be the
/// one `best` holds. A damaged or missing file, or one the killed part of the
/// run overwrote, is dropped with a warning: the selection restarts, and the
/// run still finishes, choosing among the evaluations from here on. A
/// finished run (`step` = `total`) has nothing left to choose among: what it
/// reported stays, and the resume is refused.
fn check_best(selection: &mut Selection, best: &Path, step: u64, total: u64) -> Result<()> {
    let Some(wanted) = selection.best_step().filter(|&s| s < total) else {
        return Ok(());
    };
    let problem = match checkpoint::read(best) {
        Ok(ckpt) => match u64_of(&ckpt.meta["selected_step"]) {
            held if held == wanted => return Ok(()),
            held => format!("it holds step {held}"),
        },
        Err(e) => e.to_string(),
    };
    if step == total {
        return Err(Error::Input(format!(
            "the run is finished and reported step {wanted}, its best validation score, but that \
             step's checkpoint cannot be used ({problem}); its summary.json and metrics.jsonl are \
             left as they are. Nothing is left to train: restore {} from a copy to report it again",
            best.display()
        )));
    }
    tracing::warn!(
        "the best-validation checkpoint of step {wanted} cannot be used ({problem}); the selection \
         starts again at step {step}: evaluations before it can no longer be reported"
    );
    selection.forget_best();
    Ok(())
}

/// Draws training loss and every validation metric per task, one point per
/// evaluation (the final rows repeat the selected step's).
fn plot(history: &[Value], tasks: &[Task]) -> Vec<u8> {
    let series = |key: &dyn Fn(&Value) -> Option<f64>, split: &str, task: &str| Series {
        label: task.to_string(),
        points: history
            .iter()
            .filter(|r| r["split"] == split && r["final"] != true)
            .filter_map(|r| Some((u64_of(&r["step"]) as f64, key(r)?)))
            .collect(),
    };
    let mut panels = vec![Panel {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: tasks
            .iter()
            .map(|t| series(&|r| r["train_loss"][&t.name].as_f64(), "val", &t.name))
            .collect(),
        log_y: true,
        ..Default::default()
    }];
    // Task weights, where the weighting or strategy reports them (a learned
    // weighting's, Meta-RTL's source weights).
    if history.iter().any(|r| r["weights"].is_object()) {
        panels.push(Panel {
            title: "task weights".into(),
            x_label: "step".into(),
            y_label: "weight".into(),
            series: tasks
                .iter()
                .map(|t| series(&|r| r["weights"][&t.name].as_f64(), "val", &t.name))
                .collect(),
            log_y: false,
            ..Default::default()
        });
    }
    let mut names: Vec<String> = Vec::new();
    for r in history.iter().filter(|r| r["split"] == "val") {
        for t in tasks {
            for name in r["tasks"][&t.name]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
            {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    for name in names {
        panels.push(Panel {
            title: format!("validation {name}"),
            x_label: "step".into(),
            y_label: name.clone(),
            series: tasks
                .iter()
                .map(|t| series(&|r| r["tasks"][&t.name][&name].as_f64(), "val", &t.name))
                .collect(),
            log_y: false,
            ..Default::default()
        });
    }
    render_png(&panels, 2)
}

/// Trains `ctx.config` in `run`: from scratch, or with `resume` from the newest
/// checkpoint there (from scratch if there is none yet). Running out of a
/// capped GPU memory pool is reported naming the cap.
pub fn train(ctx: &RunContext<'_>, data: Dataset, run: &RunDir, resume: bool) -> Result<Summary> {
    fill(ctx, data, run, resume).map_err(|e| ctx.name_memory_cap(e))
}

/// The body of [`train`].
fn fill(ctx: &RunContext<'_>, data: Dataset, run: &RunDir, resume: bool) -> Result<Summary> {
    let config = ctx.config;
    let dir = run.path();
    let max_skipped = config.train.max_skipped_fraction;
    let eval_batch = config.eval.batch as usize;
    let best_val = config.eval.select == Select::BestVal;
    let ckpt_dir = run.checkpoints();
    let best_path = ckpt_dir.join(BEST);
    let metrics_path = dir.join("metrics.jsonl");
    // Under data-parallel training every rank trains; rank 0 alone writes
    // and shows progress.
    let world = crate::dist::world();
    let quiet = ctx.quiet || !world.is_root();

    // Hashed only where baselines could be stored, and not for a baseline's
    // own run (the data then moves into the trainer).
    let values = match ctx.task.is_none() && baselines_dir(config).is_dir() {
        true => Some(data_values(&data)?),
        false => None,
    };
    let mut memory = MemoryLog::new(ctx.device);
    memory.begin();
    let mut trainer = ctx.trainer(data)?;
    trainer.warn_settings();
    let setup_memory = memory.end("setup");
    let total = trainer.total_steps();
    let eval_every = match config.eval.every {
        // Ten evaluations, the last of them the final one.
        0 => total.div_ceil(10).max(1),
        n => n,
    };
    let checkpoint_every = match config.train.checkpoint_every {
        0 => eval_every,
        n => n,
    };
    let mut selection = Selection::default();
    let tasks = trainer.data().tasks.clone();
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut history = Vec::new();
    // A resumed run's final rows (validation, test), if it finished before.
    let mut finished = Vec::new();
    let mut wall_before = 0.0;
    // The ranks that trained the checkpoint resumed from.
    let mut trained_ranks = world.size() as u64;
    let mut skipped = 0;
    // The losses and weights since the last evaluation, which its row averages.
    let mut running = Running::default();
    let latest = if resume {
        checkpoint::latest(&ckpt_dir)?
    } else {
        None
    };
    // Every rank reads the run directory itself: they must agree on where
    // they start before any parameter is compared.
    let start = latest.as_ref().map_or(u64::MAX, |(step, _)| *step);
    match crate::dist::first_disagreement(world, &[resume as u64, start])? {
        None => {}
        Some((rank, 0)) => {
            return Err(Error::Input(format!(
                "rank {rank} was started with another command than rank 0 (`run` and `resume` \
                 mixed): every rank must run the same command"
            )))
        }
        Some((rank, _)) => {
            let here = match latest.as_ref() {
                Some((step, _)) => format!("step {step}"),
                None => "no checkpoint".into(),
            };
            return Err(Error::Input(format!(
                "rank {rank} found another newest checkpoint in {} than rank 0 (rank {}: {here}): \
                 every rank must see the same run directory, on a file system they all share",
                ckpt_dir.display(),
                world.rank()
            )));
        }
    }
    if let Some((step, ckpt)) = latest {
        if step > total {
            return Err(Error::Input(format!(
                "train.steps: the run has reached step {step}, past the {total} steps its config.toml \
                 now asks for; set train.steps (or train.epochs) back to at least {step}"
            )));
        }
        wall_before = ckpt.meta["wall_time_s"].as_f64().unwrap_or(0.0);
        skipped = u64_of(&ckpt.meta["skipped"]);
        selection = Selection::from_state(&ckpt.meta["selection"])?;
        running = Running::from_state(&ckpt.meta["running"]);
        if world.is_root() {
            checkpoint::set_aside_after(&ckpt_dir, step);
        }
        trained_ranks = ckpt.meta["ranks"].as_u64().unwrap_or(1);
        trainer.restore(ckpt)?;
        // Every rank read the checkpoint itself: they must have read the same one.
        trainer.agree(&format!("after resuming from step {step}"))?;
        // The records up to `step`: a resumed run repeats what came after.
        let rows = read_rows(&metrics_path);
        finished = rows
            .iter()
            .filter(|r| r["final"] == true)
            .cloned()
            .collect();
        history = rows
            .into_iter()
            .filter(|r| u64_of(&r["step"]) <= step && r["final"] != true)
            .collect();
        tracing::info!("resuming {} from step {step}", dir.display());
        if best_val {
            check_best(&mut selection, &best_path, step, total)?;
        }
        if trained_ranks != world.size() as u64 {
            tracing::info!(
                "the run continues on {} rank(s) after {trained_ranks}: the same global batches, the gradients \
                 equal up to the rounding of their reduction",
                world.size()
            );
        }
    } else {
        if resume {
            tracing::warn!(
                "{} has no checkpoint yet; starting from step 0",
                dir.display()
            );
        }
        if let Some(init) = &config.train.init {
            init_from(&mut trainer, &ctx.pipeline_dir.join(init))?;
        }
        // Ranks started with different pipelines or seeds stop here, not at the first checkpoint.
        trainer.agree("at the start")?;
        // A new run (not a resume without checkpoints) replaces what --overwrite
        // let it replace only now that its data, model and init have loaded.
        if !resume {
            run.clear()?;
        }
        // run.json first: it marks the directory as a run (see RunDir). The
        // config it records is what a resume may not change (see `edits`).
        let resolved = serde_json::to_value(config).map_err(|e| Error::Run(e.to_string()))?;
        let mut info = json!({"pipeline_dir": ctx.pipeline_dir.canonicalize().unwrap_or(ctx.pipeline_dir.to_path_buf()),
                              "plugins": ctx.registry.plugins_named(&resolved),
                              "config": resolved, "plugin_dirs": ctx.plugin_dirs,
                              "version": env!("CARGO_PKG_VERSION")});
        if let Some(task) = ctx.task {
            info["task"] = json!(task);
        }
        write_file(&dir.join(dir::MARKER), info.to_string().as_bytes())?;
        write_file(&dir.join("config.toml"), to_toml(&resolved).as_bytes())?;
        write_history(&metrics_path, &history)?;
    }
    if world.is_root() {
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| Error::io(&ckpt_dir, e))?;
    }
    let on_ranks = match world.is_parallel() {
        true => format!(" ({} ranks)", world.size()),
        false => String::new(),
    };
    tracing::info!(
        tasks = tasks.len(),
        parameters = trainer.num_parameters(),
        device = %crate::device::name(ctx.device),
        ranks = world.size(),
        "{}, {} parameters, on {}{on_ranks}",
        plural(tasks.len(), "task"),
        trainer.num_parameters(),
        crate::device::name(ctx.device)
    );

    let started = Instant::now();
    let first = trainer.step_index();
    let progress = Progress::new(first, total, config.train.log_every, quiet);
    let mut last_losses = vec![f64::NAN; tasks.len()];
    let mut skipped_since_eval = 0;
    let wall = |started: &Instant| wall_before + started.elapsed().as_secs_f64();
    memory.begin();
    // Bytes this rank hands to the gradient reductions (data-parallel runs).
    let mut step_bytes = 0;
    while trainer.step_index() < total {
        let sent = crate::dist::bytes_sent();
        let stepped = trainer.step()?;
        step_bytes += crate::dist::bytes_sent() - sent;
        match stepped {
            Stepped::Done(report) => {
                last_losses = tensor_values(&report.losses)?;
                let weights = report.weights.as_ref().map(tensor_values).transpose()?;
                running.add(&last_losses, weights);
            }
            Stepped::Skipped(what) => {
                skipped += 1;
                skipped_since_eval += 1;
                progress.println(&format!(
                    "step {}: skipped, {}",
                    trainer.step_index() - 1,
                    what.describe(&names)
                ));
                if skipped as f64 > max_skipped * total as f64 {
                    return Err(Error::Run(format!(
                        "{skipped} of the run's {total} steps were skipped for non-finite losses or updates, more than \
                         train.max_skipped_fraction = {max_skipped} allows: its results would not mean much. \
                         Its checkpoints so far are kept; lower the learning rate (or a method's own step \
                         sizes), or check the data"
                    )));
                }
            }
        }
        let step = trainer.step_index();
        progress.update(step, &names, &last_losses);
        let evaluating = step < total && step % eval_every == 0;
        // Ctrl-C or a StopHandle: checkpoint this step and stop (see
        // `interrupt`); the inner option is the signal.
        let interrupted = match step < total && !world.is_parallel() {
            true => match interrupt::requested() {
                Some(signal) => Some(Some(signal)),
                None => ctx
                    .stop
                    .filter(|stop| stop.swap(false, Ordering::SeqCst))
                    .map(|_| None),
            },
            false => None,
        };
        let checkpointing = step < total && (step % checkpoint_every == 0 || interrupted.is_some());
        if evaluating || checkpointing {
            // Once per step: the evaluation and both checkpoints below read agreed state.
            trainer.agree(&format!("at step {step}"))?;
        }
        if evaluating {
            if skipped_since_eval > 0 {
                tracing::warn!(
                    step,
                    skipped = skipped_since_eval,
                    "{} of the last {eval_every} steps skipped for non-finite losses or updates ({skipped} of {step} in all)",
                    skipped_since_eval
                );
                skipped_since_eval = 0;
            }
            let train_memory = memory.end("train");
            memory.begin();
            let lr = trainer.learning_rate();
            let metrics = trainer.evaluate("val", eval_batch)?;
            let architecture = trainer.architecture_metrics()?;
            let eval_memory = memory.end("eval");
            let score = selection.score(&tasks, &metrics)?;
            trainer.observe(score);
            if best_val && selection.improves(step, score) {
                let meta = json!({"selected_step": step, "selection": selection.state(),
                                  "ranks": world.size()});
                save(&trainer, &best_path, meta)?;
            }
            let (loss, weights) = running.take(&tasks);
            history.push(json!({"step": step, "split": "val", "wall_time_s": wall(&started),
                                "tasks": metrics_json(&tasks, &metrics), "score": score, "lr": lr,
                                "train_loss": loss, "weights": weights, "architecture": architecture,
                                "memory": {"setup": setup_memory, "train": train_memory, "eval": eval_memory}}));
            write_history(&metrics_path, &history)?;
            memory.begin();
        }
        if checkpointing {
            let meta = json!({"wall_time_s": wall(&started), "skipped": skipped,
                              "selection": selection.state(), "ranks": world.size(),
                              "running": running.state()});
            save(&trainer, &checkpoint::path_for(&ckpt_dir, step), meta)?;
            if world.is_root() {
                checkpoint::prune(&ckpt_dir, KEEP_CHECKPOINTS);
            }
        }
        if let Some(signal) = interrupted {
            progress.finish();
            return Err(Error::Interrupted {
                signal,
                step,
                dir: dir.to_path_buf(),
                again: format!("`taskweave resume {}`", shell_word(dir)),
            });
        }
    }
    progress.finish();
    if skipped_since_eval > 0 {
        tracing::warn!(
            skipped = skipped_since_eval,
            "{skipped_since_eval} of the last steps skipped for non-finite losses or updates ({skipped} of {total} in all)"
        );
    }
    // A finished run resumed (killed before its summary, or resumed again)
    // trains no step here: its rate and the running means of its last steps
    // are what it wrote before, not recomputed as nothing.
    let trained_none = first == total;
    // A summary of fewer steps (train.steps raised since) is not this run's end.
    let earlier = match trained_none {
        true => Some(summary_of(dir)).filter(|s| s["steps"].as_u64() == Some(total)),
        false => None,
    }
    .unwrap_or_default();
    let steps_per_second = earlier["steps_per_second"]
        .as_f64()
        .unwrap_or_else(|| progress.rate(trainer.step_index()));

    memory.end("train");
    memory.begin();
    trainer.agree(&format!("at step {total}"))?;
    let mut val = trainer.evaluate("val", eval_batch)?;
    let mut val_architecture = trainer.architecture_metrics()?;
    let score = selection.score(&tasks, &val)?;
    // A finished run resumed again rewrites its final rows as they were.
    let finished_row = |split: &str| {
        let row = finished.iter().rfind(|r| r["split"] == split);
        row.filter(|_| trained_none)
    };
    let (loss, weights) = match finished_row("val") {
        Some(row) => (row["train_loss"].clone(), Some(row["weights"].clone())),
        None => running.take(&tasks),
    };
    // The last step's evaluation is a row like every other (the final rows
    // below are the selected step's); a finished run resumed has it already.
    if !history
        .iter()
        .any(|r| u64_of(&r["step"]) == total && r["split"] == "val")
    {
        // `lr` is the rate of the step after an evaluation: none after the last.
        history.push(
            json!({"step": total, "split": "val", "wall_time_s": wall(&started),
                            "tasks": metrics_json(&tasks, &val), "score": score,
                            "lr": null, "train_loss": loss,
                            "weights": weights, "architecture": val_architecture}),
        );
    }
    // The last step unless an earlier evaluation scored better (a run whose
    // scores were never finite has no best: it reports its last step). A
    // resumed finished run already recorded the last step as its best: that
    // is not an earlier one.
    let earlier_best = match best_val && !selection.improves(total, score) {
        true => selection.best_step().filter(|&step| step < total),
        false => None,
    };
    // The end state, for a resume of the finished run, before the best is
    // restored (a finished run resumed again holds it already).
    if !trained_none {
        let meta = json!({"wall_time_s": wall(&started), "skipped": skipped,
                          "selection": selection.state(), "ranks": world.size()});
        save(&trainer, &checkpoint::path_for(&ckpt_dir, total), meta)?;
    }
    if world.is_root() {
        checkpoint::prune(&ckpt_dir, KEEP_CHECKPOINTS);
    }
    // The last step is the selection: best.safetensors holds it too, so that
    // the file always holds the parameters the summary reports.
    if best_val && earlier_best.is_none() {
        let meta = json!({"selected_step": total, "selection": selection.state(),
                          "ranks": world.size()});
        save(&trainer, &best_path, meta)?;
    }
    let selected = if earlier_best.is_none() {
        total
    } else {
        let best = checkpoint::read(&best_path)?;
        let step = u64_of(&best.meta["selected_step"]);
        trainer.restore(best)?;
        // Every rank read rank 0's file: they must have read the same one.
        trainer.agree(&format!("after restoring the best step, {step}"))?;
        val = trainer.evaluate("val", eval_batch)?;
        val_architecture = trainer.architecture_metrics()?;
        tracing::info!(
            selected_step = step,
            "reporting the parameters of step {step}, the best validation score"
        );
        step
    };
    let test = trainer.evaluate("test", eval_batch)?;
    let test_architecture = trainer.architecture_metrics()?;
    memory.end("eval");
    for (split, metrics, architecture) in [
        ("val", &val, &val_architecture),
        ("test", &test, &test_architecture),
    ] {
        let wall_time = match finished_row(split) {
            Some(row) => row["wall_time_s"].clone(),
            None => json!(wall(&started)),
        };
        history.push(
            json!({"step": selected, "split": split, "final": true, "selected_step": selected,
                            "wall_time_s": wall_time, "tasks": metrics_json(&tasks, metrics),
                            "train_loss": loss, "weights": weights, "architecture": architecture}),
        );
    }
    write_history(&metrics_path, &history)?;
    if world.is_root() {
        write_atomic(&dir.join("curves.png"), &plot(&history, &tasks))?;
    }

    let delta_m = values
        .and_then(|values| load_baselines(config, values, &tasks))
        .map(|b| delta_m(&tasks, &test, &b).map_err(|e| e.input_context("the test split")))
        .transpose()?;
    let summary = Summary {
        dir: dir.to_path_buf(),
        tasks: tasks.clone(),
        val,
        test,
        delta_m,
        delta_m_applies: config.diffusion.is_none(),
        steps: total,
        selected_step: selected,
        steps_per_second,
        skipped,
        parameters: trainer.num_parameters(),
    };
    if let Some(line) = memory.line() {
        progress.println(&line);
    }
    let reduced_bytes_per_step = earlier["reduced_bytes_per_step"]
        .as_u64()
        .unwrap_or(step_bytes / (total - first).max(1));
    let ranks = match trained_none {
        true => trained_ranks,
        false => world.size() as u64,
    };
    let json = json!({"steps": total, "selected_step": selected, "skipped": skipped,
                      "steps_per_second": steps_per_second, "ranks": ranks,
                      "reduced_bytes_per_step": reduced_bytes_per_step,
                      "parameters": summary.parameters, "delta_m": delta_m, "memory": memory.summary(),
                      "architecture": test_architecture,
                      "val": metrics_json(&tasks, &summary.val), "test": metrics_json(&tasks, &summary.test)});
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(summary)
}

/// The checkpoint the summary of the run in `dir` selected (the
/// best-validation one when that was not the last step), else its newest;
/// `None` when it holds none. A selected checkpoint that is missing or holds
/// another step is an error: the newest would silently stand in for the
/// parameters the summary reports.
pub(super) fn selected_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let checkpoints = dir.join("checkpoints");
    let best = checkpoints.join(BEST);
    let summary = summary_of(dir);
    // The best checkpoint may be stale: it is the selection only when the
    // summary's selected step is before the last.
    let step = match (summary["selected_step"].as_u64(), summary["steps"].as_u64()) {
        (Some(selected), Some(steps)) if selected < steps => selected,
        // The last step, or no finished run (no summary): the newest checkpoint.
        (_, steps) => {
            let Some((newest, ckpt)) = checkpoint::latest(&checkpoints)? else {
                return Ok(None);
            };
            match steps {
                Some(steps) if newest != steps => {
                    // When the last step was the best, the best checkpoint holds it too.
                    let held = best.is_file().then(|| checkpoint::read(&best).ok()).flatten();
                    if let Some(ckpt) = held.filter(|c| c.meta["step"].as_u64() == Some(steps)) {
                        return Ok(Some(ckpt));
                    }
                    return Err(Error::Input(format!(
                        "{}: the run's summary reports step {steps}'s parameters, but its newest \
                         usable checkpoint is step {newest}; `taskweave resume {}` trains the \
                         steps after it again, to the same parameters",
                        checkpoints.display(),
                        shell_word(dir)
                    )))
                }
                Some(_) => {}
                None => tracing::warn!(
                    "{} has not finished (it has no summary.json): using its newest checkpoint, step {newest}",
                    dir.display()
                ),
            }
            return Ok(Some(ckpt));
        }
    };
    let unusable = |why: String| {
        Error::Input(format!(
            "{}: {why}; the run's summary reports step {step}'s parameters, which only that \
             file held (train the run again to get them back)",
            best.display()
        ))
    };
    if !best.is_file() {
        return Err(unusable("missing".into()));
    }
    let ckpt = checkpoint::read(&best)?;
    match ckpt.meta["step"].as_u64() {
        Some(held) if held == step => Ok(Some(ckpt)),
        Some(held) => Err(unusable(format!("it holds step {held}"))),
        None => Err(unusable("it is not a checkpoint (no step)".into())),
    }
}

/// `train.init`: the model tensors of the run in `other` that this model
/// shares, from its [`selected_checkpoint`].
fn init_from(trainer: &mut Trainer, other: &Path) -> Result<()> {
    let named = |e: Error| e.input_context("train.init");
    let checkpoint = selected_checkpoint(other).map_err(named)?.ok_or_else(|| {
        Error::Input(format!(
            "train.init: {} holds no checkpoint (is it a run directory? relative paths start at the pipeline file)",
            other.display()
        ))
    })?;
    let copied = trainer.init_from(&checkpoint).map_err(named)?;
    if copied == 0 {
        return Err(Error::Input(format!(
            "train.init: the run in {} shares no model tensor with this model",
            other.display()
        )));
    }
    tracing::info!(
        "initialised {copied} model tensors from {}",
        other.display()
    );
    Ok(())
}
