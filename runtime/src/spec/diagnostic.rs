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

    /// `message` at the key of `root` it names, when one of its clauses
    /// begins with a dotted key path followed by `:` or ` =` (`... create:
    /// train.strategy.target: no task ...`), the way methods and data
    /// loaders that check their own keys name them. A key the user did not
    /// write points at the nearest table they did; of several keys named,
    /// the one written deepest in `root`, the last among equals. `None` when
    /// the message names no key of `root`.
    pub fn naming(message: &str, root: &Node) -> Option<Diagnostic> {
        // Clauses begin at the start and after each colon (so not `data.test`
        // in `data.train + data.test = ...`).
        let clauses = std::iter::once(message)
            .chain(message.match_indices(':').map(|(i, _)| &message[i + 1..]));
        // The deepest key named wins, and the innermost clause among equals:
        // a method's own key over the table the runtime names around it.
        let named = clauses.filter_map(|clause| {
            let clause = clause.trim_start();
            let end = clause.find(|c: char| !(c.is_ascii_alphanumeric() || "._-[]".contains(c)))?;
            let (path, follows) = clause.split_at(end);
            let is_path = path.contains('.') && path.starts_with(|c: char| c.is_ascii_alphabetic());
            if !is_path || !(follows.starts_with(':') || follows.starts_with(" =")) {
                return None;
            }
            let keys: Vec<&str> = path.split('.').collect();
            match root.nearest(&keys) {
                (node, depth) if depth > 0 && node.origin != Origin::Generated => {
                    Some((depth, Diagnostic::new(path, node.origin.clone(), message)))
                }
                _ => None,
            }
        });
        // `max_by_key` keeps the last of equal keys.
        named
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, diagnostic)| diagnostic)
    }
}
