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
            let len = source
                .text
                .get(span.clone())
                .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
            let (text, col) = snippet(source.line_text(line), col);
            let width = line.to_string().len();
            let rest = text.chars().count().saturating_sub(col - 1).max(1);
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

/// At most this many characters of an offending line are shown.
const SNIPPET: usize = 100;

/// `line` cut to [`SNIPPET`] characters around 1-based column `col` (with `…`
/// where text was cut), and the column's position in the cut line.
fn snippet(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SNIPPET {
        return (line.to_string(), col);
    }
    let start = col
        .saturating_sub(1 + SNIPPET / 4)
        .min(chars.len() - SNIPPET);
    let end = start + SNIPPET;
    let mut text: String = chars[start..end].iter().collect();
    let mut col = col - start;
    if start > 0 {
        text.insert(0, '…');
        col += 1;
    }
    if end < chars.len() {
        text.push('…');
    }
    (text, col)
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
    fn long_lines_are_cut_around_the_column() {
        let text = format!(
            "x = [{}, \"oops\", {}]\n",
            "1, ".repeat(2000),
            "2, ".repeat(2000)
        );
        let at = text.find("\"oops\"").unwrap();
        let source = Source::file(Path::new("q.toml"), text);
        let d = Diagnostic::new("x", Origin::File(at..at + 6), "wrong type");
        let rendered = d.render(&source);
        let shown = rendered.lines().nth(3).unwrap();
        assert!(shown.chars().count() < 120, "{shown}");
        assert!(shown.contains("…") && shown.contains("\"oops\""), "{shown}");
        let caret = rendered.lines().nth(4).unwrap();
        let at = caret.chars().position(|c| c == '^').unwrap();
        assert_eq!(shown.chars().nth(at), Some('"'), "{rendered}");
    }
}
