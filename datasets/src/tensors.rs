//! `tensors`: the user's data already in tensors (images, tokens, per-pixel
//! targets), in one safetensors file holding, for each split `s` of train,
//! val and test: `s.inputs.<name>` (`[N, ...]`, float32 values or int64 ids),
//! `s.targets.<task>` (dtype and shape as [`TaskType::target`] says) and
//! optionally `s.masks.<task>` (bool or uint8 `[N]`: the rows with a label).
//! Every error names the file and the tensor key, or the `[data]` key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use safetensors::tensor::SafeTensorError;
use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::kind_name;
use tch::{Kind, Tensor};

use crate::error::{check_data_file, unreadable, Error, Result};
use crate::{
    DataKind, Dataset, Footprint, InputSpec, Source, Split, Task, TaskType, IGNORE_PIXEL,
    IGNORE_TOKEN,
};

const SPLITS: [&str; 3] = ["train", "val", "test"];

/// `[data] kind = "tensors"`: a safetensors file of inputs, targets and masks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorsConfig {
    /// The safetensors file, relative to the pipeline file.
    pub path: String,
    /// Per int64 input (required for each): the vocabulary size of each
    /// column of its last dimension, or one size for every column.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vocab: IndexMap<String, Vec<usize>>,
    /// One entry per task (`<split>.targets.<task>` in the file), in task order.
    pub tasks: IndexMap<String, TensorTask>,
}

/// What one task predicts; each type takes only its own keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TensorTask {
    /// A real number: float32 `[N]`.
    Regression {},
    /// 0 or 1: float32 `[N]`.
    Binary {},
    /// One of `classes` classes: int64 `[N]`.
    Multiclass {
        /// Number of classes.
        #[schemars(range(min = 2, max = 16_777_216))]
        classes: usize,
    },
    /// Independent 0/1 labels: float32 `[N, labels]`.
    Multilabel {},
    /// One of `classes` classes per pixel: int64 `[N, H, W]`, 255 where unlabelled.
    DenseMulticlass {
        /// Number of classes (below 255, which marks an unlabelled pixel).
        #[schemars(range(min = 2, max = 255))]
        classes: usize,
    },
    /// Real numbers per pixel: float32 `[N, C, H, W]`, NaN where unlabelled.
    DenseRegression {},
    /// One of `classes` classes per position of a sequence: int64 `[N, L]`,
    /// -100 where unlabelled.
    TokenMulticlass {
        /// Number of classes.
        #[schemars(range(min = 2, max = 16_777_216))]
        classes: usize,
    },
}

impl TensorTask {
    /// The type's name and the dtype and shape of its targets.
    fn form(self) -> (&'static str, &'static str) {
        match self {
            TensorTask::Regression {} => ("regression", "float32 [N]"),
            TensorTask::Binary {} => ("binary", "float32 [N]"),
            TensorTask::Multiclass { .. } => ("multiclass", "int64 [N]"),
            TensorTask::Multilabel {} => ("multilabel", "float32 [N, labels]"),
            TensorTask::DenseMulticlass { .. } => ("dense-multiclass", "int64 [N, H, W]"),
            TensorTask::DenseRegression {} => ("dense-regression", "float32 [N, C, H, W]"),
            TensorTask::TokenMulticlass { .. } => ("token-multiclass", "int64 [N, L]"),
        }
    }
}

/// The `tensors` data kind.
pub struct Tensors;

inventory::submit! { DataKind::of::<Tensors>() }

fn describe(t: &Tensor) -> String {
    format!("{} {:?}", kind_name(t.kind()), t.size())
}

impl Source for Tensors {
    const NAME: &'static str = "tensors";
    type Config = TensorsConfig;

    fn check(config: &TensorsConfig, dir: &Path) -> Result<()> {
        check_data_file(&dir.join(&config.path))
    }

    /// Twice the file's size: libtorch's reader holds the whole file while it
    /// copies it into tensors.
    fn footprint(config: &TensorsConfig, dir: &Path) -> Footprint {
        let size = std::fs::metadata(dir.join(&config.path)).ok()?.len();
        let what = "bytes, read whole, then copied into tensors";
        Some((
            2 * size as u128,
            format!("data.path = \"{}\" ({size} {what})", config.path),
        ))
    }

