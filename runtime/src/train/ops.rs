//! The host operations a strategy runs one step with ([`StepOps`]).

use taskweave_plugin_api::{
    adapt_in_turn, Error as ApiError, Group, InnerOptimizer, InnerSteps, Result as ApiResult,
    StepOps,
};
use tch::{Kind, Tensor};

use super::batches::Batches;
use super::copies::{Copies, PartSums};
use super::params::FlatParams;
use crate::data::{Dataset, Split, Task};
use crate::device::kernels;
use crate::diffusion::Denoising;
use crate::dist;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::optimizer::Optimizer;
use crate::train::generator::forward_seed;
use crate::train::metrics::{loss_means, task_loss_sums};
use crate::train::{all_finite, NonFinite};

/// Where a step's batches come from: the training split, whose rows a
/// diffusion pipeline's objective noises afresh.
pub struct Rows<'a> {
    pub data: &'a Dataset,
    pub denoising: Option<&'a Denoising>,
}

/// One step's view of the trainer.
pub struct Ops<'a> {
    model: &'a mut Model,
    params: &'a mut FlatParams,
    optimizer: &'a mut Optimizer,
    data: &'a Dataset,
    denoising: Option<&'a Denoising>,
    batches: &'a mut Batches,
    step: u64,
    /// The run's seed (data-parallel forward passes draw from it).
    seed: u64,
    /// Forward passes so far in this step.
    forwards: u64,
    batch: Option<Split>,
    /// Task and extra batches drawn so far in this step.
    task_draws: u64,
    /// Parameter slices changed by `perturb` and their saved values, put back
    /// by `restore`.
    saved: Vec<(Vec<Tensor>, Vec<Tensor>)>,
    /// The first non-finite loss or update seen.
    nonfinite: Option<NonFinite>,
    /// `train.clip_grad_norm` (0: off).
    clip_grad_norm: f64,
    /// Model copies for inner loops side by side and batch parts, where the
    /// run allows them.
    copies: Option<&'a mut Copies>,
    /// The losses this step handed out from batch parts (`run.batch_threads`).
    parted: Vec<Parted>,
}

/// Losses computed over batch parts on the model and its copies: what the
/// strategy got (a leaf, so that its graph ends there) and each part's
/// share with the part's graph. A gradient through the leaf is taken part
/// by part: ∂loss/∂θ = Σ_p ∂(v · share_p)/∂θ with v = ∂loss/∂leaf.
struct Parted {
    leaf: Tensor,
    shares: Vec<Tensor>,
}

impl<'a> Ops<'a> {
    pub fn new(
        model: &'a mut Model,
        params: &'a mut FlatParams,
        optimizer: &'a mut Optimizer,
        rows: Rows<'a>,
        batches: &'a mut Batches,
        (step, seed): (u64, u64),
        clip_grad_norm: f64,
    ) -> Ops<'a> {
        Ops {
            model,
            params,
            optimizer,
            data: rows.data,
            denoising: rows.denoising,
            batches,
            step,
            seed,
            forwards: 0,
            batch: None,
            task_draws: 0,
            saved: Vec::new(),
            nonfinite: None,
            clip_grad_norm,
            copies: None,
            parted: Vec::new(),
        }
    }

    /// Runs [`StepOps::adapt`]'s inner loops and the parts of each batch
    /// (`run.batch_threads`) side by side on `copies`.
    pub fn with_copies(mut self, copies: Option<&'a mut Copies>) -> Ops<'a> {
        self.copies = copies;
        self
    }

    /// Ends the step: undoes a perturbation the strategy left in place (it
    /// failed half-way) and drops partial gradients of a step that saw a
    /// non-finite loss or update. Returns what was non-finite, if anything.
    pub fn finish(mut self) -> Result<Option<NonFinite>> {
        self.restore_saved()?;
        if self.nonfinite.is_some() {
            self.params.zero_grad()?;
        }
        Ok(self.nonfinite)
    }

    fn restore_saved(&mut self) -> Result<()> {
        while let Some((slices, backup)) = self.saved.pop() {
            kernels()
                .sam_restore(&slices, &backup)
                .map_err(|e| Error::Run(e.to_string()))?;
        }
        Ok(())
    }
}

