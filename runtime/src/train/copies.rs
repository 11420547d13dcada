//! Copies of the model that work side by side on the CPU's threads: a
//! meta-learner's per-task inner loops ([`StepOps::adapt`]) and the parts of
//! a training batch (`run.batch_threads`).
//!
//! On a CPU, a small model's operations (Meta-RTL's 256-wide MLP, DTRN's
//! 16-wide transformer blocks) leave libtorch's intra-op threads waiting
//! between them; whole loops or whole batch parts side by side keep every
//! core busy. They run in an OpenMP team of libtorch's own runtime
//! ([`omp::team`]), inside which every operation runs on its member's
//! thread, so the results do not depend on how the work was shared out.
//! Copies for `run.batch_threads` exist from the first step; copies for
//! inner loops are built before the step after the first that asked (that
//! step runs its loops one after another on one intra-op thread, which
//! computes the same bits). Either way a run and its resume agree bit for
//! bit.
//!
//! Only where nothing in the forward pass is random or thread-bound: a CPU
//! run in one process, float32, no `[diffusion]` noise, no dropout in the
//! backbone, an architecture that declares itself replicable (and, for
//! batch parts, no batch norm). Elsewhere inner loops run in turn
//! ([`adapt_in_turn`](taskweave_plugin_api::adapt_in_turn)) and
//! `run.batch_threads` > 1 is refused.

use std::sync::{Arc, Mutex};

use taskweave_plugin_api::{
    inner_steps, Error as ApiError, Group, Host, InnerOptimizer, InnerSteps, InputSpec,
    MethodContext, Result as ApiResult, Role, StepOps,
};
use tch::{Device, Tensor};

use super::omp;
use super::ops::{api, check_finite, model_losses, task_sums};
use super::params::FlatParams;
use super::NonFinite;
use crate::data::{Split, Task};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::registry::Registry;
use crate::sections::{PipelineConfig, Precision};

/// What a copy of the model is built from: the trainer's own recipe.
struct Recipe {
    registry: Arc<Registry>,
    host: Host,
    ctx: MethodContext,
    config: crate::sections::ModelConfig,
    inputs: Vec<InputSpec>,
    tasks: Vec<Task>,
    device: Device,
}

/// The model copies of one run.
pub struct Copies {
    recipe: Recipe,
    built: Vec<(Model, FlatParams)>,
    /// Copies a step asked for and did not have: built before the next step.
    wanted: usize,
    /// `run.batch_threads`.
    shards: usize,
}

/// Restores libtorch's intra-op threads when dropped.
struct IntraOp(i32);

impl IntraOp {
    fn one() -> IntraOp {
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        IntraOp(before)
    }
}

impl Drop for IntraOp {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

impl Copies {
    /// The copies of a run of `config` on `device` whose architecture is
    /// `replicable` (see [`Architecture::replicable`]), or `None` where the
    /// model must not be copied (see the module's doc); an input error when
    /// `run.batch_threads` asks for copies there.
    ///
    /// [`Architecture::replicable`]: taskweave_plugin_api::Architecture::replicable
    pub fn new(
        config: &PipelineConfig,
        (registry, host, ctx): (&Arc<Registry>, &Host, &MethodContext),
        replicable: bool,
        inputs: &[InputSpec],
        tasks: &[Task],
        device: Device,
    ) -> Result<Option<Copies>> {
        let shards = config.run.batch_threads.max(1) as usize;
        let backbone = &config.model.backbone;
        let why_not = [
            (device != Device::Cpu, "runs on the CPU"),
            (
                crate::dist::world().is_parallel(),
                "runs in one process (not under mpirun)",
            ),
            (config.diffusion.is_some(), "has no [diffusion] section"),
            (config.run.precision != Precision::Fp32, "computes in fp32"),
            (backbone.dropout() > 0.0, "has no dropout in the backbone"),
            (
                !replicable,
                "has an architecture that declares itself replicable",
            ),
            (
                shards > 1 && backbone.batch_norm(),
                "has no batch normalisation (each part would normalise by its own rows)",
            ),
        ];
        let missing: Vec<&str> = why_not
            .iter()
            .filter(|(no, _)| *no)
            .map(|(_, w)| *w)
            .collect();
        if !missing.is_empty() {
            if shards > 1 {
                return Err(Error::Input(format!(
                    "run.batch_threads = {shards} trains copies of the model side by side, which needs a \
                     run that {}; set run.batch_threads = 1",
                    missing.join(", and that ")
                )));
            }
            return Ok(None);
        }
        Ok(Some(Copies {
            recipe: Recipe {
                registry: Arc::clone(registry),
                host: host.clone(),
                ctx: ctx.clone(),
                config: config.model.clone(),
                inputs: inputs.to_vec(),
                tasks: tasks.to_vec(),
                device,
            },
            built: Vec::new(),
            // The parts of every batch from the first step on.
            wanted: shards - 1,
            shards,
        }))
    }

