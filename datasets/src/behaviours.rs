//! `multi-behaviour-synthetic`: multi-task recommendation samples whose
//! right answer is known, for DTRN and its baselines. Every item has one of
//! `categories` categories. Each sample is a new user with two favourite
//! categories, one for what they watch and one for what they like (drawn
//! independently), a candidate item and the user's two behaviour sequences,
//! each of a random length in 0..=`length` (padding: id 0, mask false):
//!
//! - `seq.other` (the items they watched): each position an item of the
//!   watch category with probability `focus`, else any item;
//! - `seq.liked`: the same with the like category.
//!
//! Labels: `watch` is 1 with probability `high` when the candidate is of the
//! user's watch category and `low` otherwise; `like` the same with the like
//! category. Fields: the candidate item and its category. The user's
//! categories are in no field, so a model must read them from the sequence
//! of the matching behaviour: one that reads no sequence (a shared bottom
//! over the fields) is at chance (AUC 0.5) by construction, and the Bayes
//! AUC (score: the candidate's category is the user's) is about 0.77 with
//! the defaults.

use std::path::Path;

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;

use crate::error::{Error, Result};
use crate::recommend::{self, Rows};
use crate::{DataKind, Dataset, Footprint, Source};

/// `[data] kind = "multi-behaviour-synthetic"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BehavioursConfig {
    /// Items.
    #[schemars(range(min = 1, max = 10_000_000))]
    pub items: u32,
    /// Item categories.
    #[schemars(range(min = 2, max = 1_000_000))]
    pub categories: u32,
    /// The longest behaviour sequence.
    #[schemars(range(min = 1, max = 4096))]
    pub length: u32,
    /// The chance that a sequence position is an item of the behaviour's category.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub focus: f64,
    /// The chance of a positive label when the candidate is of the task's category.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub high: f64,
    /// The chance of a positive label otherwise.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub low: f64,
    /// Samples in the training split.
    #[schemars(range(min = 1))]
    pub train: u64,
    /// Samples in the validation split.
    #[schemars(range(min = 1))]
    pub val: u64,
    /// Samples in the test split.
    #[schemars(range(min = 1))]
    pub test: u64,
    /// Seed of the users, items and samples.
    pub seed: u64,
}

impl Default for BehavioursConfig {
    fn default() -> BehavioursConfig {
        BehavioursConfig {
            items: 200,
            categories: 8,
            length: 8,
            focus: 0.8,
            high: 0.9,
            low: 0.1,
            train: 20_000,
            val: 2_000,
            test: 5_000,
            seed: 0,
        }
    }
}

/// The `multi-behaviour-synthetic` data kind.
pub struct Behaviours;

inventory::submit! { DataKind::of::<Behaviours>() }

impl Source for Behaviours {
    const NAME: &'static str = "multi-behaviour-synthetic";
    type Config = BehavioursConfig;

    fn check(c: &BehavioursConfig, _dir: &Path) -> Result<()> {
        // More categories than items would leave some empty: fewer real ones than asked for.
        match c.categories > c.items {
            true => Err(Error::config(
                "categories",
                format!(
                    "{} categories for {} items: each category needs an item; give at most data.items = {}",
                    c.categories, c.items, c.items
                ),
            )),
            false => Ok(()),
        }
    }

    fn footprint(c: &BehavioursConfig, _dir: &Path) -> Footprint {
        let rows = (c.train + c.val + c.test) as u128;
        let per_row = 8 * (3 + 2 * c.length as u128) + 2 * c.length as u128 + 8;
        Some((
            rows * per_row,
            format!(
                "data.train + data.val + data.test = {rows} samples of 2 sequences of data.length"
            ),
        ))
    }

