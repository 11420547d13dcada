//! `taskweave plugins list`: every method, where it comes from, and every file
//! in a plugin directory that could not be loaded, with the reason;
//! `taskweave plugin show`: one method's keys.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use taskweave::Error;
use taskweave_plugin_api::config::did_you_mean;
use taskweave_plugin_api::module::Compat;

use super::{dirs_or_default, write_json, Env};
use crate::output::{Failure, Table};

#[derive(Serialize)]
struct Listing {
    plugin_abi: String,
    tch: String,
    libtorch: String,
    methods: Vec<MethodView>,
    problems: Vec<ProblemView>,
    conflicts: Vec<ConflictView>,
}

#[derive(Serialize)]
struct MethodView {
    name: String,
    role: &'static str,
    version: String,
    description: String,
    source: String,
}

#[derive(Serialize)]
struct ProblemView {
    path: String,
    reason: String,
}

#[derive(Serialize)]
struct ConflictView {
    name: String,
    sources: Vec<String>,
}

pub fn list(env: &Env, dirs: Vec<PathBuf>, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let runtime = env.runtime(&dirs_or_default(dirs));
    let registry = runtime.registry();
    let compat = Compat::current();
    let listing = Listing {
        plugin_abi: compat.abi.to_string(),
        tch: compat.tch.to_string(),
        libtorch: compat.libtorch.to_string(),
        methods: registry
            .entries()
            .map(|e| MethodView {
                name: e.manifest.name.to_string(),
                role: e.manifest.role.name(),
                version: e.manifest.version.to_string(),
                description: e.manifest.description.to_string(),
                source: e.origin.to_string(),
            })
            .collect(),
        problems: registry
            .problems()
            .iter()
            .map(|p| ProblemView {
                path: p.path.display().to_string(),
                reason: p.reason.clone(),
            })
            .collect(),
        conflicts: registry
            .conflicts()
            .map(|(name, origins)| ConflictView {
                name: name.to_string(),
                sources: origins.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    };
    if json {
        return write_json(out, &listing);
    }
    writeln!(
        out,
        "plugin ABI {} (tch {}, libtorch {})\n",
        listing.plugin_abi, listing.tch, listing.libtorch
    )?;
    let mut table = Table::new(&["NAME", "ROLE", "VERSION", "SOURCE"]);
    for m in &listing.methods {
        table.row(vec![
            m.name.clone(),
            m.role.to_string(),
            m.version.clone(),
            m.source.clone(),
        ]);
    }
    for c in &listing.conflicts {
        table.row(vec![
            c.name.clone(),
            "unusable".into(),
            String::new(),
            format!("provided by {}", c.sources.join(" and ")),
        ]);
    }
    table.write(out)?;
    if !listing.problems.is_empty() {
        writeln!(out, "\nnot loaded:")?;
        for p in &listing.problems {
            writeln!(out, "  {}: {}", p.path, p.reason)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ShowView<'a> {
    #[serde(flatten)]
    method: MethodView,
    schema: &'a Value,
}

/// One method's manifest and a table of its keys, read from its schema.
pub fn show(
    env: &Env,
    name: &str,
    dirs: Vec<PathBuf>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let runtime = env.runtime(&dirs_or_default(dirs));
    let registry = runtime.registry();
    registry.warn_problems();
    let Some(entry) = registry
        .entries()
        .find(|e| e.manifest.name.as_str() == name)
    else {
        let names: Vec<String> = registry
            .entries()
            .map(|e| e.manifest.name.to_string())
            .collect();
        let hint = match did_you_mean(name, names.iter().map(String::as_str)) {
            Some(near) => format!("did you mean `{near}`?"),
            None => "`taskweave plugin list` names every method".into(),
        };
        let unusable = match registry.conflicts().any(|(n, _)| n == name) {
            true => " (two sources provide it: see `taskweave plugin list`)",
            false => "",
        };
        return Err(Error::Input(format!("no usable method `{name}`{unusable}; {hint}")).into());
    };
    let method = MethodView {
        name: entry.manifest.name.to_string(),
        role: entry.manifest.role.name(),
        version: entry.manifest.version.to_string(),
        description: entry.manifest.description.to_string(),
        source: entry.origin.to_string(),
    };
    if json {
        let view = ShowView {
            method,
            schema: &entry.schema,
        };
        return write_json(out, &view);
    }
    writeln!(
        out,
        "{} ({}, {}, {})\n{}\n",
        method.name, method.role, method.version, method.source, method.description
    )?;
    let keys = entry.schema["properties"].as_object();
    let Some(keys) = keys.filter(|k| !k.is_empty()) else {
        writeln!(out, "no keys: `kind = \"{}\"` alone", method.name)?;
        return Ok(());
    };
    let required = entry.schema["required"].as_array();
    let required = |key: &str| required.is_some_and(|r| r.iter().any(|k| k == key));
    let mut table = Table::new(&["KEY", "TYPE", "DEFAULT", "WHAT IT DOES"]);
    for (key, schema) in keys {
        let default = match &schema["default"] {
            Value::Null if required(key) => "(required)".to_string(),
            Value::Null => "(none)".to_string(),
            value => value.to_string(),
        };
        table.row(vec![
            key.clone(),
            type_of(schema, &entry.schema),
            default,
            first_sentence(schema["description"].as_str().unwrap_or("")),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// A key's type in a word or two: its JSON type, its choices, its bounds.
fn type_of(schema: &Value, root: &Value) -> String {
    // schemars puts enums and nested tables under definitions.
    let schema = match schema["$ref"].as_str() {
        Some(path) => root.pointer(path.trim_start_matches('#')).unwrap_or(schema),
        None => schema,
    };
    if let Some(value) = schema.get("const") {
        return value.to_string();
    }
    if let Some(choices) = schema["enum"].as_array() {
        let choices: Vec<String> = choices.iter().map(Value::to_string).collect();
        return choices.join(" | ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let options: Vec<String> = options.iter().map(|o| type_of(o, root)).collect();
            return options.join(" | ");
        }
    }
    let mut text = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    };
    if text == "array" {
        text = format!("array of {}", type_of(&schema["items"], root));
    }
    let bound = |key: &str, sign: &str| schema[key].as_f64().map(|v| format!(" {sign} {v}"));
    let bounds: String = [
        bound("minimum", "≥"),
        bound("exclusiveMinimum", ">"),
        bound("maximum", "≤"),
        bound("exclusiveMaximum", "<"),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("{text}{bounds}")
}

/// The first sentence of a doc comment, on one line.
fn first_sentence(text: &str) -> String {
    let text = text.split("\n\n").next().unwrap_or("").replace('\n', " ");
    match text.find(". ") {
        Some(end) => text[..=end].to_string(),
        None => text,
    }
}
