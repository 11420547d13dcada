//! One problem in a pipeline, with where it was written; [`Source`] renders
//! it the way rustc renders errors.
//!
//! [`Source`]: super::Source

use super::node::Origin;

/// One problem in a pipeline.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// The dotted path of the value at fault (empty for the whole file).
    pub path: String,
    /// Where it was written.
    pub origin: Origin,
    /// What is wrong, naming the path.
    pub message: String,
    /// What to do about it, when there is something to say.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without help.
    pub fn new(path: impl Into<String>, origin: Origin, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: path.into(),
            origin,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}
