//! Checkpoints: one safetensors file per checkpoint (readable with
//! `safetensors.torch.load_file`), with the run's step and the methods' JSON
//! state in the file's metadata, so a checkpoint is one atomic write.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde_json::Value;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Metadata key holding the JSON state.
const META_KEY: &str = "taskweave";

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

/// The file of the checkpoint at `step` in `dir`.
pub fn path_for(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:09}.safetensors"))
}

/// Writes `checkpoint` to `path` atomically.
pub fn write(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let bytes: Vec<(String, Bytes)> = checkpoint
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_bytes(t)?)))
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([(META_KEY.to_string(), checkpoint.meta.to_string())]);
    let views = bytes.iter().map(|(n, b)| (n.as_str(), b));
    let serialized = safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| {
        Error::Run(format!(
            "cannot serialise checkpoint {}: {e}",
            path.display()
        ))
    })?;
    write_atomic(path, &serialized)
}

/// Reads a checkpoint written by [`write`].
pub fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: String| {
        Error::Input(format!(
            "{} is not a taskweave checkpoint: {e}",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("no taskweave metadata".into()))?;
    let meta: Value = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Ok((name, Tensor::try_from(view)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Checkpoint { tensors, meta })
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

    #[test]
    fn a_truncated_file_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), 1);
        std::fs::write(&path, b"\x10\x00\x00").unwrap();
        let err = read(&path).err().unwrap().to_string();
        assert!(err.contains("is not a taskweave checkpoint"), "{err}");
    }
}
