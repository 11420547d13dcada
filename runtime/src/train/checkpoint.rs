//! Checkpoints: one safetensors file per checkpoint (readable with
//! `safetensors.torch.load_file`), with the run's step and the methods' JSON
//! state in the file's metadata, so a checkpoint is one atomic write.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use serde_json::Value;
use tch::Tensor;

use crate::error::{Error, Result};
use taskweave_plugin_api::io_reason;

use crate::fsutil::write_atomic;

/// Metadata key holding the JSON state.
const META_KEY: &str = "taskweave";
/// Metadata key holding the checksum of everything else (see [`checksum`]).
const CHECKSUM_KEY: &str = "taskweave.checksum";

/// What a checkpoint holds.
pub struct Checkpoint {
    /// Named tensors: parameters, buffers, optimizer and method state.
    pub tensors: Vec<(String, Tensor)>,
    /// Everything else (step, optimizer counters, methods' JSON state, timing).
    pub meta: Value,
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(tensor: &Tensor) -> Result<Bytes> {
    let t = tensor
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?;
    let dtype = Dtype::try_from(t.kind())?;
    let mut data = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, t.numel())?;
    Ok(Bytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// XXH3-64 over the JSON state and every tensor's name, dtype, shape and
/// bytes, in name order: a flipped bit anywhere that matters changes it.
fn checksum<'a>(
    meta: &str,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    hash.update(meta.as_bytes());
    for (name, dtype, shape, data) in sorted {
        hash.update(&(name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update(format!("{dtype:?}").as_bytes());
        for d in shape {
            hash.update(&(*d as u64).to_le_bytes());
        }
        hash.update(&(data.len() as u64).to_le_bytes());
        hash.update(data);
    }
    format!("xxh3-64:{:016x}", hash.digest())
}

/// The file of the checkpoint at `step` in `dir`.
pub fn path_for(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:09}.safetensors"))
}

/// Writes `checkpoint` to `path` atomically, with its checksum.
pub fn write(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let bytes: Vec<(String, Bytes)> = checkpoint
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_bytes(t)?)))
        .collect::<Result<_>>()?;
    let meta = checkpoint.meta.to_string();
    let sum = checksum(
        &meta,
        bytes
            .iter()
            .map(|(n, b)| (n.as_str(), b.dtype, b.shape.as_slice(), b.data.as_slice())),
    );
    let metadata = HashMap::from([
        (META_KEY.to_string(), meta),
        (CHECKSUM_KEY.to_string(), sum),
    ]);
    let views = bytes.iter().map(|(n, b)| (n.as_str(), b));
    let serialized = safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| {
        Error::Run(format!(
            "cannot serialise checkpoint {}: {}",
            path.display(),
            taskweave_datasets::safetensors_reason(&e)
        ))
    })?;
    write_atomic(path, &serialized)
}

/// A safetensors file's named tensors and its string metadata.
pub type SafetensorsFile = (Vec<(String, Tensor)>, HashMap<String, String>);

/// The JSON metadata taskweave wrote into a safetensors file's `metadata`,
/// if it did (files from elsewhere have none).
pub fn taskweave_meta(metadata: &HashMap<String, String>) -> Option<Value> {
    serde_json::from_str(metadata.get(META_KEY)?).ok()
}

/// The tensors and the metadata of any safetensors file, for example one
/// written by PyTorch.
pub fn read_file(path: &Path) -> Result<SafetensorsFile> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {}", path.display(), io_reason(&e))))?;
    let bad = |e: &SafeTensorError| {
        Error::Input(format!(
            "{} is not a readable safetensors file: {}",
            path.display(),
            taskweave_datasets::safetensors_reason(e)
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    if let Some(expected) = metadata.get(CHECKSUM_KEY) {
        let meta = metadata.get(META_KEY).map_or("", String::as_str);
        let views = file.tensors();
        let found = checksum(
            meta,
            views
                .iter()
                .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
        );
        if &found != expected {
            return Err(Error::Input(format!(
                "{} is damaged: its contents do not match the checksum written with it",
                path.display()
            )));
        }
    }
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let tensor = Tensor::try_from(view)
                .map_err(|e| Error::Input(format!("{}: tensor `{name}`: {e}", path.display())))?;
            Ok((name, tensor))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, metadata))
}

/// Reads a checkpoint written by [`write()`], verifying its checksum.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let (tensors, metadata) = read_file(path)?;
    let bad = |e: String| {
        Error::Input(format!(
            "{} is not a taskweave checkpoint: {e}",
            path.display()
        ))
    };
    let meta = metadata
        .get(META_KEY)
        .ok_or_else(|| bad("no taskweave metadata".into()))?;
    if !metadata.contains_key(CHECKSUM_KEY) {
        // Checkpoints of taskweave 0.1 hold the JSON state alone; anything else
        // without a checksum lost it to damage (a flipped byte in its key).
        if metadata.len() != 1 {
            return Err(Error::Input(format!(
                "{} is damaged: its checksum entry is missing",
                path.display()
            )));
        }
        tracing::warn!(
            "{} has no checksum (written by taskweave 0.1): it is loaded unverified",
            path.display()
        );
    }
    let meta: Value = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
    Ok(Checkpoint { tensors, meta })
}

