//! `Strategy`: the whole training step, through the host's operations.

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::RMut;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RVec};
use abi_stable::StableAbi;
use tch::Tensor;

use super::{named_from_ffi, named_to_ffi, state_adapters, FfiNamedTensors, Guarded};
use crate::{guard, Error, Group, Result, State, TensorOwned, TensorRef};

/// What the host does for a strategy during one step. The host owns the model,
/// the batch and the optimizer; the strategy decides the order of operations.
///
/// Gradients and perturbations work on flat vectors: the concatenation of every
/// parameter tensor of a [`Group`], in a fixed order.
pub trait StepOps {
    /// The number of tasks T.
    fn num_tasks(&self) -> usize;

    /// The index of this step, from 0.
    fn current_step(&self) -> u64;

    /// Draws the next training batch; every later call in this step uses it.
    fn next_batch(&mut self) -> Result<()>;

    /// Draws a batch of rows that have a label for `task` (any rows when no
    /// label of the task is missing): what a strategy that trains on one task
    /// (or one cluster) at a time asks for, such as a meta-learner's inner
    /// loop on source `task`. Every later call in this step uses it. The rows
    /// depend only on the run's seed, the step, the task and the number of
    /// task batches drawn before in the step, so a resumed run draws the same.
    fn task_batch(&mut self, task: usize) -> Result<()>;

    /// Draws another batch of the whole training set, independent of the
    /// step's batch (rows uniform, distinct within the batch): the further
    /// samples a double-sampling weighting asks for
    /// ([`Weighting::samples`](crate::Weighting::samples)). Every later call
    /// in this step uses it. The rows depend only on the run's seed, the step
    /// and the number of batches drawn before in the step, so a resumed run
    /// draws the same.
    fn extra_batch(&mut self) -> Result<()>;

    /// Forward pass on the current batch: per-task losses `[T]` with their graph.
    /// With `update_stats = false`, normalisation layers keep their running
    /// statistics (for passes at perturbed parameters).
    fn losses(&mut self, update_stats: bool) -> Result<Tensor>;

    /// Gradient of the scalar `loss` with respect to each group in `groups`,
    /// each flattened to one vector. `retain_graph` keeps the graph for more calls.
    fn grads(&mut self, loss: &Tensor, groups: &[Group], retain_graph: bool)
        -> Result<Vec<Tensor>>;

    /// Back-propagates the scalar `loss` into the gradients the optimizer reads,
    /// accumulating over every trainable parameter (model and methods).
    fn backward(&mut self, loss: &Tensor) -> Result<()>;

    /// SAM perturbation: adds `ε = rho · A² g / (‖A g‖ + 1e-12)` to the
    /// parameters of `groups`, where `g` is `grads` (one flat vector per group),
    /// `A = |θ|` when `adaptive` (ASAM) else 1, and the norm is one L2 norm over
    /// all the given groups together. Remembers the parameters for [`StepOps::restore`].
    fn perturb(
        &mut self,
        groups: &[Group],
        grads: &[Tensor],
        rho: f64,
        adaptive: bool,
    ) -> Result<()>;

    /// Puts back, bit for bit, every parameter changed by [`StepOps::perturb`]
    /// since the last restore.
    fn restore(&mut self) -> Result<()>;

    /// Sets the gradient the optimizer reads for `group` to the flat vector `grad`.
    fn set_grads(&mut self, group: Group, grad: &Tensor) -> Result<()>;

    /// One optimizer step on the gradients set so far, then clears them.
    fn optimizer_step(&mut self) -> Result<()>;

    /// A detached copy of the model's trainable parameters as one flat
    /// vector: the groups in order, [`Group::Shared`] first, then `Task(0)`
    /// … `Task(T−1)`, each laid out as [`StepOps::grads`] returns it. The
    /// methods' own parameters (a weighting's, a strategy's) are not in it.
    fn parameters_flat(&mut self) -> Result<Tensor>;

