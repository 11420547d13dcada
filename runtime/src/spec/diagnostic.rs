//! One problem in a pipeline, with where it was written; [`Source`] renders
//! it the way rustc renders errors.
//!
//! [`Source`]: super::Source

use super::node::{Node, Origin};

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

impl Diagnostic {
    /// `message` at the key of `root` it names, when one of its clauses
    /// begins with a dotted key path followed by `:` or ` =` (`... create:
    /// train.strategy.target: no task ...`), the way methods and data
    /// loaders that check their own keys name them. A key the user did not
    /// write points at the nearest table they did. `None` when the message
    /// names no key of `root`.
    pub fn naming(message: &str, root: &Node) -> Option<Diagnostic> {
        let mut at = 0;
        message.split_whitespace().find_map(|word| {
            let start = at + message[at..].find(word)?;
            at = start + word.len();
            // Where a clause begins: the message's start, or after a colon
            // (not `data.test` in `data.train + data.test = ...`).
            if !message[..start].trim_end().is_empty()
                && !message[..start].trim_end().ends_with(':')
            {
                return None;
            }
            let path = word.trim_end_matches(':');
            let follows = &message[start + path.len()..];
            let is_path = path.contains('.')
                && path.starts_with(|c: char| c.is_ascii_alphabetic())
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
            if !is_path || !(follows.starts_with(':') || follows.starts_with(" =")) {
                return None;
            }
            let keys: Vec<&str> = path.split('.').collect();
            match root.nearest(&keys) {
                (node, depth) if depth > 0 && node.origin != Origin::Generated => {
                    Some(Diagnostic::new(path, node.origin.clone(), message))
                }
                _ => None,
            }
        })
    }
}