    /// How many parts every training batch is split into (1: none).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Whether a step asked for copies that are not built yet.
    pub fn want_more(&self) -> bool {
        self.built.len() < self.wanted
    }

    /// Builds the copies the last step asked for. Their initial values are
    /// drawn and overwritten: call it outside a step, holding the generator.
    pub fn build_wanted(&mut self) -> Result<()> {
        while self.built.len() < self.wanted {
            let r = &self.recipe;
            let architecture = r
                .registry
                .create_table(Role::Architecture, &r.config.architecture, &r.ctx, &r.host)?
                .into_architecture()?;
            let model = Model::new(&r.config, &r.inputs, &r.tasks, architecture, r.device)?;
            let params = FlatParams::new(model.parameters()?, r.tasks.len(), r.device)?;
            self.built.push((model, params));
            if self.built.len() == self.wanted {
                tracing::info!(
                    "{} side by side on {} threads (model copies: {})",
                    match self.shards {
                        1 => "inner loops",
                        _ => "batch parts",
                    },
                    self.wanted + 1,
                    self.wanted
                );
            }
        }
        Ok(())
    }

    /// Runs `jobs` (task, batch) from the live parameters of `model`: on
    /// `workers` threads when the copies are there, else one after another
    /// on one intra-op thread (asking for the copies). Every loop runs on
    /// one thread either way (a team's members set theirs).
    pub fn run(
        &mut self,
        (model, params): (&mut Model, &mut FlatParams),
        jobs: Vec<(usize, Split)>,
        workers: usize,
        (step, steps, optimizer): (u64, usize, InnerOptimizer),
    ) -> Result<Outcome> {
        let tasks = &self.recipe.tasks;
        let loops = |model: &mut Model, params: &mut FlatParams, jobs: Vec<(usize, Split)>| {
            let mut ops = CopyOps {
                model,
                params,
                tasks,
                batch: None,
                step,
                nonfinite: None,
            };
            let done = jobs
                .into_iter()
                .map(|(task, batch)| {
                    ops.batch = Some(batch);
                    inner_steps(&mut ops, task, steps, optimizer)
                })
                .collect::<ApiResult<Vec<_>>>();
            (done, ops.nonfinite)
        };
        if self.built.len() + 1 < workers {
            self.wanted = workers - 1;
            let _one = IntraOp::one();
            let (done, nonfinite) = loops(model, params, jobs);
            return Ok(Outcome { done, nonfinite });
        }
        sync((model, params), &mut self.built, workers)?;
        // Contiguous shares, in task order; the first on the live model.
        let n = jobs.len();
        let mut jobs = jobs.into_iter();
        let shares: Vec<Vec<(usize, Split)>> = (0..workers)
            .map(|w| {
                jobs.by_ref()
                    .take((w + 1) * n / workers - w * n / workers)
                    .collect()
            })
            .collect();
        let shares = one_each(shares);
        let results = each(
            (model, params),
            &mut self.built,
            workers,
            |w, model, params| loops(model, params, take(&shares[w]).unwrap_or_default()),
        );
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| (Err(ApiError::msg("an inner loop panicked")), None)));
        let (mut done, mut failed, mut nonfinite) = (Vec::with_capacity(n), None, None);
        for (result, met) in results {
            nonfinite = nonfinite.or(met);
            match result {
                Ok(these) => done.extend(these),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        Ok(Outcome {
            done: failed.map_or(Ok(done), Err),
            nonfinite,
        })
    }

    /// Each part's per-task loss sums, labelled counts and auxiliary
    /// losses on `batch` split into [`Copies::shards`] contiguous parts, the
    /// forward passes side by side (part 0 on the live model).
    pub fn part_sums(
        &mut self,
        live: (&mut Model, &mut FlatParams),
        batch: &Split,
        update_stats: bool,
    ) -> Result<Vec<PartSums>> {
        let parts = self.shards.min(batch.len()).max(1);
        sync((&*live.0, &*live.1), &mut self.built, parts)?;
        let rows = batch.len();
        let splits: Vec<Split> = (0..parts)
            .map(|p| batch.slice(p * rows / parts, (p + 1) * rows / parts - p * rows / parts))
            .collect::<std::result::Result<_, _>>()?;
        let splits = one_each(splits);
        let tasks = &self.recipe.tasks;
        let sums = each(live, &mut self.built, parts, |p, model, _| {
            let split = take(&splits[p])
                .ok_or_else(|| Error::Method("a batch part went missing".into()))?;
            let (sums, counts, aux) = task_sums(model, tasks, &split, update_stats)?;
            Ok(PartSums {
                sums,
                counts,
                aux,
                rows: split.len(),
            })
        });
        sums.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Method("a batch part's forward pass panicked".into()))
                })
            })
            .collect()
    }

    /// Σ over the parts of ∂`scalars[p]`/∂`groups`, each part's gradient
    /// taken side by side on its model (`scalars[p]` reaches part p's
    /// model only), summed in part order; one flat vector per group.
    pub fn part_grads(
        &mut self,
        live: (&mut Model, &mut FlatParams),
        scalars: &[Tensor],
        groups: &[Group],
        retain_graph: bool,
    ) -> Result<Vec<Tensor>> {
        let parts = scalars.len();
        let scalars = one_each(scalars.iter().map(Tensor::shallow_clone).collect());
        let grads = each(live, &mut self.built, parts, |p, _, params| {
            let scalar = take(&scalars[p])
                .ok_or_else(|| Error::Method("a batch part went missing".into()))?;
            params.grads(&scalar, groups, retain_graph)
        });
        let mut total: Option<Vec<Tensor>> = None;
        for part in grads {
            let part = part.unwrap_or_else(|| {
                Err(Error::Method(
                    "a batch part's backward pass panicked".into(),
                ))
            })?;
            total = Some(match total {
                None => part,
                Some(sum) => sum
                    .iter()
                    .zip(&part)
                    .map(|(a, b)| a.f_add(b))
                    .collect::<std::result::Result<_, _>>()?,
            });
        }
        Ok(total.unwrap_or_default())
    }
}

