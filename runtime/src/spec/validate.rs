//! Checks a [`Node`] tree against a JSON Schema and produces the resolved config
//! (defaults filled in) or every problem found, each with its location.
//!
//! The supported subset is what method schemas use, hand-written or derived
//! with `schemars`: `type` (a name, or a list where `"null"` stands for an
//! absent optional value), `properties`, `required`, `additionalProperties` (a
//! schema for free-form keys; anything else means no unknown keys), `enum`,
//! `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `items`, `minItems`, `maxItems`, `default`; `oneOf` of tables that each fix
//! one key with `const` (a serde internally tagged enum: the tag picks the
//! variant, so keys of one variant are unknown keys in another); plus the
//! extension `x-taskweave-role`: a method table `{ kind = "...", ... }` (or just
//! the kind's name as a string), validated against that kind's own schema.
//! Everything else in a schema (`title`, `format`, `description`, ...) is
//! ignored.

use serde_json::{Map, Value};

use taskweave_plugin_api::config::did_you_mean;

use super::diagnostic::Diagnostic;
use super::node::{Node, NodeValue, Origin};

/// Why a kind cannot be used.
pub enum KindError {
    /// No such kind in this role.
    Unknown,
    /// It exists but cannot be used (for example two plugins provide it).
    Unusable(String),
}

/// Where kinds come from: the method registry plus the runtime's own tables
/// (data sources, backbones, optimizers).
pub trait Kinds {
    /// The config schema of `kind` in `role`.
    fn lookup(&self, role: &str, kind: &str) -> Result<Value, KindError>;
    /// Every kind of `role`, sorted, for suggestions.
    fn kinds(&self, role: &str) -> Vec<String>;
}

/// Validates `node` against `schema`; `path` is the dotted path of `node`.
pub fn validate(
    node: &Node,
    schema: &Value,
    path: &str,
    kinds: &dyn Kinds,
) -> Result<Value, Vec<Diagnostic>> {
    let mut v = Validator {
        kinds,
        errors: Vec::new(),
    };
    let value = v.check(node, schema, path);
    if v.errors.is_empty() {
        Ok(value)
    } else {
        Err(v.errors)
    }
}

/// Whether `schema` allows null (`"type": [.., "null"]`): an `Option` field.
fn nullable(schema: &Value) -> bool {
    schema
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t == "null"))
}

/// The values `schema` allows, when it lists them: `enum`, or a `oneOf` of
/// `const`s (how `schemars` writes an enum whose variants have doc comments).
fn allowed_values(schema: &Value) -> Option<Vec<Value>> {
    if let Some(list) = schema.get("enum").and_then(Value::as_array) {
        return Some(list.clone());
    }
    schema
        .get("oneOf")?
        .as_array()?
        .iter()
        .map(|v| v.get("const").cloned())
        .collect()
}

/// A `oneOf` whose alternatives are tables that all fix the same key with
/// `const` (how `schemars` writes a serde internally tagged enum): that key and
/// each alternative with its tag value.
fn tagged_variants(schema: &Value) -> Option<(&str, Vec<(&str, &Value)>)> {
    let variants = schema.get("oneOf")?.as_array()?;
    let first = variants.first()?.get("properties")?.as_object()?;
    let tag = first
        .iter()
        .find(|(_, p)| p.get("const").is_some_and(Value::is_string))?
        .0;
    let tagged = variants
        .iter()
        .map(|v| Some((v["properties"][tag].get("const")?.as_str()?, v)))
        .collect::<Option<Vec<_>>>()?;
    Some((tag.as_str(), tagged))
}

/// `schema` without property `key` (and without requiring it): the tag of a
/// tagged table is checked, and put back, by the caller.
fn without_key(schema: &Value, key: &str) -> Value {
    let mut schema = schema.clone();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.remove(key);
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != key);
    }
    schema
}

/// How a tagged table finds its schema: the tag key, what the tag names (for
/// messages), the schema of each tag value, and every valid tag value.
struct Tagged<'a> {
    tag: &'a str,
    what: &'a str,
    lookup: &'a dyn Fn(&str) -> Result<Value, KindError>,
    names: &'a dyn Fn() -> Vec<String>,
    /// The tag a table without one gets (`backbone = { hidden = [..] }` is an
    /// MLP): the tag of the schema's default, if it has one.
    default: Option<&'a str>,
    /// Whether plugins provide kinds too (methods), which an unknown kind's
    /// help then mentions.
    plugins: bool,
}

