//! A standalone [`StepOps`] for unit tests of strategies, without the
//! runtime: [`LinearOps`] trains T regression tasks on a small model (a shared
//! ReLU layer, one linear head per task) over seeded data, with plain SGD as
//! the host's optimizer. Use it with [`Host::standalone`](crate::Host::standalone).
//!
//! ```
//! use taskweave_plugin_api::testing::LinearOps;
//! use taskweave_plugin_api::{inner_steps, InnerOptimizer, StepOps};
//!
//! let mut ops = LinearOps::new(2, 0);
//! ops.task_batch(1).unwrap();
//! let before = ops.parameters_flat().unwrap();
//! let adapted = inner_steps(&mut ops, 1, 3, InnerOptimizer::Sgd { lr: 0.1 }).unwrap().params;
//! assert!(ops.parameters_flat().unwrap().equal(&before), "the live parameters are put back");
//! assert!(!adapted.equal(&before));
//! ```

use tch::{Device, Kind, Tensor};

use crate::rng::SplitMix;
use crate::{adapt_in_turn, Error, Group, InnerOptimizer, InnerSteps, Result, StepOps};

const ROWS: i64 = 64;
const INPUTS: i64 = 4;
const HIDDEN: i64 = 8;
const BATCH: usize = 16;

/// T regression tasks `y_t = x·w_t + noise` on a model `v_tᵀ relu(W x)`:
/// `W` `[8, 4]` is [`Group::Shared`], `v_t` `[8]` is `Task(t)`; parameters
/// are one flat leaf tensor laid out as [`StepOps::parameters_flat`] says.
pub struct LinearOps {
    x: Tensor,
    y: Tensor,
    /// `[N, T]` bool: which rows have each task's label.
    labelled: Tensor,
    params: Tensor,
    grad: Tensor,
    tasks: i64,
    lr: f64,
    seed: u64,
    step: u64,
    draws: u64,
    batch: Option<Tensor>,
}

impl LinearOps {
    /// `tasks` tasks, data and initial parameters drawn from `seed`, SGD with
    /// learning rate 0.05.
    pub fn new(tasks: usize, seed: u64) -> LinearOps {
        let mut rng = SplitMix::at(seed, u64::MAX);
        let mut draw = |n: i64, scale: f64| -> Tensor {
            let values: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
            Tensor::from_slice(&values)
        };
        let t = tasks as i64;
        let x = draw(ROWS * INPUTS, 1.0).reshape([ROWS, INPUTS]);
        let w = draw(INPUTS * t, 1.0).reshape([INPUTS, t]);
        let y = x.matmul(&w) + draw(ROWS * t, 0.1).reshape([ROWS, t]);
        let params = draw(HIDDEN * INPUTS + t * HIDDEN, 0.5).set_requires_grad(true);
        let grad = params.zeros_like();
        LinearOps {
            x,
            y,
            labelled: Tensor::ones([ROWS, t], (Kind::Bool, Device::Cpu)),
            params,
            grad,
            tasks: t,
            lr: 0.05,
            seed,
            step: 0,
            draws: 0,
            batch: None,
        }
    }

    /// Removes task `task`'s label from every row whose index is not a
    /// multiple of `every`.
    pub fn keep_labels_every(&mut self, task: usize, every: usize) {
        let keep: Vec<bool> = (0..ROWS as usize).map(|r| r % every.max(1) == 0).collect();
        let mut column = self.labelled.select(1, task as i64);
        column.copy_(&Tensor::from_slice(&keep));
    }

