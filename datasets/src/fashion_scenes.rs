//! `fashion-scenes`: multi-object scenes of real Fashion-MNIST items with
//! per-pixel labels, for multi-task dense prediction (the TaskExpert
//! experiments; PASCAL-Context and NYUD-v2 cannot be had here).
//!
//! Each scene is a `size`×`size` canvas (64 by default) holding between
//! `min_items` and `max_items` items drawn uniformly with replacement from
//! the split's pool, each scaled by a factor uniform in [`min_scale`,
//! `max_scale`] (bilinear, side `round(28·scale)`), placed uniformly where it
//! fits whole, and given a depth uniform in [0.1, 0.9]. Items are painted
//! from the farthest to the nearest, so nearer items occlude farther ones;
//! an item covers the pixels where its resampled intensity exceeds 0.1 (its
//! mask), which take its intensity. Tasks, per pixel:
//!
//! - `segmentation` (11 classes): 0 background, `1 + c` an item of class `c`;
//! - `depth` (1 channel): the visible item's depth, 1.0 (far) on background;
//! - `boundaries` (2 classes): 1 where a 4-neighbour shows another item or
//!   background (the edges of the visible segments), else 0;
//! - with `classify = true`, also `classes` (multi-label, 10): the classes of
//!   the items that remain visible.
//!
//! Train and val scenes draw items from the IDX train set (val from a
//! held-out sixth of its items), test scenes from the t10k items; everything
//! is drawn from `seed`. Like `multi-mnist`, the scenes are rebuilt at each
//! load (well under a second for the defaults) rather than cached: the
//! int64 label maps are ten times larger than the IDX files they come from.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::items::{held_out, missing, read_train_test, Items28, ITEM};
use crate::{DataKind, Dataset, InputSpec, Source, Split, Task, TaskType};

/// The input's name.
const IMAGE: &str = "image";
/// Depth of background pixels.
const FAR: f32 = 1.0;
/// Resampled intensity above which a pixel belongs to its item.
const MASK: f32 = 0.1;

/// `[data] kind = "fashion-scenes"`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FashionScenesConfig {
    /// Folder holding `fashion/` (from `make images`), relative to the pipeline file.
    dir: String,
    /// Scenes in the training split.
    #[schemars(range(min = 1))]
    train: usize,
    /// Scenes in the validation split.
    #[schemars(range(min = 1))]
    val: usize,
    /// Scenes in the test split.
    #[schemars(range(min = 1))]
    test: usize,
    /// Side of the square canvas, in pixels.
    #[schemars(range(min = 1, max = 1024))]
    size: usize,
    /// Fewest items per scene.
    #[schemars(range(min = 1, max = 64))]
    min_items: usize,
    /// Most items per scene.
    #[schemars(range(min = 1, max = 64))]
    max_items: usize,
    /// Smallest scale of an item (1: 28×28).
    #[schemars(range(min = 0.05, max = 16.0))]
    min_scale: f64,
    /// Largest scale of an item; `round(28·max_scale)` must fit in `size`.
    #[schemars(range(min = 0.05, max = 16.0))]
    max_scale: f64,
    /// Add the image-level multi-label task `classes`.
    classify: bool,
    /// Seed of the scenes and of the train/val item split.
    seed: u64,
}

impl Default for FashionScenesConfig {
    fn default() -> FashionScenesConfig {
        FashionScenesConfig {
            dir: "../data/images".into(),
            train: 2_000,
            val: 300,
            test: 500,
            size: 64,
            min_items: 2,
            max_items: 4,
            min_scale: 0.6,
            max_scale: 1.4,
            classify: false,
            seed: 0,
        }
    }
}

impl FashionScenesConfig {
    fn side(scale: f64) -> usize {
        ((ITEM as f64 * scale).round() as usize).max(1)
    }

    /// Refuses bounds that cross or items that cannot fit, naming the key.
    fn check(&self) -> Result<()> {
        if self.min_items > self.max_items {
            return Err(Error::config(
                "min_items",
                format!(
                    "min_items = {} is above max_items = {}",
                    self.min_items, self.max_items
                ),
            ));
        }
        if self.min_scale > self.max_scale {
            return Err(Error::config(
                "min_scale",
                format!(
                    "min_scale = {} is above max_scale = {}",
                    self.min_scale, self.max_scale
                ),
            ));
        }
        let side = Self::side(self.max_scale);
        if side > self.size {
            return Err(Error::config(
                "size",
                format!(
                    "a scene of {0}×{0} cannot hold an item scaled by max_scale = {1} ({side}×{side}); raise size or lower max_scale",
                    self.size, self.max_scale
                ),
            ));
        }
        Ok(())
    }
}

