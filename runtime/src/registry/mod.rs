//! One name space of methods: the built-ins (registered with `inventory`) and the
//! methods of every plugin found in the plugin directories.

mod checked;
mod crash;
mod elf;
mod kinds;
mod loader;
mod trust;

pub use kinds::{validate_method, KindTable};
pub use trust::check_dir as check_plugin_dir;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use taskweave_plugin_api::method::split_table;
use taskweave_plugin_api::module::PluginModuleRef;
use taskweave_plugin_api::{
    FfiHostBox, FfiMethod, Host, Method, MethodBox, MethodContext, MethodManifest, Role,
};

use crate::error::Error;

/// Where a method comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Linked into the runtime.
    Builtin,
    /// A plugin library at this path.
    Plugin(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Plugin(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Clone, Copy)]
enum Factory {
    Builtin(&'static Method),
    Plugin(PluginModuleRef),
}

/// A method the registry can create.
#[derive(Clone)]
pub struct Entry {
    /// Name, role, version, description, schema.
    pub manifest: MethodManifest,
    /// The parsed config schema.
    pub schema: Value,
    /// Where it comes from.
    pub origin: Origin,
    factory: Factory,
}

/// A file in a plugin directory that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadProblem {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// One line: what is wrong and what to do.
    pub reason: String,
}

/// Every method available to pipelines, by name.
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    /// Names provided more than once, with every provider: unusable until one is removed.
    conflicts: BTreeMap<String, Vec<Origin>>,
    problems: Vec<LoadProblem>,
    dirs: Vec<PathBuf>,
    /// How many of the pipelines' own weightings (`train.weighting`) the
    /// host has created, for [`Registry::pipeline_weightings`].
    pipeline_weightings: AtomicUsize,
}

impl Registry {
    /// The built-in methods plus those of every plugin in `dirs`. Bad files are
    /// recorded as [`LoadProblem`]s; they never stop the good ones from loading.
    /// `host` receives the plugins' log records. Files that others could have
    /// written are refused unless `allow_insecure`.
    pub fn load(dirs: &[PathBuf], host: &FfiHostBox, allow_insecure: bool) -> Registry {
        taskweave_baselines::link();
        let mut registry = Registry {
            entries: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            problems: Vec::new(),
            dirs: Vec::new(),
            pipeline_weightings: AtomicUsize::new(0),
        };
        for method in taskweave_plugin_api::method::registered() {
            registry.add(method.manifest(), Origin::Builtin, Factory::Builtin(method));
        }
        for dir in dirs {
            registry.add_dir(dir, host, allow_insecure);
        }
        registry
    }

    fn add_dir(&mut self, dir: &Path, host: &FfiHostBox, allow_insecure: bool) {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        if self.dirs.contains(&canonical) {
            return;
        }
        self.dirs.push(canonical);
        let files = match loader::plugin_files(dir) {
            Ok(files) => files,
            Err(reason) => {
                self.problems.push(LoadProblem {
                    path: dir.to_path_buf(),
                    reason,
                });
                return;
            }
        };
        // `taskweave plugin new` writes a crate; given as a plugin directory
        // before it is built, it has no library to load.
        if files.is_empty() && dir.join("Cargo.toml").is_file() {
            self.problems.push(LoadProblem {
                path: dir.to_path_buf(),
                reason: format!(
                    "a plugin crate, not built: `taskweave plugin build {}` builds it and installs \
                     its .so into ./plugins (--into DIR for another directory)",
                    dir.display()
                ),
            });
        }
        for file in files {
            match loader::load(&file, host, allow_insecure) {
                Ok(library) => {
                    for manifest in &library.manifests {
                        let origin = Origin::Plugin(library.path.clone());
                        self.add(manifest.clone(), origin, Factory::Plugin(library.module));
                    }
                }
                Err(reason) => self.problems.push(LoadProblem { path: file, reason }),
            }
        }
    }

