//! The training engine: a [`Trainer`] owns the model, the flat parameters, the
//! optimizer and the strategy, and runs one step at a time through the
//! strategy, which drives the host operations (the `ops` module).

mod autocast;
mod batches;
pub mod checkpoint;
mod copies;
pub mod flatness;
mod generator;
pub mod memory;
pub mod metrics;
mod omp;
mod ops;
mod params;
pub mod progress;
mod schedule;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use taskweave_plugin_api::{
    BackboneUse, FfiInputSpec, Group, Host, MethodContext, Role, State, StepReport, Strategy,
};
use tch::{Device, Tensor};

use crate::data::{Dataset, Split};
use crate::diffusion::sampler::{self, SampleRequest};
use crate::diffusion::{affinity, Denoising};
use crate::error::{Error, Result};
use crate::model::{Model, Param};
use crate::optimizer::Optimizer;
use crate::registry::Registry;
use crate::sections::{
    BackboneConfig, OnNonFinite, PipelineConfig, Precision, SECTIONS as CONFIG_SECTIONS,
};
use autocast::Autocast;
use batches::Batches;
use checkpoint::{copy_into, Checkpoint};
use copies::Copies;
use generator::step_seed;
use params::FlatParams;
use schedule::Schedule;

/// The outcome of one step.
pub enum Stepped {
    /// The step ran; its report.
    Done(StepReport),
    /// The step was skipped (`train.on_nonfinite = "skip-step"`).
    Skipped(NonFinite),
}

/// The first non-finite number a step met; the optimizer did not step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NonFinite {
    /// A task's loss (task index, value).
    Loss(usize, f64),
    /// The update the optimizer was given, with finite losses. The task is
    /// the first whose own gradient (its loss's, over the model's
    /// parameters) is non-finite, recomputed at the step's parameters on its
    /// last batch; none when none is there (the method's combination may
    /// have overflowed, or the non-finite gradient came from another batch
    /// or point, as SAM's perturbed one).
    Gradient(Option<usize>),
}

impl NonFinite {
    /// What was non-finite, with the task named from `tasks`.
    pub fn describe(&self, tasks: &[String]) -> String {
        let name = |t: usize| tasks.get(t).map_or("?", String::as_str);
        match *self {
            NonFinite::Loss(t, value) => format!("the loss of task `{}` is {value}", name(t)),
            NonFinite::Gradient(Some(t)) => format!(
                "the gradient of task `{}` is not finite (its loss is finite)",
                name(t)
            ),
            NonFinite::Gradient(None) => "the update is not finite, though no task's own \
                 gradient is when recomputed at the step's parameters on its last batch (the \
                 method's combination of them may have overflowed)"
                .to_string(),
        }
    }
}

/// Whether every entry of `t` is finite (an undefined or empty tensor is);
/// the largest magnitude propagates NaN, so one reduction decides.
pub fn all_finite(t: &Tensor) -> Result<bool, tch::TchError> {
    Ok(!t.defined() || t.numel() == 0 || t.f_abs()?.f_max()?.f_double_value(&[])?.is_finite())
}

/// One training run's live state.
pub struct Trainer {
    data: Dataset,
    /// The denoising objective of a diffusion pipeline, which noises the
    /// training batches.
    denoising: Option<Denoising>,
    model: Model,
    strategy: Box<dyn Strategy>,
    params: FlatParams,
    optimizer: Optimizer,
    batches: Batches,
    seed: u64,
    on_nonfinite: OnNonFinite,
    schedule: Schedule,
    clip_grad_norm: f64,
    precision: Precision,
    device: Device,
    total: u64,
    step: u64,
    /// Model copies for a meta-learner's inner loops and the parts of each
    /// batch (`run.batch_threads`), side by side; none where the run must
    /// not copy its model.
    copies: Option<Copies>,
    /// Rows this rank and all ranks evaluated in the last evaluation (they
    /// differ under data-parallel training), to weigh the architecture's
    /// evaluation metrics.
    evaluated_rows: (usize, usize),
    /// Settings that train, but not as written: said when training starts
    /// ([`Trainer::warn_settings`]), not by commands that only read a run.
    notes: Vec<String>,
}

