//! `csv`: the user's own table. Columns are mapped to inputs and to tasks (one
//! task per target column, with its type); rows are split into train/val/test
//! by ratio or by a column. Every error names the file, and where it applies the
//! row (its line number in the file) and the column.

use std::path::Path;

use serde_json::{json, Value};
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use super::{matrix, standardize, Dataset, RegressionLoss, Split, Task, TaskType};
use crate::error::{Error, Result};
use crate::fsutil::io_reason;

pub fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["path", "tasks"],
        "properties": {
            "path": {"type": "string", "description": "the CSV file (with a header row), relative to the pipeline file"},
            "inputs": {"type": "array", "items": {"type": "string"},
                       "description": "input columns; default: every column that is not a task or the split column"},
            "tasks": {
                "type": "object",
                "description": "one entry per target column: column = { type = \"regression\" | \"binary\" | \"multiclass\" }",
                // Each type takes only its own keys (a binary task has no `loss`).
                "additionalProperties": {
                    "x-taskweave-tag": "type",
                    "x-taskweave-variants": {
                        "regression": {"type": "object", "properties": {
                            "loss": {"type": "string", "enum": ["mse", "mae"], "default": "mse", "description": "regression loss"},
                            "standardize": {"type": "boolean", "default": true,
                                            "description": "train on standardised targets; metrics stay in original units"}
                        }},
                        "binary": {"type": "object", "properties": {}},
                        "multiclass": {"type": "object", "required": ["classes"], "properties": {
                            "classes": {"type": "integer", "minimum": 2, "maximum": MAX_CLASSES,
                                        "description": "number of classes; labels 0..classes-1"}
                        }}
                    }
                }
            },
            "split": {
                "type": "object",
                "description": "fractions of the rows for each split (after shuffling)",
                "properties": {
                    "train": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
                    "val": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
                    "test": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1}
                }
            },
            "split_column": {"type": "string", "description": "a column holding train / val / test per row (instead of fractions)"},
            "shuffle": {"type": "boolean", "default": true, "description": "shuffle rows before splitting by fractions"},
            "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "shuffle seed"},
            "standardize_inputs": {"type": "boolean", "default": true, "description": "standardise inputs with training statistics"}
        }
    })
}

struct TaskColumn {
    column: usize,
    task: Task,
    standardize: bool,
}

/// The most classes a multiclass task may have.
const MAX_CLASSES: i64 = 1 << 24;

fn path(config: &Value, dir: &Path) -> std::path::PathBuf {
    dir.join(config["path"].as_str().unwrap_or_default())
}

fn unreadable(path: &Path, e: &std::io::Error) -> String {
    format!(
        "cannot read data file {}: {} (data.path is relative to the pipeline file)",
        path.display(),
        io_reason(e)
    )
}

pub fn check(config: &Value, dir: &Path) -> std::result::Result<(), super::FileProblem> {
    let path = path(config, dir);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err((
            "path",
            format!("data file {} is not a regular file", path.display()),
        )),
        Err(e) => Err(("path", unreadable(&path, &e))),
    }
}

