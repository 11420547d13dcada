//! `csv`: the user's own table. Columns are mapped to inputs and to tasks (one
//! task per target column, with its type); rows are split into train/val/test
//! by fractions or by a column. Number columns become the float input
//! `features`; categorical columns (`fields`) and behaviour-sequence columns
//! (`sequences`, a list of ids per cell) become id inputs ([`categorical`]),
//! so users can bring their own interaction logs. Every error names the file,
//! and where it applies the row (its line number in the file) and the column.

mod categorical;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::{did_you_mean, JsonSchema};
use tch::Tensor;

use crate::dataset::{matrix, standardize};
use crate::error::{check_data_file, unreadable, Error, Result};
use crate::split::{self, Fractions};
use crate::{
    DataKind, Dataset, InputSpec, RegressionLoss, Source, Split, Task, TaskType, FEATURES,
};
pub use categorical::SequenceSpec;
use categorical::{IdColumns, SequenceColumn};

/// The most classes a multiclass task may have.
const MAX_CLASSES: u32 = 1 << 24;

/// `[data] kind = "csv"`: a table with a header row.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The CSV file (with a header row), relative to the pipeline file.
    pub path: String,
    /// Number input columns (the float input `features`); default: every
    /// column that is not a task, a field, a sequence or the split column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Categorical columns, in order: the int64 input `fields` `[F]`, each
    /// column numbering its values (see [`categorical`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Behaviour-sequence columns by behaviour name: `name = { length = L }`
    /// makes the inputs `seq.<name>` and `seq.<name>.mask`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sequences: IndexMap<String, SequenceSpec>,
    /// One entry per target column, in task order: `column = { type = "regression" | "binary" | "multiclass" }`.
    pub tasks: IndexMap<String, TaskSpec>,
    /// Fractions of the rows for each split, after the shuffle (default
    /// 0.8 / 0.1 / 0.1); not with `split_column`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Fractions>,
    /// A column holding train / val / test per row (instead of fractions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_column: Option<String>,
    /// Shuffle the rows before splitting by fractions.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Shuffle seed.
    #[serde(default)]
    pub seed: u64,
    /// Standardise inputs with training statistics.
    #[serde(default = "yes")]
    pub standardize_inputs: bool,
}

fn yes() -> bool {
    true
}

/// What one target column predicts; each type takes only its own keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TaskSpec {
    /// A real number.
    Regression {
        /// Training loss.
        #[serde(default)]
        loss: RegressionLoss,
        /// Train on standardised targets (metrics stay in original units).
        #[serde(default = "yes")]
        standardize: bool,
    },
    /// 0 or 1.
    Binary {},
    /// One of `classes` integer labels 0..classes-1.
    Multiclass {
        /// Number of classes.
        #[schemars(range(min = 2, max = MAX_CLASSES))]
        classes: u32,
    },
}

/// The `csv` data kind.
pub struct Csv;

inventory::submit! { DataKind::of::<Csv>() }

struct TaskColumn {
    column: usize,
    task: Task,
    standardize: bool,
}

/// Rows go to splits by fractions or by a column, never both (one would be
/// ignored without a word). Run directories written before `split` was
/// optional hold the default fractions beside their column: those pass.
fn check_split(config: &CsvConfig) -> Result<()> {
    match (&config.split, &config.split_column) {
        (Some(fractions), Some(_)) if *fractions == Fractions::default() => Ok(()),
        (Some(_), Some(column)) => Err(Error::config(
            "split",
            format!("give either split (fractions) or split_column, not both: split_column = {column:?} assigns every row"),
        )),
        (Some(fractions), None) => fractions.check(),
        _ => Ok(()),
    }
}

fn path(config: &CsvConfig, dir: &Path) -> PathBuf {
    dir.join(&config.path)
}

impl Source for Csv {
    const NAME: &'static str = "csv";
    type Config = CsvConfig;