/// The newest checkpoint of `dir` that reads back whole, with its step, or
/// `None` when there is none yet. A damaged or truncated newer one is skipped
/// with a warning naming it (a run keeps two, so the previous one is there),
/// as is one whose file name says another step than it holds (a copy under
/// another name); when every checkpoint is unusable, the error names them all.
pub fn latest(dir: &Path) -> Result<Option<(u64, Checkpoint)>> {
    let mut damaged = Vec::new();
    for (step, path) in list(dir).into_iter().rev() {
        let named = |checkpoint: Checkpoint| match checkpoint.meta["step"].as_u64() {
            Some(held) if held == step => Ok(checkpoint),
            held => Err(Error::Input(format!(
                "{} holds step {}, not the step its name says: renamed or copied over?",
                path.display(),
                held.map_or_else(|| "none".to_string(), |s| s.to_string())
            ))),
        };
        match read(&path).and_then(named) {
            Ok(checkpoint) => return Ok(Some((step, checkpoint))),
            Err(e) => {
                tracing::warn!("skipping a checkpoint: {e}");
                damaged.push(e.to_string());
            }
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    Err(Error::Input(format!(
        "no checkpoint in {} can be read: {}; move them away to train the run again from step 0 \
         (`taskweave resume` then starts over), or start a new run with `taskweave run PIPELINE --overwrite`",
        dir.display(),
        damaged.join("; ")
    )))
}

/// Renames the checkpoints in `dir` past `step`, the one a run resumes from
/// (those [`latest`] skipped as damaged), to `NAME.damaged`: kept for
/// whoever wants to look, but no longer counted among the checkpoints the
/// run keeps (which would prune good ones).
pub fn set_aside_after(dir: &Path, step: u64) {
    for (_, path) in list(dir).into_iter().filter(|(s, _)| *s > step) {
        let mut aside = path.clone().into_os_string();
        aside.push(".damaged");
        match std::fs::rename(&path, &aside) {
            Ok(()) => tracing::warn!(
                "{} is kept as {}",
                path.display(),
                Path::new(&aside).display()
            ),
            Err(e) => tracing::warn!("could not set {} aside: {e}", path.display()),
        }
    }
}

/// Checkpoints in `dir`, newest last.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    found.sort();
    found
}

/// Keeps the newest `keep` checkpoints of `dir`, deleting older ones.
pub fn prune(dir: &Path, keep: usize) {
    let all = list(dir);
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        let _ = std::fs::remove_file(path);
    }
}

/// Copies `source` into `target` in place (same shape), without autograd.
pub fn copy_into(target: &Tensor, source: &Tensor, name: &str) -> Result<()> {
    if target.size() != source.size() {
        return Err(Error::Input(format!(
            "checkpoint tensor `{name}` has shape {:?}, the model has {:?}; was the checkpoint written by another pipeline?",
            source.size(),
            target.size()
        )));
    }
    let source = source.f_to_kind(target.kind())?;
    tch::no_grad(|| target.shallow_clone().f_copy_(&source))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_tensors_bitwise_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), 12);
        let w = Tensor::f_randn([3, 2], (tch::Kind::Float, tch::Device::Cpu)).unwrap();
        let ckpt = Checkpoint {
            tensors: vec![
                ("w".into(), w.shallow_clone()),
                ("n".into(), Tensor::from_slice(&[7i64])),
            ],
            meta: serde_json::json!({"step": 12}),
        };
        write(&path, &ckpt).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.meta["step"], 12);
        let got = &back.tensors.iter().find(|(n, _)| n == "w").unwrap().1;
        assert!(got.equal(&w));
        assert_eq!(list(dir.path()), vec![(12, path.clone())]);
    }

    fn two_checkpoints(dir: &Path) -> (PathBuf, PathBuf) {
        let w = Tensor::f_randn([64], (tch::Kind::Float, tch::Device::Cpu)).unwrap();
        let (a, b) = (path_for(dir, 5), path_for(dir, 10));
        for (path, step) in [(&a, 5), (&b, 10)] {
            let ckpt = Checkpoint {
                tensors: vec![("w".into(), w.shallow_clone())],
                meta: serde_json::json!({ "step": step }),
            };
            write(path, &ckpt).unwrap();
        }
        (a, b)
    }

    #[test]
    fn a_flipped_bit_in_tensor_data_is_detected_and_the_previous_checkpoint_used() {
        let dir = tempfile::tempdir().unwrap();
        let (_, newest) = two_checkpoints(dir.path());
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 7;
        bytes[last] ^= 0x10;
        std::fs::write(&newest, bytes).unwrap();
        let err = read(&newest).err().unwrap().to_string();
        assert!(err.contains("is damaged"), "{err}");
        let (step, ckpt) = latest(dir.path()).unwrap().unwrap();
        assert_eq!((step, ckpt.meta["step"].as_u64()), (5, Some(5)));
    }

    #[test]
    fn a_checkpoint_named_for_another_step_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (oldest, _) = two_checkpoints(dir.path());
        let copy = path_for(dir.path(), 20);
        std::fs::copy(&oldest, &copy).unwrap();
        let (step, ckpt) = latest(dir.path()).unwrap().unwrap();
        assert_eq!((step, ckpt.meta["step"].as_u64()), (10, Some(10)));
        std::fs::remove_file(path_for(dir.path(), 10)).unwrap();
        std::fs::remove_file(&oldest).unwrap();
        let err = latest(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("holds step 5, not the step its name says"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_newest_checkpoint_falls_back_and_all_damaged_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (oldest, newest) = two_checkpoints(dir.path());
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(latest(dir.path()).unwrap().unwrap().0, 5);
        std::fs::write(&oldest, b"").unwrap();
        let err = latest(dir.path()).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("step-000000005") && text.contains("step-000000010"),
            "{text}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(latest(empty.path()).unwrap().is_none());
    }

    #[test]
    fn a_truncated_file_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), 1);
        std::fs::write(&path, b"\x10\x00\x00").unwrap();
        let err = read(&path).err().unwrap().to_string();
        assert!(
            err.contains("is not a readable safetensors file: the file is too short"),
            "{err}"
        );
    }
}
