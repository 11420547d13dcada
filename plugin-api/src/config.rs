//! Typed configs: a method's (or a data kind's, or a pipeline section's)
//! config is a Rust struct deriving serde's `Deserialize` and `Serialize` and
//! schemars' [`JsonSchema`]. Its JSON Schema, doc comments, bounds and defaults
//! included, is what the host validates pipelines against ([`schema_for`]);
//! the validated table then deserialises into the struct ([`typed`]). A
//! default is written once, in the struct's `Default` (or a
//! `#[serde(default = ...)]`), and shows in `--print-config`.
//!
//! A plugin needs no dependency besides this crate: the derives find serde and
//! schemars through it with the two `crate = ...` attributes below.
//!
//! ```
//! use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
//! use taskweave_plugin_api::serde::{Deserialize, Serialize};
//! use taskweave_plugin_api::serde_json::json;
//!
//! /// SAM's neighbourhood.
//! #[derive(Deserialize, Serialize, JsonSchema)]
//! #[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
//! #[schemars(crate = "taskweave_plugin_api::config::schemars")]
//! struct Config {
//!     /// Radius of the neighbourhood.
//!     #[schemars(range(min = 0.0))]
//!     rho: f64,
//!     /// Scale the perturbation by |θ| (ASAM).
//!     adaptive: bool,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Config {
//!         Config { rho: 2.0, adaptive: true }
//!     }
//! }
//!
//! let schema = schema_for::<Config>();
//! assert_eq!(schema["properties"]["rho"]["default"], 2.0);
//! let config: Config = typed(&json!({"rho": 0.5, "adaptive": false})).unwrap();
//! assert_eq!(config.rho, 0.5);
//! let err = typed::<Config>(&json!({"rho": "big"})).err().unwrap();
//! assert!(err.to_string().starts_with("`rho`: invalid type"));
//! ```
//!
//! Two things a schema can say that serde cannot: a field holding another
//! method's table (`{ kind = "pcgrad", ... }`, validated against that method's
//! schema) is a `serde_json::Value` marked
//! `#[schemars(extend("x-taskweave-role" = "Weighting"))]`; a strict lower
//! bound is `#[schemars(extend("exclusiveMinimum" = 0))]`.

use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

pub use schemars::{self, JsonSchema};

/// The config of a method that takes no keys: any key is an error.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoKeys {}

/// The JSON Schema of `C` as the host validates against it: draft 7 with every
/// subschema inlined (no `$ref`), without the `$schema` and `title` keys.
pub fn schema_for<C: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<C>().to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}

/// The candidate closest to `word`, if close enough to be a likely typo: what
/// error messages offer as "did you mean ...?". A candidate that `word`
/// begins (`best` of `best-val`) is taken first, the shortest such one.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let begun = candidates
        .iter()
        .filter(|c| word.len() >= 3 && c.starts_with(word))
        .min_by_key(|c| c.len());
    if let Some(c) = begun {
        return Some(c);
    }
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(word, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A validated config table as `C`. A table that passed [`schema_for`]'s
/// schema deserialises; what the schema cannot express (an integer beyond the
/// field's type) fails with the dotted key named: "`data.train`: invalid value".
pub fn typed<C: DeserializeOwned>(config: &Value) -> Result<C> {
    typed_at(config).map_err(|(path, message)| {
        if path.is_empty() {
            Error::msg(message)
        } else {
            Error::msg(format!("`{path}`: {message}"))
        }
    })
}

/// [`typed`], with a failure as the dotted path of the value at fault (empty
/// for the whole table) and the message, for callers that point at the key.
pub fn typed_at<C: DeserializeOwned>(config: &Value) -> std::result::Result<C, (String, String)> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_picks_close_words_only() {
        assert_eq!(
            did_you_mean("stpes", ["steps", "batch", "seed"]),
            Some("steps")
        );
        assert_eq!(
            did_you_mean("pcgard", ["pcgrad", "cagrad", "mgda"]),
            Some("pcgrad")
        );
        assert_eq!(did_you_mean("zzzzzz", ["steps", "batch"]), None);
        // The start of a longer name: that name, not a nearer short one.
        assert_eq!(did_you_mean("best", ["last", "best-val"]), Some("best-val"));
    }
}
