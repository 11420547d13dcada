//! A config tree that remembers where every value came from, so that every
//! error can point at a file, line and column (or at the `--set` that made it).

use std::ops::Range;

use serde_json::Value;

/// Where a config value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Bytes of the pipeline file.
    File(Range<usize>),
    /// The `--set` override with this index.
    Set(usize),
    /// Not written by the user: a default, or a table made by a method.
    Generated,
}

/// A config key and where it was written.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key.
    pub name: String,
    /// Where.
    pub origin: Origin,
}

/// A config value and where it was written.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value.
    pub value: NodeValue,
    /// Where.
    pub origin: Origin,
}

/// The shape of a config value (TOML's, without dates).
#[derive(Clone, Debug)]
pub enum NodeValue {
    /// A table, keys in written order.
    Table(Vec<(Key, Node)>),
    /// An array.
    Array(Vec<Node>),
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Node {
    /// An empty table.
    pub fn table(origin: Origin) -> Node {
        Node {
            value: NodeValue::Table(Vec::new()),
            origin,
        }
    }

    /// The node for a JSON value (defaults, tables built by methods), all `origin`.
    pub fn from_json(value: &Value, origin: &Origin) -> Node {
        let value = match value {
            Value::Object(map) => NodeValue::Table(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                origin: origin.clone(),
                            },
                            Node::from_json(v, origin),
                        )
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                NodeValue::Array(items.iter().map(|v| Node::from_json(v, origin)).collect())
            }
            Value::String(s) => NodeValue::String(s.clone()),
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeValue::Integer(i),
                None => NodeValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            // JSON null has no TOML form; an empty table is the closest "nothing".
            Value::Null => NodeValue::Table(Vec::new()),
        };
        Node {
            value,
            origin: origin.clone(),
        }
    }

    /// What this value is, for messages: "a string", "an integer", ...
    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Table(_) => "a table",
            NodeValue::Array(_) => "an array",
            NodeValue::String(_) => "a string",
            NodeValue::Integer(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Bool(_) => "a boolean",
        }
    }

    /// The entry `key` of a table node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Table(entries) => {
                entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The node at `path` (keys, already split), or the deepest one on the
    /// way, and how many keys lead to it: where a diagnostic about that value
    /// points. An index (`hidden[1]`) stops at its array.
    pub fn nearest(&self, path: &[&str]) -> (&Node, usize) {
        let mut node = self;
        for (depth, key) in path.iter().enumerate() {
            let key = key.split('[').next().unwrap_or(key);
            match node.get(key) {
                Some(child) => node = child,
                None => return (node, depth),
            }
        }
        (node, path.len())
    }

    /// Sets `path` (dotted, already split) to `value`, creating tables on the way
    /// and replacing whatever was there. Fails, naming the prefix, when a value on
    /// the way is not a table.
    pub fn set_path(&mut self, path: &[&str], value: Node) -> Result<(), String> {
        let (first, rest) = path.split_first().ok_or("empty key")?;
        let NodeValue::Table(entries) = &mut self.value else {
            return Err("is not a table".to_string());
        };
        let origin = value.origin.clone();
        let at = match entries.iter().position(|(k, _)| k.name == *first) {
            Some(at) => at,
            None => {
                entries.push((
                    Key {
                        name: first.to_string(),
                        origin: origin.clone(),
                    },
                    Node::table(origin.clone()),
                ));
                entries.len() - 1
            }
        };
        if rest.is_empty() {
            entries[at].1 = value;
            return Ok(());
        }
        entries[at]
            .1
            .set_path(rest, value)
            .map_err(|e| match e.strip_prefix('`') {
                Some(inner) => format!("`{first}.{inner}"),
                None => format!("`{first}` {e}"),
            })
    }
}
