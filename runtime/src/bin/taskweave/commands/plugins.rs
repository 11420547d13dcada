//! `taskweave plugins list`: every method, where it comes from, and every file
//! in a plugin directory that could not be loaded, with the reason.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
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