    /// Overwrites the model's trainable parameters with `values`, laid out as
    /// [`StepOps::parameters_flat`] gives them; a snapshot put back this way is
    /// restored bit for bit. The optimizer's state is left as it is.
    fn set_parameters_flat(&mut self, values: &Tensor) -> Result<()>;

    /// A meta-learner's inner loops for several tasks, each from the live
    /// parameters: for every task of `tasks`, in order, its batch
    /// ([`StepOps::task_batch`]) and [`inner_steps`] on it. Returns one
    /// result per task; afterwards the live parameters are as before and the
    /// current batch is the last task's. A host may run the tasks' loops at
    /// once (the runtime does on a CPU, each on its own copy of the model
    /// and CPU thread); the batches, and the results up to floating-point
    /// rounding, are those of [`adapt_in_turn`], and a resumed run repeats
    /// the host's results exactly.
    fn adapt(
        &mut self,
        tasks: &[usize],
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> Result<Vec<InnerSteps>>;
}

/// [`StepOps::adapt`] one task after another, through `ops`' other
/// operations: what a host that runs nothing at once implements it with.
pub fn adapt_in_turn(
    ops: &mut dyn StepOps,
    tasks: &[usize],
    steps: usize,
    optimizer: InnerOptimizer,
) -> Result<Vec<InnerSteps>> {
    tasks
        .iter()
        .map(|&task| {
            ops.task_batch(task)?;
            inner_steps(ops, task, steps, optimizer)
        })
        .collect()
}

/// The optimizer of [`inner_steps`], with fresh state at every call.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub enum InnerOptimizer {
    /// θ ← θ − lr·g.
    Sgd {
        /// Learning rate.
        lr: f64,
    },
    /// Adam (Kingma & Ba 2015) with bias correction, as `torch.optim.Adam`.
    Adam {
        /// Learning rate.
        lr: f64,
        /// β₁ and β₂.
        betas: [f64; 2],
        /// ε, added to the denominator.
        eps: f64,
    },
}

/// What [`inner_steps`] returns.
#[derive(Debug)]
pub struct InnerSteps {
    /// The parameters the steps end at, flat, laid out as
    /// [`StepOps::parameters_flat`].
    pub params: Tensor,
    /// The task's loss on the batch before each step: `losses[0]` is its loss
    /// at the live parameters.
    pub losses: Vec<f64>,
}

/// [`InnerSteps`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiInnerSteps {
    params: TensorOwned,
    losses: RVec<f64>,
}

impl From<InnerSteps> for FfiInnerSteps {
    fn from(steps: InnerSteps) -> FfiInnerSteps {
        FfiInnerSteps {
            params: steps.params.into(),
            losses: steps.losses.into(),
        }
    }
}

impl From<FfiInnerSteps> for InnerSteps {
    fn from(steps: FfiInnerSteps) -> InnerSteps {
        InnerSteps {
            params: steps.params.into_tensor(),
            losses: steps.losses.into_vec(),
        }
    }
}