    /// Which rows of the current batch have task `task`'s label, as row
    /// indices into the data.
    pub fn batch_rows(&self) -> Vec<i64> {
        self.batch
            .as_ref()
            .map(|b| Vec::<i64>::try_from(b).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Whether row `row` has task `task`'s label.
    pub fn has_label(&self, row: i64, task: usize) -> bool {
        self.labelled.int64_value(&[row, task as i64]) != 0
    }

    /// Ends the step: the next calls belong to step + 1.
    pub fn finish_step(&mut self) {
        self.step += 1;
        self.draws = 0;
        self.batch = None;
    }

    fn range(&self, group: Group) -> Result<(i64, i64)> {
        match group {
            Group::Shared => Ok((0, HIDDEN * INPUTS)),
            Group::Task(t) if (t as i64) < self.tasks => {
                Ok((HIDDEN * INPUTS + t as i64 * HIDDEN, HIDDEN))
            }
            Group::Task(t) => Err(Error::msg(format!("task group {t} does not exist"))),
        }
    }

    /// `count` distinct rows of `rows`, drawn from (seed, step, draw number).
    fn draw(&mut self, mut rows: Vec<i64>) -> Result<()> {
        if rows.is_empty() {
            return Err(Error::msg("no row to draw a batch from"));
        }
        let mut rng = SplitMix::at(self.seed, (self.step << 16) | self.draws);
        self.draws += 1;
        rng.shuffle(&mut rows);
        rows.truncate(BATCH);
        self.batch = Some(Tensor::from_slice(&rows));
        Ok(())
    }
}

impl StepOps for LinearOps {
    fn num_tasks(&self) -> usize {
        self.tasks as usize
    }

    fn current_step(&self) -> u64 {
        self.step
    }

    fn next_batch(&mut self) -> Result<()> {
        self.draw((0..ROWS).collect())
    }

    fn extra_batch(&mut self) -> Result<()> {
        self.draw((0..ROWS).collect())
    }

    fn adapt(
        &mut self,
        tasks: &[usize],
        steps: usize,
        optimizer: InnerOptimizer,
    ) -> Result<Vec<InnerSteps>> {
        adapt_in_turn(self, tasks, steps, optimizer)
    }

    fn task_batch(&mut self, task: usize) -> Result<()> {
        if task as i64 >= self.tasks {
            return Err(Error::msg(format!("task {task} does not exist")));
        }
        let rows = (0..ROWS).filter(|&r| self.has_label(r, task)).collect();
        self.draw(rows)
    }

    fn losses(&mut self, _update_stats: bool) -> Result<Tensor> {
        let index = self
            .batch
            .as_ref()
            .ok_or_else(|| Error::msg("losses() before a batch was drawn"))?;
        let (x, y) = (
            self.x.f_index_select(0, index)?,
            self.y.f_index_select(0, index)?,
        );
        let mask = self
            .labelled
            .f_index_select(0, index)?
            .f_to_kind(Kind::Float)?;
        let w = self
            .params
            .f_narrow(0, 0, HIDDEN * INPUTS)?
            .f_view([HIDDEN, INPUTS])?;
        let heads = self
            .params
            .f_narrow(0, HIDDEN * INPUTS, self.tasks * HIDDEN)?
            .f_view([self.tasks, HIDDEN])?;
        let pred = x.f_matmul(&w.f_tr()?)?.f_relu()?.f_matmul(&heads.f_tr()?)?;
        let squared = pred.f_sub(&y)?.f_square()?.f_mul(&mask)?;
        let count = mask
            .f_sum_dim_intlist(0, false, Kind::Float)?
            .f_clamp_min(1.0)?;
        Ok(squared
            .f_sum_dim_intlist(0, false, Kind::Float)?
            .f_div(&count)?)
    }

    fn grads(
        &mut self,
        loss: &Tensor,
        groups: &[Group],
        retain_graph: bool,
    ) -> Result<Vec<Tensor>> {
        let g = Tensor::f_run_backward(&[loss], &[&self.params], retain_graph, false)?
            .pop()
            .filter(Tensor::defined)
            .map_or_else(|| self.params.f_zeros_like(), Ok)?;
        groups
            .iter()
            .map(|group| {
                let (start, len) = self.range(*group)?;
                Ok(g.f_narrow(0, start, len)?)
            })
            .collect()
    }

    fn backward(&mut self, loss: &Tensor) -> Result<()> {
        let all: Vec<Group> = std::iter::once(Group::Shared)
            .chain((0..self.tasks as usize).map(Group::Task))
            .collect();
        let g = Tensor::f_cat(&self.grads(loss, &all, false)?, 0)?;
        let _ = self.grad.f_add_(&g)?;
        Ok(())
    }

    /// Not offered: SAM strategies are tested through the runtime, whose
    /// kernels implement the perturbation.
    fn perturb(&mut self, _: &[Group], _: &[Tensor], _: f64, _: bool) -> Result<()> {
        Err(Error::msg(
            "LinearOps does not perturb; test SAM strategies through the runtime",
        ))
    }

    fn restore(&mut self) -> Result<()> {
        Err(Error::msg(
            "LinearOps does not perturb; test SAM strategies through the runtime",
        ))
    }

    fn set_grads(&mut self, group: Group, grad: &Tensor) -> Result<()> {
        let (start, len) = self.range(group)?;
        if grad.size() != [len] {
            return Err(Error::msg(format!(
                "gradient of {group:?} must be [{len}], not {:?}",
                grad.size()
            )));
        }
        self.grad.f_narrow(0, start, len)?.f_copy_(grad)?;
        Ok(())
    }

    fn optimizer_step(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let _ = self.params.f_sub_(&self.grad.f_mul_scalar(self.lr)?)?;
        let _ = self.grad.f_zero_()?;
        Ok(())
    }

    fn parameters_flat(&mut self) -> Result<Tensor> {
        Ok(self.params.f_detach_copy()?)
    }

    fn set_parameters_flat(&mut self, values: &Tensor) -> Result<()> {
        if values.size() != self.params.size() {
            return Err(Error::msg(format!(
                "set_parameters_flat: {:?} values for {:?} parameters",
                values.size(),
                self.params.size()
            )));
        }
        let _guard = tch::no_grad_guard();
        self.params.f_copy_(values)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{inner_steps, InnerOptimizer};

    #[test]
    fn a_task_batch_holds_only_rows_labelled_for_that_task_and_repeats_on_resume() {
        let mut ops = LinearOps::new(2, 1);
        ops.keep_labels_every(1, 4);
        ops.task_batch(1).unwrap();
        let rows = ops.batch_rows();
        assert_eq!(rows.len(), 16, "the 16 labelled rows");
        assert!(rows.iter().all(|&r| ops.has_label(r, 1)));
        ops.task_batch(0).unwrap();
        let second = ops.batch_rows();
        assert!(
            second.iter().any(|&r| !ops.has_label(r, 1)),
            "task 0 uses every row"
        );
        // The same step of a fresh run draws the same rows.
        let mut again = LinearOps::new(2, 1);
        again.keep_labels_every(1, 4);
        again.task_batch(1).unwrap();
        again.task_batch(0).unwrap();
        assert_eq!(again.batch_rows(), second);
        assert!(ops.task_batch(2).is_err());
    }

    #[test]
    fn parameters_round_trip_bit_for_bit() {
        let mut ops = LinearOps::new(3, 2);
        let snapshot = ops.parameters_flat().unwrap();
        assert_eq!(snapshot.size(), [8 * 4 + 3 * 8]);
        ops.next_batch().unwrap();
        let loss = ops.losses(true).unwrap().sum(Kind::Float);
        ops.backward(&loss).unwrap();
        ops.optimizer_step().unwrap();
        assert!(!ops.parameters_flat().unwrap().equal(&snapshot));
        ops.set_parameters_flat(&snapshot).unwrap();
        assert!(ops.parameters_flat().unwrap().equal(&snapshot));
        assert!(ops.set_parameters_flat(&snapshot.narrow(0, 0, 3)).is_err());
    }

    #[test]
    fn one_inner_sgd_step_is_theta_minus_lr_times_the_task_gradient() {
        let mut ops = LinearOps::new(2, 3);
        ops.task_batch(0).unwrap();
        let theta = ops.parameters_flat().unwrap();
        let loss = ops.losses(false).unwrap().get(0);
        let all = [Group::Shared, Group::Task(0), Group::Task(1)];
        let g = Tensor::cat(&ops.grads(&loss, &all, false).unwrap(), 0);
        let inner = inner_steps(&mut ops, 0, 1, InnerOptimizer::Sgd { lr: 0.3 }).unwrap();
        assert_eq!(
            inner.losses,
            [loss.double_value(&[])],
            "the loss before the step"
        );
        let adapted = inner.params;
        assert!(adapted.allclose(&(&theta - g * 0.3), 1e-6, 1e-7, false));
        assert!(
            ops.parameters_flat().unwrap().equal(&theta),
            "live parameters put back"
        );
        let head1 = |t: &Tensor| t.narrow(0, 32 + 8, 8);
        assert!(
            head1(&adapted).equal(&head1(&theta)),
            "task 1's head gets no gradient from task 0"
        );
    }

    #[test]
    fn inner_adam_steps_lower_the_task_loss_and_a_failure_still_puts_parameters_back() {
        let mut ops = LinearOps::new(2, 4);
        ops.task_batch(1).unwrap();
        let theta = ops.parameters_flat().unwrap();
        let before = ops.losses(false).unwrap().double_value(&[1]);
        let adam = InnerOptimizer::Adam {
            lr: 0.02,
            betas: [0.9, 0.999],
            eps: 1e-8,
        };
        let adapted = inner_steps(&mut ops, 1, 10, adam).unwrap().params;
        // Adam's first step moves every coordinate with a gradient by about lr.
        let first = inner_steps(&mut ops, 1, 1, adam).unwrap().params;
        let moved = (&first - &theta).abs().max().double_value(&[]);
        assert!((moved - 0.02).abs() < 1e-4, "{moved}");
        ops.set_parameters_flat(&adapted).unwrap();
        let after = ops.losses(false).unwrap().double_value(&[1]);
        assert!(after < before, "{after} < {before}");
        ops.set_parameters_flat(&theta).unwrap();
        ops.finish_step();
        // No batch drawn in the new step: the first loss fails, nothing moves.
        assert!(inner_steps(&mut ops, 1, 2, adam).is_err());
        assert!(ops.parameters_flat().unwrap().equal(&theta));
        assert!(inner_steps(&mut ops, 5, 1, adam).is_err());
    }
}
