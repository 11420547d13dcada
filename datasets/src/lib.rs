//! taskweave's data kinds: what `[data] kind = "..."` names in a pipeline, each
//! turning its typed `[data]` table into a [`Dataset`] (tasks and three splits
//! of tensors, in memory).
//!
//! A data kind implements [`Source`] (its config struct, a cheap check that its
//! files exist, and the loader) and registers itself with
//! `inventory::submit! { DataKind::of::<MySource>() }`, like the built-in
//! methods: the runtime finds every registered kind by name, validates the
//! pipeline's `[data]` table against the config's JSON Schema, and calls it.
//! Errors ([`Error`]) name the file, row and column, or the `[data]` key.
//!
//! The built-in kinds: `mmoe-synthetic` (the MMoE paper's generator), `csv`
//! (the user's own table), `qm9` (molecular properties, from `make qm9`),
//! `census-income` (the MMoE paper's real data, from `make census`),
//! `multi-mnist` (two overlaid Fashion-MNIST or MNIST items, from `make
//! images`), `fashion-scenes` (multi-object scenes of Fashion-MNIST items
//! with per-pixel segmentation, depth and boundaries, from `make images`)
//! `fashion-mnist` (single Fashion-MNIST items or digits with their
//! classes, from `make images`), `tensors` (the user's own inputs, targets and label masks as
//! tensors in a safetensors file: images, tokens, per-pixel tasks) and
//! `toy-2d` (2-D points for diffusion models, generated) and `text` (byte-level
//! language modelling on local text files, one task per corpus) and
//! `multi-behaviour-synthetic` (recommendation samples with behaviour
//! sequences whose right answer is known) and `movielens` (the same layout
//! from real ratings, from `make movielens`).
//! Splits by fraction after a seeded shuffle are shared by all of them
//! ([`split`]).

#![deny(missing_docs)]

mod behaviours;
mod census;
mod csv;
mod dataset;
mod error;
mod fashion_scenes;
mod items;
mod movielens;
mod multi_mnist;
mod qm9;
mod recommend;
mod single_items;
pub mod split;
mod synthetic;
mod tensors;
mod text;
mod toy2d;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};

pub use dataset::{Dataset, RegressionLoss, Split, Task, TaskType, IGNORE_PIXEL, IGNORE_TOKEN};
pub use error::{Error, Result};
pub use single_items::{items_of, Items};
pub use taskweave_plugin_api::{InputKind, InputSpec};
pub use tensors::safetensors_reason;
pub use text::{documents, BOS, BYTES, PAD, TOKENS, VOCAB};

/// The name of the float input `[N, D]` of the tabular data kinds.
pub const FEATURES: &str = "features";

/// The name of the int64 input `[N, F]` of categorical fields (one column per
/// field), which the `embedding` backbone and DTRN read.
pub const FIELDS: &str = "fields";

/// The least memory a load needs, in bytes, and the keys that ask for it.
pub type Footprint = Option<(u128, String)>;

/// A data kind, with its `[data]` table as a typed config.
pub trait Source {
    /// The name pipelines write in `kind = "..."`.
    const NAME: &'static str;
    /// The `[data]` table without `kind`; its schema is what pipelines are
    /// validated against, defaults included.
    type Config: DeserializeOwned + JsonSchema;

