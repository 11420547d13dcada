//! Pipeline text in, [`Node`] tree out: TOML parsing and `--set` overrides.

use std::path::{Path, PathBuf};

use toml_edit::{Item, Value};

use std::fmt::Write as _;

use super::diagnostic::Diagnostic;
use super::node::{Key, Node, NodeValue, Origin};
use crate::error::{Error, Located};

/// The text a pipeline was read from, kept to render diagnostics.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file name as the user gave it (or `<string>` for embedded text).
    pub name: String,
    /// The directory relative paths in the pipeline are resolved against.
    pub dir: PathBuf,
    /// The file's text.
    pub text: String,
    /// The `--set` overrides, as written.
    pub sets: Vec<String>,
}

impl Source {
    /// A source read from `path`.
    pub fn file(path: &Path, text: String) -> Source {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Source {
            name: path.display().to_string(),
            dir,
            text,
            sets: Vec::new(),
        }
    }

    /// A source given as a string; relative paths resolve against `dir`.
    pub fn string(text: String, dir: PathBuf) -> Source {
        Source {
            name: "<string>".to_string(),
            dir,
            text,
            sets: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The text of 1-based `line`, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    /// Where `d` was written: `file:line:col`, `--set <override>`, or nothing
    /// for generated values.
    pub fn location(&self, d: &Diagnostic) -> Option<String> {
        match &d.origin {
            Origin::File(span) => {
                let (line, col) = self.line_col(span.start);
                Some(format!("{}:{line}:{col}", self.name))
            }
            Origin::Set(i) => self.sets.get(*i).map(|s| format!("--set {s}")),
            Origin::Generated => None,
        }
    }

    /// `d` in full, rustc's way: message, location, the offending line with a
    /// caret, and the hint.
    pub fn render(&self, d: &Diagnostic) -> String {
        let mut out = format!("error: {}\n", d.message);
        if let Some(location) = self.location(d) {
            let _ = writeln!(out, "  --> {location}");
        }
        if let Origin::File(span) = &d.origin {
            let (line, col) = self.line_col(span.start);
            let len = self
                .text
                .get(span.clone())
                .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
            let (text, col) = snippet(self.line_text(line), col);
            let width = line.to_string().len();
            let rest = text.chars().count().saturating_sub(col - 1).max(1);
            let carets = "^".repeat(len.clamp(1, rest));
            let _ = writeln!(out, "{:width$} |", "");
            let _ = writeln!(out, "{line} | {text}");
            let _ = writeln!(out, "{:width$} | {}{carets}", "", " ".repeat(col - 1));
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }

    /// The config error of `diagnostics`, each rendered against this text.
    pub fn error(&self, diagnostics: Vec<Diagnostic>) -> Error {
        let mut rendered: Vec<String> = diagnostics.iter().map(|d| self.render(d)).collect();
        if diagnostics.len() > 1 {
            rendered.push(format!("{} errors in {}", diagnostics.len(), self.name));
        }
        let diagnostics = diagnostics
            .into_iter()
            .map(|d| Located {
                location: self.location(&d),
                path: d.path,
                message: d.message,
                help: d.help,
            })
            .collect();
        Error::Config {
            diagnostics,
            rendered: rendered.join("\n").trim_end().to_string(),
        }
    }

    /// Parses the text into a tree, or the syntax error with its location.
    pub fn parse(&self) -> Result<Node, Diagnostic> {
        let doc = toml_edit::Document::parse(self.text.as_str()).map_err(|err| {
            let origin = err.span().map(Origin::File).unwrap_or(Origin::Generated);
            Diagnostic::new(
                "",
                origin,
                format!("invalid TOML: {}", err.message().trim_end()),
            )
        })?;
        item_to_node(doc.as_item(), Origin::File(0..0))
    }

    /// Applies `dotted.key=value` overrides in order, recording each in
    /// [`Source::sets`]. Values are TOML (`100`, `"uw"`, `[64, 64]`,
    /// `{ kind = "uw" }`); anything that does not parse as TOML is a string, so
    /// `--set train.weighting.kind=uw` works unquoted.
    pub fn apply_sets(&mut self, root: &mut Node, sets: &[String]) -> Result<(), Diagnostic> {
        for set in sets {
            let index = self.sets.len();
            self.sets.push(set.clone());
            let origin = Origin::Set(index);
            let Some((path, raw)) = set.split_once('=') else {
                return Err(Diagnostic::new(
                    "",
                    origin,
                    "an override needs the form dotted.key=value",
                ));
            };
            let path = path.trim();
            let keys: Vec<&str> = path.split('.').map(str::trim).collect();
            if keys.iter().any(|k| k.is_empty()) {
                return Err(Diagnostic::new(
                    path,
                    origin,
                    format!("`{path}` is not a dotted key"),
                ));
            }
            let raw = raw.trim();
            // A number TOML cannot hold (1e400, 2^64) is not a word either.
            let numeric = raw.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
            let overflows = numeric && raw.parse::<f64>().is_ok_and(f64::is_infinite);
            let too_long = numeric
                && raw
                    .trim_start_matches(['+', '-'])
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '_')
                && raw.replace('_', "").parse::<i64>().is_err();
            let value = match raw.parse::<Value>() {
                Ok(value) => value_to_node(&value, &origin)?,
                Err(_) if overflows => {
                    return Err(Diagnostic::new(
                        path,
                        origin,
                        format!("invalid value for `{path}`: {raw} is beyond the range of floating-point numbers"),
                    ))
                }
                Err(_) if too_long => {
                    return Err(Diagnostic::new(
                        path,
                        origin,
                        format!("invalid value for `{path}`: {raw} is beyond the range of 64-bit integers"),
                    ))
                }
                // What starts like a TOML array, table or string was meant as one.
                Err(e) if raw.starts_with(['[', '{', '"', '\'']) => {
                    return Err(Diagnostic::new(
                        path,
                        origin,
                        format!(
                            "invalid TOML value for `{path}`: {}",
                            e.message().trim_end()
                        ),
                    )
                    .with_help("quote strings inside arrays and tables, as in a pipeline file"))
                }
                Err(_) => Node {
                    value: NodeValue::String(raw.to_string()),
                    origin: origin.clone(),
                },
            };
            let value = relocate(value, &origin);
            // A method given by name only (`weighting = "cagrad"`) has no keys
            // to set one of: say how to write it as a table.
            let shorthand = match root.nearest(&keys) {
                (node, depth) if depth < keys.len() => match &node.value {
                    NodeValue::String(kind) => Some((keys[..depth].join("."), kind.clone())),
                    _ => None,
                },
                _ => None,
            };
            root.set_path(&keys, value).map_err(|e| {
                let d = Diagnostic::new(path, origin.clone(), format!("cannot set `{path}`: {e}"));
                match &shorthand {
                    Some((table, kind)) => {
                        // A task's type names it in data (`y = "binary"`), a method's kind elsewhere.
                        let tag = match table.starts_with("data.tasks.") {
                            true => "type",
                            false => "kind",
                        };
                        let key = keys[table.split('.').count()..].join(".");
                        let inner = match key == tag {
                            true => format!("{tag} = {raw}"),
                            false => format!("{tag} = \"{kind}\", {key} = {raw}"),
                        };
                        d.with_help(format!(
                            "`{table}` is the name {kind:?} alone; to set its keys give the whole table: --set '{table}={{ {inner} }}'"
                        ))
                    }
                    None => d,
                }
            })?;
        }
        Ok(())
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

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Gives every node of an override the override's origin (toml_edit's spans
/// there are offsets into the override text, not into the file).
fn relocate(mut node: Node, origin: &Origin) -> Node {
    node.origin = origin.clone();
    node.value = match node.value {
        NodeValue::Table(entries) => NodeValue::Table(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.name,
                            origin: origin.clone(),
                        },
                        relocate(v, origin),
                    )
                })
                .collect(),
        ),
        NodeValue::Array(items) => {
            NodeValue::Array(items.into_iter().map(|v| relocate(v, origin)).collect())
        }
        other => other,
    };
    node
}