impl Ops<'_> {
    /// Makes the training rows `index` the current batch; a diffusion
    /// pipeline noises them afresh, all for task `task` when given.
    fn take_rows(&mut self, index: &Tensor, task: Option<usize>) -> ApiResult<()> {
        // Under data-parallel training, this rank's contiguous part of the
        // global batch (the same global batches as one process draws).
        let part = dist::world().shard(index.size()[0] as usize);
        let index = index.f_narrow(0, part.start as i64, part.len() as i64)?;
        let index = &index;
        let batch = match self.denoising {
            Some(denoising) => denoising.noised(index, task),
            None => self.data.train.rows(index).map_err(Error::from),
        };
        self.batch = Some(api(batch)?);
        Ok(())
    }
}

/// Under data-parallel training over `ranks` ranks: each task's loss share
/// of this rank's rows (`sums`, with the labelled `counts` they are over),
/// times `ranks`. A task's loss is the mean over the global batch's labelled
/// elements, so a rank's share is its summed loss over the global count
/// (summed over the ranks first); the shares add up to what one process
/// computes on the whole batch.
fn shares(sums: &Tensor, counts: &Tensor, ranks: usize) -> Result<Tensor> {
    let mut counts = Vec::<f64>::try_from(
        counts
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?,
    )?;
    dist::world().sum_f64(&mut counts)?;
    let scale: Vec<f32> = counts
        .iter()
        .map(|c| ranks as f32 / c.max(1.0) as f32)
        .collect();
    let scale = Tensor::from_slice(&scale).f_to_device(sums.device())?;
    Ok(sums.f_mul(&scale)?)
}

/// The architecture's auxiliary losses of its last training pass, checked
/// to be one per task (`tasks`).
fn aux_losses(model: &mut Model, tasks: usize) -> Result<Option<Tensor>> {
    let Some(aux) = model.architecture_mut().aux_losses()? else {
        return Ok(None);
    };
    if aux.size() != [tasks as i64] {
        return Err(Error::Method(format!(
            "the architecture's auxiliary losses are {:?}, not one per task ({tasks})",
            aux.size()
        )));
    }
    Ok(Some(aux.f_to_kind(Kind::Float)?))
}

/// `losses` plus the auxiliary losses `aux`, if any.
fn plus_aux(losses: Tensor, aux: Option<Tensor>) -> Result<Tensor> {
    Ok(match aux {
        Some(aux) => losses.f_add(&aux)?,
        None => losses,
    })
}

/// A training forward pass of `model` on `batch` in one process (no
/// diffusion noise): the per-task loss sums and labelled counts of
/// [`task_loss_sums`], and the auxiliary losses.
pub(super) fn task_sums(
    model: &mut Model,
    tasks: &[Task],
    batch: &Split,
    update_stats: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let outputs = model.forward(&batch.inputs, true, update_stats)?;
    let (sums, counts) = task_loss_sums(tasks, &outputs, batch)?;
    Ok((sums, counts, aux_losses(model, tasks.len())?))
}

/// The per-task training losses of `model` on `batch` in one process:
/// each task's mean loss plus the auxiliary losses.
pub(super) fn model_losses(
    model: &mut Model,
    tasks: &[Task],
    batch: &Split,
    update_stats: bool,
) -> Result<Tensor> {
    let (sums, counts, aux) = task_sums(model, tasks, batch, update_stats)?;
    plus_aux(loss_means(&sums, &counts)?, aux)
}

/// An error naming the first task whose loss is not finite, which is kept
/// in `nonfinite` (unless one is already): the one read of the losses a
/// step makes.
pub(super) fn check_finite(losses: &Tensor, nonfinite: &mut Option<NonFinite>) -> ApiResult<()> {
    let values = Vec::<f64>::try_from(
        losses
            .f_detach()?
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?,
    )?;
    match values.into_iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((task, value)) => {
            nonfinite.get_or_insert(NonFinite::Loss(task, value));
            Err(ApiError::msg(format!("non-finite loss for task {task}")))
        }
        None => Ok(()),
    }
}

pub(super) fn api<T>(result: Result<T>) -> ApiResult<T> {
    result.map_err(|e| ApiError::msg(e.to_string()))
}