    fn load(config: &TensorsConfig, dir: &Path) -> Result<Dataset> {
        let path = dir.join(&config.path);
        let opened = std::fs::File::open(&path).and_then(|f| f.metadata());
        if !opened.map_err(|e| unreadable(&path, &e))?.is_file() {
            return Err(file_error(&path, "not a regular file".into()));
        }
        let read = Tensor::read_safetensors(&path).map_err(|e| {
            let reason = match e {
                tch::TchError::SafeTensorError { err, .. } => safetensors_reason(&err),
                other => other.to_string().lines().next().unwrap_or("").into(),
            };
            file_error(&path, format!("not a valid safetensors file: {reason}"))
        })?;
        let tensors = read.into_iter().collect();
        File { path, tensors }.dataset(config)
    }
}

/// What is wrong with a safetensors file, in words.
pub fn safetensors_reason(err: &SafeTensorError) -> String {
    match err {
        SafeTensorError::IoError(e) => taskweave_plugin_api::io_reason(e),
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "the file is too short for a safetensors header (truncated?)".into()
        }
        SafeTensorError::HeaderTooLarge => "its header length is implausibly large".into(),
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::JsonError(_) => "its header is not valid safetensors JSON".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not match the header (truncated or extended?)".into()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor `{name}` has invalid offsets"),
        SafeTensorError::TensorNotFound(name) => format!("it has no tensor `{name}`"),
        SafeTensorError::TensorInvalidInfo
        | SafeTensorError::InvalidTensorView(..)
        | SafeTensorError::ValidationOverflow => {
            "a tensor's dtype, shape and size do not agree".into()
        }
    }
}

fn file_error(path: &Path, message: String) -> Error {
    let path = path.to_path_buf();
    Error::File { path, message }
}

struct File {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl File {
    fn bad<T>(&self, message: String) -> Result<T> {
        Err(file_error(&self.path, message))
    }