fn span_or(span: Option<std::ops::Range<usize>>, fallback: &Origin) -> Origin {
    span.map(Origin::File).unwrap_or_else(|| fallback.clone())
}

fn item_to_node(item: &Item, fallback: Origin) -> Result<Node, Diagnostic> {
    let origin = span_or(item.span(), &fallback);
    match item {
        Item::None => Ok(Node::table(origin)),
        Item::Value(value) => value_to_node(value, &fallback),
        Item::Table(table) => {
            let mut entries = Vec::new();
            for (name, child) in table.iter() {
                let key_origin = table.key(name).and_then(|k| k.span()).map(Origin::File);
                let key_origin = key_origin.unwrap_or_else(|| origin.clone());
                let node = item_to_node(child, key_origin.clone())?;
                entries.push((
                    Key {
                        name: name.to_string(),
                        origin: key_origin,
                    },
                    node,
                ));
            }
            Ok(Node {
                value: NodeValue::Table(entries),
                origin,
            })
        }
        Item::ArrayOfTables(array) => {
            let items = array
                .iter()
                .map(|t| item_to_node(&Item::Table(t.clone()), origin.clone()))
                .collect::<Result<_, _>>()?;
            Ok(Node {
                value: NodeValue::Array(items),
                origin,
            })
        }
    }
}