    fn add(&mut self, manifest: MethodManifest, origin: Origin, factory: Factory) {
        let name = manifest.name.to_string();
        let problem = |reason: String| LoadProblem {
            path: match &origin {
                Origin::Plugin(path) => path.clone(),
                Origin::Builtin => PathBuf::from("<built-in>"),
            },
            reason,
        };
        if let Err(why) = check_method_name(&name) {
            self.problems.push(problem(why));
            return;
        }
        if let Some(conflict) = self.conflicts.get_mut(&name) {
            conflict.push(origin);
            return;
        }
        if let Some(existing) = self.entries.get(&name) {
            if existing.origin == origin {
                let why = format!("it registers the method `{name}` twice; the second is ignored");
                self.problems.push(problem(why));
                return;
            }
            let first = self.entries.remove(&name).map(|e| e.origin).into_iter();
            self.conflicts.insert(name, first.chain([origin]).collect());
            return;
        }
        let schema = match manifest
            .schema()
            .map_err(|e| e.to_string())
            .and_then(table_schema)
        {
            Ok(schema) => schema,
            Err(e) => {
                self.problems.push(problem(format!(
                    "method `{name}` has an invalid schema: {e}"
                )));
                return;
            }
        };
        self.entries.insert(
            name,
            Entry {
                manifest,
                schema,
                origin,
                factory,
            },
        );
    }

    /// The plugin methods a resolved config names (any table's `kind`), each
    /// with its version, library file and a hash of that file: what a run
    /// records so that a resume can tell when a plugin changed under it.
    pub fn plugins_named(&self, config: &Value) -> Value {
        fn kinds<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
            match value {
                Value::Object(table) => {
                    out.extend(table.get("kind").and_then(Value::as_str));
                    table.values().for_each(|v| kinds(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| kinds(v, out)),
                _ => {}
            }
        }
        let mut names = Vec::new();
        kinds(config, &mut names);
        names.sort_unstable();
        names.dedup();
        let mut plugins = serde_json::Map::new();
        for name in names {
            let Some(entry) = self.entries.get(name) else {
                continue;
            };
            let Origin::Plugin(path) = &entry.origin else {
                continue;
            };
            let hash = std::fs::read(path)
                .map(|bytes| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
                .unwrap_or_default();
            plugins.insert(
                name.to_string(),
                serde_json::json!({"version": entry.manifest.version.as_str(),
                                   "file": path, "hash": hash}),
            );
        }
        Value::Object(plugins)
    }

    /// Files that could not be loaded, and why.
    pub fn problems(&self) -> &[LoadProblem] {
        &self.problems
    }

    /// Logs a warning for each of [`Registry::problems`]: what a command
    /// that creates methods says before a method it names turns out missing.
    pub fn warn_problems(&self) {
        for problem in &self.problems {
            tracing::warn!(
                "plugin {} not loaded: {}",
                problem.path.display(),
                problem.reason
            );
        }
    }

    /// Names provided by more than one source, with the sources.
    pub fn conflicts(&self) -> impl Iterator<Item = (&str, &[Origin])> {
        self.conflicts
            .iter()
            .map(|(n, o)| (n.as_str(), o.as_slice()))
    }

    /// Every usable method, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The method `name` of `role`, or an error that says why not.
    pub fn get(&self, role: Role, name: &str) -> Result<&Entry, LookupError> {
        if let Some(origins) = self.conflicts.get(name) {
            return Err(LookupError::Ambiguous(origins.clone()));
        }
        match self.entries.get(name) {
            Some(entry) if entry.manifest.role == role => Ok(entry),
            Some(entry) => Err(LookupError::WrongRole(entry.manifest.role)),
            None => Err(LookupError::Unknown),
        }
    }

    /// Names of every usable method of `role`.
    pub fn names(&self, role: Role) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.manifest.role == role)
            .map(|e| e.manifest.name.to_string())
            .collect()
    }