/// Puts the live parameters and buffers into the copies of `built` the
/// next `workers` members use.
fn sync(
    (model, params): (&Model, &FlatParams),
    built: &mut [(Model, FlatParams)],
    workers: usize,
) -> Result<()> {
    let live = params.model()?;
    let buffers = model.buffers();
    for (copy, copy_params) in &mut built[..workers - 1] {
        copy_params.set_model(&live)?;
        tch::no_grad(|| -> Result<()> {
            for ((_, mine), (_, theirs)) in copy.buffers().iter().zip(&buffers) {
                mine.shallow_clone().f_copy_(theirs)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `work(w, model, params)` for every member w of a team of `workers`:
/// member 0 on the live model, member w on copy w − 1 of `built`. `None`
/// for a member that panicked.
fn each<R: Send>(
    (model, params): (&mut Model, &mut FlatParams),
    built: &mut [(Model, FlatParams)],
    workers: usize,
    work: impl Fn(usize, &mut Model, &mut FlatParams) -> R + Sync,
) -> Vec<Option<R>> {
    let slots: Vec<_> = std::iter::once((model, params))
        .chain(built[..workers - 1].iter_mut().map(|(m, p)| (m, p)))
        .map(|on| Mutex::new(Some(on)))
        .collect();
    let results: Vec<Mutex<Option<R>>> = (0..workers).map(|_| Mutex::new(None)).collect();
    let member = |w: usize| {
        let Some((model, params)) = slots[w].lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(w, model, params)));
        if let (Ok(out), Ok(mut slot)) = (out, results[w].lock()) {
            *slot = Some(out);
        }
    };
    omp::team(workers, &member);
    results
        .into_iter()
        .map(|r| r.into_inner().ok().flatten())
        .collect()
}

/// Tensors handed to a team's members one each (a tensor is `Send`, not `Sync`).
fn one_each<T>(items: Vec<T>) -> Vec<Mutex<Option<T>>> {
    items.into_iter().map(|t| Mutex::new(Some(t))).collect()
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().ok().and_then(|mut s| s.take())
}

/// One batch part's per-task loss sums and labelled counts (`[T]` each)
/// with its architecture's auxiliary losses, and its number of rows.
pub struct PartSums {
    pub sums: Tensor,
    pub counts: Tensor,
    pub aux: Option<Tensor>,
    pub rows: usize,
}

/// The inner loops' results, or the first failure, and the first
/// non-finite loss met.
pub struct Outcome {
    pub done: ApiResult<Vec<InnerSteps>>,
    pub nonfinite: Option<NonFinite>,
}

/// What [`inner_steps`] needs of a model copy and its batch.
struct CopyOps<'a> {
    model: &'a mut Model,
    params: &'a mut FlatParams,
    tasks: &'a [Task],
    batch: Option<Split>,
    step: u64,
    nonfinite: Option<NonFinite>,
}

fn not_here<T>(what: &str) -> ApiResult<T> {
    Err(ApiError::msg(format!(
        "StepOps::{what} is not available inside StepOps::adapt's inner loops"
    )))
}

impl StepOps for CopyOps<'_> {
    fn num_tasks(&self) -> usize {
        self.tasks.len()
    }
    fn current_step(&self) -> u64 {
        self.step
    }
    fn next_batch(&mut self) -> ApiResult<()> {
        not_here("next_batch")
    }
    fn task_batch(&mut self, _: usize) -> ApiResult<()> {
        not_here("task_batch")
    }
    fn extra_batch(&mut self) -> ApiResult<()> {
        not_here("extra_batch")
    }
    fn losses(&mut self, update_stats: bool) -> ApiResult<Tensor> {
        let batch = self
            .batch
            .as_ref()
            .ok_or_else(|| ApiError::msg("losses() before a batch"))?;
        let losses = api(model_losses(self.model, self.tasks, batch, update_stats))?;
        check_finite(&losses, &mut self.nonfinite)?;
        Ok(losses)
    }
    fn grads(
        &mut self,
        loss: &Tensor,
        groups: &[Group],
        retain_graph: bool,
    ) -> ApiResult<Vec<Tensor>> {
        api(self.params.grads(loss, groups, retain_graph))
    }
    fn backward(&mut self, _: &Tensor) -> ApiResult<()> {
        not_here("backward")
    }
    fn perturb(&mut self, _: &[Group], _: &[Tensor], _: f64, _: bool) -> ApiResult<()> {
        not_here("perturb")
    }
    fn restore(&mut self) -> ApiResult<()> {
        not_here("restore")
    }
    fn set_grads(&mut self, _: Group, _: &Tensor) -> ApiResult<()> {
        not_here("set_grads")
    }
    fn optimizer_step(&mut self) -> ApiResult<()> {
        not_here("optimizer_step")
    }
    fn parameters_flat(&mut self) -> ApiResult<Tensor> {
        Ok(api(self.params.model())?.f_detach_copy()?)
    }
    fn set_parameters_flat(&mut self, values: &Tensor) -> ApiResult<()> {
        api(self.params.set_model(values))
    }
    fn adapt(&mut self, _: &[usize], _: usize, _: InnerOptimizer) -> ApiResult<Vec<InnerSteps>> {
        not_here("adapt")
    }
}
