//! The contract between the taskweave runtime and its method plugins.
//!
//! A plugin is a `cdylib` crate that depends on this crate alone. It registers one
//! or more [`Method`]s with [`register_method!`]; the runtime loads the `.so` from a
//! plugin directory, checks that it was built against the same ABI and the same
//! libtorch, lists the methods' [`MethodManifest`]s, and creates method objects by
//! name when a pipeline asks for them.
//!
//! # Roles
//!
//! Every method has one [`Role`], and each role is one Rust trait that the plugin
//! implements with ordinary Rust types (`tch::Tensor`, `Result`):
//!
//! | role | trait | decides |
//! |---|---|---|
//! | [`Role::Weighting`] | [`Weighting`] | one update of the shared parameters from per-task losses or gradients |
//! | [`Role::Strategy`] | [`Strategy`] | the whole training step, through the host's [`StepOps`] |
//! | [`Role::Architecture`] | [`Architecture`] | trainable modules between the backbone and the task heads |
//! | [`Role::Fusion`] | [`Fusion`] | one decoding step's distribution from the logits of several models |
//! | [`Role::Grouping`] | [`Grouping`] | a partition of many tasks into a few groups |
//!
//! # Why two layers
//!
//! Each role trait has an FFI twin (`Ffi*`, an `abi_stable` `#[sabi_trait]`) that
//! is what actually crosses the library boundary. This crate converts between the
//! two on both sides, so neither plugin authors nor the runtime write FFI code:
//!
//! - plugin side, every call runs under [`guard`]: a panic or a libtorch error
//!   becomes an [`Error`] value naming the method and the call, never an unwind
//!   across the boundary (which would abort the process);
//! - host side, the FFI object implements the ordinary trait again, so the runtime
//!   treats built-in and dynamic methods the same way.
//!
//! Tensors cross as raw libtorch handles ([`TensorRef`], [`TensorOwned`]). Host and
//! plugins link the same libtorch shared libraries, so autograd, grad mode, the RNG
//! and the CUDA caching allocator are shared. Both handle types carry the tch and
//! libtorch versions as an ABI tag, and every plugin exports its versions in a
//! plain C symbol, so a plugin built against another libtorch or another version
//! of this crate is refused at load with a message that says which.
//!
//! # A minimal plugin
//!
//! ```no_run
//! use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
//! use taskweave_plugin_api::serde::{Deserialize, Serialize};
//! use taskweave_plugin_api::serde_json::Value;
//! use taskweave_plugin_api::{
//!     register_method, Constructor, Host, Method, MethodContext, Result, Weighting,
//!     WeightingInput, WeightingKind, WeightingOutput,
//! };
//!
//! /// Sums the per-task losses, each scaled by a constant.
//! struct Scaled(f64);
//!
//! impl Weighting for Scaled {
//!     fn kind(&self) -> WeightingKind {
//!         WeightingKind::Loss
//!     }
//!     fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
//!         let weights = input.losses.f_ones_like()?.f_mul_scalar(self.0)?.f_detach()?;
//!         let loss = input.losses.f_mul(&weights)?.f_sum(None)?;
//!         Ok(WeightingOutput { combined: loss, weights: Some(weights) })
//!     }
//! }
//!
//! /// The config: its JSON Schema (doc comments, bounds, defaults) is what
//! /// pipelines are validated against.
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! #[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
//! #[schemars(crate = "taskweave_plugin_api::config::schemars")]
//! struct Config {
//!     /// Factor on every loss.
//!     #[schemars(range(min = 0.0))]
//!     scale: f64,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Config {
//!         Config { scale: 1.0 }
//!     }
//! }
//!
//! fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
//!     // The host validated `config` against the schema and filled in defaults.
//!     let Config { scale } = typed(config)?;
//!     Ok(Box::new(Scaled(scale)))
//! }
//!
//! register_method!(Method::new(
//!     "scaled",
//!     env!("CARGO_PKG_VERSION"),
//!     "Sums the per-task losses, each scaled by a constant.",
//!     schema_for::<Config>,
//!     Constructor::Weighting(create),
//! ));
//! # fn main() {}
//! ```
//!
//! Configs are typed ([`config`]): the schema comes from the struct, so a
//! default is written once. The runtime validates the subset of JSON Schema
//! that `schemars` writes for such structs (`type`, `properties`, `required`,
//! `enum`, `const`, tagged `oneOf`, bounds, `items`, `default`), plus one
//! extension: `{"x-taskweave-role": "Weighting"}` marks a key that holds another
//! method's table (`{ kind = "...", ... }`), validated against that method's own
//! schema. Objects never accept unknown keys.
//!
//! # A method of every role
//!
//! `taskweave plugin new NAME --role weighting|strategy|architecture|fusion|grouping`
//! writes a crate whose method works as written, with a test: the starting
//! point for each role. The strategy it writes shows composition: it creates
//! the standard step through [`Host::strategy`] (which creates the pipeline's
//! weighting from [`MethodContext::weighting_table`] with [`Host::weighting`]),
//! and passes on the inner method's [`Strategy::parameters`] and its state
//! under a prefix ([`State::nest`], [`State::unnest`]), so that a resumed run
//! restores both. `taskweave plugin show NAME` prints any method's keys.
//!
//! An [`Error::input`] from a constructor is bad input (exit 2), shown at
//! the method's table in the pipeline; `tracing` events reach the host's log
//! under the target `plugin`.