    /// The tensors whose key starts with `prefix`, by the rest of the key, sorted.
    fn under(&self, prefix: &str) -> Vec<(&str, &Tensor)> {
        let keys = self.tensors.range(prefix.to_string()..);
        keys.take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, t)| (&k[prefix.len()..], t))
            .collect()
    }

    fn get(&self, split: &str, what: &str, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{split}.{what}.{name}"))
    }

    fn dataset(&self, config: &TensorsConfig) -> Result<Dataset> {
        for key in self.tensors.keys() {
            let known = match key.splitn(3, '.').collect::<Vec<_>>()[..] {
                [split, "inputs" | "targets" | "masks", name] => {
                    SPLITS.contains(&split) && !name.is_empty()
                }
                _ => false,
            };
            if !known {
                return self.bad(format!("unexpected tensor `{key}`: keys are <split>.inputs.<name>, <split>.targets.<task> and <split>.masks.<task>, <split> being train, val or test"));
            }
            // A file may hold tasks a pipeline leaves out, but a mask needs its targets.
            if let [split, "masks", name] = key.splitn(3, '.').collect::<Vec<_>>()[..] {
                if self.get(split, "targets", name).is_none() {
                    return self.bad(format!(
                        "`{key}` masks task `{name}`, but there is no `{split}.targets.{name}`: a misspelt task?"
                    ));
                }
            }
        }
        if config.tasks.is_empty() {
            return Err(Error::config("tasks", "no task: name at least one"));
        }
        let inputs = self.inputs(config)?;
        let mut tasks = Vec::new();
        for (name, spec) in &config.tasks {
            let t = self.target("train", name)?;
            let dims: Vec<usize> = t.size().iter().skip(1).map(|&d| d as usize).collect();
            let kind = match (*spec, dims.as_slice()) {
                (TensorTask::Regression {}, []) => TaskType::Regression,
                (TensorTask::Binary {}, []) => TaskType::Binary,
                (TensorTask::Multiclass { classes }, []) => TaskType::Multiclass(classes),
                (TensorTask::Multilabel {}, &[n]) => TaskType::Multilabel(n),
                (TensorTask::DenseMulticlass { classes }, &[height, width]) => {
                    TaskType::DenseMulticlass {
                        classes,
                        height,
                        width,
                    }
                }
                (TensorTask::DenseRegression {}, &[channels, height, width]) => {
                    TaskType::DenseRegression {
                        channels,
                        height,
                        width,
                    }
                }
                (TensorTask::TokenMulticlass { classes }, &[length]) => {
                    TaskType::TokenMulticlass { classes, length }
                }
                _ => {
                    let (type_, form) = spec.form();
                    let found = describe(t);
                    return self.bad(format!(
                        "`train.targets.{name}` is {found}, expected {form} for a {type_} task"
                    ));
                }
            };
            tasks.push(Task::new(name.clone(), kind));
        }
        let [train, val, test] = SPLITS.map(|s| self.split(s, &inputs, &tasks));
        let (train, val, test) = (train?, val?, test?);
        Ok(Dataset {
            tasks,
            inputs,
            train,
            val,
            test,
        })
    }

    /// The inputs, as the train split holds them, with their vocabularies.
    fn inputs(&self, config: &TensorsConfig) -> Result<Vec<InputSpec>> {
        let path = self.path.display();
        let vocab_error =
            |name: &str, message| Err(Error::config(format!("vocab.{name}"), message));
        let train = self.under("train.inputs.");
        let mut specs = Vec::new();
        for &(name, t) in &train {
            let key = format!("train.inputs.{name}");
            if t.dim() == 0 {
                return self.bad(format!("`{key}` is a scalar; an input is [N, ...]"));
            }
            let shape: Vec<usize> = t.size()[1..].iter().map(|&d| d as usize).collect();
            if shape.contains(&0) {
                return self.bad(format!(
                    "`{key}` is {:?}: each example of it holds no value, so the model would read nothing",
                    t.size()
                ));
            }
            let columns = shape.last().copied().unwrap_or(1);
            let vocab = config.vocab.get(name);
            let fits =
                vocab.is_some_and(|v| !v.contains(&0) && (v.len() == 1 || v.len() == columns));
            let problem = match (t.kind(), vocab) {
                (Kind::Float, None) => {
                    specs.push(InputSpec::float(name, shape));
                    continue;
                }
                (Kind::Int64, Some(sizes)) if fits => {
                    specs.push(InputSpec::index(name, shape, sizes.clone()));
                    continue;
                }
                (Kind::Bool, None) => {
                    // A mask false everywhere leaves nothing to read (every
                    // sequence empty): almost surely a mistake in the file.
                    if t.numel() > 0 && !bool::try_from(t.f_any()?)? {
                        return self.bad(format!(
                            "`{key}` is false in every row: every position it masks is padding (every sequence empty)"
                        ));
                    }
                    specs.push(InputSpec::mask(name, shape));
                    continue;
                }
                (Kind::Float | Kind::Bool, Some(_)) => {
                    format!("is {}; only int64 inputs take a vocabulary", kind_name(t.kind()))
                }
                (Kind::Int64, None) => "holds int64 ids: give its vocabulary size (one per column, or one for every column)".into(),
                (Kind::Int64, Some(sizes)) => format!("has {columns} columns: give one vocabulary size of at least 1 for every column, or one per column, not {sizes:?}"),
                (kind, _) => {
                    let kind = kind_name(kind);
                    let message = format!("`{key}` is {kind}; an input is float32 (values), int64 (ids) or bool (masks)");
                    return self.bad(message);
                }
            };
            return vocab_error(name, format!("`{key}` in {path} {problem}"));
        }
        let names: Vec<&str> = train.iter().map(|(n, _)| *n).collect();
        if let Some(name) = config.vocab.keys().find(|n| !names.contains(&n.as_str())) {
            let names = names.join(", ");
            return vocab_error(
                name,
                format!("{path} has no input `train.inputs.{name}` (inputs: {names})"),
            );
        }
        Ok(specs)
    }

    fn target(&self, split: &str, name: &str) -> Result<&Tensor> {
        if let Some(t) = self.get(split, "targets", name) {
            return Ok(t);
        }
        let held: Vec<String> = self
            .under(&format!("{split}."))
            .iter()
            .map(|(k, _)| format!("{split}.{k}"))
            .collect();
        let held = if held.is_empty() {
            "nothing".into()
        } else {
            held.join(", ")
        };
        self.bad(format!(
            "no tensor `{split}.targets.{name}` for task `{name}`; the {split} split holds {held}"
        ))
    }

    fn split(&self, split: &str, specs: &[InputSpec], tasks: &[Task]) -> Result<Split> {
        let found = self.under(&format!("{split}.inputs."));
        let Some((_, first)) = found.first() else {
            return self.bad(format!(
                "the {split} split has no inputs: no tensor `{split}.inputs.<name>`"
            ));
        };
        let rows = first.size().first().copied().unwrap_or(0);
        let names = |n: Vec<&str>| n.join(", ");
        if found.len() != specs.len() || found.iter().zip(specs).any(|((n, _), s)| *n != s.name) {
            return self.bad(format!(
                "the {split} split's inputs are {} but the train split's are {}; every split holds the same inputs",
                names(found.iter().map(|(n, _)| *n).collect()),
                names(specs.iter().map(|s| s.name.as_str()).collect())
            ));
        }
        let mut inputs = Vec::new();
        for (spec, (name, t)) in specs.iter().zip(found) {
            let dtype = spec.kind.dtype();
            let expected: Vec<i64> = std::iter::once(rows)
                .chain(spec.shape.iter().map(|&d| d as i64))
                .collect();
            if t.kind() != dtype || t.size() != expected {
                return self.bad(format!("`{split}.inputs.{name}` is {}, expected {} {expected:?} (the shape per example of `train.inputs.{name}`)", describe(t), kind_name(dtype)));
            }
            // A NaN or infinite value would reach every output of its row.
            if t.is_floating_point() {
                if let Some(value) = first_where(t, &t.f_isfinite()?.f_logical_not()?)? {
                    return self.bad(format!(
                        "`{split}.inputs.{name}` holds {value}; inputs are finite"
                    ));
                }
            }
            inputs.push((name.to_string(), t.shallow_clone()));
        }
        let (mut targets, mut masks) = (Vec::new(), Vec::new());
        for task in tasks {
            let (name, key) = (&task.name, format!("{split}.targets.{}", task.name));
            let target = self.target(split, name)?;
            let (dtype, shape) = task.kind.target();
            let expected: Vec<i64> = std::iter::once(rows).chain(shape).collect();
            if target.kind() != dtype || target.size() != expected {
                return self.bad(format!(
                    "`{key}` is {}, expected {} {expected:?} for {} task `{name}`",
                    describe(target),
                    kind_name(dtype),
                    task.kind.name()
                ));
            }
            let mask = self.mask(split, name, rows)?;
            // Rows without a label may hold anything: they become 0.
            let target = match &mask {
                Some(m) => {
                    let m = m.f_reshape([vec![rows], vec![1; expected.len() - 1]].concat())?;
                    target.f_where_self(&m, &target.f_zeros_like()?)?
                }
                None => target.shallow_clone(),
            };
            if let Some(message) = bad_values(task.kind, &target)? {
                return self.bad(format!("`{key}` {message}"));
            }
            targets.push(target);
            masks.push(mask);
        }
        Ok(Split {
            inputs,
            targets,
            masks,
        })
    }

    fn mask(&self, split: &str, name: &str, rows: i64) -> Result<Option<Tensor>> {
        let Some(m) = self.get(split, "masks", name) else {
            return Ok(None);
        };
        let key = format!("{split}.masks.{name}");
        if m.size() != [rows] || !matches!(m.kind(), Kind::Bool | Kind::Uint8) {
            return self.bad(format!(
                "`{key}` is {}, expected bool [{rows}] (or uint8 0/1)",
                describe(m)
            ));
        }
        if m.kind() == Kind::Uint8 && bool::try_from(m.f_gt(1)?.f_any()?)? {
            return self.bad(format!("`{key}` holds values other than 0 and 1"));
        }
        Ok(Some(m.f_ne(0)?))
    }
}

