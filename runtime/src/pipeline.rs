//! A pipeline: one TOML file, checked against the schema of the runtime's own
//! sections and of every method it names before anything runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use taskweave_plugin_api::Host;

use crate::error::{Error, Result};
use crate::host::RuntimeHost;
use crate::registry::{KindTable, Registry};
use crate::runtime::Runtime;
use crate::spec::{validate, Diagnostic, Node, NodeValue, Origin, Source};

/// The schema of a pipeline file: the runtime's sections, with method tables
/// marked by `x-taskweave-role`.
pub fn schema() -> Value {
    let widths = |default: Value, what: &str| json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH}, "default": default, "description": what});
    // More threads than this only adds contention (and 100000 hangs libtorch).
    let max_threads = std::thread::available_parallelism().map_or(1, |n| n.get()) * 4;
    let activation = json!({"type": "string", "enum": taskweave_plugin_api::nn::Activation::NAMES, "default": "relu"});
    json!({
        "type": "object",
        "required": ["data", "train"],
        "properties": {
            "run": {"type": "object", "properties": {
                "name": {"type": "string", "description": "run name: the run directory is out_dir/name (default: the file name)"},
                "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "seed of initialisation, batch order and methods"},
                "device": {"type": "string", "default": "auto", "description": "auto (CUDA when present), cpu, cuda or cuda:N"},
                "out_dir": {"type": "string", "default": "runs", "description": "where run directories go, relative to the working directory"},
                "threads": {"type": "integer", "minimum": 0, "maximum": max_threads, "default": 0, "description": "CPU threads for libtorch, process-wide (0: libtorch's default; at most 4 per logical CPU)"},
                "gpu_memory_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
                                        "description": "cap on libtorch's CUDA caching allocator, as a fraction of the device's memory (0: no cap)"},
                "cuda_allocator": {"type": "string", "default": "",
                                   "description": "libtorch caching-allocator settings (PYTORCH_CUDA_ALLOC_CONF syntax, e.g. \"expandable_segments:True\"), process-wide, for allocations from the run's start on"}
            }},
            "plugins": {"type": "object", "properties": {
                "dirs": {"type": "array", "items": {"type": "string"}, "default": [],
                         "description": "directories of plugin .so files, relative to the pipeline file"}
            }},
            "data": {"x-taskweave-role": "Data"},
            "model": {"type": "object", "properties": {
                "backbone": {"type": "object", "properties": {
                    "hidden": widths(json!([64]), "widths of the shared MLP's hidden layers ([] = identity)"),
                    "activation": activation,
                    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0},
                    "batch_norm": {"type": "boolean", "default": false}
                }},
                "architecture": {"x-taskweave-role": "Architecture", "default": {"kind": "hard-sharing"}},
                "head": {"type": "object", "properties": {
                    "hidden": widths(json!([]), "widths of each task head's hidden layers"),
                    "activation": activation
                }}
            }},
            "train": {"type": "object", "required": ["steps"], "properties": {
                "steps": {"type": "integer", "minimum": 1, "description": "optimizer steps"},
                "batch": {"type": "integer", "minimum": 1, "default": 128, "description": "rows per batch"},
                "optimizer": {"x-taskweave-role": "Optimizer", "default": {"kind": "adam"}},
                "strategy": {"x-taskweave-role": "Strategy", "default": {"kind": "standard"}},
                "weighting": {"x-taskweave-role": "Weighting", "default": {"kind": "ew"}},
                "on_nonfinite": {"type": "string", "enum": ["stop", "skip-step"], "default": "stop",
                                 "description": "on a NaN or infinite loss: stop with an error, or skip the step"},
                "max_skipped_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                                         "description": "with on_nonfinite = \"skip-step\": the run fails (exit 1) once more than this fraction of its steps were skipped"},
                "checkpoint_every": {"type": "integer", "minimum": 0, "default": 0,
                                     "description": "steps between checkpoints (0: at every evaluation)"},
                "log_every": {"type": "integer", "minimum": 1, "default": 100,
                              "description": "steps between progress lines when not on a terminal"}
            }},
            "eval": {"type": "object", "properties": {
                "every": {"type": "integer", "minimum": 0, "default": 0,
                          "description": "steps between validation evaluations (0: ten per run)"},
                "batch": {"type": "integer", "minimum": 1, "default": 4096, "description": "rows per evaluation batch"}
            }}
        }
    })
}