/// Runs `steps` optimizer steps of `optimizer` on task `task`'s loss over the
/// current batch, in a temporary parameter set that starts at the live
/// parameters, and returns the parameters it ends at with the loss before
/// each step: a meta-learner's inner loop, such as the temporal models θ_i
/// of Meta-RTL. The live parameters are put back bit for
/// bit afterwards, also when a step fails; normalisation statistics are not
/// updated, and the optimizer the host steps is not touched. Draw the batch
/// first ([`StepOps::task_batch`]).
pub fn inner_steps(
    ops: &mut dyn StepOps,
    task: usize,
    steps: usize,
    optimizer: InnerOptimizer,
) -> Result<InnerSteps> {
    let tasks = ops.num_tasks();
    if task >= tasks {
        return Err(Error::msg(format!(
            "inner_steps: task {task} does not exist ({tasks} tasks)"
        )));
    }
    let groups: Vec<Group> = std::iter::once(Group::Shared)
        .chain((0..tasks).map(Group::Task))
        .collect();
    let start = ops.parameters_flat()?;
    let mut theta = start.f_detach_copy()?;
    // Adam's moments, made at its first step (SGD keeps none).
    let mut moments: Option<(Tensor, Tensor)> = None;
    let mut losses = Vec::with_capacity(steps);
    let mut run = |ops: &mut dyn StepOps| -> Result<()> {
        for k in 1..=steps {
            let loss = ops.losses(false)?.f_get(task as i64)?;
            losses.push(loss.f_double_value(&[])?);
            // A fresh tensor of our own: updated in place below.
            let mut g = Tensor::f_cat(&ops.grads(&loss, &groups, false)?, 0)?;
            let _guard = tch::no_grad_guard();
            match optimizer {
                InnerOptimizer::Sgd { lr } => {
                    let _ = theta.f_sub_(&g.f_mul_scalar_(lr)?)?;
                }
                InnerOptimizer::Adam {
                    lr,
                    betas: [b1, b2],
                    eps,
                } => {
                    let (m, v) = match &mut moments {
                        Some(moments) => moments,
                        None => moments.insert((g.f_zeros_like()?, g.f_zeros_like()?)),
                    };
                    *m = m.f_mul_scalar(b1)?.f_add(&g.f_mul_scalar(1.0 - b1)?)?;
                    *v = v
                        .f_mul_scalar(b2)?
                        .f_add(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
                    let m_hat = m.f_div_scalar(1.0 - b1.powi(k as i32))?;
                    let v_hat = v.f_div_scalar(1.0 - b2.powi(k as i32))?;
                    let step = m_hat
                        .f_div(&v_hat.f_sqrt()?.f_add_scalar(eps)?)?
                        .f_mul_scalar(lr)?;
                    let _ = theta.f_sub_(&step)?;
                }
            }
            ops.set_parameters_flat(&theta)?;
        }
        Ok(())
    };
    let result = run(ops);
    ops.set_parameters_flat(&start)?;
    result.map(|()| InnerSteps {
        params: theta,
        losses,
    })
}

/// The per-task gradients of one batch, computed through `ops` with one backward
/// pass per task: the `[T, P]` matrix of shared-parameter gradients (row t is
/// ∂L_t/∂θ_sh; allocated once, each row filled as its pass finishes) and each
/// task's head gradient ∂L_t/∂θ_t. `losses` is the `[T]` output of
/// [`StepOps::losses`]; its graph is released after the last pass.
pub fn task_gradients(ops: &mut dyn StepOps, losses: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
    let tasks = ops.num_tasks();
    let mut shared: Option<Tensor> = None;
    let mut heads = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let loss = losses.f_get(t as i64)?;
        let mut g = ops.grads(&loss, &[Group::Shared, Group::Task(t)], t + 1 < tasks)?;
        let (Some(head), Some(row)) = (g.pop(), g.pop()) else {
            return Err(Error::msg(
                "StepOps::grads returned fewer gradients than groups",
            ));
        };
        let matrix = match &mut shared {
            Some(m) => m,
            None => shared.insert(Tensor::f_zeros(
                [tasks as i64, row.numel() as i64],
                (row.kind(), row.device()),
            )?),
        };
        matrix.f_get(t as i64)?.f_copy_(&row)?;
        heads.push(head);
    }
    let shared = match shared {
        Some(m) => m,
        None => Tensor::f_zeros([0, 0], (losses.kind(), losses.device()))?,
    };
    Ok((shared, heads))
}

/// What one step reports back to the host for logging.
pub struct StepReport {
    /// Per-task losses at the start of the step, shape `[T]`, detached.
    pub losses: Tensor,
    /// The task weights the weighting chose, shape `[T]`, where defined.
    pub weights: Option<Tensor>,
}

