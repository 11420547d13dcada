//! The runtime's built-in methods: baseline weightings, the standard training
//! step, baseline architectures and the logit-fusion baselines.
//!
//! They are written against `taskweave-plugin-api` exactly as a plugin would be,
//! and register with the same [`register_method!`](taskweave_plugin_api::register_method);
//! the runtime links this crate and finds them through `inventory`. Keeping them
//! out of the runtime crate proves the plugin API is enough to write real methods.

#![deny(missing_docs)]

mod adam;
mod architecture;
mod fusion;
pub mod gradient;
mod loss;
pub mod strategy;
mod vectors;

/// Makes sure the linker keeps this crate's registrations: `inventory` entries
/// in a crate nothing references would be dropped. The runtime calls it once.
pub fn link() {}
