//! The order in which training examples are visited: a fresh permutation every
//! epoch, drawn from (seed, epoch) alone, so the batch of any step is known
//! without replaying the steps before it (which is what makes resume exact).

use taskweave_plugin_api::rng::SplitMix;
use tch::{Device, Tensor};

use crate::error::Result;

/// Batch indices for every step of a run.
pub struct Batches {
    rows: usize,
    batch: usize,
    seed: u64,
    /// The permutation of the last epoch asked for, kept because consecutive
    /// steps almost always share an epoch.
    cached: Option<(u64, Vec<i64>)>,
}

impl Batches {
    /// Batches of `batch` rows (at most `rows`) over `rows` examples. An epoch
    /// has ⌊rows / batch⌋ steps; the remainder of each permutation is skipped.
    pub fn new(rows: usize, batch: usize, seed: u64) -> Batches {
        Batches {
            rows,
            batch: batch.clamp(1, rows.max(1)),
            seed,
            cached: None,
        }
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
        let mut b = Batches::new(10, 3, 42);
        let mut seen: Vec<i64> = (0..3).flat_map(|s| rows(&mut b, s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let later = rows(&mut b, 7);
        let mut fresh = Batches::new(10, 3, 42);
        assert_eq!(rows(&mut fresh, 7), later);
        assert_ne!(rows(&mut b, 0), rows(&mut b, 3), "a new epoch reshuffles");
    }

    #[test]
    fn batch_larger_than_data_uses_all_rows() {
        let mut b = Batches::new(4, 100, 0);
        assert_eq!(rows(&mut b, 5).len(), 4);
    }
}
