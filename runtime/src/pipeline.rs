//! A pipeline: one TOML file, checked against the schema of the runtime's own
//! sections and of every method it names before anything runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskweave_plugin_api::config::typed_at;
use taskweave_plugin_api::Host;

use crate::error::{Error, Result};
use crate::host::RuntimeHost;
use crate::registry::{KindTable, Registry};
use crate::runtime::Runtime;
use crate::sections::{BackboneConfig, PipelineConfig, ScheduleConfig};
use crate::spec::{validate, Diagnostic, Node, NodeValue, Origin, Source};

/// Where a diagnostic about the value at `path` points (see [`Node::nearest`]).
fn origin_at(root: &Node, path: &[&str]) -> Origin {
    root.nearest(path).0.origin.clone()
}

/// Checks of values that the schema cannot express, run wherever a pipeline
/// is loaded (so `validate` fails where `run` would): the run name, the device,
/// the allocator settings, and that the data's files exist.
fn check_values(root: &Node, config: &PipelineConfig, dir: &Path) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut check = |path: &[&str], outcome: std::result::Result<(), String>| {
        if let Err(message) = outcome {
            problems.push(Diagnostic::new(
                path.join("."),
                origin_at(root, path),
                message,
            ));
        }
    };
    let run = &config.run;
    let name = &run.name;
    check(
        &["run", "name"],
        crate::names::name_problem(name)
            .map_or(Ok(()), |why| Err(format!("run.name = {name:?}: {why}"))),
    );
    check(
        &["run", "device"],
        crate::device::resolve("run.device", &run.device)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let allocator = &run.cuda_allocator;
    check(
        &["run", "cuda_allocator"],
        crate::device::check_allocator_settings(allocator)
            .map_err(|why| format!("run.cuda_allocator = {allocator:?}: {why}")),
    );
    let train = &config.train;
    let lr = train.optimizer.lr();
    // A warm-up as long as the run is allowed: short smoke runs of a
    // pipeline (`--set train.steps=5`) keep its schedule.
    if let ScheduleConfig::Cosine { min_lr, .. } | ScheduleConfig::Plateau { min_lr, .. } =
        train.schedule
    {
        check(&["train", "schedule", "min_lr"], min_lr_problem(min_lr, lr));
    }
    if let Some(diffusion) = &config.diffusion {
        check(&["diffusion", "time_features"], diffusion.check());
        // Only a grouping reads the signals: without one they would be ignored.
        if diffusion.signals.is_some() && train.grouping.is_none() {
            check(
                &["diffusion", "signals"],
                Err("diffusion.signals feed train.grouping, and there is none: add a grouping \
                     (such as interval-clustering with cost = \"gradient\") or leave the signals out"
                    .into()),
            );
        }
    }
    // Two keys name a meta-transfer target: the task whose labels [data]
    // withholds, and the task a strategy transfers to (Meta-RTL's).
    let low = config.data["low_resource"]["target"].as_str();
    if let (Some(low), Some(target)) = (low, train.strategy["target"].as_str()) {
        if low != target {
            check(
                &["train", "strategy", "target"],
                Err(format!(
                    "train.strategy.target = {target:?}, but data.low_resource.target = {low:?}: \
                     the strategy would transfer to a task with every label and meta-train on the \
                     low-resource one as a source; name the same task in both"
                )),
            );
        }
    }
    problems.extend(check_data(root, &config.data, dir));
    problems
}

/// A schedule's floor above the optimizer's rate would raise the rate, not lower it.
fn min_lr_problem(min_lr: f64, lr: f64) -> std::result::Result<(), String> {
    match min_lr > lr {
        true => Err(format!(
            "train.schedule.min_lr = {min_lr} is above the optimizer's lr = {lr}: \
             the schedule would raise the rate"
        )),
        false => Ok(()),
    }
}

/// That the files of the `[data]` table `data` exist, as diagnostics at its keys.
pub(crate) fn check_data(root: &Node, data: &serde_json::Value, dir: &Path) -> Option<Diagnostic> {
    let (path, message) = match crate::data::check(data, dir) {
        // A nested key (`corpora.python`) is several levels of the tree.
        Err(taskweave_datasets::Error::Config { key, message }) => (
            std::iter::once("data")
                .chain(key.split('.'))
                .map(String::from)
                .collect(),
            format!("data.{key}: {message}"),
        ),
        Err(other) => (vec!["data".to_string()], other.to_string()),
        Ok(()) => return None,
    };
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(Diagnostic::new(
        keys.join("."),
        origin_at(root, &keys),
        message,
    ))
}