fn value_to_node(value: &Value, fallback: &Origin) -> Result<Node, Diagnostic> {
    let origin = span_or(value.span(), fallback);
    let value = match value {
        Value::String(s) => NodeValue::String(s.value().clone()),
        Value::Integer(i) => NodeValue::Integer(*i.value()),
        Value::Float(f) => NodeValue::Float(*f.value()),
        Value::Boolean(b) => NodeValue::Bool(*b.value()),
        Value::Datetime(_) => {
            return Err(Diagnostic::new(
                "",
                origin,
                "dates are not supported in pipelines; use a string",
            ))
        }
        Value::Array(array) => NodeValue::Array(
            array
                .iter()
                .map(|v| value_to_node(v, &origin))
                .collect::<Result<_, _>>()?,
        ),
        Value::InlineTable(table) => {
            let mut entries = Vec::new();
            for (name, child) in table.iter() {
                let key_origin = table
                    .get_key_value(name)
                    .and_then(|(k, _)| k.span())
                    .map(Origin::File)
                    .unwrap_or_else(|| origin.clone());
                entries.push((
                    Key {
                        name: name.to_string(),
                        origin: key_origin.clone(),
                    },
                    value_to_node(child, &key_origin)?,
                ));
            }
            NodeValue::Table(entries)
        }
    };
    Ok(Node { value, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::file(Path::new("p.toml"), text.to_string())
    }

    #[test]
    fn setting_a_key_of_a_method_given_by_name_says_how_to_write_the_table() {
        let mut src = source("[train]\nweighting = \"cagrad\"\n");
        let mut root = src.parse().unwrap();
        let d = src
            .apply_sets(&mut root, &["train.weighting.c=0.4".into()])
            .unwrap_err();
        assert_eq!(
            d.help.as_deref(),
            Some("`train.weighting` is the name \"cagrad\" alone; to set its keys give the whole table: --set 'train.weighting={ kind = \"cagrad\", c = 0.4 }'")
        );
        // A task given by its type alone: the table keys it by `type`.
        let mut src = source("[data]\ntasks = { y = \"binary\" }\n");
        let mut root = src.parse().unwrap();
        let d = src
            .apply_sets(&mut root, &["data.tasks.y.type=\"multiclass\"".into()])
            .unwrap_err();
        assert_eq!(
            d.help.as_deref(),
            Some("`data.tasks.y` is the name \"binary\" alone; to set its keys give the whole table: --set 'data.tasks.y={ type = \"multiclass\" }'")
        );
    }

    #[test]
    fn a_message_naming_a_key_points_at_it_or_at_the_nearest_table_written() {
        let src =
            source("[train]\nsteps = 10\nstrategy = { kind = \"meta-rtl\", target = \"x\" }\n");
        let root = src.parse().unwrap();
        let at = |message: &str| {
            Diagnostic::naming(message, &root).map(|d| {
                let loc = src.location(&d).unwrap();
                (d.path, loc)
            })
        };
        let named = |path: &str, loc: &str| Some((path.to_string(), loc.to_string()));
        // After other clauses (a plugin's file name has a dot but names no key).
        assert_eq!(
            at("method `m` (libm.so): create: train.strategy.target: no task `x`"),
            named("train.strategy.target", "p.toml:3:42")
        );
        assert_eq!(
            at("train.steps = 10 is too few"),
            named("train.steps", "p.toml:2:9")
        );
        // A default the user did not write: the table they did.
        assert_eq!(
            at("train.strategy.inner_lr: too large"),
            named("train.strategy.inner_lr", "p.toml:3:12")
        );
        // The table named around a method's own key: the key.
        assert_eq!(
            at("train.strategy: method `m`: create: train.strategy.target: no task `x`"),
            named("train.strategy.target", "p.toml:3:42")
        );
        assert_eq!(
            at("train.strategy: method `m`: no task"),
            named("train.strategy", "p.toml:3:12")
        );
        // Equally deep: the inner clause, the method's own words.
        assert_eq!(
            at("train.strategy: method `m`: create: train.steps: too few"),
            named("train.steps", "p.toml:2:9")
        );
        assert_eq!(at("data.kind: unknown"), None);
        assert_eq!(at("see train.steps for more"), None);
        // A key inside a clause is not what the clause is about.
        assert_eq!(at("train.batch + train.steps = 20 rows"), None);
    }

    #[test]
    fn keys_and_values_carry_their_line_and_column() {
        let src = source("[train]\nsteps = 10\nweighting = { kind = \"ew\" }\n");
        let root = src.parse().unwrap();
        let train = root.get("train").unwrap();
        let NodeValue::Table(entries) = &train.value else {
            panic!()
        };
        let Origin::File(span) = &entries[1].0.origin else {
            panic!()
        };
        assert_eq!(src.line_col(span.start), (3, 1));
        let kind = train.get("weighting").unwrap().get("kind").unwrap();
        let Origin::File(span) = &kind.origin else {
            panic!()
        };
        assert_eq!(src.line_col(span.start), (3, 22));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let src = source("[train]\nsteps = = 3\n");
        let err = src.parse().unwrap_err();
        let Origin::File(span) = &err.origin else {
            panic!("{err:?}")
        };
        assert_eq!(src.line_col(span.start).0, 2);
    }

    #[test]
    fn keyless_lines_are_a_syntax_error_not_a_panic_in_the_toml_parser() {
        // Found by the fuzz tests: toml_edit 0.23 panicked ("all items have spans").
        let src = source("[run]\n= =\nname = \"fuzz\"\n. =");
        let err = src.parse().unwrap_err();
        assert!(err.message.starts_with("invalid TOML"), "{}", err.message);
        let Origin::File(span) = &err.origin else {
            panic!("{err:?}")
        };
        assert_eq!(src.line_col(span.start).0, 2);
    }

    #[test]
    fn sets_parse_toml_values_and_fall_back_to_strings() {
        let mut src = source("[train]\nsteps = 10\n");
        let mut root = src.parse().unwrap();
        let sets = vec![
            "train.steps=20".to_string(),
            "train.weighting.kind=uw".to_string(),
        ];
        src.apply_sets(&mut root, &sets).unwrap();
        let train = root.get("train").unwrap();
        assert!(matches!(
            train.get("steps").unwrap().value,
            NodeValue::Integer(20)
        ));
        let kind = train.get("weighting").unwrap().get("kind").unwrap();
        assert!(matches!(&kind.value, NodeValue::String(s) if s == "uw"));
        assert_eq!(kind.origin, Origin::Set(1));
    }

    #[test]
    fn a_malformed_toml_value_in_a_set_is_an_error_at_that_set_not_a_string() {
        let mut src = source("[train]\nsteps = 10\n");
        let mut root = src.parse().unwrap();
        let sets = vec![
            "train.weighting.kind=uw".to_string(),
            "model.backbone.hidden=[64,".to_string(),
        ];
        let err = src.apply_sets(&mut root, &sets).unwrap_err();
        assert_eq!(err.origin, Origin::Set(1));
        assert!(
            err.message
                .starts_with("invalid TOML value for `model.backbone.hidden`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_set_through_a_non_table_names_the_prefix() {
        let mut src = source("[train]\nsteps = 10\n");
        let mut root = src.parse().unwrap();
        let err = src
            .apply_sets(&mut root, &["train.steps.x=1".to_string()])
            .unwrap_err();
        assert!(
            err.message.contains("`train.steps` is not a table"),
            "{}",
            err.message
        );
    }

    #[test]
    fn render_points_at_the_column_with_a_caret_and_help() {
        let source = Source::file(Path::new("q.toml"), "[train]\nstpes = 10\n".into());
        let d = Diagnostic::new(
            "train.stpes",
            Origin::File(8..13),
            "unknown key `train.stpes`",
        )
        .with_help("did you mean `steps`?");
        let text = source.render(&d);
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
        let rendered = source.render(&d);
        let shown = rendered.lines().nth(3).unwrap();
        assert!(shown.chars().count() < 120, "{shown}");
        assert!(shown.contains("…") && shown.contains("\"oops\""), "{shown}");
        let caret = rendered.lines().nth(4).unwrap();
        let at = caret.chars().position(|c| c == '^').unwrap();
        assert_eq!(shown.chars().nth(at), Some('"'), "{rendered}");
    }
}
