//! The embedding API's first two nouns: [`Config`] → [`Runtime`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskweave_plugin_api::{MethodBox, MethodContext, Role};

use crate::config::Source;
use crate::error::{Error, Result};
use crate::host::RuntimeHost;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::train::run::Summary;
use crate::train::run_dir;

/// How to build a [`Runtime`].
#[derive(Clone, Debug, Default)]
pub struct Config {
    plugin_dirs: Vec<PathBuf>,
}

impl Config {
    /// No plugin directories: only the built-in methods.
    pub fn new() -> Config {
        Config::default()
    }

    /// Adds a directory whose `.so` files are loaded as plugins.
    pub fn plugin_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Config {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// The plugin directories, in order.
    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }
}

/// The method registry over the built-ins and the configured plugin
/// directories. Cheap to clone; plugins are loaded once per process.
#[derive(Clone)]
pub struct Runtime {
    dirs: Vec<PathBuf>,
    registry: Arc<Registry>,
}

impl Runtime {
    /// Loads the built-in methods and every plugin in `config`'s directories.
    /// Files that cannot be loaded do not make this fail: they are listed by
    /// [`Registry::problems`] with the reason.
    pub fn new(config: &Config) -> Runtime {
        let dirs = config.plugin_dirs.clone();
        let registry = Arc::new(Registry::load(&dirs, &RuntimeHost::logging_only().to_ffi()));
        Runtime { dirs, registry }
    }

    /// The methods.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This runtime's registry, extended by the plugins of `extra` directories.
    pub(crate) fn registry_with(&self, extra: &[PathBuf]) -> Arc<Registry> {
        if extra.is_empty() {
            return self.registry.clone();
        }
        let dirs: Vec<PathBuf> = self.dirs.iter().chain(extra).cloned().collect();
        Arc::new(Registry::load(&dirs, &RuntimeHost::logging_only().to_ffi()))
    }

    /// Creates a method from a method table (`{"kind": "...", ...}`), validated
    /// against the method's schema and completed with its defaults: how to call
    /// any registered method, built-in or plugin, outside a pipeline.
    pub fn create_method(
        &self,
        role: Role,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<MethodBox> {
        self.registry.create_table(
            role,
            table,
            ctx,
            &RuntimeHost::with_registry(self.registry.clone()),
        )
    }

    /// Loads and validates the pipeline file at `path`, with `sets`
    /// (`dotted.key=value`) applied first.
    pub fn pipeline_from_file(&self, path: &Path, sets: &[String]) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Input(format!("cannot read pipeline {}: {e}", path.display())))?;
        let name = path.file_stem().map_or_else(
            || "run".to_string(),
            |s| run_dir::name_from(&s.to_string_lossy()),
        );
        Pipeline::load(self, Source::file(path, text), sets, &name)
    }

    /// Loads and validates a pipeline given as text; relative paths in it
    /// resolve against `dir`.
    pub fn pipeline_from_str(&self, text: &str, dir: &Path, sets: &[String]) -> Result<Pipeline> {
        Pipeline::load(
            self,
            Source::string(text.to_string(), dir.to_path_buf()),
            sets,
            "run",
        )
    }

    /// Continues the run in `run_dir` (written by [`Pipeline::train`]) from its
    /// newest checkpoint, with the config it was started with.
    pub fn resume(&self, run_dir: &Path, quiet: bool) -> Result<Summary> {
        self.open_run(run_dir)?.resume(run_dir, quiet)
    }

    /// The pipeline a run directory was trained with (its resolved config, with
    /// relative paths resolving where the original pipeline file was).
    pub fn open_run(&self, run_dir: &Path) -> Result<Pipeline> {
        let config_path = run_dir.join("config.toml");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::Input(format!(
                "{} is not a run directory (cannot read config.toml: {e})",
                run_dir.display()
            ))
        })?;
        let run: serde_json::Value = std::fs::read_to_string(run_dir.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let pipeline_dir = run["pipeline_dir"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| run_dir.to_path_buf());
        let mut source = Source::file(&config_path, text);
        source.dir = pipeline_dir;
        Pipeline::load(self, source, &[], "run")
    }
}
