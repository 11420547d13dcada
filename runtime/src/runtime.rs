//! The embedding API's first two nouns: [`Config`] → [`Runtime`].

use std::path::PathBuf;
use std::sync::Arc;

use taskweave_plugin_api::{MethodBox, MethodContext, Role};

use crate::error::Result;
use crate::host::RuntimeHost;
use crate::registry::Registry;

/// How to build a [`Runtime`].
#[derive(Clone, Debug, Default)]
pub struct Config {
    plugin_dirs: Vec<PathBuf>,
    allow_insecure_plugins: bool,
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

    /// Loads plugins even from files or directories that other users could
    /// have written (default: refused, since a plugin runs with your rights).
    pub fn allow_insecure_plugins(&mut self, allow: bool) -> &mut Config {
        self.allow_insecure_plugins = allow;
        self
    }
}

/// The method registry over the built-ins and the configured plugin
/// directories. Cheap to clone; plugins are loaded once per process.
#[derive(Clone)]
pub struct Runtime {
    config: Config,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("methods", &self.registry().entries().count())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads the built-in methods and every plugin in `config`'s directories.
    /// Files that cannot be loaded do not make this fail: they are listed by
    /// [`Registry::problems`] with the reason.
    pub fn new(config: &Config) -> Runtime {
        let registry = Arc::new(Registry::load(
            &config.plugin_dirs,
            &RuntimeHost::logging_only().to_ffi(),
            config.allow_insecure_plugins,
        ));
        Runtime {
            config: config.clone(),
            registry,
        }
    }

    /// The methods.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This runtime with the plugin directories of `extra` it does not have
    /// yet appended (a run's, recorded when it started).
    pub(crate) fn with_plugin_dirs(&self, extra: &[PathBuf]) -> Runtime {
        let have: Vec<PathBuf> = self
            .config
            .plugin_dirs
            .iter()
            .map(|d| canonical(d))
            .collect();
        let new: Vec<&PathBuf> = extra
            .iter()
            .filter(|d| !have.contains(&canonical(d)))
            .collect();
        if new.is_empty() {
            return self.clone();
        }
        let mut config = self.config.clone();
        for dir in new {
            config.plugin_dir(dir);
        }
        Runtime::new(&config)
    }

    /// The plugin directories, as absolute paths where they exist.
    pub(crate) fn plugin_dirs(&self) -> Vec<PathBuf> {
        self.config
            .plugin_dirs
            .iter()
            .map(|d| canonical(d))
            .collect()
    }

    /// This runtime's registry, extended by the plugins of `extra` directories.
    pub(crate) fn registry_with(&self, extra: &[PathBuf]) -> Arc<Registry> {
        if extra.is_empty() {
            return self.registry.clone();
        }
        let dirs: Vec<PathBuf> = self
            .config
            .plugin_dirs
            .iter()
            .chain(extra)
            .cloned()
            .collect();
        Arc::new(Registry::load(
            &dirs,
            &RuntimeHost::logging_only().to_ffi(),
            self.config.allow_insecure_plugins,
        ))
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
}

fn canonical(dir: &std::path::Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}