/// The widest layer a pipeline may ask for (products of two stay far from overflow).
pub const MAX_WIDTH: i64 = 1 << 24;

/// The node at dotted `path` (keys, no indices), or the deepest one on the way:
/// where a diagnostic about that value points.
fn origin_at(root: &Node, path: &[&str]) -> Origin {
    let mut node = root;
    for key in path {
        match node.get(key) {
            Some(child) => node = child,
            None => break,
        }
    }
    node.origin.clone()
}

/// Checks of values that the schema cannot express, run wherever a pipeline
/// is loaded (so `validate` fails where `run` would): the run name, the device,
/// the allocator settings, and that the data's files exist.
fn check_values(root: &Node, config: &Value, dir: &Path) -> Vec<Diagnostic> {
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
    let run = &config["run"];
    let name = run["name"].as_str().unwrap_or_default();
    check(
        &["run", "name"],
        crate::names::name_problem(name)
            .map_or(Ok(()), |why| Err(format!("run.name = {name:?}: {why}"))),
    );
    let device = run["device"].as_str().unwrap_or("auto");
    check(
        &["run", "device"],
        crate::device::resolve(device)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let allocator = run["cuda_allocator"].as_str().unwrap_or_default();
    check(
        &["run", "cuda_allocator"],
        crate::device::check_allocator_settings(allocator)
            .map_err(|why| format!("run.cuda_allocator = {allocator:?}: {why}")),
    );
    match crate::data::check(&config["data"], dir) {
        Err(taskweave_datasets::Error::Config { key, message }) => {
            check(&["data", &key], Err(format!("data.{key}: {message}")))
        }
        Err(other) => check(&["data"], Err(other.to_string())),
        Ok(()) => {}
    }
    problems
}

/// A validated pipeline, ready to run.
pub struct Pipeline {
    source: Source,
    config: Value,
    registry: Arc<Registry>,
    host: Host,
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

impl Pipeline {
    /// Loads and validates the pipeline file at `path`, with `sets`
    /// (`dotted.key=value`, values in TOML) applied first. The run name
    /// defaults to the file name.
    pub fn from_file(runtime: &Runtime, path: &Path, sets: &[String]) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Input(format!(
                "cannot read pipeline {}: {}",
                path.display(),
                taskweave_plugin_api::io_reason(&e)
            ))
        })?;
        let name = path.file_stem().map_or_else(
            || "run".to_string(),
            |s| crate::names::name_from(&s.to_string_lossy()),
        );
        Pipeline::load(runtime, Source::file(path, text), sets, &name)
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
        mut source: Source,
        sets: &[String],
        default_name: &str,
    ) -> Result<Pipeline> {
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
        if root.get("run").and_then(|r| r.get("name")).is_none() {
            let name = Node {
                value: NodeValue::String(default_name.to_string()),
                origin: Origin::Generated,
            };
            // Cannot fail: `run` is absent or a table (a non-table `run` is reported by validation).
            let _ = root.set_path(&["run", "name"], name);
        }
        let registry = runtime.registry_with(&plugin_dirs(&root, &source));
        for problem in registry.problems() {
            tracing::warn!(
                "plugin {} not loaded: {}",
                problem.path.display(),
                problem.reason
            );
        }
        let config = validate(
            &root,
            &schema(),
            "",
            &KindTable {
                registry: &registry,
            },
        )
        .map_err(|diagnostics| source.error(diagnostics))?;
        let problems = check_values(&root, &config, &source.dir);
        if !problems.is_empty() {
            return Err(source.error(problems));
        }
        let host = RuntimeHost::with_registry(registry.clone());
        Ok(Pipeline {
            source,
            config,
            registry,
            host,
        })
    }

    /// The resolved config: every default filled in.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The resolved config as TOML.
    pub fn resolved_toml(&self) -> String {
        crate::spec::to_toml(&self.config)
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        self.config["run"]["name"].as_str().unwrap_or("run")
    }

    /// The run directory: `out_dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        Path::new(self.config["run"]["out_dir"].as_str().unwrap_or("runs")).join(self.name())
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

    /// Loads the pipeline's data.
    pub(crate) fn load_data(&self) -> Result<crate::data::Dataset> {
        crate::data::load(&self.config["data"], &self.source.dir)
    }
}