/// What is wrong with the values of a target (placeholders already zeroed).
fn bad_values(kind: TaskType, t: &Tensor) -> Result<Option<String>> {
    let outside = |n: usize| -> Result<Tensor> { Ok(t.f_lt(0)?.f_logical_or(&t.f_ge(n as i64)?)?) };
    let (bad, why) = match kind {
        TaskType::Regression | TaskType::Vector(_) => {
            let why = "; targets are finite (a mask `masks.<task>` marks the rows without a label)";
            (t.f_isfinite()?.f_logical_not()?, why.into())
        }
        TaskType::Binary | TaskType::Multilabel(_) => (
            t.f_ne(0)?.f_logical_and(&t.f_ne(1)?)?,
            "; labels are 0 or 1".into(),
        ),
        TaskType::Multiclass(n) => (outside(n)?, format!(", outside the classes 0..{n}")),
        TaskType::DenseMulticlass { classes, .. } => {
            let bad = outside(classes)?.f_logical_and(&t.f_ne(IGNORE_PIXEL)?)?;
            (
                bad,
                format!(", outside the classes 0..{classes} and not {IGNORE_PIXEL} (unlabelled)"),
            )
        }
        TaskType::DenseRegression { .. } => (
            t.f_isinf()?,
            "; values are finite, or NaN where unlabelled".into(),
        ),
        TaskType::TokenMulticlass { classes, .. } => {
            let bad = outside(classes)?.f_logical_and(&t.f_ne(IGNORE_TOKEN)?)?;
            (
                bad,
                format!(", outside the classes 0..{classes} and not {IGNORE_TOKEN} (unlabelled)"),
            )
        }
    };
    Ok(first_where(t, &bad)?.map(|value| format!("holds {value}{why}")))
}

