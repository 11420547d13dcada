//! Data: the data kinds of `taskweave-datasets`, found by name, checked and
//! loaded with the runtime's memory check in front.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

pub use taskweave_datasets::{
    Dataset, RegressionLoss, Split, Task, TaskType, IGNORE_PIXEL, IGNORE_TOKEN,
};

fn kind(config: &Value) -> Result<&'static taskweave_datasets::DataKind> {
    let name = config["kind"].as_str().unwrap_or_default();
    taskweave_datasets::find(name)
        .ok_or_else(|| Error::Input(format!("unknown data kind `{name}`")))
}

/// The schema of data kind `name`'s `[data]` table.
pub fn schema(name: &str) -> Option<Value> {
    taskweave_datasets::link();
    taskweave_datasets::find(name).map(|k| k.schema())
}

/// Every data kind's name, sorted.
pub fn kinds() -> Vec<String> {
    taskweave_datasets::link();
    taskweave_datasets::kinds()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Checks, without reading them, that the files a validated `[data]` table
/// names exist; relative paths resolve against `dir`.
pub fn check(config: &Value, dir: &Path) -> std::result::Result<(), taskweave_datasets::Error> {
    match taskweave_datasets::find(config["kind"].as_str().unwrap_or_default()) {
        Some(kind) => kind.check(config, dir),
        None => Ok(()),
    }
}

/// Loads the dataset a validated `[data]` table describes, first refusing
/// what cannot fit in memory; relative paths resolve against `dir`.
pub fn load(config: &Value, dir: &Path) -> Result<Dataset> {
    let kind = kind(config)?;
    if let Some((bytes, what)) = kind.footprint(config, dir)? {
        crate::device::ensure_fits(tch::Device::Cpu, bytes, || what)?;
    }
    Ok(kind.load(config, dir)?)
}