/// The `fashion-scenes` data kind.
pub struct FashionScenes;

inventory::submit! { DataKind::of::<FashionScenes>() }

/// One item of a scene, as drawn.
struct Placed {
    index: usize,
    side: usize,
    y: usize,
    x: usize,
    depth: f32,
}

/// `item` (28×28 bytes) resampled bilinearly to `side`×`side`, in [0, 1].
fn resample(item: &[u8], side: usize) -> Vec<f32> {
    let at = |r: usize, c: usize| item[r * ITEM + c] as f32 / 255.0;
    let ratio = ITEM as f32 / side as f32;
    let mut out = Vec::with_capacity(side * side);
    for r in 0..side {
        // Pixel centres: (r + 0.5)·ratio − 0.5 in source coordinates.
        let sy = ((r as f32 + 0.5) * ratio - 0.5).clamp(0.0, (ITEM - 1) as f32);
        let (y0, fy) = (sy.floor() as usize, sy.fract());
        let y1 = (y0 + 1).min(ITEM - 1);
        for c in 0..side {
            let sx = ((c as f32 + 0.5) * ratio - 0.5).clamp(0.0, (ITEM - 1) as f32);
            let (x0, fx) = (sx.floor() as usize, sx.fract());
            let x1 = (x0 + 1).min(ITEM - 1);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// `n` scenes of items from `items[pool]`.
fn scenes(
    n: usize,
    (items, pool): (&Items28, &[usize]),
    c: &FashionScenesConfig,
    rng: &mut SplitMix,
) -> Result<Split> {
    let s = c.size;
    let area = s * s;
    let mut image = vec![0f32; n * area];
    let mut segmentation = vec![0i64; n * area];
    let mut depth = vec![FAR; n * area];
    let mut boundaries = vec![0i64; n * area];
    let mut classes = vec![0f32; n * 10];
    let mut owner = vec![0usize; area];
    for k in 0..n {
        let count = c.min_items + rng.below((c.max_items - c.min_items + 1) as u64) as usize;
        let mut placed: Vec<Placed> = (0..count)
            .map(|_| {
                let index = pool[rng.below(pool.len() as u64) as usize];
                let scale = c.min_scale + (c.max_scale - c.min_scale) * rng.uniform();
                let side = FashionScenesConfig::side(scale);
                let y = rng.below((s - side + 1) as u64) as usize;
                let x = rng.below((s - side + 1) as u64) as usize;
                let depth = 0.1 + 0.8 * rng.uniform() as f32;
                Placed {
                    index,
                    side,
                    y,
                    x,
                    depth,
                }
            })
            .collect();
        // Farthest first: the painter's order, nearer items on top.
        placed.sort_by(|a, b| b.depth.total_cmp(&a.depth));
        let (img, seg, dep) = (
            &mut image[k * area..(k + 1) * area],
            &mut segmentation[k * area..(k + 1) * area],
            &mut depth[k * area..(k + 1) * area],
        );
        owner.fill(0);
        for (i, p) in placed.iter().enumerate() {
            let pixels = resample(items.image(p.index), p.side);
            let class = items.labels[p.index] as i64;
            for r in 0..p.side {
                for col in 0..p.side {
                    let v = pixels[r * p.side + col];
                    if v > MASK {
                        let at = (p.y + r) * s + p.x + col;
                        (img[at], seg[at], dep[at], owner[at]) = (v, 1 + class, p.depth, i + 1);
                    }
                }
            }
        }
        let edges = &mut boundaries[k * area..(k + 1) * area];
        for r in 0..s {
            for col in 0..s {
                let me = owner[r * s + col];
                let differs = |rr: usize, cc: usize| owner[rr * s + cc] != me;
                let edge = (r > 0 && differs(r - 1, col))
                    || (r + 1 < s && differs(r + 1, col))
                    || (col > 0 && differs(r, col - 1))
                    || (col + 1 < s && differs(r, col + 1));
                edges[r * s + col] = edge as i64;
            }
        }
        for (i, p) in placed.iter().enumerate() {
            if owner.contains(&(i + 1)) {
                classes[k * 10 + items.labels[p.index] as usize] = 1.0;
            }
        }
    }
    let (n, s) = (n as i64, s as i64);
    let mut targets = vec![
        Tensor::f_from_slice(&segmentation)?.f_reshape([n, s, s])?,
        Tensor::f_from_slice(&depth)?.f_reshape([n, 1, s, s])?,
        Tensor::f_from_slice(&boundaries)?.f_reshape([n, s, s])?,
    ];
    if c.classify {
        targets.push(Tensor::f_from_slice(&classes)?.f_reshape([n, 10])?);
    }
    let masks = targets.iter().map(|_| None).collect();
    Ok(Split {
        inputs: vec![(
            IMAGE.to_string(),
            Tensor::f_from_slice(&image)?.f_reshape([n, 1, s, s])?,
        )],
        targets,
        masks,
    })
}

fn folder(config: &FashionScenesConfig, dir: &Path) -> PathBuf {
    dir.join(&config.dir).join("fashion")
}

impl Source for FashionScenes {
    const NAME: &'static str = "fashion-scenes";
    type Config = FashionScenesConfig;

    fn check(config: &FashionScenesConfig, dir: &Path) -> Result<()> {
        config.check()?;
        let folder = folder(config, dir);
        for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
            if !folder.join(file).is_file() {
                return Err(missing(&folder, file));
            }
        }
        Ok(())
    }

    fn footprint(config: &FashionScenesConfig, _dir: &Path) -> crate::Footprint {
        let scenes = (config.train + config.val + config.test) as u128;
        // Image and depth as f32, segmentation and boundaries as i64.
        let per_pixel = 4 + 4 + 8 + 8;
        Some((
            scenes * (config.size * config.size * per_pixel + 40) as u128,
            "data.train, data.val, data.test, data.size".into(),
        ))
    }

    fn load(config: &FashionScenesConfig, dir: &Path) -> Result<Dataset> {
        Self::check(config, dir)?;
        let folder = folder(config, dir);
        let (train_items, test_items) = read_train_test(&folder)?;
        let mut rng = SplitMix::at(config.seed, 0);
        let (fit, val) = held_out(&train_items, &mut rng)?;
        let all: Vec<usize> = (0..test_items.len()).collect();
        let train = scenes(config.train, (&train_items, &fit), config, &mut rng)?;
        let val = scenes(config.val, (&train_items, &val), config, &mut rng)?;
        let test = scenes(config.test, (&test_items, &all), config, &mut rng)?;
        let (height, width) = (config.size, config.size);
        let mut tasks = vec![
            Task::new(
                "segmentation",
                TaskType::DenseMulticlass {
                    classes: 11,
                    height,
                    width,
                },
            ),
            Task::new(
                "depth",
                TaskType::DenseRegression {
                    channels: 1,
                    height,
                    width,
                },
            ),
            Task::new(
                "boundaries",
                TaskType::DenseMulticlass {
                    classes: 2,
                    height,
                    width,
                },
            ),
        ];
        if config.classify {
            tasks.push(Task::new("classes", TaskType::Multilabel(10)));
        }
        Ok(Dataset {
            tasks,
            inputs: vec![InputSpec::float(IMAGE, vec![1, config.size, config.size])],
            train,
            val,
            test,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::write_idx;

    /// Fashion items: item i solid at fill 100 + 10·label, label i % 10.
    fn fixture(root: &Path) {
        let labels: Vec<u8> = (0..24).map(|i| i % 10).collect();
        let fills: Vec<u8> = labels.iter().map(|l| 100 + 10 * l).collect();
        write_idx(&root.join("fashion"), "train", &fills, &labels);
        write_idx(&root.join("fashion"), "t10k", &fills[..6], &labels[..6]);
    }

    fn config(root: &Path) -> FashionScenesConfig {
        FashionScenesConfig {
            dir: root.display().to_string(),
            train: 30,
            val: 5,
            test: 5,
            classify: true,
            ..FashionScenesConfig::default()
        }
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.reshape([-1])).unwrap()
    }

    fn ints(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t.reshape([-1])).unwrap()
    }

    #[test]
    fn labels_agree_pixel_by_pixel_and_boundaries_are_where_the_visible_item_changes() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let data = FashionScenes::load(&config(dir.path()), Path::new("/")).unwrap();
        data.check("fashion-scenes").unwrap();
        let split = &data.train;
        let s = 64;
        for k in 0..30 {
            let image = floats(&split.inputs[0].1.get(k));
            let seg = ints(&split.targets[0].get(k));
            let depth = floats(&split.targets[1].get(k));
            let edges = ints(&split.targets[2].get(k));
            for p in 0..s * s {
                // Solid fixture items: a pixel's intensity names its class.
                match seg[p] {
                    0 => assert!(image[p] == 0.0 && depth[p] == FAR, "scene {k} pixel {p}"),
                    c => {
                        let fill = (100 + 10 * (c - 1)) as f32 / 255.0;
                        assert!((image[p] - fill).abs() < 1e-6 && depth[p] < 0.9 + 1e-6);
                    }
                }
                // Depths differ between items (almost surely), so the visible
                // item changes exactly where the depth does.
                let (r, c) = (p / s, p % s);
                let neighbours = [
                    (r > 0).then(|| p - s),
                    (r + 1 < s).then(|| p + s),
                    (c > 0).then(|| p - 1),
                    (c + 1 < s).then(|| p + 1),
                ];
                let changes = neighbours.iter().flatten().any(|&q| depth[q] != depth[p]);
                assert_eq!(edges[p], changes as i64, "scene {k} pixel {p}");
            }
            let visible = floats(&split.targets[3].get(k));
            for (class, &v) in visible.iter().enumerate() {
                assert_eq!(
                    v == 1.0,
                    seg.contains(&(class as i64 + 1)),
                    "scene {k} class {class}"
                );
            }
        }
        // Test scenes use the t10k items only (labels 0..5).
        let test = ints(&data.test.targets[0]);
        assert!(test.iter().all(|&c| c <= 6), "{:?}", test.iter().max());
    }

    #[test]
    fn the_nearest_of_two_full_canvas_items_hides_the_other() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let c = FashionScenesConfig {
            size: 28,
            min_items: 2,
            max_items: 2,
            min_scale: 1.0,
            max_scale: 1.0,
            ..config(dir.path())
        };
        let data = FashionScenes::load(&c, Path::new("/")).unwrap();
        for k in 0..30 {
            let seg = ints(&data.train.targets[0].get(k));
            let depth = floats(&data.train.targets[1].get(k));
            let edges = ints(&data.train.targets[2].get(k));
            let classes = floats(&data.train.targets[3].get(k));
            assert!(seg.iter().all(|&x| x == seg[0]) && seg[0] > 0, "scene {k}");
            assert!(depth.iter().all(|&d| d == depth[0]) && depth[0] < FAR);
            assert!(edges.iter().all(|&e| e == 0));
            assert_eq!(
                classes.iter().sum::<f32>(),
                1.0,
                "only the front item is visible"
            );
        }
    }

    #[test]
    fn scales_positions_and_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let c = FashionScenesConfig {
            min_items: 1,
            max_items: 1,
            min_scale: 0.5,
            max_scale: 0.5,
            ..config(dir.path())
        };
        let a = FashionScenes::load(&c, Path::new("/")).unwrap();
        let b = FashionScenes::load(&c, Path::new("/")).unwrap();
        assert!(a.train.inputs[0].1.equal(&b.train.inputs[0].1));
        let other = FashionScenes::load(
            &FashionScenesConfig {
                seed: 1,
                ..c.clone()
            },
            Path::new("/"),
        )
        .unwrap();
        assert!(!a.train.inputs[0].1.equal(&other.train.inputs[0].1));
        for k in 0..30 {
            // One solid item at scale 0.5: a 14×14 square.
            let seg = ints(&a.train.targets[0].get(k));
            let covered: Vec<usize> = (0..64 * 64).filter(|&p| seg[p] > 0).collect();
            assert_eq!(covered.len(), 14 * 14, "scene {k}");
            let (r0, c0) = (covered[0] / 64, covered[0] % 64);
            assert!(covered
                .iter()
                .all(|&p| p / 64 - r0 < 14 && (p % 64).wrapping_sub(c0) < 14));
        }
    }

    #[test]
    fn bad_sizes_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let c = FashionScenesConfig {
            size: 30,
            ..config(dir.path())
        };
        let e = FashionScenes::check(&c, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("size")
                && e.contains("cannot hold an item scaled by max_scale = 1.4 (39×39)"),
            "{e}"
        );
        let c = FashionScenesConfig {
            min_items: 5,
            ..config(dir.path())
        };
        let e = FashionScenes::check(&c, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_items = 5 is above max_items = 4"), "{e}");
        let c = FashionScenesConfig {
            dir: "/nonexistent".into(),
            ..FashionScenesConfig::default()
        };
        let e = FashionScenes::check(&c, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("make images"), "{e}");
    }
}