/// A validated pipeline, ready to run.
pub struct Pipeline {
    source: Source,
    /// The tree the config came from, for where its values were written.
    root: Node,
    config: PipelineConfig,
    registry: Arc<Registry>,
    host: Host,
    /// The runtime's own plugin directories (`--plugins`,
    /// TASKWEAVE_PLUGIN_PATH), which a run records for its resume.
    runtime_plugin_dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name())
            .field("run_dir", &self.run_dir())
            .finish_non_exhaustive()
    }
}

/// The plugin directories a pipeline names, read before validation (the
/// registry they fill is needed to validate the rest).
fn plugin_dirs(root: &Node, source: &Source) -> Vec<PathBuf> {
    let Some(NodeValue::Array(items)) = root
        .get("plugins")
        .and_then(|p| p.get("dirs"))
        .map(|d| &d.value)
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| match &i.value {
            NodeValue::String(s) => Some(source.dir.join(s)),
            _ => None,
        })
        .collect()
}

/// A TOML file parsed, `--set` applied, validated against a schema and the
/// methods of the runtime and of the plugin directories it names, and typed.
pub(crate) struct Loaded<T> {
    pub source: Source,
    pub root: Node,
    pub config: T,
    pub registry: Arc<Registry>,
}

/// Loads `source` as a `T` whose schema is `schema`; `defaults` fills in
/// what depends on the file (such as the run name) before validation.
pub(crate) fn load_typed<T: serde::de::DeserializeOwned>(
    runtime: &Runtime,
    mut source: Source,
    sets: &[String],
    schema: &serde_json::Value,
    defaults: impl FnOnce(&mut Node),
) -> Result<Loaded<T>> {
    let fail = |d: Diagnostic, source: &Source| source.error(vec![d]);
    let mut root = source.parse().map_err(|d| fail(d, &source))?;
    if !matches!(root.value, NodeValue::Table(_)) {
        return Err(fail(
            Diagnostic::new("", Origin::File(0..0), "a pipeline must be a TOML table"),
            &source,
        ));
    }
    source
        .apply_sets(&mut root, sets)
        .map_err(|d| fail(d, &source))?;
    defaults(&mut root);
    let registry = runtime.registry_with(&plugin_dirs(&root, &source));
    registry.warn_problems();
    let resolved = validate(
        &root,
        schema,
        "",
        &KindTable {
            registry: &registry,
        },
    )
    .map_err(|diagnostics| source.error(diagnostics))?;
    // What passed the schema deserialises; what the schema cannot say (an
    // integer beyond its field's type) is reported at its key.
    let config: T = typed_at(&resolved).map_err(|(path, message)| {
        let keys: Vec<&str> = path.split('.').collect();
        let at = origin_at(&root, &keys);
        source.error(vec![Diagnostic::new(
            path.clone(),
            at,
            format!("`{path}`: {message}"),
        )])
    })?;
    Ok(Loaded {
        source,
        root,
        config,
        registry,
    })
}

/// The pipeline file at `path`, read.
pub(crate) fn read_source(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Input(format!(
            "cannot read pipeline {}: {}",
            path.display(),
            taskweave_plugin_api::io_reason(&e)
        ))
    })?;
    Ok(Source::file(path, text))
}

impl Pipeline {
    /// Loads and validates the pipeline file at `path`, with `sets`
    /// (`dotted.key=value`, values in TOML) applied first. The run name
    /// defaults to the file name.
    pub fn from_file(runtime: &Runtime, path: &Path, sets: &[String]) -> Result<Pipeline> {
        let source = read_source(path)?;
        let name = path.file_stem().map_or_else(
            || "run".to_string(),
            |s| crate::names::name_from(&s.to_string_lossy()),
        );
        Pipeline::load(runtime, source, sets, &name)
    }

    /// Loads and validates a pipeline given as text; relative paths in it
    /// resolve against `dir`. The run name defaults to `run`.
    pub fn from_str(
        runtime: &Runtime,
        text: &str,
        dir: &Path,
        sets: &[String],
    ) -> Result<Pipeline> {
        let source = Source::string(text.to_string(), dir.to_path_buf());
        Pipeline::load(runtime, source, sets, "run")
    }