    fn check(config: &CsvConfig, dir: &Path) -> Result<()> {
        check_split(config)?;
        check_data_file(&path(config, dir))
    }

    fn load(config: &CsvConfig, dir: &Path) -> Result<Dataset> {
        check_split(config)?;
        let path = path(config, dir);
        let file_error = |message: String| Error::File {
            path: path.clone(),
            message,
        };
        let cell_error = |row: u64, column: &str, message: String| Error::Cell {
            path: path.clone(),
            row,
            column: column.to_string(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::config(
                "path",
                format!(
                    "{} is not UTF-8 text (UTF-16 or a legacy encoding?); save it as UTF-8 CSV",
                    path.display()
                ),
            ),
            _ => unreadable(&path, &e),
        })?;
        if text.trim().is_empty() {
            return Err(file_error(
                "the file is empty; it needs a header row and data rows".into(),
            ));
        }
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| file_error(format!("cannot read the header row: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        // A name twice would make `column` pick the first silently (and the
        // second would become an input: a label leak when it is a task).
        if let Some((j, i)) = crate::first_repeat(&header) {
            return Err(file_error(format!(
                "the header names column `{}` twice (columns {} and {}); names must be unique",
                header[i],
                j + 1,
                i + 1
            )));
        }
        // One column whose name holds another separator: not a comma-separated file.
        let separator = match header.as_slice() {
            [only] => [';', '\t', '|'].into_iter().find(|c| only.contains(*c)),
            _ => None,
        };
        let column = |name: &str| -> Result<usize> {
            header.iter().position(|h| h == name).ok_or_else(|| {
                let hint = match separator {
                    Some(c) => format!(
                        "; the header reads as one column: is the file separated by {c:?}? \
                         taskweave reads comma-separated files (save it as CSV)"
                    ),
                    None => did_you_mean(name, header.iter().map(String::as_str))
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default(),
                };
                file_error(format!(
                    "no column `{name}` (columns: {}){hint}",
                    header.join(", ")
                ))
            })
        };

        let mut targets = Vec::new();
        for (name, spec) in &config.tasks {
            let (kind, loss, standardize) = match *spec {
                TaskSpec::Regression { loss, standardize } => {
                    (TaskType::Regression, loss, standardize)
                }
                TaskSpec::Binary {} => (TaskType::Binary, RegressionLoss::Mse, false),
                TaskSpec::Multiclass { classes } => (
                    TaskType::Multiclass(classes as usize),
                    RegressionLoss::Mse,
                    false,
                ),
            };
            let primary = match kind {
                TaskType::Regression if loss == RegressionLoss::Mae => "mae",
                _ => kind.primary(),
            };
            let task = Task {
                name: name.clone(),
                kind,
                loss,
                scale: None,
                primary,
            };
            targets.push(TaskColumn {
                column: column(name)?,
                task,
                standardize,
            });
        }
        if targets.is_empty() {
            return Err(Error::config(
                "tasks",
                "no task: name at least one target column",
            ));
        }
        let split_column = config.split_column.as_deref().map(column).transpose()?;
        let field_columns: Vec<usize> = config
            .fields
            .iter()
            .map(|n| column(n))
            .collect::<Result<_>>()?;
        let mut sequences = Vec::new();
        for (name, spec) in &config.sequences {
            let col = column(spec.column.as_deref().unwrap_or(name))?;
            sequences.push(SequenceColumn::new(name, spec, col, &config.fields)?);
        }
        let task_or_split =
            |i: usize| Some(i) == split_column || targets.iter().any(|t| t.column == i);
        let id_columns = field_columns
            .iter()
            .map(|&c| ("fields", c))
            .chain(sequences.iter().map(|s| ("sequences", s.column)));
        for (key, col) in id_columns {
            if task_or_split(col) {
                return Err(Error::config(
                    key,
                    format!(
                        "column `{}` is a task or the split column; an input cannot be one",
                        header[col]
                    ),
                ));
            }
        }
        let mut ids = IdColumns::new(field_columns.len(), sequences);
        let taken = |i: usize| {
            task_or_split(i)
                || field_columns.contains(&i)
                || ids.sequences().iter().any(|s| s.column == i)
        };
        let inputs: Vec<usize> = match &config.inputs {
            Some(names) => names.iter().map(|n| column(n)).collect::<Result<_>>()?,
            None => (0..header.len()).filter(|&i| !taken(i)).collect(),
        };
        // An unnamed column is most often a saved index (pandas' `to_csv`),
        // which as an input could leak the label of a sorted file.
        if let Some(&col) = inputs.iter().find(|&&c| header[c].trim().is_empty()) {
            return Err(Error::config(
                "inputs",
                format!(
                    "column {} has no name in the header (a saved row index?); name it, or list the \
                     input columns in data.inputs to leave it out",
                    col + 1
                ),
            ));
        }
        for (key, columns) in [("inputs", &inputs), ("fields", &field_columns)] {
            if let Some((_, k)) = crate::first_repeat(columns) {
                return Err(Error::config(
                    key,
                    format!("column `{}` is listed twice", header[columns[k]]),
                ));
            }
        }
        if config.inputs.is_some() {
            if let Some(&col) = inputs.iter().find(|&&c| taken(c)) {
                return Err(Error::config(
                    "inputs",
                    format!(
                        "column `{}` is a task, the split column or an id column; an input cannot be one",
                        header[col]
                    ),
                ));
            }
        }
        if inputs.is_empty() && ids.is_empty() {
            return Err(file_error(
                "no input columns left after the task and split columns".into(),
            ));
        }

        // Parse every row: inputs, targets and split label.
        let mut x: Vec<f32> = Vec::new();
        // None: the row has no label for the task (an empty cell).
        let mut y: Vec<Vec<Option<f64>>> = vec![Vec::new(); targets.len()];
        let mut split_of: Vec<usize> = Vec::new();
        // Text where the inputs default to every other column: one to leave out.
        let text_input = match config.inputs {
            None => "; a text column is no input: list the inputs in data.inputs (or read it as ids with data.fields)",
            Some(_) => "",
        };
        for record in reader.records() {
            let record = record.map_err(|e| file_error(csv_error(&e, header.len(), &text)))?;
            let line = line_at(&text, record.position());
            // `hint`: what to do when the cell is no number at all.
            let cell = |col: usize, hint: &str| -> Result<f64> {
                let raw = record.get(col).unwrap_or("");
                crate::float32(raw).map_err(|message| {
                    let hint = match raw.parse::<f64>() {
                        Ok(_) => "",
                        // Empty label cells are masked before this: an input's.
                        Err(_) if raw.trim().is_empty() => {
                            "; an input needs a value in every row: fill the cell, or leave the \
                             column out of data.inputs"
                        }
                        Err(_) => hint,
                    };
                    cell_error(line, &header[col], format!("{message}{hint}"))
                })
            };
            for &col in &inputs {
                x.push(cell(col, text_input)? as f32);
            }
            let text = |col: usize| record.get(col).unwrap_or("");
            ids.push(
                field_columns.iter().map(|&c| text(c).to_string()).collect(),
                ids.sequences().iter().map(|s| text(s.column)).collect(),
            );
            for (t, target) in targets.iter().enumerate() {
                if record.get(target.column).unwrap_or("").is_empty() {
                    y[t].push(None);
                    continue;
                }
                let v = cell(
                    target.column,
                    "; a label missing from a row is an empty cell",
                )?;
                let ok = match target.task.kind {
                    TaskType::Binary => v == 0.0 || v == 1.0,
                    TaskType::Multiclass(n) => v.fract() == 0.0 && v >= 0.0 && (v as usize) < n,
                    // A CSV cell holds one number: the other types are
                    // not offered by this kind's `TaskSpec`.
                    _ => true,
                };
                if !ok {
                    let want = match target.task.kind {
                        TaskType::Multiclass(n) => format!("an integer class in 0..{n}"),
                        _ => "0 or 1".to_string(),
                    };
                    return Err(cell_error(
                        line,
                        &header[target.column],
                        format!("`{v}` is not {want}"),
                    ));
                }
                y[t].push(Some(v));
            }
            if let Some(col) = split_column {
                let raw = record.get(col).unwrap_or("");
                let s = ["train", "val", "test"]
                    .iter()
                    .position(|s| *s == raw)
                    .ok_or_else(|| {
                        cell_error(
                            line,
                            &header[col],
                            format!("`{raw}` is not train, val or test"),
                        )
                    })?;
                split_of.push(s);
            }
        }
        let rows = y[0].len();
        if rows == 0 {
            return Err(file_error("the file has a header but no data rows".into()));
        }
        if split_column.is_none() {
            split_of = split::assign(
                rows,
                &config.split.unwrap_or_default(),
                config.shuffle,
                config.seed,
            )?;
        }

        let d = inputs.len();
        let rows_of: Vec<Vec<usize>> = (0..3)
            .map(|which| (0..rows).filter(|r| split_of[*r] == which).collect())
            .collect();
        let (mut specs, id_inputs) = ids.inputs([&rows_of[0], &rows_of[1], &rows_of[2]])?;
        let make = |which: usize, id_inputs: Vec<(String, Tensor)>| -> Result<Split> {
            let idx = &rows_of[which];
            let xs: Vec<f32> = idx
                .iter()
                .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
                .collect();
            // A missing label holds 0 as a placeholder; its mask is false.
            let value = |col: &[Option<f64>], r: usize| col[r].unwrap_or(0.0);
            let targets_of = targets
                .iter()
                .zip(&y)
                .map(|(t, col)| match t.task.kind {
                    TaskType::Multiclass(_) => Tensor::from_slice(
                        &idx.iter()
                            .map(|&r| value(col, r) as i64)
                            .collect::<Vec<_>>(),
                    ),
                    _ => Tensor::from_slice(
                        &idx.iter()
                            .map(|&r| value(col, r) as f32)
                            .collect::<Vec<_>>(),
                    ),
                })
                .collect();
            let masks = y
                .iter()
                .map(|col| {
                    col.iter().any(Option::is_none).then(|| {
                        Tensor::from_slice(
                            &idx.iter().map(|&r| col[r].is_some()).collect::<Vec<_>>(),
                        )
                    })
                })
                .collect();
            let mut inputs = Vec::new();
            if d > 0 {
                inputs.push((FEATURES.to_string(), matrix(xs, idx.len(), d)?));
            }
            inputs.extend(id_inputs);
            Ok(Split {
                inputs,
                targets: targets_of,
                masks,
            })
        };
        let [tr, va, te] = id_inputs;
        let (mut train, mut val, mut test) = (make(0, tr)?, make(1, va)?, make(2, te)?);
        if d > 0 && config.standardize_inputs && !train.is_empty() {
            // `features` comes first.
            let [tr, va, te] = [&mut train, &mut val, &mut test].map(|s| &mut s.inputs[0].1);
            standardize([tr, va, te])?;
        }
        let mut tasks = Vec::new();
        for (t, target) in targets.into_iter().enumerate() {
            let mut task = target.task;
            // Statistics of the labelled training rows only; without one there
            // is nothing to standardise by (the data's check names the task).
            let labelled = match &train.masks[t] {
                Some(mask) => train.targets[t].f_masked_select(mask)?,
                None => train.targets[t].shallow_clone(),
            };
            if target.standardize && labelled.numel() > 0 {
                let mean = labelled.f_mean(tch::Kind::Double)?.double_value(&[]);
                let std = labelled.f_std(false)?.double_value(&[]).max(1e-12);
                for split in [&mut train, &mut val, &mut test] {
                    split.targets[t] = split.targets[t].f_sub_scalar(mean)?.f_div_scalar(std)?;
                }
                task.scale = Some((mean, std));
            }
            tasks.push(task);
        }
        if d > 0 {
            specs.insert(0, InputSpec::float(FEATURES, vec![d]));
        }
        Ok(Dataset {
            tasks,
            inputs: specs,
            train,
            val,
            test,
        })
    }
}

/// The line of `text` where the record at `pos` starts, from 1. The csv
/// crate's own line count (and byte position) stops at the `\r` of a
/// `\r\n` line end: the rest of that line end is skipped here.
fn line_at(text: &str, pos: Option<&csv::Position>) -> u64 {
    let bytes = text.as_bytes();
    let mut start = pos.map_or(0, |p| p.byte() as usize).min(bytes.len());
    while start < bytes.len() && (bytes[start] == b'\r' || bytes[start] == b'\n') {
        start += 1;
    }
    1 + bytes[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

fn csv_error(err: &csv::Error, fields: usize, text: &str) -> String {
    match err.kind() {
        csv::ErrorKind::UnequalLengths { pos, len, .. } => {
            let line = line_at(text, pos.as_ref());
            // A quote left open swallows the rows after it into one field.
            let quote = match (*len as usize) < fields {
                true => " (a quote left open in it or before it joins rows into one field)",
                false => "",
            };
            format!("row {line} has {len} fields, but the header has {fields}{quote}")
        }
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("d.csv"), text).unwrap();
    }

    fn config(extra: Value) -> CsvConfig {
        let mut c = json!({"path": "d.csv",
            "tasks": {"y": {"type": "regression", "loss": "mse", "standardize": true}},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "shuffle": false, "seed": 0,
            "standardize_inputs": false});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        if c.get("split_column").is_some() {
            c.as_object_mut().unwrap().remove("split");
        }
        taskweave_plugin_api::config::typed(&c).unwrap()
    }

    fn load(config: &CsvConfig, dir: &Path) -> Result<Dataset> {
        Csv::load(config, dir)
    }

    fn err(text: &str, extra: Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), text);
        match load(&config(extra), dir.path()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_label_cells_are_masked_and_statistics_use_labelled_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a,y\n1,10\n2,\n3,20\n4,\n5,30\n6,40\n7,\n8,50\n",
        );
        let d = load(&config(json!({})), dir.path()).unwrap();
        let mask = Vec::<bool>::try_from(d.train.masks[0].as_ref().unwrap()).unwrap();
        assert_eq!(mask, [true, false, true, false]);
        assert_eq!(
            d.tasks[0].scale,
            Some((15.0, 5.0)),
            "mean and std of 10 and 20"
        );
        assert!(d.val.masks[0].is_some() && d.test.masks[0].is_some());
        // Every row labelled: no mask at all.
        write(dir.path(), "a,y\n1,10\n2,11\n3,20\n4,21\n");
        assert!(load(&config(json!({})), dir.path()).unwrap().train.masks[0].is_none());
    }

    #[test]
    fn a_task_without_any_training_label_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a,y\n1,\n2,\n3,5\n4,6\n");
        let table = json!({"kind": "csv", "path": "d.csv",
            "tasks": {"y": {"type": "regression"}},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "shuffle": false});
        crate::link();
        let kind = crate::find("csv").unwrap();
        let e = kind.load(&table, dir.path()).err().unwrap().to_string();
        assert_eq!(
            e,
            "data.tasks.y: no row of the training split has a label for this task"
        );
        // Labels in training only: nothing to select by or to report.
        write(dir.path(), "a,y\n1,5\n2,6\n3,\n4,\n");
        let e = kind.load(&table, dir.path()).err().unwrap().to_string();
        assert_eq!(
            e,
            "data.tasks.y: no row of the validation split has a label for this task"
        );
    }

