//! [`StepOps::adapt`] at once: a meta-learner's per-task inner loops side by
//! side on the CPU's threads, each on its own copy of the model.
//!
//! On a CPU, the inner loops of a small model (Meta-RTL's 256-wide MLP)
//! leave libtorch's intra-op threads waiting between small operations; whole
//! loops side by side keep every core busy. They run in an OpenMP team of
//! libtorch's own runtime ([`omp::team`]), inside which every operation
//! runs on its own thread, so the results do not depend on how the loops
//! were shared out. The copies are built once, before the step after the
//! first that asked (that step runs its loops one after another on one
//! intra-op thread, which computes the same bits), so a run and its resume
//! agree bit for bit.
//!
//! Only where nothing in the forward pass is random or thread-bound: a CPU
//! run in one process, float32, no `[diffusion]` noise, no dropout in the
//! backbone, an architecture built into the runtime (a plugin's may draw
//! or keep state). Elsewhere the loops run in turn
//! ([`adapt_in_turn`](taskweave_plugin_api::adapt_in_turn)).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use taskweave_plugin_api::{
    inner_steps, Error as ApiError, Group, Host, InnerOptimizer, InnerSteps, InputSpec,
    MethodContext, Result as ApiResult, Role, StepOps,
};
use tch::{Device, Tensor};

use super::omp;
use super::ops::model_losses;
use super::params::FlatParams;
use super::NonFinite;
use crate::data::{Split, Task};
use crate::error::Result;
use crate::model::Model;
use crate::registry::{Origin, Registry};
use crate::sections::{PipelineConfig, Precision};

/// What a copy of the model is built from: the trainer's own recipe.
struct Recipe {
    registry: Arc<Registry>,
    host: Host,
    ctx: MethodContext,
    architecture: Value,
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
    /// The copies of a run of `config` on `device`, or `None` where its
    /// inner loops must run in turn (see the module's doc).
    pub fn new(
        config: &PipelineConfig,
        (registry, host, ctx): (&Arc<Registry>, &Host, &MethodContext),
        inputs: &[InputSpec],
        tasks: &[Task],
        device: Device,
    ) -> Option<Copies> {
        let architecture = &config.model.architecture;
        let builtin = architecture
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|kind| registry.get(Role::Architecture, kind).ok())
            .is_some_and(|entry| entry.origin == Origin::Builtin);
        let eligible = device == Device::Cpu
            && !crate::dist::world().is_parallel()
            && config.diffusion.is_none()
            && config.run.precision == Precision::Fp32
            && config.model.backbone.dropout() == 0.0
            && builtin;
        eligible.then(|| Copies {
            recipe: Recipe {
                registry: Arc::clone(registry),
                host: host.clone(),
                ctx: ctx.clone(),
                architecture: architecture.clone(),
                config: config.model.clone(),
                inputs: inputs.to_vec(),
                tasks: tasks.to_vec(),
                device,
            },
            built: Vec::new(),
            wanted: 0,
        })
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
                .create_table(Role::Architecture, &r.architecture, &r.ctx, &r.host)?
                .into_architecture()?;
            let model = Model::new(&r.config, &r.inputs, &r.tasks, architecture, r.device)?;
            let params = FlatParams::new(model.parameters()?, r.tasks.len(), r.device)?;
            self.built.push((model, params));
            if self.built.len() == self.wanted {
                tracing::info!(
                    "inner loops side by side on {} threads (model copies: {})",
                    self.wanted + 1,
                    self.wanted
                );
            }
        }
        Ok(())
    }

    /// Runs `jobs` (task, batch) from the live parameters of `model`: on
    /// `workers` threads when the copies are there, else one after another
    /// (asking for the copies). One intra-op thread either way.
    pub fn run(
        &mut self,
        (model, params): (&mut Model, &mut FlatParams),
        jobs: Vec<(usize, Split)>,
        workers: usize,
        (step, steps, optimizer): (u64, usize, InnerOptimizer),
    ) -> Result<Outcome> {
        let _one = IntraOp::one();
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
            return Ok(Outcome::from(loops(model, params, jobs)));
        }
        let live = params.model()?;
        let buffers = model.buffers();
        for (copy, copy_params) in &mut self.built[..workers - 1] {
            copy_params.set_model(&live)?;
            tch::no_grad(|| -> Result<()> {
                for ((_, mine), (_, theirs)) in copy.buffers().iter().zip(&buffers) {
                    mine.shallow_clone().f_copy_(theirs)?;
                }
                Ok(())
            })?;
        }
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
        let shares = shares.into_iter();
        let slots: Vec<_> = std::iter::once((model, params))
            .chain(self.built[..workers - 1].iter_mut().map(|(m, p)| (m, p)))
            .zip(shares)
            .map(|(on, share)| Mutex::new(Some((on, share))))
            .collect();
        let results: Vec<_> = (0..workers).map(|_| Mutex::new(None)).collect();
        let work = |i: usize| {
            let taken = slots[i].lock().ok().and_then(|mut s| s.take());
            let Some(((model, params), share)) = taken else {
                return;
            };
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                loops(model, params, share)
            }))
            .unwrap_or_else(|_| (Err(ApiError::msg("an inner loop panicked")), None));
            if let Ok(mut slot) = results[i].lock() {
                *slot = Some(out);
            }
        };
        omp::team(workers, &work);
        let results = results.into_iter().map(|r| {
            r.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| (Err(ApiError::msg("an inner loop did not run")), None))
        });
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
}

/// The inner loops' results, or the first failure, and the first
/// non-finite loss met.
pub struct Outcome {
    pub done: ApiResult<Vec<InnerSteps>>,
    pub nonfinite: Option<NonFinite>,
}

impl From<(ApiResult<Vec<InnerSteps>>, Option<NonFinite>)> for Outcome {
    fn from((done, nonfinite): (ApiResult<Vec<InnerSteps>>, Option<NonFinite>)) -> Outcome {
        Outcome { done, nonfinite }
    }
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

fn api<T>(result: Result<T>) -> ApiResult<T> {
    result.map_err(|e| ApiError::msg(e.to_string()))
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
        match super::ops::first_nonfinite(&losses)? {
            Some((task, value)) => {
                self.nonfinite.get_or_insert(NonFinite::Loss(task, value));
                Err(ApiError::msg(format!("non-finite loss for task {task}")))
            }
            None => Ok(losses),
        }
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
