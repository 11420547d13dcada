//! A pipeline: one TOML file, checked against the schema of the runtime's own
//! sections and of every method it names before anything runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use taskweave_plugin_api::Host;

use crate::config::{validate, Diagnostic, KindTable, Node, NodeValue, Origin, Source};
use crate::error::{Error, Result};
use crate::host::RuntimeHost;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::train::flatness::Flatness;
use crate::train::run::{self, RunContext, Summary};
use crate::train::run_dir::{self, RunDir};
use crate::train::{checkpoint, Trainer};

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
        run_dir::name_problem(name)
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
    /// Parses, applies `sets` and validates `source` against `runtime`'s methods
    /// plus those of the plugin directories the pipeline names.
    pub(crate) fn load(
        runtime: &Runtime,
        mut source: Source,
        sets: &[String],
        default_name: &str,
    ) -> Result<Pipeline> {
        let fail = |d: Diagnostic, source: &Source| Error::config(vec![d], source);
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
        .map_err(|diagnostics| Error::config(diagnostics, &source))?;
        let problems = check_values(&root, &config, &source.dir);
        if !problems.is_empty() {
            return Err(Error::config(problems, &source));
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
        crate::config::to_toml(&self.config)
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        self.config["run"]["name"].as_str().unwrap_or("run")
    }

    /// The run directory: `out_dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        Path::new(self.config["run"]["out_dir"].as_str().unwrap_or("runs")).join(self.name())
    }

    fn context(&self, quiet: bool) -> Result<RunContext<'_>> {
        let threads = self.config["run"]["threads"].as_i64().unwrap_or(0);
        if threads > 0 {
            tch::set_num_threads(threads as i32);
        }
        let device =
            crate::device::resolve(self.config["run"]["device"].as_str().unwrap_or("auto"))?;
        if let tch::Device::Cuda(ordinal) = device {
            crate::device::configure_allocator(
                ordinal,
                self.config["run"]["gpu_memory_fraction"]
                    .as_f64()
                    .unwrap_or(0.0),
                self.config["run"]["cuda_allocator"].as_str().unwrap_or(""),
            )?;
        }
        Ok(RunContext {
            config: &self.config,
            registry: &self.registry,
            host: &self.host,
            device,
            pipeline_dir: &self.source.dir,
            quiet,
        })
    }

    /// Trains into [`Pipeline::run_dir`], holding its lock for the whole run.
    /// Refuses a directory that already holds a run unless `overwrite` (which
    /// empties it), and one that holds anything else in any case, so that
    /// nothing is lost by accident.
    pub fn train(&self, overwrite: bool, quiet: bool) -> Result<Summary> {
        let data = crate::data::load(&self.config["data"], &self.source.dir)?;
        let ctx = self.context(quiet)?;
        let run = RunDir::create(&self.run_dir(), overwrite)?;
        run::train(&ctx, data, &run, false)
    }

    /// Continues the run in `dir` from its newest checkpoint.
    pub(crate) fn resume(&self, dir: &Path, quiet: bool) -> Result<Summary> {
        let run = RunDir::open(dir)?;
        let data = crate::data::load(&self.config["data"], &self.source.dir)?;
        let ctx = self.context(quiet)?;
        run::train(&ctx, data, &run, true)
    }

    /// Measures the flatness of the newest checkpoint in run directory `dir`
    /// (see [`Flatness`]) on split `split`.
    pub fn flatness(
        &self,
        dir: &Path,
        split: &str,
        radius: f64,
        samples: usize,
    ) -> Result<Flatness> {
        if !(radius.is_finite() && radius > 0.0) {
            return Err(Error::Input(format!(
                "the perturbation radius must be a positive number, got {radius}"
            )));
        }
        if samples == 0 {
            return Err(Error::Input(
                "flatness needs at least one sample (random direction)".into(),
            ));
        }
        let data = crate::data::load(&self.config["data"], &self.source.dir)?;
        let ctx = self.context(true)?;
        let mut trainer = Trainer::new(ctx.config, data, ctx.registry, ctx.host, ctx.device)?;
        let (_, ckpt) = checkpoint::latest(&dir.join("checkpoints"))?
            .ok_or_else(|| Error::Input(format!("{} has no checkpoint", dir.display())))?;
        trainer.restore(ckpt)?;
        let seed = self.config["run"]["seed"].as_u64().unwrap_or(0);
        let batch = self.config["eval"]["batch"].as_u64().unwrap_or(4096) as usize;
        trainer.flatness(split, radius, samples, seed, batch)
    }

    /// Trains and stores the single-task baselines Δm compares against.
    pub fn baselines(&self, quiet: bool) -> Result<PathBuf> {
        let data = crate::data::load(&self.config["data"], &self.source.dir)?;
        let ctx = self.context(quiet)?;
        run::baselines(&ctx, &data)
    }
}