impl Trainer {
    /// Builds everything a resolved pipeline config describes, on `device`,
    /// over `data` (already loaded; moved to `device` here); relative paths
    /// resolve against `dir`, the pipeline file's directory.
    pub(crate) fn new(
        config: &PipelineConfig,
        data: Dataset,
        registry: &Arc<Registry>,
        host: &Host,
        device: Device,
        dir: &Path,
    ) -> Result<Trainer> {
        let seed = config.run.seed;
        let mut notes = Vec::new();
        // Held until the model and the methods have drawn their initial values.
        let _generator = generator::seeded(seed as i64);
        let data = data.to_device(device)?;
        let model_cfg = &config.model;
        let train = &config.train;
        let (data, denoising) = match &config.diffusion {
            Some(diffusion) => {
                let signals = match &diffusion.signals {
                    Some(file) => {
                        let (tensors, metadata) = checkpoint::read_file(&dir.join(file))
                            .map_err(|e| Error::Input(format!("diffusion.signals: {e}")))?;
                        let meta = checkpoint::taskweave_meta(&metadata).unwrap_or_default();
                        crate::diffusion::check_measured(diffusion, &meta)
                            .map_err(|why| Error::Input(format!("diffusion.signals: {file} {why}")))?;
                        tensors
                    }
                    None => Vec::new(),
                };
                let intervals = crate::diffusion::intervals(
                    diffusion,
                    train.grouping.as_ref(),
                    registry,
                    host,
                    signals,
                )?;
                // Row i of a batch or split noises at a timestep of interval
                // i mod k: with fewer rows than intervals, some would never
                // be trained or evaluated.
                let k = intervals.len();
                for (what, rows) in [
                    // A batch is at most the training split.
                    (
                        "a batch (train.batch, at most the training rows)",
                        (train.batch as usize).min(data.train.len()),
                    ),
                    ("the val split", data.val.len()),
                    ("the test split", data.test.len()),
                ] {
                    if rows < k {
                        return Err(Error::Input(format!(
                            "{k} timestep intervals (tasks), but {what} has {rows} rows: row i noises at \
                             a timestep of interval i mod {k}, so some intervals would never be trained \
                             or evaluated; use at most {rows} intervals or more rows"
                        )));
                    }
                }
                let (denoising, noised) =
                    Denoising::new(diffusion, intervals, &data, &model_cfg.backbone)?;
                (noised, Some(denoising))
            }
            None if train.grouping.is_some() => {
                return Err(Error::Input(
                    "train.grouping partitions diffusion timesteps into tasks: it needs a [diffusion] section".into(),
                ))
            }
            None if data.tasks.is_empty() => {
                return Err(Error::Input(
                    "the data have no tasks (their samples are for a diffusion model): add a [diffusion] section, or use data with tasks".into(),
                ))
            }
            None => (data, None),
        };
        // A backbone that cannot read these inputs is an error only if the
        // architecture uses it (an architecture may replace the backbone).
        let plan = crate::model::backbone::plan(&model_cfg.backbone, &data.inputs);
        if let Ok(plan) = &plan {
            let copies = 3 + 2 * train.optimizer.state_copies();
            crate::model::check_size(model_cfg, plan, &data.tasks, device, copies)?;
        }
        let (layer_dims, layer_ranks) = plan
            .as_ref()
            .map(|p| (p.layer_dims.clone(), p.layer_ranks.clone()))
            .unwrap_or_default();
        let ctx = MethodContext {
            tasks: data.tasks.iter().map(|t| t.name.as_str().into()).collect(),
            device: crate::device::name(device).into(),
            seed,
            feature_dim: layer_dims.last().copied().unwrap_or(0),
            layer_dims: layer_dims.into_iter().collect(),
            layer_ranks: layer_ranks.into_iter().collect(),
            inputs: data.inputs.iter().map(FfiInputSpec::from).collect(),
            weighting: train.weighting.to_string().into(),
        };
        let architecture = registry
            .create_table(Role::Architecture, &model_cfg.architecture, &ctx, host)
            .map_err(|e| match e.is_out_of_memory() {
                // Its own widths, which the size check of the backbone and heads cannot see.
                true => Error::Input(format!(
                    "model.architecture: its parameters do not fit in the memory of {}: lower \
                     its widths ({})",
                    crate::device::name(device),
                    e.to_string().lines().next().unwrap_or_default()
                )),
                false => e.input_context("model.architecture"),
            })?
            .into_architecture()?;
        if architecture.backbone() != BackboneUse::None {
            plan?;
            // Categorical columns an MLP cannot read: say so, not drop them silently.
            let ids: Vec<&str> = match model_cfg.backbone {
                BackboneConfig::Mlp(_) => data
                    .inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .filter(|n| *n == "fields" || n.starts_with("seq."))
                    .collect(),
                _ => Vec::new(),
            };
            if !ids.is_empty() {
                notes.push(format!(
                    "model.backbone: the `mlp` backbone reads only `features`, so the data's `{}` go \
                     unused unless the architecture reads them itself; the `embedding` backbone reads them",
                    ids.join("`, `")
                ));
            }
        }
        let model = Model::new(model_cfg, &data.inputs, &data.tasks, architecture, device)?;
        let weightings = registry.pipeline_weightings();
        let strategy = registry
            .create_table(Role::Strategy, &train.strategy, &ctx, host)?
            .into_strategy()?;
        if registry.pipeline_weightings() == weightings && train.weighting["kind"] != "ew" {
            notes.push(format!(
                "train.strategy `{}` does not use train.weighting (`{}`): that setting has no effect",
                train.strategy["kind"].as_str().unwrap_or("?"),
                train.weighting["kind"].as_str().unwrap_or("?")
            ));
        }
        let mut all: Vec<Param> = model.parameters()?;
        for (name, tensor) in strategy.parameters()? {
            all.push(Param {
                name: format!("strategy.{name}"),
                tensor: tensor.f_to_device(device)?,
                group: None,
            });
        }
        let params = FlatParams::new(all, data.tasks.len(), device)?;
        // The architecture's and the methods' own parameters, which the size
        // check of the backbone and heads cannot see: their gradients and the
        // optimizer's state must fit beside them, or the first step is killed.
        let total = params.data().numel() as u128;
        let copies = 2 + 2 * train.optimizer.state_copies();
        crate::device::ensure_fits(device, total * 4 * copies, || {
            format!(
                "model.architecture: training a model of {total} parameters (their gradients and \
                 the optimizer's state)"
            )
        })?;
        let mut optimizer = Optimizer::new(&train.optimizer, params.data())?;
        if let Some(method_lr) = train.method_lr {
            let lr = train.optimizer.lr();
            if lr <= 0.0 {
                return Err(Error::Input(format!(
                    "train.method_lr is set relative to the optimizer's lr, which is {lr}: give lr a positive value"
                )));
            }
            optimizer.scale_tail(params.methods_start(), method_lr / lr);
        }
        // A diffusion batch draws any clean row for any interval.
        let labelled = match &denoising {
            Some(_) => vec![None; data.tasks.len()],
            None => data
                .train
                .masks
                .iter()
                .map(|mask| {
                    mask.as_ref()
                        .map(|m| Ok(Vec::<i64>::try_from(m.f_nonzero()?.f_reshape([-1])?)?))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let batches = Batches::new(data.train.len(), train.batch as usize, seed, labelled);
        let world = crate::dist::world();
        if world.is_parallel() {
            if denoising.is_some() {
                return Err(Error::Input(
                    "data-parallel training (mpirun) covers pipelines with tasks; a [diffusion] pipeline \
                     trains in one process for now: run it without mpirun"
                        .into(),
                ));
            }
            // Each rank trains on and evaluates its part: every part needs a row.
            for (name, split) in [
                ("train", &data.train),
                ("val", &data.val),
                ("test", &data.test),
            ] {
                if split.len() < world.size() {
                    return Err(Error::Input(format!(
                        "the {name} split has {} rows, fewer than the {} ranks that share it: start fewer ranks",
                        split.len(),
                        world.size()
                    )));
                }
            }
            if (train.batch as usize) < world.size() {
                return Err(Error::Input(format!(
                    "train.batch = {} is split over {} ranks: every rank needs at least one row; start \
                     at most {} ranks (or, for a new run, raise train.batch)",
                    train.batch,
                    world.size(),
                    train.batch
                )));
            }
        }
        let copies = Copies::new(
            config,
            (registry, host, &ctx),
            model.architecture().replicable(),
            &data.inputs,
            &data.tasks,
            device,
        )?;
        let on_nonfinite = train.on_nonfinite;
        let total = train.total_steps(data.train.len())?;
        if train.batch as usize > data.train.len() {
            notes.push(format!(
                "train.batch = {} is more than the {} training rows: every batch is the whole training split",
                train.batch,
                data.train.len()
            ));
        }
        for (t, task) in data.tasks.iter().enumerate() {
            if task.kind != crate::data::TaskType::Binary {
                continue;
            }
            let labels = match &data.train.masks[t] {
                Some(mask) => data.train.targets[t].f_masked_select(mask)?,
                None => data.train.targets[t].shallow_clone(),
            };
            if labels.numel() > 0 && labels.f_min()?.f_equal(&labels.f_max()?)? {
                notes.push(format!(
                    "task `{}` has one class only in the training split (every label {}): the model \
                     learns a constant, and AUC is undefined",
                    task.name,
                    labels.f_double_value(&[0])?
                ));
            }
        }
        if let crate::sections::ScheduleConfig::Cosine { warmup, .. } = train.schedule {
            if warmup >= total {
                notes.push(format!(
                    "train.schedule.warmup = {warmup} is not shorter than the run's {total} steps: the \
                     learning rate never reaches train.optimizer.lr"
                ));
            }
        }
        let schedule = Schedule::new(&train.schedule, train.optimizer.lr(), total);
        let trainer = Trainer {
            data,
            denoising,
            model,
            strategy,
            params,
            optimizer,
            batches,
            seed,
            on_nonfinite,
            schedule,
            clip_grad_norm: train.clip_grad_norm,
            precision: config.run.precision,
            device,
            total,
            step: 0,
            copies,
            evaluated_rows: (0, 0),
            notes,
        };
        trainer.check_same_run(config)?;
        Ok(trainer)
    }

    /// Logs the settings that train, but not as written (a batch larger than
    /// the data, a warm-up as long as the run, ...): once, as training starts.
    pub(crate) fn warn_settings(&self) {
        for note in &self.notes {
            tracing::warn!("{note}");
        }
    }

    /// Steps done so far.
    pub fn step_index(&self) -> u64 {
        self.step
    }

    /// The run's length in steps (`train.steps`, or `train.epochs` in steps).
    pub fn total_steps(&self) -> u64 {
        self.total
    }

    /// The data, on the run's device.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.schedule.lr(self.step)
    }

    /// Takes a validation score (lower is better) for the plateau schedule.
    pub fn observe(&mut self, score: f64) {
        self.schedule.observe(score);
    }

    /// bf16 autocast on this thread while the guard lives, under `run.precision = "bf16"`.
    fn autocast(&self) -> Result<Option<Autocast>> {
        match self.precision {
            Precision::Bf16 => Autocast::bf16(self.device).map(Some),
            Precision::Fp32 => Ok(None),
        }
    }

    /// Runs one training step through the strategy.
    pub fn step(&mut self) -> Result<Stepped> {
        if let Some(copies) = self.copies.as_mut().filter(|c| c.want_more()) {
            // Their initial draws, overwritten, must not shift the step's.
            let _generator = generator::seeded(0);
            copies.build_wanted()?;
        }
        // Everything random inside a step (dropout, a method's draws) comes from
        // libtorch's generator, re-seeded from (seed, step): a resumed run
        // repeats it exactly without saving generator state.
        let _generator = generator::seeded(step_seed(self.seed, self.step));
        self.optimizer.set_lr(self.schedule.lr(self.step));
        let _autocast = self.autocast()?;
        let Trainer {
            data,
            denoising,
            model,
            strategy,
            params,
            optimizer,
            batches,
            step,
            seed,
            clip_grad_norm,
            copies,
            ..
        } = self;
        let mut ops = ops::Ops::new(
            model,
            params,
            optimizer,
            ops::Rows {
                data,
                denoising: denoising.as_ref(),
            },
            batches,
            (*step, *seed),
            *clip_grad_norm,
        )
        .with_copies(copies.as_mut());
        let result = strategy.step(&mut ops);
        let nonfinite = ops.finish()?;
        match (result, nonfinite) {
            (_, Some(what)) => match self.on_nonfinite {
                OnNonFinite::Stop => Err(Error::NonFinite {
                    step: self.step,
                    what: what.describe(
                        &self
                            .data
                            .tasks
                            .iter()
                            .map(|t| t.name.clone())
                            .collect::<Vec<_>>(),
                    ),
                }),
                OnNonFinite::SkipStep => {
                    self.step += 1;
                    Ok(Stepped::Skipped(what))
                }
            },
            (Ok(report), None) => {
                self.step += 1;
                Ok(Stepped::Done(report))
            }
            (Err(e), None) => Err(Error::Method(format!("step {}: {e}", self.step))),
        }
    }

    /// Metrics of every task on split `split`.
    pub fn evaluate(&mut self, split: &str, batch: usize) -> Result<Vec<metrics::TaskMetrics>> {
        let _autocast = self.autocast()?;
        let split = self.data.split(split)?;
        let world = crate::dist::world();
        self.evaluated_rows = (world.shard(split.len()).len(), split.len());
        metrics::evaluate(&mut self.model, split, &self.data.tasks, batch)
    }

    /// The model's per-task outputs for the first `rows` examples of split
    /// `split` (evaluation mode, no gradients), with those examples.
    pub fn predict(&mut self, split: &str, rows: usize) -> Result<(Split, Vec<Tensor>)> {
        let _autocast = self.autocast()?;
        let _no_grad = tch::no_grad_guard();
        let split = self.data.split(split)?;
        let part = split.slice(0, rows.min(split.len()))?;
        let outputs = self.model.forward(&part.inputs, false, false)?;
        Ok((part, outputs))
    }

    /// The model's per-task outputs for the named inputs `inputs` (moved to
    /// the model's device), in evaluation mode without gradients.
    pub fn outputs(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>> {
        let _autocast = self.autocast()?;
        let _no_grad = tch::no_grad_guard();
        let inputs = self.on_device(inputs)?;
        self.model.forward(&inputs, false, false)
    }

    /// As [`Trainer::outputs`] at the next positions of a causal model's
    /// sequences, reading only them (see [`Model::forward_cached`]); `None`
    /// when the model cannot.
    pub fn outputs_cached(
        &mut self,
        inputs: &[(String, Tensor)],
        cache: &mut Vec<taskweave_plugin_api::nn::KvCache>,
    ) -> Result<Option<Vec<Tensor>>> {
        let _autocast = self.autocast()?;
        let _no_grad = tch::no_grad_guard();
        let inputs = self.on_device(inputs)?;
        self.model.forward_cached(&inputs, cache)
    }

    fn on_device(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        inputs
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.f_to_device(self.device)?)))
            .collect()
    }