pub fn load(config: &Value, dir: &Path) -> Result<Dataset> {
    let path = path(config, dir);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Input(unreadable(&path, &e)))?;
    if text.trim().is_empty() {
        return Err(Error::Input(format!(
            "data file {shown} is empty; it needs a header row and data rows"
        )));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::Input(format!("{shown}: cannot read the header row: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            let near = crate::config::did_you_mean(name, header.iter().map(String::as_str));
            let hint = near
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            Error::Input(format!(
                "{shown}: no column `{name}` (columns: {}){hint}",
                header.join(", ")
            ))
        })
    };

    let mut targets = Vec::new();
    for (name, spec) in config["tasks"].as_object().into_iter().flatten() {
        let kind = match spec["type"].as_str() {
            Some("binary") => TaskType::Binary,
            Some("multiclass") => match spec["classes"].as_u64() {
                Some(n) => TaskType::Multiclass(n as usize),
                None => {
                    return Err(Error::Input(format!(
                        "data.tasks.{name}: a multiclass task needs `classes`"
                    )))
                }
            },
            _ => TaskType::Regression,
        };
        let loss = if spec["loss"] == "mae" {
            RegressionLoss::Mae
        } else {
            RegressionLoss::Mse
        };
        let primary = match kind {
            TaskType::Regression if loss == RegressionLoss::Mae => "mae",
            TaskType::Regression => "mse",
            TaskType::Binary => "auc",
            TaskType::Multiclass(_) => "accuracy",
        };
        let task = Task {
            name: name.clone(),
            kind,
            loss,
            scale: None,
            primary,
        };
        let standardize =
            kind == TaskType::Regression && spec["standardize"].as_bool().unwrap_or(true);
        targets.push(TaskColumn {
            column: column(name)?,
            task,
            standardize,
        });
    }
    if targets.is_empty() {
        return Err(Error::Input(
            "data.tasks is empty: name at least one target column".to_string(),
        ));
    }
    let split_column = config["split_column"].as_str().map(column).transpose()?;
    let inputs: Vec<usize> = match config["inputs"].as_array() {
        Some(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(column)
            .collect::<Result<_>>()?,
        None => (0..header.len())
            .filter(|i| Some(*i) != split_column && targets.iter().all(|t| t.column != *i))
            .collect(),
    };
    if inputs.is_empty() {
        return Err(Error::Input(format!(
            "{shown}: no input columns left after the task and split columns"
        )));
    }

    // Parse every row: inputs, targets and split label.
    let mut x: Vec<f32> = Vec::new();
    let mut y: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut split_of: Vec<usize> = Vec::new();
    for record in reader.records() {
        let record = record
            .map_err(|e| Error::Input(format!("{shown}: {}", csv_error(&e, header.len()))))?;
        let line = record.position().map_or(0, |p| p.line());
        let cell = |col: usize| -> Result<f64> {
            let raw = record.get(col).unwrap_or("");
            let at = || format!("{shown}: row {line}, column `{}`", header[col]);
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() && v.abs() <= f32::MAX as f64 => Ok(v),
                Ok(v) if v.is_finite() => Err(Error::Input(format!(
                    "{}: `{raw}` is outside the float32 range (±3.4e38) the model computes in",
                    at()
                ))),
                _ => Err(Error::Input(format!(
                    "{}: `{raw}` is not a finite number",
                    at()
                ))),
            }
        };
        for &col in &inputs {
            x.push(cell(col)? as f32);
        }
        for (t, target) in targets.iter().enumerate() {
            let v = cell(target.column)?;
            let ok = match target.task.kind {
                TaskType::Regression => true,
                TaskType::Binary => v == 0.0 || v == 1.0,
                TaskType::Multiclass(n) => v.fract() == 0.0 && v >= 0.0 && (v as usize) < n,
            };
            if !ok {
                let want = match target.task.kind {
                    TaskType::Multiclass(n) => format!("an integer class in 0..{n}"),
                    _ => "0 or 1".to_string(),
                };
                return Err(Error::Input(format!(
                    "{shown}: row {line}, column `{}`: `{v}` is not {want}",
                    header[target.column]
                )));
            }
            y[t].push(v);
        }
        if let Some(col) = split_column {
            let raw = record.get(col).unwrap_or("");
            let s = ["train", "val", "test"]
                .iter()
                .position(|s| *s == raw)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{shown}: row {line}, column `{}`: `{raw}` is not train, val or test",
                        header[col]
                    ))
                })?;
            split_of.push(s);
        }
    }
    let rows = y[0].len();
    if rows == 0 {
        return Err(Error::Input(format!(
            "data file {shown} has a header but no data rows"
        )));
    }
    if split_column.is_none() {
        split_of = ratio_split(config, rows)?;
    }

    let d = inputs.len();
    let make = |which: usize| -> Result<Split> {
        let idx: Vec<usize> = (0..rows).filter(|r| split_of[*r] == which).collect();
        let xs: Vec<f32> = idx
            .iter()
            .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
            .collect();
        let targets_of = targets
            .iter()
            .zip(&y)
            .map(|(t, col)| match t.task.kind {
                TaskType::Multiclass(_) => {
                    Tensor::from_slice(&idx.iter().map(|&r| col[r] as i64).collect::<Vec<_>>())
                }
                _ => Tensor::from_slice(&idx.iter().map(|&r| col[r] as f32).collect::<Vec<_>>()),
            })
            .collect();
        Ok(Split {
            inputs: matrix(xs, idx.len(), d)?,
            targets: targets_of,
        })
    };
    let (mut train, mut val, mut test) = (make(0)?, make(1)?, make(2)?);
    if config["standardize_inputs"].as_bool().unwrap_or(true) && !train.is_empty() {
        standardize([&mut train.inputs, &mut val.inputs, &mut test.inputs])?;
    }
    let mut tasks = Vec::new();
    for (t, target) in targets.into_iter().enumerate() {
        let mut task = target.task;
        if target.standardize && !train.is_empty() {
            let mean = train.targets[t]
                .f_mean(tch::Kind::Double)?
                .double_value(&[]);
            let std = train.targets[t].f_std(false)?.double_value(&[]).max(1e-12);
            for split in [&mut train, &mut val, &mut test] {
                split.targets[t] = split.targets[t].f_sub_scalar(mean)?.f_div_scalar(std)?;
            }
            task.scale = Some((mean, std));
        }
        tasks.push(task);
    }
    Ok(Dataset {
        tasks,
        train,
        val,
        test,
    })
}