    /// Checks, without reading them, that the files [`Source::load`] needs
    /// exist, so that `validate` fails where `run` would. Relative paths
    /// resolve against `dir`, the pipeline file's directory.
    fn check(_config: &Self::Config, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// The bytes [`Source::load`] will allocate at least, and the keys that ask
    /// for them, when that is known before reading anything (so the runtime can
    /// refuse what does not fit instead of failing mid-way). Relative paths
    /// resolve against `dir`, as in [`Source::load`].
    fn footprint(_config: &Self::Config, _dir: &Path) -> Footprint {
        None
    }

    /// Loads the data.
    fn load(config: &Self::Config, dir: &Path) -> Result<Dataset>;
}

/// A registered data kind, its config handled as JSON.
pub struct DataKind {
    /// The name pipelines write in `kind = "..."`.
    pub name: &'static str,
    schema: fn() -> Value,
    check: fn(&Value, &Path) -> Result<()>,
    footprint: fn(&Value, &Path) -> Result<Footprint>,
    load: fn(&Value, &Path) -> Result<Dataset>,
}

inventory::collect!(DataKind);

/// The first item of `items` that repeats an earlier one: (the earlier
/// index, its index).
pub(crate) fn first_repeat<T: PartialEq>(items: &[T]) -> Option<(usize, usize)> {
    (0..items.len()).find_map(|i| {
        items[..i]
            .iter()
            .position(|x| *x == items[i])
            .map(|j| (j, i))
    })
}

/// `raw` as a number the model can hold: finite and within float32's range
/// (values are stored as f32); otherwise why not, quoting `raw`.
pub(crate) fn float32(raw: &str) -> std::result::Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v.abs() <= f32::MAX as f64 => Ok(v),
        Ok(v) if v.is_finite() => Err(format!(
            "`{raw}` is outside the float32 range (±3.4e38) the model computes in"
        )),
        _ => Err(format!("`{raw}` is not a finite number")),
    }
}

/// The typed config of a validated `[data]` table (which still holds `kind`).
pub(crate) fn config_of<S: Source>(table: &Value) -> Result<S::Config> {
    let mut table = table.clone();
    if let Value::Object(map) = &mut table {
        map.remove("kind");
    }
    typed(&table).map_err(|e| Error::config(S::NAME, e.to_string()))
}

impl DataKind {
    /// The registration of `S`.
    pub const fn of<S: Source>() -> DataKind {
        DataKind {
            name: S::NAME,
            schema: schema_for::<S::Config>,
            check: |table, dir| S::check(&config_of::<S>(table)?, dir),
            footprint: |table, dir| Ok(S::footprint(&config_of::<S>(table)?, dir)),
            load: |table, dir| S::load(&config_of::<S>(table)?, dir),
        }
    }

    /// The JSON Schema of the `[data]` table (without `kind`).
    pub fn schema(&self) -> Value {
        (self.schema)()
    }

    /// [`Source::check`] on a validated `[data]` table.
    pub fn check(&self, table: &Value, dir: &Path) -> Result<()> {
        (self.check)(table, dir)
    }

    /// [`Source::footprint`] on a validated `[data]` table.
    pub fn footprint(&self, table: &Value, dir: &Path) -> Result<Footprint> {
        (self.footprint)(table, dir)
    }

    /// Loads a validated `[data]` table's data, refusing an empty split or
    /// data that do not match what the kind declares (see [`Dataset::check`]).
    pub fn load(&self, table: &Value, dir: &Path) -> Result<Dataset> {
        let data = (self.load)(table, dir)?;
        data.check(self.name)?;
        for (name, split) in [
            ("train", &data.train),
            ("val", &data.val),
            ("test", &data.test),
        ] {
            if split.is_empty() {
                // A column assigns the rows: none says this split.
                if let Some(column) = table.get("split_column").and_then(Value::as_str) {
                    return Err(Error::config(
                        "split_column",
                        format!(
                            "no row of the data has `{name}` in its `{column}` column, so the {name} \
                             split is empty; the column's values must include train, val and test"
                        ),
                    ));
                }
                // Point at the key that shares out the rows where the kind has one.
                let key = match (self.schema)()["properties"].get("split") {
                    Some(_) => "split",
                    None => "kind",
                };
                return Err(Error::config(
                    key,
                    format!(
                        "the {name} split of the `{}` data is empty; give the data more rows, or this split \
                         a larger share ({})",
                        self.name,
                        match key {
                            "split" => "data.split",
                            _ => "see the kind's keys in the README",
                        }
                    ),
                ));
            }
        }
        Ok(data)
    }
}

/// The data kind called `name`.
pub fn find(name: &str) -> Option<&'static DataKind> {
    inventory::iter::<DataKind>().find(|k| k.name == name)
}

/// Every data kind's name, sorted.
pub fn kinds() -> Vec<&'static str> {
    let mut names: Vec<&str> = inventory::iter::<DataKind>().map(|k| k.name).collect();
    names.sort_unstable();
    names
}

/// Keeps this crate's registrations linked into a binary that names nothing
/// else from it (inventory's entries live in otherwise unreferenced objects).
pub fn link() {}