    /// The model's hidden features (see [`Model::hidden_features`]) of the
    /// examples `x` of a data set with that one input, in batches of
    /// `batch` rows, on the CPU.
    pub fn hidden_features(&mut self, x: &Tensor, batch: usize) -> Result<Tensor> {
        let [input] = self.data.inputs.as_slice() else {
            return Err(Error::Run(format!(
                "hidden features are read of data with one input; these have {}",
                self.data.inputs.len()
            )));
        };
        let name = input.name.clone();
        let _no_grad = tch::no_grad_guard();
        let parts = x
            .f_split(batch.max(1) as i64, 0)?
            .iter()
            .map(|part| {
                let inputs = [(name.clone(), part.f_to_device(self.device)?)];
                Ok(self
                    .model
                    .hidden_features(&inputs)?
                    .f_to_device(Device::Cpu)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// Samples of a diffusion model, in the data's shape `[count, ...]`.
    pub fn sample(&mut self, request: &SampleRequest) -> Result<Tensor> {
        let _autocast = self.autocast()?;
        let (denoising, model) = (objective(&self.denoising)?, &mut self.model);
        let _generator = generator::seeded(request.seed as i64);
        let _no_grad = tch::no_grad_guard();
        let samples = sampler::sample(denoising, request, |xt, t| {
            predicted_noise(model, denoising, xt, t)
        })?;
        denoising.unflatten(&samples)
    }

    /// Task affinity scores of a diffusion model's timesteps (ANT's TAS):
    /// the `[n, n]` cosine similarities of the denoising loss's gradients
    /// over the shared parameters at the `n` timesteps of `grid`, on the
    /// first `rows` training samples with noise fixed once (the same for
    /// every timestep), and how many samples that was (all of them where
    /// the split has fewer). Gradients are computed in blocks that fit
    /// `memory` bytes.
    pub fn timestep_affinity(
        &mut self,
        grid: &[i64],
        rows: usize,
        memory: u64,
    ) -> Result<(Tensor, usize)> {
        let shared = self.params.range(Group::Shared)?;
        // Two blocks of float64 gradients.
        let per_gradient = (shared.end - shared.start).max(1) as u64 * 8 * 2;
        let block = (memory / per_gradient).max(1) as usize;
        let (denoising, model, params) =
            (objective(&self.denoising)?, &mut self.model, &self.params);
        let (x0, eps) = denoising.probe(rows)?;
        let scores = affinity::cosines(grid, block, |t| {
            let xt = denoising.noisy(&x0, &eps, t)?;
            let loss = predicted_noise(model, denoising, &xt, t)?
                .f_mse_loss(&eps, tch::Reduction::Mean)?;
            let mut grads = params.grads(&loss, &[Group::Shared], false)?;
            Ok(grads.swap_remove(0))
        })?;
        Ok((scores, x0.size()[0] as usize))
    }

    /// What the architecture reports about the evaluation that just ended
    /// (see [`taskweave_plugin_api::Architecture::eval_metrics`]), as a JSON
    /// object; `null` when it reports nothing.
    pub fn architecture_metrics(&mut self) -> Result<Value> {
        let mut named = self.model.architecture_mut().eval_metrics()?;
        if named.is_empty() {
            return Ok(Value::Null);
        }
        // Each rank reports on its part of the split: the mean over the
        // ranks weighted by their rows is the report on the whole split
        // (for metrics that are means over rows, and for constants).
        let world = crate::dist::world();
        if world.is_parallel() {
            let (own, all) = self.evaluated_rows;
            let mut values: Vec<f64> = named.iter().map(|(_, v)| v * own as f64).collect();
            world.sum_f64(&mut values)?;
            for ((_, v), sum) in named.iter_mut().zip(values) {
                *v = sum / all.max(1) as f64;
            }
        }
        Ok(Value::Object(
            named
                .into_iter()
                .map(|(n, v)| (n, serde_json::json!(v)))
                .collect(),
        ))
    }

    /// Under data-parallel training, brings the ranks into agreement before
    /// an evaluation or a checkpoint: the model's buffers (running
    /// statistics, which each rank updates from its own rows) become rank
    /// 0's, as PyTorch DDP's `broadcast_buffers`, then every parameter and
    /// buffer is checked identical on every rank (by hash); a difference is
    /// an error naming the rank and the tensor, `when` saying where the run
    /// was.
    pub fn agree(&self, when: &str) -> Result<()> {
        let world = crate::dist::world();
        if !world.is_parallel() {
            return Ok(());
        }
        let buffers = self.model.buffers();
        for (_, buffer) in &buffers {
            world.broadcast_(buffer)?;
        }
        let mut names = Vec::new();
        let mut hashes = Vec::new();
        let params = self
            .params
            .named()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()));
        for (name, tensor) in params.chain(buffers) {
            hashes.push(crate::dist::fingerprint(&tensor)?);
            names.push(name);
        }
        match crate::dist::first_disagreement(world, &hashes)? {
            None => Ok(()),
            Some((rank, index)) => Err(Error::Run(format!(
                "rank {rank} holds other values of `{}` than rank 0 {when}: the ranks diverged (a method \
                 that draws random numbers outside libtorch's generator, or differs between the ranks' \
                 machines). The run stops; the last checkpoint that agreed is kept",
                names[index]
            ))),
        }
    }

    /// Under data-parallel training, checks before anything else that every
    /// rank was started with the same resolved pipeline, the same data and
    /// the same model layout (what every later collective operation relies
    /// on): otherwise an input error naming the first rank that differs.
    fn check_same_run(&self, config: &PipelineConfig) -> Result<()> {
        let world = crate::dist::world();
        if !world.is_parallel() {
            return Ok(());
        }
        let resolved = serde_json::to_value(config).map_err(|e| Error::Run(e.to_string()))?;
        // One hash per section, so that a difference names its section.
        let mut hashes: Vec<u64> = CONFIG_SECTIONS
            .iter()
            .map(|name| {
                xxhash_rust::xxh3::xxh3_64(
                    resolved
                        .get(*name)
                        .unwrap_or(&Value::Null)
                        .to_string()
                        .as_bytes(),
                )
            })
            .collect();
        let mut data = xxhash_rust::xxh3::Xxh3::new();
        for split in [&self.data.train, &self.data.val, &self.data.test] {
            data.update(&(split.len() as u64).to_le_bytes());
            let tensors = split.inputs.iter().map(|(_, t)| t);
            let tensors = tensors
                .chain(&split.targets)
                .chain(split.masks.iter().flatten());
            for t in tensors {
                data.update(&crate::dist::fingerprint(t)?.to_le_bytes());
            }
        }
        let mut layout = String::new();
        let params = self
            .params
            .named()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()));
        for (name, t) in params.chain(self.model.buffers()) {
            layout.push_str(&format!("{name}:{:?}:{:?};", t.size(), t.kind()));
        }
        hashes.push(data.digest());
        hashes.push(xxhash_rust::xxh3::xxh3_64(layout.as_bytes()));
        let what = |index: usize| match CONFIG_SECTIONS.get(index) {
            Some(name) => format!("another [{name}] section (its resolved values)"),
            None if index == CONFIG_SECTIONS.len() => "other data".into(),
            None => "another model (its parameters' names and shapes)".into(),
        };
        match crate::dist::first_disagreement(world, &hashes)? {
            None => Ok(()),
            Some((rank, index)) => Err(Error::Input(format!(
                "rank {rank} was started with {} than rank 0: every rank must run the same \
                 pipeline file with the same --set options, plugins and data",
                what(index)
            ))),
        }
    }