    /// Creates the method a method table (`{"kind": "...", ...}`) names, after
    /// validating the table against the method's schema (which also fills in
    /// defaults; tables from a validated pipeline pass unchanged).
    pub fn create_table(
        &self,
        role: Role,
        table: &Value,
        ctx: &MethodContext,
        host: &Host,
    ) -> Result<MethodBox, Error> {
        let (kind, config) = split_table(role, table).map_err(|e| Error::Input(e.to_string()))?;
        let (entry, config) =
            validate_method(self, role, &kind, &config).map_err(|e| Error::Input(e.to_string()))?;
        self.create(entry, &config, ctx, host)
    }

    /// Creates `entry` with a config already validated against its schema.
    pub fn create(
        &self,
        entry: &Entry,
        config: &Value,
        ctx: &MethodContext,
        host: &Host,
    ) -> Result<MethodBox, Error> {
        let name = entry.manifest.name.as_str();
        // A method that refuses its config or the pipeline (too few tasks for
        // Krum, a preference vector of the wrong length) says so with an
        // input error: exit 2, like any bad input.
        let failed = |e: &taskweave_plugin_api::Error, message: String| {
            if e.is_input() {
                Error::Input(message)
            } else {
                Error::Method(message)
            }
        };
        let created = match entry.factory {
            Factory::Builtin(method) => method
                .create(config, ctx, host)
                .map_err(|e| failed(&e, format!("creating built-in method `{name}`: {e}")))?,
            Factory::Plugin(module) => {
                let created = (module.create())(
                    name.into(),
                    config.to_string().as_str().into(),
                    ctx,
                    host.to_ffi(),
                );
                let created: FfiMethod = created
                    .into_result()
                    .map_err(|e| failed(&e, e.to_string()))?;
                MethodBox::from(created)
            }
        };
        Ok(match created {
            MethodBox::Weighting(inner) => {
                MethodBox::Weighting(Box::new(checked::CheckedWeighting::new(inner, name)))
            }
            other => other,
        })
    }

    /// How many times methods have had the host create a pipeline's own
    /// weighting (its `train.weighting` table): a strategy whose creation
    /// adds none does not use that setting (meta-rtl, or sam-mtl with an
    /// `aggregator` of its own).
    pub fn pipeline_weightings(&self) -> usize {
        self.pipeline_weightings.load(Ordering::Relaxed)
    }

    /// Counts one creation of a pipeline's own weighting.
    pub(crate) fn note_pipeline_weighting(&self) {
        self.pipeline_weightings.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `name` can name a method: at most 64 lower-case letters, digits
/// and `-`, starting with a letter and not ending with `-` (what
/// `taskweave plugin new` accepts, and every built-in's name).
pub fn check_method_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    match valid {
        true => Ok(()),
        false => Err(format!(
            "`{name}` is not a method name: at most 64 lower-case letters, digits and `-`, \
             starting with a letter (like `nash-mtl`)"
        )),
    }
}

/// A method's config schema must describe a table (what a pipeline writes
/// beside `kind`), and cannot have a key `kind` of its own.
fn table_schema(schema: Value) -> Result<Value, String> {
    if schema.get("type").is_some_and(|t| t != "object") {
        return Err("its config must be a table (a schema with \"type\": \"object\")".into());
    }
    if schema.pointer("/properties/kind").is_some() {
        return Err(
            "`kind` cannot be one of its keys: a pipeline's `kind` names the method".into(),
        );
    }
    Ok(schema)
}

/// Why a method name cannot be used.
#[derive(Debug, Clone)]
pub enum LookupError {
    /// Nothing has that name.
    Unknown,
    /// Something has that name but another role.
    WrongRole(Role),
    /// Several sources provide it.
    Ambiguous(Vec<Origin>),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Unknown => f.write_str("no such method"),
            LookupError::WrongRole(role) => {
                let article = if role.name().starts_with(['A', 'E', 'I', 'O', 'U']) {
                    "an"
                } else {
                    "a"
                };
                write!(f, "it is {article} {role}")
            }
            LookupError::Ambiguous(origins) => {
                let list: Vec<String> = origins.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "it is provided by {}; remove all but one",
                    list.join(" and ")
                )
            }
        }
    }
}
