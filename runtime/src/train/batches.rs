//! The order in which training examples are visited: a fresh permutation every
//! epoch, drawn from (seed, epoch) alone, so the batch of any step is known
//! without replaying the steps before it (which is what makes resume exact).

use taskweave_plugin_api::rng::SplitMix;
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// Batch indices for every step of a run.
pub struct Batches {
    rows: usize,
    batch: usize,
    seed: u64,
    /// Per task, the rows that have its label; `None` when all do.
    labelled: Vec<Option<Vec<i64>>>,
    /// The permutation of the last epoch asked for, kept because consecutive
    /// steps almost always share an epoch.
    cached: Option<(u64, Vec<i64>)>,
}

impl Batches {
    /// Batches of `batch` rows (at most `rows`) over `rows` examples. An epoch
    /// has ⌊rows / batch⌋ steps; the remainder of each permutation is skipped.
    /// `labelled` holds, per task, the rows that have its label (`None`: all).
    pub fn new(rows: usize, batch: usize, seed: u64, labelled: Vec<Option<Vec<i64>>>) -> Batches {
        Batches {
            rows,
            batch: batch.clamp(1, rows.max(1)),
            seed,
            labelled,
            cached: None,
        }
    }

    /// The rows of the `draw`-th task batch of step `step`: up to a batch of
    /// distinct rows that have task `task`'s label, drawn from (seed, step,
    /// draw) alone, so a resumed run draws them again.
    pub fn task_indices(
        &self,
        task: usize,
        step: u64,
        draw: u64,
        device: Device,
    ) -> Result<Tensor> {
        let rows: Vec<i64> = match self.labelled.get(task) {
            Some(Some(rows)) => rows.clone(),
            Some(None) => (0..self.rows as i64).collect(),
            None => {
                return Err(Error::Method(format!(
                    "task_batch({task}): there are {} tasks",
                    self.labelled.len()
                )))
            }
        };
        self.drawn(rows, task as u64, step, draw, device)
    }

    /// The rows of the `draw`-th extra batch of step `step` (a double-sampling
    /// weighting's further samples): up to a batch of distinct rows of the
    /// whole training set, drawn from (seed, step, draw) alone.
    pub fn extra_indices(&self, step: u64, draw: u64, device: Device) -> Result<Tensor> {
        // A key no task index reaches.
        self.drawn(
            (0..self.rows as i64).collect(),
            u64::MAX,
            step,
            draw,
            device,
        )
    }

    /// Up to a batch of `rows`, shuffled by (seed, key, step, draw).
    fn drawn(
        &self,
        mut rows: Vec<i64>,
        key: u64,
        step: u64,
        draw: u64,
        device: Device,
    ) -> Result<Tensor> {
        // A stream apart from the epochs' (which use streams 0, 1, 2, ...).
        let stream = (1 << 63) | (step << 16) | (draw & 0xffff);
        SplitMix::at(self.seed ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15), stream)
            .shuffle(&mut rows);
        rows.truncate(self.batch);
        Ok(Tensor::from_slice(&rows).f_to_device(device)?)
    }

    /// The row indices of training step `step`, on `device`.
    pub fn indices(&mut self, step: u64, device: Device) -> Result<Tensor> {
        let per_epoch = (self.rows / self.batch).max(1) as u64;
        let (epoch, at) = (step / per_epoch, (step % per_epoch) as usize);
        if self.cached.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut order: Vec<i64> = (0..self.rows as i64).collect();
            SplitMix::at(self.seed, epoch).shuffle(&mut order);
            self.cached = Some((epoch, order));
        }
        let order = &self.cached.as_ref().expect("filled above").1;
        let rows = &order[at * self.batch..(at + 1) * self.batch];
        Ok(Tensor::from_slice(rows).f_to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(b: &mut Batches, step: u64) -> Vec<i64> {
        Vec::<i64>::try_from(b.indices(step, Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn an_epoch_visits_each_row_once_and_order_depends_only_on_seed_and_step() {
        let mut b = Batches::new(10, 3, 42, vec![None]);
        let mut seen: Vec<i64> = (0..3).flat_map(|s| rows(&mut b, s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let later = rows(&mut b, 7);
        let mut fresh = Batches::new(10, 3, 42, vec![None]);
        assert_eq!(rows(&mut fresh, 7), later);
        assert_ne!(rows(&mut b, 0), rows(&mut b, 3), "a new epoch reshuffles");
    }

    #[test]
    fn task_batches_hold_labelled_rows_only_and_repeat_for_the_same_step_and_draw() {
        let b = Batches::new(10, 3, 5, vec![None, Some(vec![1, 4, 7, 8])]);
        let rows = |task, step, draw| {
            Vec::<i64>::try_from(b.task_indices(task, step, draw, Device::Cpu).unwrap()).unwrap()
        };
        let drawn = rows(1, 2, 0);
        assert_eq!(drawn.len(), 3);
        assert!(drawn.iter().all(|r| [1, 4, 7, 8].contains(r)));
        assert_eq!(rows(1, 2, 0), drawn);
        let others: Vec<Vec<i64>> = (0..8).map(|d| rows(1, 2, d)).collect();
        assert!(
            others.iter().any(|r| *r != drawn),
            "another draw, other rows"
        );
        assert!(b.task_indices(2, 0, 0, Device::Cpu).is_err());
    }

    #[test]
    fn extra_batches_are_independent_of_the_step_s_batch_and_repeat() {
        let mut b = Batches::new(1000, 10, 3, vec![None]);
        let extra = |b: &Batches, draw| {
            Vec::<i64>::try_from(b.extra_indices(4, draw, Device::Cpu).unwrap()).unwrap()
        };
        let (first, second) = (extra(&b, 0), extra(&b, 1));
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 10);
        assert_ne!(first, second);
        assert_ne!(first, rows(&mut b, 4));
        assert_eq!(extra(&b, 0), first, "the same step and draw, the same rows");
    }

    #[test]
    fn batch_larger_than_data_uses_all_rows() {
        let mut b = Batches::new(4, 100, 0, vec![None]);
        assert_eq!(rows(&mut b, 5).len(), 4);
    }
}