    /// Everything needed to continue exactly from here.
    pub fn checkpoint(&self, extra: Value) -> Result<Checkpoint> {
        let mut tensors: Vec<(String, Tensor)> = self
            .params
            .named()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .collect();
        tensors.extend(self.model.buffers());
        let (opt_tensors, opt_meta) = self.optimizer.state();
        tensors.extend(opt_tensors);
        let strategy = self.strategy.state()?;
        let architecture = self.model.architecture().state()?;
        for (prefix, state) in [
            ("state.strategy", &strategy),
            ("state.architecture", &architecture),
        ] {
            for (name, t) in &state.tensors {
                tensors.push((format!("{prefix}.{name}"), t.shallow_clone()));
            }
        }
        let mut meta = serde_json::json!({
            "step": self.step,
            "tasks": self.task_names(),
            "optimizer": opt_meta,
            "strategy": strategy.meta,
            "architecture": architecture.meta,
            "schedule": self.schedule.state(),
        });
        if let (Value::Object(meta), Value::Object(extra)) = (&mut meta, extra) {
            meta.extend(extra);
        }
        Ok(Checkpoint { tensors, meta })
    }

    fn task_names(&self) -> Vec<&str> {
        self.data.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// Restores a checkpoint written by [`Trainer::checkpoint`] of the same pipeline.
    pub fn restore(&mut self, checkpoint: Checkpoint) -> Result<()> {
        let Checkpoint { tensors, meta } = checkpoint;
        // The config is the run's own, but what it reads may have changed:
        // a diffusion run's tasks come from a signals file (checkpoints of
        // earlier builds record no tasks).
        if let Some(then) = meta["tasks"].as_array() {
            let now = self.task_names();
            if then
                .iter()
                .map(Value::as_str)
                .ne(now.iter().copied().map(Some))
            {
                let then: Vec<&str> = then.iter().filter_map(Value::as_str).collect();
                return Err(Error::Input(format!(
                    "the run's tasks were [{}] when step {} was checkpointed, and are now [{}]: what \
                     they are made from has changed since (the data files, or for a diffusion run \
                     the diffusion.signals file its train.grouping reads); put back what the run \
                     started with, or start a new run",
                    then.join(", "),
                    meta["step"],
                    now.join(", ")
                )));
            }
        }
        let mut saved = State {
            tensors,
            meta: Value::Null,
        };
        let mut take = |name: &str| {
            saved.take_tensor(name).map_err(|e| {
                Error::Input(format!(
                    "the checkpoint: {e}; was it written by another pipeline?"
                ))
            })
        };
        for (name, leaf) in self.params.named() {
            copy_into(leaf, &take(name)?, name)?;
        }
        for (name, buffer) in self.model.buffers() {
            copy_into(&buffer, &take(&name)?, &name)?;
        }
        let mut strategy = saved.unnest("state.strategy");
        strategy.meta = meta["strategy"].clone();
        let mut architecture = saved.unnest("state.architecture");
        architecture.meta = meta["architecture"].clone();
        self.strategy.load_state(strategy)?;
        self.model.architecture_mut().load_state(architecture)?;
        self.optimizer.load_state(&mut saved, &meta["optimizer"])?;
        self.schedule.load_state(&meta["schedule"])?;
        self.step = meta["step"]
            .as_u64()
            .ok_or_else(|| Error::Input("the checkpoint has no step".into()))?;
        Ok(())
    }

    /// Copies the model parameters and buffers of `checkpoint` (another
    /// run's) that this model also has by name; returns how many tensors
    /// were copied. A shared name of another shape is an input error.
    pub fn init_from(&mut self, checkpoint: &Checkpoint) -> Result<usize> {
        self.copy_model(checkpoint, false)
    }

    /// Loads every model parameter and buffer from `checkpoint`, one of this
    /// run's own: a tensor it lacks is an input error (a file that is not
    /// this model's would otherwise leave parameters untrained, silently).
    pub fn load_model(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.copy_model(checkpoint, true).map(|_| ())
    }

    /// [`Trainer::init_from`], and with `every` also refusing a model
    /// tensor the checkpoint lacks.
    fn copy_model(&mut self, checkpoint: &Checkpoint, every: bool) -> Result<usize> {
        let model_tensor = |name: &str| {
            ["backbone.", "architecture.", "heads."]
                .iter()
                .any(|p| name.starts_with(p))
        };
        let mut copied = 0;
        let buffers = self.model.buffers();
        let ours = self
            .params
            .named()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .chain(buffers)
            .filter(|(n, _)| model_tensor(n));
        for (name, tensor) in ours {
            if let Some((_, saved)) = checkpoint.tensors.iter().find(|(n, _)| *n == name) {
                if saved.size() != tensor.size() {
                    return Err(Error::Input(format!(
                        "`{name}` is {:?} in the checkpoint but {:?} in this model",
                        saved.size(),
                        tensor.size()
                    )));
                }
                copy_into(&tensor, saved, &name)?;
                copied += 1;
            } else if every {
                return Err(Error::Input(format!(
                    "the checkpoint has no `{name}`: it is not this run's model (replaced or damaged?)"
                )));
            }
        }
        Ok(copied)
    }

    /// Number of trainable values.
    pub fn num_parameters(&self) -> i64 {
        self.params.len()
    }
}

/// A diffusion run's denoising objective, or the error saying the run has none.
fn objective(denoising: &Option<Denoising>) -> Result<&Denoising> {
    denoising.as_ref().ok_or_else(|| {
        Error::Input(
            "this run is not a diffusion model (its pipeline has no [diffusion] section)".into(),
        )
    })
}

/// The denoiser's noise prediction ε̂ (float32, flattened `[B, D]`) for noisy
/// rows `xt` at timestep `t`: the output of the task whose interval holds `t`.
fn predicted_noise(
    model: &mut Model,
    denoising: &Denoising,
    xt: &Tensor,
    t: i64,
) -> Result<Tensor> {
    let mut outputs = model.forward(&denoising.inputs_at(xt, t)?, false, false)?;
    Ok(outputs
        .swap_remove(denoising.task_of(t))
        .f_flatten(1, -1)?
        .f_to_kind(tch::Kind::Float)?)
}