struct Validator<'a> {
    kinds: &'a dyn Kinds,
    errors: Vec<Diagnostic>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        "the pipeline".to_string()
    } else {
        format!("`{path}`")
    }
}

fn article(type_name: &str) -> &'static str {
    match type_name {
        "object" => "a table",
        "array" => "an array",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        _ => "a value",
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator<'_> {
    fn error(&mut self, path: &str, origin: &Origin, message: String, help: Option<String>) {
        let mut d = Diagnostic::new(path, origin.clone(), message);
        d.help = help;
        self.errors.push(d);
    }

    fn check(&mut self, node: &Node, schema: &Value, path: &str) -> Value {
        if let Some(role) = schema.get("x-taskweave-role").and_then(Value::as_str) {
            return self.check_kind(node, role, path);
        }
        if let Some((tag, variants)) = tagged_variants(schema) {
            // `optimizer = { kind = ... }` reads best as "unknown optimizer"; `type = ...` as "unknown type".
            let what = match path.rsplit('.').next() {
                Some(last) if tag == "kind" && !last.is_empty() => last,
                _ => tag,
            };
            let tagged = Tagged {
                tag,
                what,
                lookup: &|name| {
                    variants
                        .iter()
                        .find(|(value, _)| *value == name)
                        .map(|(_, schema)| without_key(schema, tag))
                        .ok_or(KindError::Unknown)
                },
                names: &|| variants.iter().map(|(v, _)| v.to_string()).collect(),
                default: schema
                    .get("default")
                    .and_then(|d| d.get(tag))
                    .and_then(Value::as_str),
                plugins: false,
            };
            return self.check_tagged(node, path, &tagged);
        }
        let expected = match schema.get("type") {
            Some(Value::String(t)) => t.as_str(),
            // ["integer", "null"]: an Option; TOML has no null, so the value is the other type.
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("any"),
            _ if schema.get("properties").is_some() => "object",
            // A oneOf of consts (an enum with documented variants) types its values.
            _ => match allowed_values(schema).as_deref() {
                Some([Value::String(_), ..]) => "string",
                _ => "any",
            },
        };
        let value = match (&node.value, expected) {
            (NodeValue::Table(_), "object" | "any") => return self.check_table(node, schema, path),
            (NodeValue::Array(items), "array" | "any") => {
                self.check_array_len(node, items.len(), schema, path);
                let item_schema = schema.get("items").cloned().unwrap_or(Value::Bool(true));
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.check(item, &item_schema, &format!("{path}[{i}]")))
                    .collect();
                Value::Array(items)
            }
            (NodeValue::String(s), "string" | "any") => Value::String(s.clone()),
            (NodeValue::Bool(b), "boolean" | "any") => Value::Bool(*b),
            (NodeValue::Integer(i), "integer" | "number" | "any") => {
                self.check_range(node, *i as f64, schema, path);
                Value::from(*i)
            }
            (NodeValue::Float(f), "number" | "any") => {
                if !f.is_finite() {
                    let msg = format!("{} must be a finite number, got {f}", shown(path));
                    self.error(path, &node.origin, msg, None);
                    return Value::Null;
                }
                self.check_range(node, *f, schema, path);
                Value::from(*f)
            }
            _ => {
                let msg = format!(
                    "wrong type for {}: expected {}, found {}",
                    shown(path),
                    article(expected),
                    node.type_name()
                );
                let help = schema
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.error(path, &node.origin, msg, help);
                return Value::Null;
            }
        };
        if let Some(allowed) = allowed_values(schema) {
            if !allowed.contains(&value) {
                // TOML has no null: an optional value's null is the key left out.
                let names: Vec<String> = allowed
                    .iter()
                    .filter(|a| !a.is_null())
                    .map(|a| a.as_str().map_or(a.to_string(), str::to_string))
                    .collect();
                let optional = match allowed.contains(&Value::Null) {
                    true => ", or leave the key out",
                    false => "",
                };
                let near = value
                    .as_str()
                    .and_then(|s| did_you_mean(s, names.iter().map(String::as_str)));
                let help = match near {
                    Some(n) => format!("did you mean `{n}`? (one of {}{optional})", list(&names)),
                    None => format!("expected one of {}{optional}", list(&names)),
                };
                let msg = format!("invalid value {value} for {}", shown(path));
                self.error(path, &node.origin, msg, Some(help));
            }
        }
        if let Some(fixed) = schema.get("const") {
            if *fixed != value {
                let msg = format!("{} must be {fixed}, got {value}", shown(path));
                self.error(path, &node.origin, msg, None);
            }
        }
        value
    }

    fn check_range(&mut self, node: &Node, x: f64, schema: &Value, path: &str) {
        let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
        let checks = [
            ("minimum", ">=", bound("minimum").is_some_and(|m| x < m)),
            ("maximum", "<=", bound("maximum").is_some_and(|m| x > m)),
            (
                "exclusiveMinimum",
                ">",
                bound("exclusiveMinimum").is_some_and(|m| x <= m),
            ),
            (
                "exclusiveMaximum",
                "<",
                bound("exclusiveMaximum").is_some_and(|m| x >= m),
            ),
        ];
        for (key, op, failed) in checks {
            if failed {
                let limit = &schema[key];
                let msg = format!("{} must be {op} {limit}, got {x}", shown(path));
                self.error(path, &node.origin, msg, None);
            }
        }
    }

    fn check_array_len(&mut self, node: &Node, len: usize, schema: &Value, path: &str) {
        let min = schema.get("minItems").and_then(Value::as_u64);
        let max = schema.get("maxItems").and_then(Value::as_u64);
        if min.is_some_and(|m| (len as u64) < m) || max.is_some_and(|m| (len as u64) > m) {
            let bounds = match (min, max) {
                (Some(a), Some(b)) if a == b => format!("exactly {a}"),
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => unreachable!("checked above"),
            };
            let msg = format!("{} needs {bounds} items, got {len}", shown(path));
            self.error(path, &node.origin, msg, None);
        }
    }

    fn check_table(&mut self, node: &Node, schema: &Value, path: &str) -> Value {
        let NodeValue::Table(entries) = &node.value else {
            unreachable!("caller matched a table")
        };
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let extra = schema.get("additionalProperties").filter(|s| s.is_object());
        let open = schema.get("type").is_none() && schema.get("properties").is_none();
        let mut out = Map::new();
        for (key, child) in entries {
            let child_path = join(path, &key.name);
            if let Some(sub) = properties.get(&key.name).or(extra) {
                let value = self.check(child, sub, &child_path);
                out.insert(key.name.clone(), value);
            } else if open {
                out.insert(
                    key.name.clone(),
                    self.check(child, &Value::Bool(true), &child_path),
                );
            } else {
                let names: Vec<String> = properties.keys().cloned().collect();
                let help = match did_you_mean(&key.name, names.iter().map(String::as_str)) {
                    Some(near) => Some(format!("did you mean `{near}`?")),
                    None if names.is_empty() => Some(format!("{} takes no keys", shown(path))),
                    None => Some(format!("valid keys: {}", list(&names))),
                };
                let msg = format!("unknown key `{}` in {}", key.name, shown(path));
                self.error(&child_path, &key.origin, msg, help);
            }
        }
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, sub) in properties {
            if out.contains_key(name) || entries.iter().any(|(k, _)| &k.name == name) {
                continue;
            }
            let child_path = join(path, name);
            if required.contains(&name.as_str()) {
                let help = sub
                    .get("description")
                    .and_then(Value::as_str)
                    .map(|d| format!("add `{name} = ...` ({d})"));
                let msg = format!("missing required key `{child_path}`");
                self.error(&child_path, &node.origin, msg, help);
            } else if let Some(default) = sub.get("default").filter(|d| !d.is_null()) {
                // A `null` default (an unset Option) stays absent: TOML has no null.
                let generated = Node::from_json(default, &Origin::Generated);
                let value = self.check(&generated, sub, &child_path);
                out.insert(name.clone(), value);
            } else if sub.get("x-taskweave-role").is_none()
                && sub.get("properties").is_some()
                && !nullable(sub)
            {
                // A section left out entirely gets its own defaults (an
                // optional one, `Option<Table>`, stays absent).
                let value = self.check(&Node::table(Origin::Generated), sub, &child_path);
                out.insert(name.clone(), value);
            }
        }
        self.check_one_of(node, schema, path);
        Value::Object(out)
    }

    /// `x-taskweave-one-of`: exactly one of these keys must be given (such as
    /// `train.steps` or `train.epochs`).
    fn check_one_of(&mut self, node: &Node, schema: &Value, path: &str) {
        let Some(keys) = schema.get("x-taskweave-one-of").and_then(Value::as_array) else {
            return;
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        let given: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| node.get(k).is_some())
            .collect();
        let (first, rest) = keys.split_first().unwrap_or((&"", &[]));
        match given.as_slice() {
            [_] => {}
            [] => {
                let others: Vec<String> = rest
                    .iter()
                    .map(|k| format!("`{}`", join(path, k)))
                    .collect();
                let msg = format!(
                    "missing required key `{}` (or {})",
                    join(path, first),
                    others.join(" or ")
                );
                self.error(&join(path, first), &node.origin, msg, None);
            }
            [.., last] => {
                let at = node.get(last).map_or(&node.origin, |n| &n.origin);
                let msg = format!(
                    "give only one of {} in {}",
                    list(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()),
                    shown(path)
                );
                self.error(&join(path, last), at, msg, None);
            }
        }
    }

    fn check_kind(&mut self, node: &Node, role: &str, path: &str) -> Value {
        // The runtime's own tables read better in lower case ("unknown data kind").
        let role_name = match role {
            "Data" => "data kind",
            other => other,
        };
        let kinds = self.kinds;
        let tagged = Tagged {
            tag: "kind",
            what: role_name,
            lookup: &|kind| kinds.lookup(role, kind),
            names: &|| kinds.kinds(role),
            default: None,
            plugins: true,
        };
        self.check_tagged(node, path, &tagged)
    }

    /// A table whose `tagged.tag` key picks its schema (or just the tag's
    /// value as a string); the resolved value has the tag first.
    fn check_tagged(&mut self, node: &Node, path: &str, tagged: &Tagged<'_>) -> Value {
        let Tagged { tag, what, .. } = *tagged;
        let (kind_node, rest) = match &node.value {
            NodeValue::String(_) => (node.clone(), Node::table(node.origin.clone())),
            NodeValue::Table(entries) => {
                let defaulted = tagged.default.map(|kind| Node {
                    value: NodeValue::String(kind.to_string()),
                    origin: node.origin.clone(),
                });
                let Some(kind) = node.get(tag).or(defaulted.as_ref()) else {
                    let kinds = (tagged.names)();
                    let msg = format!(
                        "missing required key `{}` (which {what} to use)",
                        join(path, tag)
                    );
                    let help = format!("add `{tag} = \"...\"`, one of {}", list(&kinds));
                    self.error(&join(path, tag), &node.origin, msg, Some(help));
                    return Value::Null;
                };
                let rest: Vec<_> = entries
                    .iter()
                    .filter(|(k, _)| k.name != tag)
                    .cloned()
                    .collect();
                (
                    kind.clone(),
                    Node {
                        value: NodeValue::Table(rest),
                        origin: node.origin.clone(),
                    },
                )
            }
            _ => {
                let msg = format!(
                    "wrong type for {}: expected a {what} table like {{ {tag} = \"...\" }}, found {}",
                    shown(path),
                    node.type_name()
                );
                self.error(path, &node.origin, msg, None);
                return Value::Null;
            }
        };
        let kind_path = join(path, tag);
        let NodeValue::String(kind) = &kind_node.value else {
            let msg = format!(
                "wrong type for `{kind_path}`: expected a string, found {}",
                kind_node.type_name()
            );
            self.error(&kind_path, &kind_node.origin, msg, None);
            return Value::Null;
        };
        let schema = match (tagged.lookup)(kind) {
            Ok(schema) => schema,
            Err(KindError::Unknown) => {
                let kinds = (tagged.names)();
                let help = match did_you_mean(kind, kinds.iter().map(String::as_str)) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None if kinds.is_empty() => format!("no {what} is available"),
                    None => format!("available: {}", list(&kinds)),
                };
                // The name may be right and its plugin not loaded.
                let help = match tagged.plugins {
                    true => format!(
                        "{help} (a plugin's method needs its directory in `[plugins] dirs` or `--plugins DIR`)"
                    ),
                    false => help,
                };
                let msg = format!("unknown {what} `{kind}` at `{kind_path}`");
                self.error(&kind_path, &kind_node.origin, msg, Some(help));
                return Value::Null;
            }
            Err(KindError::Unusable(why)) => {
                let msg = format!("{what} `{kind}` at `{kind_path}` cannot be used: {why}");
                self.error(&kind_path, &kind_node.origin, msg, None);
                return Value::Null;
            }
        };
        let mut value = self.check_table(&rest, &schema, path);
        if let Value::Object(map) = &mut value {
            let mut with_kind = Map::new();
            with_kind.insert(tag.to_string(), Value::String(kind.clone()));
            with_kind.append(map);
            value = Value::Object(with_kind);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::Source;
    use super::*;
    use serde_json::json;
    use std::path::Path;

    struct TestKinds;
    impl Kinds for TestKinds {
        fn lookup(&self, role: &str, kind: &str) -> Result<Value, KindError> {
            match (role, kind) {
                ("Weighting", "ew") => Ok(json!({"type": "object", "properties": {}})),
                ("Weighting", "pcgrad") => Ok(json!({"type": "object", "properties": {
                    "seed_offset": {"type": "integer", "default": 0}}})),
                ("Weighting", "dup") => Err(KindError::Unusable("two plugins provide it".into())),
                _ => Err(KindError::Unknown),
            }
        }
        fn kinds(&self, _role: &str) -> Vec<String> {
            vec!["ew".into(), "pcgrad".into()]
        }
    }

    fn schema() -> Value {
        json!({"type": "object", "required": ["train"], "properties": {
            "train": {"type": "object", "required": ["steps"], "properties": {
                "steps": {"type": "integer", "minimum": 1, "description": "optimizer steps"},
                "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.001},
                "mode": {"type": "string", "enum": ["fast", "exact"], "default": "fast"},
                "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [64]},
                "weighting": {"x-taskweave-role": "Weighting", "default": {"kind": "ew"}},
                "pref": {"type": ["array", "null"], "items": {"type": "number"}, "default": null},
                // An optional section (`Option<Table>`) with a required key.
                "transfer": {"type": ["object", "null"], "required": ["target"],
                             "properties": {"target": {"type": "string"}}},
            }},
            "run": {"type": "object", "properties": {"seed": {"type": "integer", "default": 0}}},
        }})
    }

    fn run(text: &str) -> (Source, Result<Value, Vec<Diagnostic>>) {
        let source = Source::file(Path::new("p.toml"), text.to_string());
        let node = source.parse().unwrap();
        let result = validate(&node, &schema(), "", &TestKinds);
        (source, result)
    }

    #[test]
    fn defaults_are_filled_in_everywhere() {
        let (_, result) = run("[train]\nsteps = 5\nweighting = \"pcgrad\"\n");
        assert_eq!(
            result.unwrap(),
            json!({"train": {"steps": 5, "lr": 0.001, "mode": "fast", "hidden": [64],
                             "weighting": {"kind": "pcgrad", "seed_offset": 0}},
                   "run": {"seed": 0}})
        );
    }

    #[test]
    fn an_optional_section_left_out_stays_out_and_given_needs_its_keys() {
        // Absent: `defaults_are_filled_in_everywhere` shows no `transfer`.
        let (_, result) = run("[train]\nsteps = 5\n[train.transfer]\n");
        let errors = result.unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "missing required key `train.transfer.target`"
        );
        let (_, result) = run("[train]\nsteps = 5\ntransfer = { target = \"gap\" }\n");
        assert_eq!(
            result.unwrap()["train"]["transfer"],
            json!({"target": "gap"})
        );
    }

    #[test]
    fn unknown_key_names_path_location_and_nearest_key() {
        let (source, result) = run("[train]\nsteps = 5\nlrr = 0.1\n");
        let errors = result.unwrap_err();
        assert_eq!(errors.len(), 1);
        let d = &errors[0];
        assert_eq!(d.path, "train.lrr");
        assert_eq!(source.location(d).unwrap(), "p.toml:3:1");
        assert_eq!(d.help.as_deref(), Some("did you mean `lr`?"));
    }

    #[test]
    fn wrong_type_and_range_and_enum_are_reported_together() {
        let (source, result) = run("[train]\nsteps = \"ten\"\nlr = -1.0\nmode = \"fsat\"\n");
        let errors = result.unwrap_err();
        let messages: Vec<_> = errors.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(errors.len(), 3, "{messages:?}");
        assert!(messages[0]
            .contains("wrong type for `train.steps`: expected an integer, found a string"));
        assert!(messages[1].contains("`train.lr` must be > 0"));
        assert_eq!(
            errors[2].help.as_deref(),
            Some("did you mean `fast`? (one of `fast`, `exact`)")
        );
        assert_eq!(source.location(&errors[2]).unwrap(), "p.toml:4:8");
    }

    #[test]
    fn unknown_kind_suggests_the_nearest_and_unusable_kind_says_why() {
        let (source, result) = run("[train]\nsteps = 5\nweighting = { kind = \"pcgard\" }\n");
        let errors = result.unwrap_err();
        assert_eq!(
            errors[0].message,
            "unknown Weighting `pcgard` at `train.weighting.kind`"
        );
        assert_eq!(
            errors[0].help.as_deref(),
            Some("did you mean `pcgrad`? (a plugin's method needs its directory in `[plugins] dirs` or `--plugins DIR`)")
        );
        assert_eq!(source.location(&errors[0]).unwrap(), "p.toml:3:22");
        let (_, result) = run("[train]\nsteps = 5\nweighting = \"dup\"\n");
        assert!(result.unwrap_err()[0]
            .message
            .contains("cannot be used: two plugins provide it"));
    }

    #[test]
    fn unknown_key_inside_a_method_table_is_checked_against_its_schema() {
        let (_, result) =
            run("[train]\nsteps = 5\nweighting = { kind = \"pcgrad\", seed_ofset = 1 }\n");
        let errors = result.unwrap_err();
        assert_eq!(errors[0].path, "train.weighting.seed_ofset");
        assert_eq!(
            errors[0].help.as_deref(),
            Some("did you mean `seed_offset`?")
        );
    }

    #[test]
    fn missing_required_keys_and_sections_are_named() {
        let (_, result) = run("[run]\nseed = 1\n");
        assert_eq!(
            result.unwrap_err()[0].message,
            "missing required key `train`"
        );
        let (_, result) = run("[train]\nlr = 0.1\n");
        let d = &result.unwrap_err()[0];
        assert_eq!(d.message, "missing required key `train.steps`");
        assert_eq!(
            d.help.as_deref(),
            Some("add `steps = ...` (optimizer steps)")
        );
    }

    #[test]
    fn schemars_shapes_are_understood_tagged_enums_options_and_const() {
        let schema = json!({"type": "object", "properties": {
            "task": {"oneOf": [
                {"type": "object", "properties": {
                    "type": {"type": "string", "const": "regression"},
                    "loss": {"type": "string", "enum": ["mse", "mae"], "default": "mse"}},
                 "required": ["type"], "additionalProperties": false},
                {"type": "object", "properties": {
                    "type": {"type": "string", "const": "multiclass"},
                    "classes": {"type": "integer", "minimum": 2}},
                 "required": ["type", "classes"], "additionalProperties": false}]},
            "inputs": {"type": ["array", "null"], "items": {"type": "string"}},
            "act": {"oneOf": [{"type": "string", "const": "relu", "description": "max(x, 0)"},
                              {"type": "string", "const": "tanh"}]},
            "version": {"type": "integer", "const": 2},
            "source": {"type": ["string", "null"], "enum": ["mu", "gap", null]}}});
        let check = |text: &str| {
            let source = Source::file(Path::new("p.toml"), text.to_string());
            validate(&source.parse().unwrap(), &schema, "", &TestKinds)
        };
        assert_eq!(
            check("task = \"regression\"\ninputs = [\"a\"]\n").unwrap(),
            json!({"task": {"type": "regression", "loss": "mse"}, "inputs": ["a"]})
        );
        let e =
            check("task = { type = \"multiclass\", classes = 3, loss = \"mae\" }\n").unwrap_err();
        assert_eq!(e[0].message, "unknown key `loss` in `task`");
        let e = check("task = { type = \"multiclass\" }\n").unwrap_err();
        assert_eq!(e[0].message, "missing required key `task.classes`");
        let e = check("task = { type = \"regresion\" }\n").unwrap_err();
        assert_eq!(e[0].help.as_deref(), Some("did you mean `regression`?"));
        let e = check("act = \"rleu\"\n").unwrap_err();
        assert_eq!(
            e[0].help.as_deref(),
            Some("did you mean `relu`? (one of `relu`, `tanh`)")
        );
        let e = check("source = \"null\"\n").unwrap_err();
        assert_eq!(
            e[0].help.as_deref(),
            Some("expected one of `mu`, `gap`, or leave the key out")
        );
        let e = check("inputs = 3\nversion = 3\n").unwrap_err();
        assert!(
            e[0].message.contains("expected an array"),
            "{}",
            e[0].message
        );
        assert_eq!(e[1].message, "`version` must be 2, got 3");
    }

    #[test]
    fn array_items_are_validated_with_their_index() {
        let (_, result) = run("[train]\nsteps = 5\nhidden = [64, 0]\n");
        assert_eq!(
            result.unwrap_err()[0].message,
            "`train.hidden[1]` must be >= 1, got 0"
        );
    }
}