/// The first value of `t` where `bad` is true, if any, as written (an
/// integer exactly: 2^62 does not pass through a float).
fn first_where(t: &Tensor, bad: &Tensor) -> Result<Option<String>> {
    let found = t.f_masked_select(bad)?;
    Ok(match (found.numel(), found.is_floating_point()) {
        (0, _) => None,
        (_, true) => Some(found.f_double_value(&[0])?.to_string()),
        (_, false) => Some(found.f_int64_value(&[0])?.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    type Entries = Vec<(String, Tensor)>;

    fn f32s(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    fn i64s(values: &[i64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    fn ones(shape: &[i64], kind: Kind) -> Tensor {
        Tensor::ones(shape, (kind, tch::Device::Cpu))
    }

    /// A valid file: per split 2 rows of an image and tokens; a
    /// dense-multiclass, a dense-regression and a masked multilabel task.
    fn fixture() -> Entries {
        let mut t = Vec::new();
        for s in SPLITS {
            let mut add = |k: &str, v: Tensor| t.push((format!("{s}.{k}"), v));
            add("inputs.image", ones(&[2, 1, 3, 3], Kind::Float));
            add("inputs.tokens", i64s(&[1, 2, 3, 0, 5, 9], &[2, 3]));
            add(
                "inputs.tokens.mask",
                Tensor::from_slice(&[true, true, false, true, true, true]).view([2, 3]),
            );
            add("targets.seg", i64s(&[0, 1, 2, 255, 1, 1, 0, 2], &[2, 2, 2]));
            let depth = [1., f32::NAN, 2., 3., 4., 5., 6., 7.];
            add("targets.depth", f32s(&depth, &[2, 1, 2, 2]));
            add("targets.tags", f32s(&[1., 0., 1., 7., 7., 7.], &[2, 3]));
            add("masks.tags", Tensor::from_slice(&[1u8, 0]));
        }
        t
    }

    fn config() -> Value {
        json!({"kind": "tensors", "path": "d.safetensors", "vocab": {"tokens": [10]},
            "tasks": {"seg": {"type": "dense-multiclass", "classes": 3},
                "depth": {"type": "dense-regression"}, "tags": {"type": "multilabel"}}})
    }

    /// Writes `t` as `d.safetensors` and loads it as the runtime does.
    fn load(t: &Entries, config: &Value) -> (tempfile::TempDir, Result<Dataset>) {
        let dir = tempfile::tempdir().unwrap();
        Tensor::write_safetensors(t, dir.path().join("d.safetensors")).unwrap();
        crate::link();
        let data = crate::find("tensors").unwrap().load(config, dir.path());
        (dir, data)
    }

    /// The error of the fixture after `change`, the file's path as `<file>`.
    fn err(change: impl FnOnce(&mut Entries, &mut Value)) -> String {
        let (mut t, mut c) = (fixture(), config());
        change(&mut t, &mut c);
        let (dir, data) = load(&t, &c);
        let file = dir.path().join("d.safetensors").display().to_string();
        data.err().unwrap().to_string().replace(&file, "<file>")
    }

    fn set(t: &mut Entries, key: &str, v: Tensor) {
        t.retain(|(k, _)| k != key);
        t.push((key.into(), v));
    }

    /// The error of the fixture with tensor `key` replaced by `v`.
    fn with(key: &str, v: Tensor) -> String {
        err(|t, _| set(t, key, v))
    }

    /// The error of the fixture with a task `x` of type `task` and targets `v`.
    fn extra(task: Value, v: Tensor) -> String {
        err(|t, c| {
            c["tasks"]["x"] = task;
            for s in SPLITS {
                set(t, &format!("{s}.targets.x"), v.copy());
            }
        })
    }

    #[test]
    fn loads_images_tokens_dense_and_masked_tasks() {
        let mut t = fixture();
        set(&mut t, "val.masks.tags", Tensor::from_slice(&[true, false]));
        let (_dir, data) = load(&t, &config());
        let d = data.unwrap();
        let tokens = InputSpec::index("tokens", vec![3], vec![10]);
        let mask = InputSpec::mask("tokens.mask", vec![3]);
        assert_eq!(
            d.inputs,
            [InputSpec::float("image", vec![1, 3, 3]), tokens, mask]
        );
        let kinds: Vec<_> = d.tasks.iter().map(|t| (t.name.as_str(), t.kind)).collect();
        assert_eq!(format!("{kinds:?}"), "[(\"seg\", DenseMulticlass { classes: 3, height: 2, width: 2 }), (\"depth\", DenseRegression { channels: 1, height: 2, width: 2 }), (\"tags\", Multilabel(3))]");
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (2, 2, 2));
        for split in [&d.val, &d.test] {
            let mask = Vec::<bool>::try_from(split.masks[2].as_ref().unwrap()).unwrap();
            assert_eq!(mask, [true, false], "from bool and uint8");
        }
        assert!(d.val.masks[0].is_none() && d.val.masks[1].is_none());
        let tags = Vec::<f32>::try_from(d.val.targets[2].view([-1])).unwrap();
        assert_eq!(tags, [1., 0., 1., 0., 0., 0.], "unlabelled rows hold 0");
        assert_eq!(d.train.targets[0].int64_value(&[0, 1, 1]), IGNORE_PIXEL);
        assert!(d.train.targets[1].double_value(&[0, 0, 0, 1]).is_nan());
    }

    #[test]
    fn missing_truncated_and_garbage_files_and_footprint() {
        let (dir, _) = load(&fixture(), &config());
        let kind = crate::find("tensors").unwrap();
        let file = dir.path().join("d.safetensors");
        let missing = json!({"kind": "tensors", "path": "no.safetensors", "tasks": {}});
        let e = kind.check(&missing, dir.path()).err().unwrap().to_string();
        let no = dir.path().join("no.safetensors").display().to_string();
        assert_eq!(e, format!("data.path: cannot read data file {no}: No such file or directory (data.path is relative to the pipeline file)"));
        let bytes = std::fs::read(&file).unwrap();
        let half = &bytes[..bytes.len() / 2];
        for (broken, why) in [
            (
                half,
                "the file is too short for a safetensors header (truncated?)",
            ),
            (b"garbage bytes", "its header length is implausibly large"),
        ] {
            std::fs::write(&file, broken).unwrap();
            let e = kind.load(&config(), dir.path()).err().unwrap().to_string();
            let expected = format!("{}: not a valid safetensors file: {why}", file.display());
            assert_eq!(e, expected);
        }
        let footprint = |path: Value| {
            kind.footprint(&json!({"path": path, "tasks": {}}), dir.path())
                .unwrap()
        };
        let size = std::fs::metadata(&file).unwrap().len();
        let what = format!(
            "data.path = \"{}\" ({size} bytes, read whole, then copied into tensors)",
            file.display()
        );
        assert_eq!(footprint(json!(file)), Some((2 * size as u128, what)));
        let relative = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            footprint(json!(relative)).map(|(n, _)| n),
            Some(2 * size as u128)
        );
        assert_eq!(
            footprint(json!("missing.safetensors")),
            None,
            "check() reports it"
        );
    }

    #[test]
    fn task_types_take_only_their_own_keys() {
        let typed = taskweave_plugin_api::config::typed::<TensorsConfig>;
        let c = |task: Value| typed(&json!({"path": "d", "tasks": {"t": task}})).is_ok();
        assert!(c(json!({"type": "dense-multiclass", "classes": 3})));
        assert!(!c(json!({"type": "dense-regression", "classes": 3})));
        assert!(!c(json!({"type": "dense_multiclass", "classes": 3})));
        let schema = crate::find("tensors").unwrap().schema().to_string();
        assert!(schema.contains("\"dense-multiclass\"") && schema.contains("\"vocab\""));
    }

    #[test]
    fn missing_inputs_and_targets_and_unexpected_keys() {
        let e = err(|t, _| t.retain(|(k, _)| !k.starts_with("val.inputs")));
        assert_eq!(
            e,
            "<file>: the val split has no inputs: no tensor `val.inputs.<name>`"
        );
        let e = err(|t, _| t.retain(|(k, _)| k != "test.targets.depth"));
        assert_eq!(e, "<file>: no tensor `test.targets.depth` for task `depth`; the test split holds test.inputs.image, test.inputs.tokens, test.inputs.tokens.mask, test.masks.tags, test.targets.seg, test.targets.tags");
        let e = err(|t, _| t.retain(|(k, _)| k != "val.inputs.image"));
        assert_eq!(e, "<file>: the val split's inputs are tokens, tokens.mask but the train split's are image, tokens, tokens.mask; every split holds the same inputs");
        let e = with("train.target.seg", Tensor::from(1));
        assert_eq!(e, "<file>: unexpected tensor `train.target.seg`: keys are <split>.inputs.<name>, <split>.targets.<task> and <split>.masks.<task>, <split> being train, val or test");
    }

    #[test]
    fn targets_of_another_dtype_or_shape() {
        let e = with("train.targets.tags", ones(&[2], Kind::Float));
        assert_eq!(e, "<file>: `train.targets.tags` is float32 [2], expected float32 [N, labels] for a multilabel task");
        let e = with("val.targets.seg", ones(&[2, 2, 2], Kind::Float));
        assert_eq!(e, "<file>: `val.targets.seg` is float32 [2, 2, 2], expected int64 [2, 2, 2] for dense-multiclass task `seg`");
        let e = with("test.targets.depth", ones(&[2, 1, 2, 3], Kind::Float));
        assert_eq!(e, "<file>: `test.targets.depth` is float32 [2, 1, 2, 3], expected float32 [2, 1, 2, 2] for dense-regression task `depth`");
    }

    #[test]
    fn a_nan_or_infinite_input_is_named() {
        let image = ones(&[2, 1, 3, 3], Kind::Float);
        let _ = image.get(1).get(0).get(2).get(0).fill_(f64::INFINITY);
        let e = with("test.inputs.image", image);
        assert_eq!(
            e,
            "<file>: `test.inputs.image` holds inf; inputs are finite"
        );
        let image = ones(&[2, 1, 3, 3], Kind::Float);
        let _ = image.get(0).get(0).get(0).get(1).fill_(f64::NAN);
        let e = with("train.inputs.image", image);
        assert_eq!(
            e,
            "<file>: `train.inputs.image` holds NaN; inputs are finite"
        );
    }

    #[test]
    fn a_dense_task_without_one_labelled_value_in_a_split_is_refused() {
        let e = with("val.targets.seg", i64s(&[255; 8], &[2, 2, 2]));
        assert_eq!(
            e,
            "data.tasks.seg: no pixel of the validation split has a label for this task"
        );
        let e = with("test.targets.depth", f32s(&[f32::NAN; 8], &[2, 1, 2, 2]));
        assert_eq!(
            e,
            "data.tasks.depth: no pixel of the test split has a label for this task"
        );
    }

    #[test]
    fn a_mask_without_targets_is_refused() {
        let e = with("val.masks.tgas", Tensor::from_slice(&[1u8, 0]));
        assert_eq!(
            e,
            "<file>: `val.masks.tgas` masks task `tgas`, but there is no `val.targets.tgas`: a misspelt task?"
        );
    }

    #[test]
    fn an_input_without_values_per_example_is_refused() {
        let e = with("train.inputs.image", ones(&[2, 1, 0, 3], Kind::Float));
        assert_eq!(
            e,
            "<file>: `train.inputs.image` is [2, 1, 0, 3]: each example of it holds no value, so the model would read nothing"
        );
    }

    #[test]
    fn inputs_of_another_dtype_or_shape_or_vocabulary() {
        let e = with("val.inputs.image", ones(&[2, 1, 3, 4], Kind::Float));
        assert_eq!(e, "<file>: `val.inputs.image` is float32 [2, 1, 3, 4], expected float32 [2, 1, 3, 3] (the shape per example of `train.inputs.image`)");
        let e = with("train.inputs.image", ones(&[2, 1, 3, 3], Kind::Double));
        assert_eq!(
            e,
            "<file>: `train.inputs.image` is float64; an input is float32 (values), int64 (ids) or bool (masks)"
        );
        let e = err(|_, c| c["vocab"] = json!({}));
        assert_eq!(e, "data.vocab.tokens: `train.inputs.tokens` in <file> holds int64 ids: give its vocabulary size (one per column, or one for every column)");
        let e = err(|_, c| c["vocab"]["words"] = json!([3]));
        assert_eq!(
            e,
            "data.vocab.words: <file> has no input `train.inputs.words` (inputs: image, tokens, tokens.mask)"
        );
        let e = err(|_, c| c["vocab"]["image"] = json!([3]));
        assert_eq!(e, "data.vocab.image: `train.inputs.image` in <file> is float32; only int64 inputs take a vocabulary");
        let e = with(
            "train.inputs.tokens.mask",
            Tensor::zeros([2, 3], (Kind::Bool, tch::Device::Cpu)),
        );
        assert_eq!(e, "<file>: `train.inputs.tokens.mask` is false in every row: every position it masks is padding (every sequence empty)");
        let e = err(|_, c| c["vocab"]["tokens"] = json!([10, 10]));
        assert_eq!(e, "data.vocab.tokens: `train.inputs.tokens` in <file> has 3 columns: give one vocabulary size of at least 1 for every column, or one per column, not [10, 10]");
    }

    #[test]
    fn classes_and_labels_outside_their_range() {
        let e = with(
            "val.targets.seg",
            i64s(&[0, 1, 3, 255, 1, 1, 0, 2], &[2, 2, 2]),
        );
        assert_eq!(
            e,
            "<file>: `val.targets.seg` holds 3, outside the classes 0..3 and not 255 (unlabelled)"
        );
        let e = extra(
            json!({"type": "multiclass", "classes": 2}),
            i64s(&[1, 2], &[2]),
        );
        assert_eq!(
            e,
            "<file>: `train.targets.x` holds 2, outside the classes 0..2"
        );
        // An id beyond float64's integers, exactly.
        let e = extra(
            json!({"type": "multiclass", "classes": 2}),
            i64s(&[1, (1 << 62) + 1], &[2]),
        );
        assert_eq!(
            e,
            "<file>: `train.targets.x` holds 4611686018427387905, outside the classes 0..2"
        );
        let e = extra(json!({"type": "regression"}), f32s(&[1., f32::NAN], &[2]));
        assert_eq!(e, "<file>: `train.targets.x` holds NaN; targets are finite (a mask `masks.<task>` marks the rows without a label)");
        let e = with(
            "test.targets.tags",
            f32s(&[1., 0., 2., 7., 7., 7.], &[2, 3]),
        );
        assert_eq!(e, "<file>: `test.targets.tags` holds 2; labels are 0 or 1");
    }

    #[test]
    fn masks_of_another_shape_or_values() {
        let e = with("val.masks.tags", Tensor::from_slice(&[true, false, true]));
        assert_eq!(
            e,
            "<file>: `val.masks.tags` is bool [3], expected bool [2] (or uint8 0/1)"
        );
        let e = with("val.masks.tags", Tensor::from_slice(&[1u8, 2]));
        assert_eq!(
            e,
            "<file>: `val.masks.tags` holds values other than 0 and 1"
        );
    }
}
