//! Splitting rows into train / validation / test by fractions after a seeded
//! shuffle: one rule for every data kind that splits by fraction.

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;

use crate::error::{Error, Result};

/// `split = { train = 0.8, val = 0.1, test = 0.1 }`: the share of rows each
/// split gets; the three must add up to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Fractions {
    /// Share of the rows used for training.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub train: f64,
    /// Share used for validation (model selection).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub val: f64,
    /// Share used for the reported test metrics.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub test: f64,
}

impl Default for Fractions {
    fn default() -> Fractions {
        Fractions {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl Fractions {
    /// That the three add up to 1 (data kinds call it from their `check`, so
    /// that `validate` refuses what loading would).
    pub fn check(&self) -> Result<()> {
        let sum = self.train + self.val + self.test;
        if (sum - 1.0).abs() > 1e-6 {
            return Err(Error::config(
                "split",
                format!(
                    "the fractions must add up to 1, got {} + {} + {} = {sum}",
                    self.train, self.val, self.test
                ),
            ));
        }
        Ok(())
    }

    /// Rows of `n` in each split: train and val rounded, test the rest.
    pub fn counts(&self, n: usize) -> Result<[usize; 3]> {
        self.check()?;
        let train = ((self.train * n as f64).round() as usize).min(n);
        let val = ((self.val * n as f64).round() as usize).min(n - train);
        Ok([train, val, n - train - val])
    }
}

/// The rows `0..n` in the order the splits take them: shuffled with `seed`
/// (when `shuffle`), then cut by [`Fractions::counts`]. Returns, per row, its
/// split: 0 train, 1 val, 2 test.
pub fn assign(n: usize, fractions: &Fractions, shuffle: bool, seed: u64) -> Result<Vec<usize>> {
    let [train, val, _] = fractions.counts(n)?;
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        SplitMix::at(seed, 0).shuffle(&mut order);
    }
    let mut split_of = vec![2; n];
    for (rank, &row) in order.iter().enumerate() {
        split_of[row] = if rank < train {
            0
        } else if rank < train + val {
            1
        } else {
            2
        };
    }
    Ok(split_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_and_never_exceed_the_rows() {
        let f = Fractions {
            train: 0.5,
            val: 0.5,
            test: 0.0,
        };
        assert_eq!(f.counts(3).unwrap(), [2, 1, 0]);
        assert_eq!(Fractions::default().counts(10).unwrap(), [8, 1, 1]);
        let bad = Fractions {
            train: 0.5,
            val: 0.1,
            test: 0.1,
        };
        let e = bad.counts(10).unwrap_err().to_string();
        assert!(
            e.starts_with("data.split: the fractions must add up to 1"),
            "{e}"
        );
    }

    #[test]
    fn assignment_depends_on_the_seed_only_and_keeps_the_counts() {
        let f = Fractions::default();
        let a = assign(50, &f, true, 7).unwrap();
        assert_eq!(a, assign(50, &f, true, 7).unwrap());
        assert_ne!(a, assign(50, &f, true, 8).unwrap());
        assert_eq!(a.iter().filter(|&&s| s == 0).count(), 40);
        let unshuffled = assign(10, &f, false, 7).unwrap();
        assert_eq!(unshuffled, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