/// A method that runs the training step.
pub trait Strategy: Send {
    /// Runs one training step through `ops`.
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport>;

    /// Trainable parameters the strategy owns (for example those of the
    /// weightings it built), which the host's optimizer updates.
    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Everything needed to continue exactly after a resume.
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }

    /// Restores what [`Strategy::state`] exported.
    fn load_state(&mut self, state: State) -> Result<()> {
        super::load_no_state(state)
    }
}

/// The FFI twin of [`StepOps`], implemented by the host for the duration of a step.
#[sabi_trait]
pub trait FfiStepOps {
    /// See [`StepOps::num_tasks`].
    fn num_tasks(&self) -> usize;
    /// See [`StepOps::current_step`].
    fn current_step(&self) -> u64;
    /// See [`StepOps::next_batch`].
    fn next_batch(&mut self) -> RResult<(), Error>;
    /// See [`StepOps::task_batch`].
    fn task_batch(&mut self, task: usize) -> RResult<(), Error>;
    /// See [`StepOps::losses`].
    fn losses(&mut self, update_stats: bool) -> RResult<TensorOwned, Error>;
    /// See [`StepOps::grads`].
    fn grads(
        &mut self,
        loss: TensorRef<'_>,
        groups: RSlice<'_, Group>,
        retain_graph: bool,
    ) -> RResult<RVec<TensorOwned>, Error>;
    /// See [`StepOps::backward`].
    fn backward(&mut self, loss: TensorRef<'_>) -> RResult<(), Error>;
    /// See [`StepOps::perturb`].
    fn perturb(
        &mut self,
        groups: RSlice<'_, Group>,
        grads: RSlice<'_, TensorRef<'_>>,
        rho: f64,
        adaptive: bool,
    ) -> RResult<(), Error>;
    /// See [`StepOps::restore`].
    fn restore(&mut self) -> RResult<(), Error>;
    /// See [`StepOps::set_grads`].
    fn set_grads(&mut self, group: Group, grad: TensorRef<'_>) -> RResult<(), Error>;
    /// See [`StepOps::optimizer_step`].
    fn optimizer_step(&mut self) -> RResult<(), Error>;
    /// See [`StepOps::parameters_flat`].
    fn parameters_flat(&mut self) -> RResult<TensorOwned, Error>;
    /// See [`StepOps::set_parameters_flat`].
    fn set_parameters_flat(&mut self, values: TensorRef<'_>) -> RResult<(), Error>;
    /// See [`StepOps::extra_batch`].
    fn extra_batch(&mut self) -> RResult<(), Error>;
    /// See [`StepOps::adapt`].
    #[sabi(last_prefix_field)]
    fn adapt(
        &mut self,
        tasks: RSlice<'_, usize>,
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> RResult<RVec<FfiInnerSteps>, Error>;
}

/// [`StepReport`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiStepReport {
    losses: TensorOwned,
    weights: ROption<TensorOwned>,
}

/// The FFI twin of [`Strategy`].
#[sabi_trait]
pub trait FfiStrategy: Send {
    /// See [`Strategy::step`].
    fn step(&mut self, ops: FfiStepOps_TO<'_, RMut<'_, ()>>) -> RResult<FfiStepReport, Error>;
    /// See [`Strategy::parameters`].
    fn parameters(&self) -> RResult<FfiNamedTensors, Error>;
    /// See [`Strategy::state`].
    fn state(&self) -> RResult<crate::FfiState, Error>;
    /// See [`Strategy::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state(&mut self, state: crate::FfiState) -> RResult<(), Error>;
}

/// An owned [`FfiStrategy`] trait object.
pub type FfiStrategyBox = FfiStrategy_TO<'static, RBox<()>>;

/// The host's [`StepOps`] behind the FFI trait: the plugin calls back into the
/// host, so host code runs under [`guard`] too.
struct HostOps<'a>(&'a mut dyn StepOps);

const HOST: &str = "host";

fn owned(tensors: Vec<Tensor>) -> RVec<TensorOwned> {
    tensors.into_iter().map(TensorOwned::from).collect()
}

impl FfiStepOps for HostOps<'_> {
    fn num_tasks(&self) -> usize {
        self.0.num_tasks()
    }
    fn current_step(&self) -> u64 {
        self.0.current_step()
    }
    fn next_batch(&mut self) -> RResult<(), Error> {
        guard(HOST, "StepOps::next_batch", || self.0.next_batch())
    }
    fn task_batch(&mut self, task: usize) -> RResult<(), Error> {
        guard(HOST, "StepOps::task_batch", || self.0.task_batch(task))
    }
    fn losses(&mut self, update_stats: bool) -> RResult<TensorOwned, Error> {
        guard(HOST, "StepOps::losses", || {
            Ok(self.0.losses(update_stats)?.into())
        })
    }
    fn grads(
        &mut self,
        loss: TensorRef<'_>,
        groups: RSlice<'_, Group>,
        retain_graph: bool,
    ) -> RResult<RVec<TensorOwned>, Error> {
        guard(HOST, "StepOps::grads", || {
            Ok(owned(self.0.grads(
                &loss.get(),
                groups.as_slice(),
                retain_graph,
            )?))
        })
    }
    fn backward(&mut self, loss: TensorRef<'_>) -> RResult<(), Error> {
        guard(HOST, "StepOps::backward", || self.0.backward(&loss.get()))
    }
    fn perturb(
        &mut self,
        groups: RSlice<'_, Group>,
        grads: RSlice<'_, TensorRef<'_>>,
        rho: f64,
        adaptive: bool,
    ) -> RResult<(), Error> {
        guard(HOST, "StepOps::perturb", || {
            let views: Vec<_> = grads.iter().map(|g| g.get()).collect();
            let grads: Vec<Tensor> = views.iter().map(|g| g.shallow_clone()).collect();
            self.0.perturb(groups.as_slice(), &grads, rho, adaptive)
        })
    }
    fn restore(&mut self) -> RResult<(), Error> {
        guard(HOST, "StepOps::restore", || self.0.restore())
    }
    fn set_grads(&mut self, group: Group, grad: TensorRef<'_>) -> RResult<(), Error> {
        guard(HOST, "StepOps::set_grads", || {
            self.0.set_grads(group, &grad.get())
        })
    }
    fn optimizer_step(&mut self) -> RResult<(), Error> {
        guard(HOST, "StepOps::optimizer_step", || self.0.optimizer_step())
    }
    fn parameters_flat(&mut self) -> RResult<TensorOwned, Error> {
        guard(HOST, "StepOps::parameters_flat", || {
            Ok(self.0.parameters_flat()?.into())
        })
    }
    fn set_parameters_flat(&mut self, values: TensorRef<'_>) -> RResult<(), Error> {
        guard(HOST, "StepOps::set_parameters_flat", || {
            self.0.set_parameters_flat(&values.get())
        })
    }
    fn extra_batch(&mut self) -> RResult<(), Error> {
        guard(HOST, "StepOps::extra_batch", || self.0.extra_batch())
    }
    fn adapt(
        &mut self,
        tasks: RSlice<'_, usize>,
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> RResult<RVec<FfiInnerSteps>, Error> {
        guard(HOST, "StepOps::adapt", || {
            let done = self.0.adapt(tasks.as_slice(), steps, optimizer)?;
            Ok(done.into_iter().map(FfiInnerSteps::from).collect())
        })
    }
}

/// The plugin's view of the host's operations.
impl StepOps for FfiStepOps_TO<'_, RMut<'_, ()>> {
    fn num_tasks(&self) -> usize {
        FfiStepOps::num_tasks(self)
    }
    fn current_step(&self) -> u64 {
        FfiStepOps::current_step(self)
    }
    fn next_batch(&mut self) -> Result<()> {
        FfiStepOps::next_batch(self).into_result()
    }
    fn task_batch(&mut self, task: usize) -> Result<()> {
        FfiStepOps::task_batch(self, task).into_result()
    }
    fn losses(&mut self, update_stats: bool) -> Result<Tensor> {
        Ok(FfiStepOps::losses(self, update_stats)
            .into_result()?
            .into_tensor())
    }
    fn grads(
        &mut self,
        loss: &Tensor,
        groups: &[Group],
        retain_graph: bool,
    ) -> Result<Vec<Tensor>> {
        let grads =
            FfiStepOps::grads(self, loss.into(), groups.into(), retain_graph).into_result()?;
        Ok(grads.into_iter().map(TensorOwned::into_tensor).collect())
    }
    fn backward(&mut self, loss: &Tensor) -> Result<()> {
        FfiStepOps::backward(self, loss.into()).into_result()
    }
    fn perturb(
        &mut self,
        groups: &[Group],
        grads: &[Tensor],
        rho: f64,
        adaptive: bool,
    ) -> Result<()> {
        let grads: Vec<TensorRef<'_>> = grads.iter().map(TensorRef::new).collect();
        FfiStepOps::perturb(self, groups.into(), grads.as_slice().into(), rho, adaptive)
            .into_result()
    }
    fn restore(&mut self) -> Result<()> {
        FfiStepOps::restore(self).into_result()
    }
    fn set_grads(&mut self, group: Group, grad: &Tensor) -> Result<()> {
        FfiStepOps::set_grads(self, group, grad.into()).into_result()
    }
    fn optimizer_step(&mut self) -> Result<()> {
        FfiStepOps::optimizer_step(self).into_result()
    }
    fn parameters_flat(&mut self) -> Result<Tensor> {
        Ok(FfiStepOps::parameters_flat(self)
            .into_result()?
            .into_tensor())
    }
    fn set_parameters_flat(&mut self, values: &Tensor) -> Result<()> {
        FfiStepOps::set_parameters_flat(self, values.into()).into_result()
    }
    fn extra_batch(&mut self) -> Result<()> {
        FfiStepOps::extra_batch(self).into_result()
    }
    fn adapt(
        &mut self,
        tasks: &[usize],
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> Result<Vec<InnerSteps>> {
        let done = FfiStepOps::adapt(self, tasks.into(), steps, optimizer).into_result()?;
        Ok(done.into_iter().map(InnerSteps::from).collect())
    }
}

impl FfiStrategy for Guarded<dyn Strategy> {
    fn step(&mut self, mut ops: FfiStepOps_TO<'_, RMut<'_, ()>>) -> RResult<FfiStepReport, Error> {
        guard(&self.label, "Strategy::step", || {
            let report = self.inner.step(&mut ops)?;
            Ok(FfiStepReport {
                losses: report.losses.into(),
                weights: report.weights.map(TensorOwned::from).into(),
            })
        })
    }

    fn parameters(&self) -> RResult<FfiNamedTensors, Error> {
        guard(&self.label, "Strategy::parameters", || {
            Ok(named_to_ffi(self.inner.parameters()?))
        })
    }

    state_adapters!(guarded Strategy);
}

impl Strategy for FfiStrategyBox {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        let mut host = HostOps(ops);
        let ffi_ops = FfiStepOps_TO::from_ptr(RMut::new(&mut host), TD_Opaque);
        let report = FfiStrategy::step(self, ffi_ops).into_result()?;
        Ok(StepReport {
            losses: report.losses.into_tensor(),
            weights: report.weights.into_option().map(TensorOwned::into_tensor),
        })
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(named_from_ffi(FfiStrategy::parameters(self).into_result()?))
    }

    state_adapters!(foreign FfiStrategy);
}