impl Ops<'_> {
    /// The losses of batch parts as one leaf `[T]`: each task's loss sum over
    /// all parts' labelled counts, plus the auxiliary losses weighed by the
    /// parts' rows (what one process computes on the whole batch, up to
    /// rounding; the auxiliary losses as under data-parallel training).
    fn parted_losses(&mut self, parts: Vec<PartSums>) -> ApiResult<Tensor> {
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        let mut counts: Option<Tensor> = None;
        for p in &parts {
            let c = p.counts.f_detach()?;
            counts = Some(match counts {
                None => c,
                Some(sum) => sum.f_add(&c)?,
            });
        }
        let counts = counts
            .ok_or_else(|| ApiError::msg("a batch without parts"))?
            .f_clamp_min(1.0)?;
        let mut shares = Vec::with_capacity(parts.len());
        for p in &parts {
            let mut share = p.sums.f_div(&counts)?;
            if let Some(aux) = &p.aux {
                share = share.f_add(&aux.f_mul_scalar(p.rows as f64 / rows as f64)?)?;
            }
            shares.push(share);
        }
        let mut value = shares[0].f_detach()?;
        for share in &shares[1..] {
            value = value.f_add(&share.f_detach()?)?;
        }
        check_finite(&value, &mut self.nonfinite)?;
        let leaf = value.f_set_requires_grad(true)?;
        self.parted.push(Parted {
            leaf: leaf.shallow_clone(),
            shares,
        });
        Ok(leaf)
    }

    /// For every parted loss `loss` reaches: the per-part scalars v · share_p
    /// whose gradients add up to its part of ∂loss/∂θ; and ∂loss/∂`others`
    /// (zeros where it does not reach), from the same backward pass.
    fn through_parts(
        &mut self,
        loss: &Tensor,
        others: &[Tensor],
        retain_graph: bool,
    ) -> ApiResult<(Vec<Vec<Tensor>>, Vec<Tensor>)> {
        let inputs: Vec<&Tensor> = self.parted.iter().map(|p| &p.leaf).chain(others).collect();
        let grads = Tensor::f_run_backward(&[loss], &inputs, retain_graph, false)?;
        let (at_leaves, at_others) = grads.split_at(self.parted.len());
        let mut through = Vec::new();
        for (parted, v) in self.parted.iter().zip(at_leaves) {
            if v.defined() {
                let scalars = parted
                    .shares
                    .iter()
                    .map(|share| share.f_mul(v)?.f_sum(Kind::Float))
                    .collect::<Result<Vec<_>, _>>()?;
                through.push(scalars);
            }
        }
        let others = at_others
            .iter()
            .zip(others)
            .map(|(g, x)| match g.defined() {
                true => Ok(g.shallow_clone()),
                false => x.f_zeros_like(),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((through, others))
    }

    /// The first task whose own gradient is non-finite, recomputed at the
    /// current parameters on the step's last batch (a forward pass and one
    /// backward pass per task, only after an update was found non-finite).
    fn task_with_nonfinite_gradient(&mut self) -> ApiResult<Option<usize>> {
        if self.batch.is_none() {
            return Ok(None);
        }
        let losses = self.losses(false)?;
        let tasks = self.data.tasks.len();
        let groups = self.params.model_groups();
        for task in 0..tasks {
            let last = task + 1 == tasks;
            let grads = self.grads(&losses.f_get(task as i64)?, &groups, !last)?;
            for g in &grads {
                if !all_finite(g)? {
                    return Ok(Some(task));
                }
            }
        }
        Ok(None)
    }
}

impl StepOps for Ops<'_> {
    fn num_tasks(&self) -> usize {
        self.data.tasks.len()
    }

    fn current_step(&self) -> u64 {
        self.step
    }

    fn next_batch(&mut self) -> ApiResult<()> {
        let device = self.data.device();
        let index = api(self.batches.indices(self.step, device))?;
        self.take_rows(&index, None)
    }

    fn task_batch(&mut self, task: usize) -> ApiResult<()> {
        let device = self.data.device();
        let index = api(self
            .batches
            .task_indices(task, self.step, self.task_draws, device))?;
        self.task_draws += 1;
        self.take_rows(&index, Some(task))
    }

    fn extra_batch(&mut self) -> ApiResult<()> {
        let device = self.data.device();
        let index = api(self
            .batches
            .extra_indices(self.step, self.task_draws, device))?;
        self.task_draws += 1;
        self.take_rows(&index, None)
    }

    fn losses(&mut self, update_stats: bool) -> ApiResult<Tensor> {
        let batch = self
            .batch
            .as_ref()
            .ok_or_else(|| ApiError::msg("losses() before next_batch()"))?;
        if let Some(copies) = self.copies.as_deref_mut().filter(|c| c.shards() > 1) {
            let parts = api(copies.part_sums((self.model, self.params), batch, update_stats))?;
            self.forwards += 1;
            return self.parted_losses(parts);
        }
        let world = dist::world();
        let reseed = |rank| {
            tch::manual_seed(forward_seed(self.seed, self.step, self.forwards, rank));
        };
        if world.is_parallel() {
            reseed(Some(world.rank()));
        }
        let outputs = api(self.model.forward(&batch.inputs, true, update_stats))?;
        if world.is_parallel() {
            reseed(None);
        }
        self.forwards += 1;
        let shared = match self.denoising {
            Some(denoising) => api(denoising.shared_loss_sums(&outputs, batch))?,
            None => None,
        };
        // Float32 whatever the forward computed in (bf16 under autocast).
        let (sums, counts) = match shared {
            Some(sums) => sums,
            None => api(task_loss_sums(&self.data.tasks, &outputs, batch))?,
        };
        let losses = match world.is_parallel() {
            true => api(shares(&sums, &counts, world.size()))?,
            false => api(loss_means(&sums, &counts))?,
        };
        let aux = api(aux_losses(self.model, self.data.tasks.len()))?;
        let mut losses = api(plus_aux(losses, aux))?;
        if world.is_parallel() {
            // The value every rank sees: the mean of the ranks' N-fold shares,
            // i.e. the global batch's losses (plus the mean auxiliary loss).
            // Gradients flow through this rank's share only; averaging them
            // over the ranks (`FlatParams`) gives the global batch's gradient,
            // and any function of the losses a method builds differentiates
            // at the global values. `x − x` is exactly zero, so the value is
            // the reduced one bit for bit on every rank.
            let mut value = losses.f_empty_like()?;
            value.f_copy_(&losses.f_detach()?)?;
            api(world.mean_(&value))?;
            // Checked before the sum below turns an infinite share into NaN
            // (∞ − ∞), so that every rank names what one process would.
            check_finite(&value, &mut self.nonfinite)?;
            losses = value.f_add(&losses.f_sub(&losses.f_detach()?)?)?;
        }
        check_finite(&losses, &mut self.nonfinite)?;
        Ok(losses)
    }

    fn grads(
        &mut self,
        loss: &Tensor,
        groups: &[Group],
        retain_graph: bool,
    ) -> ApiResult<Vec<Tensor>> {
        if self.parted.is_empty() || !loss.requires_grad() {
            return api(self.params.grads(loss, groups, retain_graph));
        }
        let (through, _) = self.through_parts(loss, &[], retain_graph)?;
        let mut total = groups
            .iter()
            .map(|g| {
                let r = api(self.params.range(*g))?;
                Ok(Tensor::f_zeros(
                    [r.end - r.start],
                    (Kind::Float, self.params.data().device()),
                )?)
            })
            .collect::<ApiResult<Vec<_>>>()?;
        for scalars in through {
            let copies = self
                .copies
                .as_deref_mut()
                .expect("parted losses come from the copies");
            let part =
                api(copies.part_grads((self.model, self.params), &scalars, groups, retain_graph))?;
            for (t, p) in total.iter_mut().zip(&part) {
                let _ = t.f_add_(p)?;
            }
        }
        Ok(total)
    }

    fn backward(&mut self, loss: &Tensor) -> ApiResult<()> {
        if self.parted.is_empty() || !loss.requires_grad() {
            return api(self.params.backward(loss));
        }
        let methods = self.params.method_leaves();
        let (through, method_grads) = self.through_parts(loss, &methods, false)?;
        api(self.params.add_method_grads(&method_grads))?;
        let groups = self.params.model_groups();
        for scalars in through {
            let copies = self
                .copies
                .as_deref_mut()
                .expect("parted losses come from the copies");
            let part = api(copies.part_grads((self.model, self.params), &scalars, &groups, false))?;
            api(self.params.add_model_grad(&Tensor::f_cat(&part, 0)?))?;
        }
        Ok(())
    }

    fn perturb(
        &mut self,
        groups: &[Group],
        grads: &[Tensor],
        rho: f64,
        adaptive: bool,
    ) -> ApiResult<()> {
        if groups.len() != grads.len() {
            return Err(ApiError::msg(format!(
                "perturb: {} groups but {} gradients",
                groups.len(),
                grads.len()
            )));
        }
        // Each group is one contiguous slice of the flat buffer; the shared
        // kernel adds ε = ρ·A²g/(‖Ag‖ + 1e-12), one norm over all the slices
        // (one fused launch per pass on CUDA, the libtorch reference on CPU).
        let slices: Vec<Tensor> = groups
            .iter()
            .map(|g| {
                api(self
                    .params
                    .range(*g)
                    .and_then(|r| FlatParams::slice(self.params.data(), &r)))
            })
            .collect::<ApiResult<_>>()?;
        let mut backup = Vec::new();
        let _norm = kernels()
            .sam_perturb(&slices, grads, &mut backup, rho, adaptive)
            .map_err(ApiError::from)?;
        self.saved.push((slices, backup));
        Ok(())
    }

    fn restore(&mut self) -> ApiResult<()> {
        api(self.restore_saved())
    }

    fn set_grads(&mut self, group: Group, grad: &Tensor) -> ApiResult<()> {
        api(self.params.set_grad(group, grad))
    }

    fn optimizer_step(&mut self) -> ApiResult<()> {
        if self.nonfinite.is_some() {
            // A strategy that went on after a non-finite loss or update:
            // the step is reported as skipped, so the parameters stay.
            return Err(ApiError::msg("the step already met a non-finite number"));
        }
        // The one check of every update the optimizer applies, whatever made
        // it (a loss weighting's backward, a gradient weighting, a plugin
        // strategy): one BLAS dot, non-finite when an entry is (or, rarely,
        // when the squares overflow f32: told apart only then). The
        // weightings that never form the Gramian leave it to this (TorchJD
        // makes none).
        let grad = self.params.grad().shallow_clone();
        if !grad.f_dot(&grad)?.f_double_value(&[])?.is_finite() && !all_finite(&grad)? {
            // Naming the task is a courtesy: if it fails (memory), the
            // step is still the non-finite one the policy handles.
            let task = self.task_with_nonfinite_gradient().unwrap_or_else(|e| {
                tracing::warn!("could not name the task with the non-finite gradient: {e}");
                None
            });
            self.nonfinite.get_or_insert(NonFinite::Gradient(task));
            return Err(ApiError::msg("the update is not finite"));
        }
        // After the check: naming the task differentiates again.
        let _guard = tch::no_grad_guard();
        if self.clip_grad_norm > 0.0 {
            // torch.nn.utils.clip_grad_norm_: one L2 norm over every trainable value.
            let norm = grad.f_norm()?.f_double_value(&[])?;
            let scale = self.clip_grad_norm / (norm + 1e-6);
            if scale < 1.0 {
                let _ = grad.shallow_clone().f_mul_scalar_(scale)?;
            }
        }
        api(self.optimizer.step(self.params.data(), &grad))?;
        api(self.params.zero_grad())
    }

    fn parameters_flat(&mut self) -> ApiResult<Tensor> {
        Ok(api(self.params.model())?.f_detach_copy()?)
    }

    fn set_parameters_flat(&mut self, values: &Tensor) -> ApiResult<()> {
        api(self.params.set_model(values))
    }

    fn adapt(
        &mut self,
        tasks: &[usize],
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> ApiResult<Vec<InnerSteps>> {
        let workers = (tch::get_num_threads().max(1) as usize).min(tasks.len());
        if self.copies.is_none() || workers < 2 {
            return adapt_in_turn(self, tasks, steps, optimizer);
        }
        // The batches in order, the rows of the draws in turn.
        let mut jobs = Vec::with_capacity(tasks.len());
        for &task in tasks {
            self.task_batch(task)?;
            let batch = self.batch.as_ref().expect("task_batch sets the batch");
            jobs.push((task, api(batch.slice(0, batch.len()).map_err(Error::from))?));
        }
        let copies = self.copies.as_deref_mut().expect("checked above");
        let outcome = api(copies.run(
            (self.model, self.params),
            jobs,
            workers,
            (self.step, steps, optimizer),
        ))?;
        if let Some(met) = outcome.nonfinite {
            self.nonfinite.get_or_insert(met);
        }
        outcome.done
    }
}
