//! taskweave: a runtime for task-specific and multi-task learning methods.
//!
//! The runtime owns everything that is not a method: devices, data, the model,
//! the training loop, checkpoints, logs and metrics. Methods (loss weightings,
//! training strategies, architectures, fusions, groupings) are built in or come
//! from plugin `.so` files, and all are looked up by name in one [`Registry`].
//!
//! The embedding API has four nouns, each living as long as the one before it:
//!
//! - [`Config`]: plugin directories;
//! - [`Runtime`]: the registry of methods (cheap to clone);
//! - [`Pipeline`]: one validated TOML pipeline;
//! - a run: [`Pipeline::train`] writes `out_dir/<name>/` and returns a [`Summary`].
//!
//! ```no_run
//! use std::path::Path;
//!
//! let mut config = taskweave::Config::new();
//! config.plugin_dir("plugins");
//! let runtime = taskweave::Runtime::new(&config);
//! let pipeline = runtime.pipeline_from_file(Path::new("pipelines/quickstart.toml"), &[])?;
//! let summary = pipeline.train(true, false)?;
//! println!("{}", taskweave::train::run::table(&summary));
//! # Ok::<(), taskweave::Error>(())
//! ```

#![deny(missing_docs)]

pub mod call;
pub mod config;
pub mod data;
pub mod device;
mod error;
mod fsutil;
mod host;
pub mod logging;
pub mod model;
mod pipeline;
pub mod registry;
mod report;
mod runtime;
pub mod toy;
pub mod train;

pub use error::{Error, Located, Result};
pub use pipeline::{schema as pipeline_schema, Pipeline};
pub use registry::Registry;
pub use runtime::{Config, Runtime};
pub use train::run::Summary;