    fn load(c: &BehavioursConfig, _dir: &Path) -> Result<Dataset> {
        let (items, length) = (c.items as usize, c.length as usize);
        let categories = c.categories as usize;
        let mut rng = SplitMix::at(c.seed, 0);
        let category: Vec<usize> = (0..items)
            .map(|_| rng.below(categories as u64) as usize)
            .collect();
        let mut members = vec![Vec::new(); categories];
        for (item, &k) in category.iter().enumerate() {
            members[k].push(item);
        }
        // The categories a user can favour: those with items.
        let held: Vec<usize> = (0..categories)
            .filter(|&k| !members[k].is_empty())
            .collect();
        let mut samples = SplitMix::at(c.seed, 1);
        let mut split = |rows: usize| -> Rows {
            let mut out = Rows::default();
            for _ in 0..rows {
                // [like category, watch category].
                let user = [0, 1].map(|_| held[samples.below(held.len() as u64) as usize]);
                let item = samples.below(items as u64) as usize;
                out.fields.extend([item as i64, category[item] as i64]);
                for (b, &k) in user.iter().enumerate() {
                    let n = samples.below(length as u64 + 1) as usize;
                    let mut sequence = Vec::with_capacity(n);
                    for p in 0..length {
                        // One focus draw per position, padding included.
                        let focused = samples.uniform() < c.focus;
                        if p < n {
                            let id = match focused {
                                true => members[k][samples.below(members[k].len() as u64) as usize],
                                false => samples.below(items as u64) as usize,
                            };
                            sequence.push(id as i64);
                        }
                    }
                    out.push_sequence(b, &sequence, length);
                    let p = if category[item] == k { c.high } else { c.low };
                    let label = f32::from(u8::from(samples.uniform() < p));
                    match b {
                        0 => out.like.push(label),
                        _ => out.watch.push(label),
                    }
                }
            }
            out
        };
        let splits = [
            split(c.train as usize),
            split(c.val as usize),
            split(c.test as usize),
        ];
        recommend::dataset(vec![items, categories], items, length, splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> BehavioursConfig {
        BehavioursConfig {
            items: 30,
            train: 400,
            val: 10,
            test: 10,
            ..BehavioursConfig::default()
        }
    }

    #[test]
    fn more_categories_than_items_are_refused_naming_the_key() {
        let many = BehavioursConfig {
            categories: 31,
            ..small()
        };
        let e = Behaviours::check(&many, Path::new("/")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("data.categories: 31 categories for 30 items"),
            "{e}"
        );
        assert!(Behaviours::check(&small(), Path::new("/")).is_ok());
    }

    #[test]
    fn inputs_are_ids_in_their_vocabularies_with_masks_behind_the_items() {
        let data = Behaviours::load(&small(), Path::new("/")).unwrap();
        let names: Vec<&str> = data.train.inputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "fields",
                "seq.liked",
                "seq.liked.mask",
                "seq.other",
                "seq.other.mask"
            ]
        );
        for ((_, t), spec) in data.train.inputs.iter().zip(&data.inputs) {
            let mut shape = vec![400i64];
            shape.extend(spec.shape.iter().map(|&s| s as i64));
            assert_eq!(t.size(), shape, "{}", spec.name);
        }
        let fields = Vec::<i64>::try_from(data.train.inputs[0].1.flatten(0, -1)).unwrap();
        for row in fields.chunks(2) {
            assert!(row[0] < 30 && row[1] < 8, "{row:?}");
        }
        // Valid positions first, then padding (id 0); some rows are empty.
        let mask = Vec::<bool>::try_from(data.train.inputs[2].1.flatten(0, -1)).unwrap();
        let ids = Vec::<i64>::try_from(data.train.inputs[1].1.flatten(0, -1)).unwrap();
        let mut empty = 0;
        for (m, i) in mask.chunks(8).zip(ids.chunks(8)) {
            let n = m.iter().filter(|&&v| v).count();
            assert!(m[..n].iter().all(|&v| v) && i[n..].iter().all(|&v| v == 0));
            empty += usize::from(n == 0);
        }
        assert!(empty > 10 && empty < 100, "{empty} empty of 400");
    }

    #[test]
    fn each_task_follows_the_category_its_own_sequence_shows() {
        // The most common category of the liked sequence predicts `like`,
        // not `watch`, and the other sequence's predicts `watch`.
        let config = BehavioursConfig {
            train: 4000,
            ..small()
        };
        let data = Behaviours::load(&config, Path::new("/")).unwrap();
        let flat = |i: usize| Vec::<i64>::try_from(data.train.inputs[i].1.flatten(0, -1)).unwrap();
        let valid =
            |i: usize| Vec::<bool>::try_from(data.train.inputs[i].1.flatten(0, -1)).unwrap();
        let fields = flat(0);
        let mut category = vec![0i64; 30];
        for row in fields.chunks(2) {
            category[row[0] as usize] = row[1];
        }
        let label = |t: usize| Vec::<f32>::try_from(&data.train.targets[t]).unwrap();
        let (watch, like) = (label(0), label(1));
        // Mean label when the candidate's category is the sequence's mode.
        let rate = |seq: usize, labels: &[f32]| {
            let (ids, mask) = (flat(seq), valid(seq + 1));
            let (mut hits, mut n) = (0.0, 0.0);
            for r in 0..4000 {
                let mut counts = [0; 8];
                for p in (0..8).filter(|&p| mask[8 * r + p]) {
                    counts[category[ids[8 * r + p] as usize] as usize] += 1;
                }
                let mode = (0..8).max_by_key(|&k| counts[k]).unwrap() as i64;
                if counts.iter().sum::<i32>() >= 3 && mode == fields[2 * r + 1] {
                    hits += labels[r] as f64;
                    n += 1.0;
                }
            }
            hits / n
        };
        let (liked_like, liked_watch) = (rate(1, &like), rate(1, &watch));
        let (other_watch, other_like) = (rate(3, &watch), rate(3, &like));
        assert!(
            liked_like > 0.8 && other_watch > 0.8,
            "{liked_like} {other_watch}"
        );
        assert!(
            liked_watch < 0.4 && other_like < 0.4,
            "{liked_watch} {other_like}"
        );
    }
}