    /// The pipeline a run directory holds (`config.toml` at `config_path`,
    /// with relative paths resolving in `dir`, where the original file was).
    pub(crate) fn from_run(
        runtime: &Runtime,
        config_path: &Path,
        text: String,
        dir: PathBuf,
    ) -> Result<Pipeline> {
        let mut source = Source::file(config_path, text);
        source.dir = dir;
        Pipeline::load(runtime, source, &[], "run")
    }

    /// Parses, applies `sets` and validates `source` against `runtime`'s methods
    /// plus those of the plugin directories the pipeline names.
    fn load(
        runtime: &Runtime,
        source: Source,
        sets: &[String],
        default_name: &str,
    ) -> Result<Pipeline> {
        let loaded = load_typed::<PipelineConfig>(
            runtime,
            source,
            sets,
            &crate::sections::schema(),
            |root| {
                if root.get("run").and_then(|r| r.get("name")).is_none() {
                    let name = Node {
                        value: NodeValue::String(default_name.to_string()),
                        origin: Origin::Generated,
                    };
                    // Cannot fail: `run` is absent or a table (a non-table `run` is reported by validation).
                    let _ = root.set_path(&["run", "name"], name);
                }
            },
        )?;
        let Loaded {
            source,
            root,
            config,
            registry,
        } = loaded;
        let problems = check_values(&root, &config, &source.dir);
        if !problems.is_empty() {
            return Err(source.error(problems));
        }
        let host = RuntimeHost::with_registry(registry.clone());
        Ok(Pipeline {
            source,
            root,
            config,
            registry,
            host,
            runtime_plugin_dirs: runtime.plugin_dirs(),
        })
    }

    /// `err` rendered as a config error at the key of this pipeline its
    /// message names (see [`Diagnostic::naming`]) when it is bad input: what
    /// a method's constructor, the data loader or the trainer refused, with
    /// the file, line and column (or the `--set`) of the value. Any other
    /// error as it is.
    pub fn locate(&self, err: Error) -> Error {
        let message = match &err {
            Error::Input(message) => message.clone(),
            Error::Data(e) if e.is_input() => e.to_string(),
            _ => return err,
        };
        match Diagnostic::naming(&message, &self.root) {
            Some(d) => self.source.error(vec![d]),
            None => err,
        }
    }

    /// The plugin directories of the runtime it was loaded with.
    pub(crate) fn runtime_plugin_dirs(&self) -> &[PathBuf] {
        &self.runtime_plugin_dirs
    }

    /// The resolved config, typed: every default filled in.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The resolved config as TOML.
    pub fn resolved_toml(&self) -> String {
        crate::spec::to_toml(&serde_json::to_value(&self.config).unwrap_or_default())
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.config.run.name
    }

    /// The run directory: `out_dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        Path::new(&self.config.run.out_dir).join(self.name())
    }

    /// The directory relative paths in the pipeline resolve against.
    pub(crate) fn dir(&self) -> &Path {
        &self.source.dir
    }

    /// The methods the pipeline may use.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The host handed to its methods.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// Refuses a pipeline that does not train one causal language model:
    /// `[data] kind = "text"`, the `transformer-lm` backbone and one head
    /// for every corpus (what `taskweave lm train` trains).
    pub fn check_language_model(&self) -> Result<()> {
        let fix = |key: &str, what: &str| {
            Err(Error::Input(format!(
                "{key}: not one causal language model over byte-level text (what `lm train` trains and decoding reads): it needs {what}"
            )))
        };
        if self.config.data["kind"] != "text" {
            return fix("data.kind", "`kind = \"text\"` (corpora of local files)");
        }
        if !matches!(self.config.model.backbone, BackboneConfig::TransformerLm(_)) {
            return fix("model.backbone", "`kind = \"transformer-lm\"` (causal)");
        }
        if !self.config.model.head.shared {
            return fix(
                "model.head.shared",
                "one output layer for every corpus: set `shared = true`",
            );
        }
        Ok(())
    }

    /// Loads the pipeline's data.
    pub fn load_data(&self) -> Result<crate::data::Dataset> {
        crate::data::load(&self.config.data, &self.source.dir)
    }
}
