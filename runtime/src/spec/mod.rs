//! Pipeline specs: TOML with locations, `--set` overrides, validation against
//! JSON Schemas (with the kinds a pipeline names looked up through [`Kinds`]),
//! and error rendering.

mod diagnostic;
mod node;
mod source;
mod toml_out;
mod validate;

pub use diagnostic::Diagnostic;
pub use node::{Key, Node, NodeValue, Origin};
pub use source::Source;
pub use toml_out::to_toml;
pub use validate::{validate, KindError, Kinds};