#![deny(missing_docs)]
#![allow(
    non_local_definitions,
    reason = "generated by abi_stable's sabi_trait and StableAbi derives"
)]

pub mod config;
mod context;
mod error;
mod host;
mod log;
mod manifest;
pub mod method;
pub mod module;
pub mod nn;
pub mod rng;
mod roles;
mod state;
mod tensor;
pub mod testing;

pub use abi_stable;
pub use inventory;
pub use serde;
pub use serde_json;
pub use tch;
pub use tracing;

pub use context::{FfiInputSpec, Group, InputKind, InputSpec, MethodContext};
pub use error::{guard, io_reason, Error, Result};
pub use host::{
    FfiFusionGrid, FfiGateMix, FfiHost, FfiHostBox, FfiHost_TO, FusionGrid, Host, LogLevel,
};
pub use manifest::{MethodManifest, Role};
pub use method::{Constructor, Method, MethodBox};
pub use roles::architecture::{
    Architecture, ArchitectureInput, BackboneUse, FfiArchitecture, FfiArchitectureBox,
    FfiArchitecture_TO, Parameter,
};
pub use roles::fusion::{FfiFusion, FfiFusionBox, FfiFusion_TO, Fusion, FusionInput, FusionOutput};
pub use roles::grouping::{
    FfiGrouping, FfiGroupingBox, FfiGrouping_TO, FfiPartition, Grouping, GroupingInput, Partition,
};
pub use roles::strategy::{
    adapt_in_turn, inner_steps, task_gradients, FfiInnerSteps, FfiStepOps, FfiStepOps_TO,
    FfiStrategy, FfiStrategyBox, FfiStrategy_TO, InnerOptimizer, InnerSteps, StepOps, StepReport,
    Strategy,
};
pub use roles::weighting::{
    aggregate, aggregate_and_loss, FfiWeighting, FfiWeightingBox, FfiWeighting_TO, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};
pub use roles::FfiMethod;
pub use state::{FfiState, State};
pub use tensor::{kind_name, BorrowedTensor, TensorOwned, TensorRef};

/// Expands to the tch version this crate is built against, as a string literal.
#[macro_export]
macro_rules! tch_version {
    () => {
        "0.24.0"
    };
}

/// Expands to the libtorch version that [`tch_version!`] binds, as a string literal.
#[macro_export]
macro_rules! libtorch_version {
    () => {
        "2.11.0"
    };
}

/// The plugin ABI version: the version of this crate. Plugins and runtime must
/// agree on it (for 0.x versions, major and minor must match).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The tch version plugins and runtime are built against.
pub const TCH_VERSION: &str = tch_version!();

/// The libtorch version plugins and runtime link.
pub const LIBTORCH_VERSION: &str = libtorch_version!();
