//! Config errors, rendered the way rustc renders them: message, location, the
//! offending line with a caret, and a hint.

use std::fmt::Write as _;

use super::node::Origin;
use super::source::Source;

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

    /// `file:line:col`, `--set <override>`, or nothing for generated values.
    pub fn location(&self, source: &Source) -> Option<String> {
        match &self.origin {
            Origin::File(span) => {
                let (line, col) = source.line_col(span.start);
                Some(format!("{}:{line}:{col}", source.name))
            }
            Origin::Set(i) => source.sets.get(*i).map(|s| format!("--set {s}")),
            Origin::Generated => None,
        }
    }

    /// The full multi-line rendering against `source`.
    pub fn render(&self, source: &Source) -> String {
        let mut out = format!("error: {}\n", self.message);
        if let Some(location) = self.location(source) {
            let _ = writeln!(out, "  --> {location}");
        }
        if let Origin::File(span) = &self.origin {
            let (line, col) = source.line_col(span.start);
            let text = source.line_text(line);
            let width = line.to_string().len();
            let rest = text.chars().count().saturating_sub(col - 1).max(1);
            let len = source
                .text
                .get(span.clone())
                .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
            let carets = "^".repeat(len.clamp(1, rest));
            let _ = writeln!(out, "{:width$} |", "");
            let _ = writeln!(out, "{line} | {text}");
            let _ = writeln!(out, "{:width$} | {}{carets}", "", " ".repeat(col - 1));
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }
}

/// The candidate closest to `word`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(word, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn render_points_at_the_column_with_a_caret_and_help() {
        let source = Source::file(Path::new("q.toml"), "[train]\nstpes = 10\n".into());
        let d = Diagnostic::new(
            "train.stpes",
            Origin::File(8..13),
            "unknown key `train.stpes`",
        )
        .with_help("did you mean `steps`?");
        let text = d.render(&source);
        assert!(text.contains("--> q.toml:2:1"), "{text}");
        assert!(text.contains("2 | stpes = 10"), "{text}");
        assert!(text.contains("  | ^^^^^\n"), "{text}");
        assert!(text.contains("= help: did you mean `steps`?"), "{text}");
    }

    #[test]
    fn did_you_mean_picks_close_words_only() {
        assert_eq!(
            did_you_mean("stpes", ["steps", "batch", "seed"]),
            Some("steps")
        );
        assert_eq!(
            did_you_mean("pcgard", ["pcgrad", "cagrad", "mgda"]),
            Some("pcgrad")
        );
        assert_eq!(did_you_mean("zzzzzz", ["steps", "batch"]), None);
    }
}