    #[test]
    fn loads_tasks_and_splits_with_standardised_targets() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a,b,y,c\n1,2,10,0\n3,4,20,1\n5,6,30,2\n7,8,40,0\n",
        );
        let tasks = json!({"y": {"type": "regression", "loss": "mse", "standardize": true},
                           "c": {"type": "multiclass", "classes": 3}});
        let d = load(&config(json!({"tasks": tasks})), dir.path()).unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (2, 1, 1));
        assert_eq!(
            d.inputs[0].shape,
            [2],
            "inputs default to the non-task columns"
        );
        assert_eq!(d.tasks[1].kind, TaskType::Multiclass(3));
        let (mean, std) = d.tasks[0].scale.unwrap();
        assert_eq!((mean, std), (15.0, 5.0));
        assert_eq!(Vec::<f32>::try_from(&d.test.targets[0]).unwrap(), vec![5.0]);
        assert_eq!(d.test.targets[1].kind(), tch::Kind::Int64);
    }

    #[test]
    fn an_unnamed_column_is_no_input_unless_left_out() {
        let text = ",a,y\n0,1,2\n1,2,3\n2,3,4\n3,4,5\n";
        let e = err(text, json!({}));
        assert!(
            e.contains("data.inputs") && e.contains("column 1 has no name"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), text);
        load(&config(json!({"inputs": ["a"]})), dir.path()).unwrap();
    }

    #[test]
    fn a_file_in_another_encoding_says_to_save_it_as_utf8() {
        let dir = tempfile::tempdir().unwrap();
        // "a,y" in UTF-16 with its byte-order mark.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a,y\n1,2\n".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        std::fs::write(dir.path().join("d.csv"), utf16).unwrap();
        let e = load(&config(json!({})), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.contains("save it as UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_and_empty_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&config(json!({})), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("cannot read data file") && e.contains("d.csv"),
            "{e}"
        );
        assert!(err("", json!({})).contains("d.csv: the file is empty"));
        assert!(err("a,y\n", json!({})).contains("has a header but no data rows"));
    }

    #[test]
    fn missing_column_suggests_the_nearest() {
        let e = err("a,yy\n1,2\n", json!({}));
        assert!(
            e.contains("no column `y` (columns: a, yy); did you mean `yy`?"),
            "{e}"
        );
        let e = err("a;y\n1;2\n", json!({}));
        assert!(e.contains("is the file separated by ';'?"), "{e}");
    }

    #[test]
    fn non_numeric_value_names_row_and_column() {
        let e = err("a,y\n1,2\n3,abc\n", json!({}));
        assert!(
            e.contains("d.csv: row 3, column `y`: `abc` is not a finite number; a label missing from a row is an empty cell"),
            "{e}"
        );
        // Text in a column read as an input by default: how to leave it out.
        let e = err("a,name,y\n1,x,2\n", json!({}));
        assert!(e.contains("`x` is not a finite number; a text column is no input: list the inputs in data.inputs"), "{e}");
        // A number out of range needs no such hint.
        let e = err("a,y\n1e39,2\n", json!({}));
        assert!(!e.contains("text column"), "{e}");
        // Nor an empty input cell: it is a missing value.
        let e = err("a,y\n1,2\n,3\n", json!({}));
        assert!(
            e.contains("row 3, column `a`") && e.contains("an input needs a value in every row"),
            "{e}"
        );
        // The file's line, whatever ends its lines.
        let e = err("a,y\r\n1,2\r\n3,abc\r\n", json!({}));
        assert!(e.contains("row 3, column `y`"), "{e}");
    }

    #[test]
    fn ragged_rows_and_bad_labels_and_bad_fractions() {
        assert!(err("a,y\n1,2\n3\n", json!({}))
            .contains("row 3 has 1 fields, but the header has 2 (a quote left open"));
        assert!(err("a,y\r\n1,2\r\n3\r\n", json!({})).contains("row 3 has 1 fields"));
        let binary = json!({"tasks": {"y": {"type": "binary"}}});
        assert!(err("a,y\n1,2\n", binary).contains("row 2, column `y`: `2` is not 0 or 1"));
        let bad = json!({"split": {"train": 0.5, "val": 0.5, "test": 0.5}});
        assert!(err("a,y\n1,2\n", bad).contains("must add up to 1"));
    }

    #[test]
    fn split_column_assigns_rows() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a,y,s\n1,2,train\n3,4,test\n5,6,val\n7,8,train\n",
        );
        let d = load(&config(json!({"split_column": "s"})), dir.path()).unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (2, 1, 1));
        // No row says `val`: the column is what to look at, not fractions.
        write(dir.path(), "a,y,s\n1,2,train\n3,4,test\n");
        let table = serde_json::to_value(config(json!({"split_column": "s"}))).unwrap();
        let e = crate::find("csv")
            .unwrap()
            .load(&table, dir.path())
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("no row of the data has `val` in its `s` column"),
            "{e}"
        );
        write(
            dir.path(),
            "a,y,s\n1,2,train\n3,4,test\n5,6,val\n7,8,train\n",
        );
        assert_eq!(d.inputs[0].shape, [1]);
        // Fractions and a column both: one would be ignored.
        let mut c: Value = serde_json::to_value(config(json!({}))).unwrap();
        c["split_column"] = json!("s");
        let e = Csv::check(
            &taskweave_plugin_api::config::typed(&c).unwrap(),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("data.split: give either split"),
            "{e}"
        );
        // What run directories written before `split` was optional hold.
        c["split"] = serde_json::to_value(Fractions::default()).unwrap();
        assert!(Csv::check(
            &taskweave_plugin_api::config::typed(&c).unwrap(),
            dir.path()
        )
        .is_ok());
        let e = err("a,y,s\n1,2,training\n", json!({"split_column": "s"}));
        assert!(
            e.contains("row 2, column `s`: `training` is not train, val or test"),
            "{e}"
        );
    }

    #[test]
    fn fields_and_sequences_number_the_training_values_and_keep_the_latest_items() {
        let dir = tempfile::tempdir().unwrap();
        // Rows 2-5 train, 6 val, 7 test (split column).
        write(
            dir.path(),
            "user,item,x,hist,tags,y,s\n\
             ann,i1,1,i2|i3,a,1,train\n\
             bob,i2,2,,a;b,0,train\n\
             ann,i3,3,i1|i2|i3|i4,b,1,train\n\
             cat,i1,4,i9,a,0,train\n\
             dan,i7,5,i1|i8|i2,zz,1,val\n\
             ann,i2,6,i3,a,0,test\n",
        );
        let sequences = json!({
            "hist": {"field": "item", "length": 2},
            "tags": {"length": 3, "separator": ";"}});
        let c = config(
            json!({"tasks": {"y": {"type": "binary"}}, "split_column": "s",
            "fields": ["user", "item"], "sequences": sequences}),
        );
        let d = load(&c, dir.path()).unwrap();
        let names: Vec<&str> = d.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "features",
                "fields",
                "seq.hist",
                "seq.hist.mask",
                "seq.tags",
                "seq.tags.mask"
            ]
        );
        assert_eq!(d.inputs[0].shape, [1], "x is the only number column left");
        // user: ann bob cat (+ padding); item: i1 i2 i3, then the history's i4 i9.
        assert_eq!(d.inputs[1].vocab, [4, 6]);
        assert_eq!(d.inputs[2].vocab, [6], "hist shares item's ids");
        assert_eq!(d.inputs[4].vocab, [3], "tags: a b");
        let ids = |split: &Split, name: &str| {
            let t = &split.inputs.iter().find(|(n, _)| n == name).unwrap().1;
            Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
        };
        assert_eq!(ids(&d.train, "fields"), [1, 1, 2, 2, 1, 3, 3, 1]);
        // Row 4 keeps its last two items, i3 i4; row 3's is empty.
        assert_eq!(ids(&d.train, "seq.hist"), [2, 3, 0, 0, 3, 4, 5, 0]);
        let mask = |split: &Split, name: &str| {
            let t = &split.inputs.iter().find(|(n, _)| n == name).unwrap().1;
            Vec::<bool>::try_from(t.flatten(0, -1)).unwrap()
        };
        assert_eq!(
            mask(&d.train, "seq.hist.mask"),
            [true, true, false, false, true, true, true, false]
        );
        // Values training never saw are 0: user dan, item i7, i8, tag zz;
        // unseen sequence items are masked out like padding.
        assert_eq!(ids(&d.val, "fields"), [0, 0]);
        assert_eq!(ids(&d.val, "seq.hist"), [0, 2]);
        assert_eq!(mask(&d.val, "seq.hist.mask"), [false, true]);
        assert_eq!(ids(&d.val, "seq.tags"), [0, 0, 0]);
        assert_eq!(mask(&d.val, "seq.tags.mask"), [false, false, false]);
        assert_eq!(ids(&d.test, "fields"), [1, 2]);

        // Ids only: no `features` input.
        let c = config(
            json!({"tasks": {"y": {"type": "binary"}}, "split_column": "s",
            "inputs": [], "fields": ["user"]}),
        );
        let d = load(&c, dir.path()).unwrap();
        assert_eq!(d.inputs.len(), 1);
        assert_eq!(d.train.inputs[0].0, "fields");
    }

    #[test]
    fn bad_id_columns_are_named() {
        let text = "item,hist,y\ni1,,1\ni2,,0\ni3,i1,1\ni4,i2,0\n";
        let binary = json!({"type": "binary"});
        let e = err(
            text,
            json!({"tasks": {"y": binary}, "fields": ["item"],
                "sequences": {"hist": {"field": "user", "length": 2}}}),
        );
        assert!(
            e.starts_with("data.sequences.hist.field: `user` is not one of `fields` (item)"),
            "{e}"
        );
        // Rows 2 and 3 are the training split, and their histories are empty.
        let e = err(
            text,
            json!({"tasks": {"y": binary}, "fields": ["item"], "sequences": {"hist": {"length": 2}}}),
        );
        assert!(
            e.starts_with("data.sequences.hist: the sequence is empty in every training row"),
            "{e}"
        );
        let e = err(text, json!({"tasks": {"y": binary}, "fields": ["y"]}));
        assert!(e.starts_with("data.fields: column `y` is a task"), "{e}");
        // A task as a plain input would hand the model its label.
        let e = err(text, json!({"tasks": {"y": binary}, "inputs": ["y"]}));
        assert!(e.starts_with("data.inputs: column `y` is a task"), "{e}");
        let e = err(
            text,
            json!({"tasks": {"y": binary}, "fields": ["item", "item"]}),
        );
        assert!(
            e.starts_with("data.fields: column `item` is listed twice"),
            "{e}"
        );
        let e = err(
            "item,y,y\ni1,1,0\ni2,0,1\ni3,1,1\ni4,0,0\n",
            json!({"tasks": {"y": binary}}),
        );
        assert!(
            e.contains("the header names column `y` twice (columns 2 and 3)"),
            "{e}"
        );
        let e = err(text, json!({"tasks": {"y": binary}, "fields": ["items"]}));
        assert!(
            e.contains("no column `items` (columns: item, hist, y); did you mean `item`?"),
            "{e}"
        );
        // The schema's limits, checked again for loads that skip validation.
        let sequence = |spec: serde_json::Value| {
            err(
                text,
                json!({"tasks": {"y": binary}, "fields": ["item"], "sequences": {"hist": spec}}),
            )
        };
        let e = sequence(json!({"length": 0}));
        assert!(
            e.starts_with("data.sequences.hist.length: 0 items: keep between 1 and 65536"),
            "{e}"
        );
        let e = sequence(json!({"length": 2, "separator": ""}));
        assert!(
            e.starts_with("data.sequences.hist.separator: is empty"),
            "{e}"
        );
    }
}