fn csv_error(err: &csv::Error, fields: usize) -> String {
    match err.kind() {
        csv::ErrorKind::UnequalLengths { pos, len, .. } => {
            let line = pos.as_ref().map_or(0, |p| p.line());
            format!("row {line} has {len} fields, but the header has {fields}")
        }
        _ => err.to_string(),
    }
}

/// Assigns rows to splits by the configured fractions, after a seeded shuffle.
fn ratio_split(config: &Value, rows: usize) -> Result<Vec<usize>> {
    let frac = |k: &str| config["split"][k].as_f64().unwrap_or(0.0);
    let (train, val, test) = (frac("train"), frac("val"), frac("test"));
    if ((train + val + test) - 1.0).abs() > 1e-6 {
        return Err(Error::Input(format!(
            "data.split fractions must add up to 1, got {train} + {val} + {test} = {}",
            train + val + test
        )));
    }
    let mut order: Vec<usize> = (0..rows).collect();
    if config["shuffle"].as_bool().unwrap_or(true) {
        SplitMix::at(config["seed"].as_u64().unwrap_or(0), 0).shuffle(&mut order);
    }
    let n_train = (train * rows as f64).round() as usize;
    let n_val = (val * rows as f64).round() as usize;
    let mut split_of = vec![2; rows];
    for (rank, &row) in order.iter().enumerate() {
        split_of[row] = if rank < n_train {
            0
        } else if rank < n_train + n_val {
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

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("d.csv"), text).unwrap();
    }

    fn config(extra: Value) -> Value {
        let mut c = json!({"kind": "csv", "path": "d.csv",
            "tasks": {"y": {"type": "regression", "loss": "mse", "standardize": true}},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "shuffle": false, "seed": 0,
            "standardize_inputs": false});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
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
    fn loads_tasks_and_splits_with_standardised_targets() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a,b,y,c\n1,2,10,0\n3,4,20,1\n5,6,30,2\n7,8,40,0\n",
        );
        let tasks = json!({"y": {"type": "regression", "loss": "mse", "standardize": true},
                           "c": {"type": "multiclass", "classes": 3, "loss": "mse", "standardize": true}});
        let d = load(&config(json!({"tasks": tasks})), dir.path()).unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (2, 1, 1));
        assert_eq!(d.input_dim(), 2, "inputs default to the non-task columns");
        assert_eq!(d.tasks[1].kind, TaskType::Multiclass(3));
        let (mean, std) = d.tasks[0].scale.unwrap();
        assert_eq!((mean, std), (15.0, 5.0));
        assert_eq!(Vec::<f32>::try_from(&d.test.targets[0]).unwrap(), vec![5.0]);
        assert_eq!(d.test.targets[1].kind(), tch::Kind::Int64);
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
        assert!(err("", json!({})).contains("d.csv is empty"));
        assert!(err("a,y\n", json!({})).contains("has a header but no data rows"));
    }

    #[test]
    fn missing_column_suggests_the_nearest() {
        let e = err("a,yy\n1,2\n", json!({}));
        assert!(
            e.contains("no column `y` (columns: a, yy); did you mean `yy`?"),
            "{e}"
        );
    }

    #[test]
    fn non_numeric_value_names_row_and_column() {
        let e = err("a,y\n1,2\n3,abc\n", json!({}));
        assert!(
            e.contains("d.csv: row 3, column `y`: `abc` is not a finite number"),
            "{e}"
        );
    }

    #[test]
    fn ragged_rows_and_bad_labels_and_bad_fractions() {
        assert!(
            err("a,y\n1,2\n3\n", json!({})).contains("row 3 has 1 fields, but the header has 2")
        );
        let binary =
            json!({"tasks": {"y": {"type": "binary", "loss": "mse", "standardize": true}}});
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
        assert_eq!(d.input_dim(), 1);
        let e = err("a,y,s\n1,2,training\n", json!({"split_column": "s"}));
        assert!(
            e.contains("row 2, column `s`: `training` is not train, val or test"),
            "{e}"
        );
    }
}
