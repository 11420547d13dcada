//! taskweave: a runtime for task-specific and multi-task learning methods.
//!
//! The runtime owns everything that is not a method: devices, data, the model,
//! the training loop, checkpoints, logs and metrics. Methods (loss weightings,
//! training strategies, architectures, fusions, groupings) are built in or come
//! from plugin `.so` files, and all are looked up by name in one
//! [`registry::Registry`].
//!
//! The embedding API has four nouns, each made from the one before it (and
//! owning what it needs of it: a `Pipeline` may outlive its `Runtime`):
//!
//! - [`Config`]: plugin directories;
//! - [`Runtime`]: the registry of methods (cheap to clone);
//! - [`Pipeline`]: one validated TOML pipeline;
//! - [`Run`]: the pipeline's run directory `out_dir/<name>/`, held locked;
//!   [`Run::train`] fills it and returns a [`run::Summary`].
//!
//! Library code logs through `tracing` and installs no subscriber: a
//! program sees the runtime's warnings once it installs one
//! ([`logging::init`] is the CLI's). The other public modules are the
//! pieces these nouns are built from, public for the CLI and for tools.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let mut config = taskweave::Config::new();
//! config.plugin_dir("plugins");
//! let runtime = taskweave::Runtime::new(&config);
//! let pipeline = taskweave::Pipeline::from_file(&runtime, Path::new("pipelines/quickstart.toml"), &[])?;
//! let summary = taskweave::Run::start(pipeline, true)?.train(false)?;
//! println!("{}", taskweave::run::table(&summary));
//! # Ok::<(), taskweave::Error>(())
//! ```

#![deny(missing_docs)]

pub mod data;
pub mod device;
pub mod diffusion;
pub mod dist;
mod error;
mod fsutil;
mod host;
pub mod lm;
pub mod logging;
pub mod malloc;
pub mod model;
mod names;
pub mod noise;
pub mod optimizer;
mod pipeline;
pub mod registry;

pub mod run;
mod runtime;
pub mod sections;
pub mod spec;
pub mod train;

pub use error::{Error, Located, Result};
pub use pipeline::Pipeline;
pub use run::Run;
pub use runtime::{Config, Runtime};
