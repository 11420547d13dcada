//! The resolved config back to TOML (`--print-config`, `config.toml` in a run).

use serde_json::Value;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table};

fn to_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let mut array = Array::new();
            for item in items.iter().filter_map(to_value) {
                array.push(item);
            }
            array.into()
        }
        Value::Object(map) => {
            let mut table = InlineTable::new();
            for (k, v) in map {
                if let Some(v) = to_value(v) {
                    table.insert(k, v);
                }
            }
            table.into()
        }
    })
}

/// Renders a resolved config: top-level tables as `[sections]`, their nested
/// tables inline (method tables read best as `{ kind = "...", ... }`).
pub fn to_toml(config: &Value) -> String {
    let mut doc = DocumentMut::new();
    if let Value::Object(sections) = config {
        for (name, section) in sections {
            match section {
                Value::Object(entries) => {
                    let mut table = Table::new();
                    for (k, v) in entries {
                        if let Some(v) = to_value(v) {
                            table.insert(k, Item::Value(v));
                        }
                    }
                    doc.insert(name, Item::Table(table));
                }
                other => {
                    if let Some(v) = to_value(other) {
                        doc.insert(name, Item::Value(v));
                    }
                }
            }
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let config = serde_json::json!({
            "run": {"name": "q", "seed": 3},
            "train": {"steps": 10, "lr": 0.5, "weighting": {"kind": "ew"}, "hidden": [64, 32]}
        });
        let text = to_toml(&config);
        assert!(
            text.contains("[train]") && text.contains("weighting = { kind = \"ew\" }"),
            "{text}"
        );
        let back: toml_edit::DocumentMut = text.parse().unwrap();
        assert_eq!(back["train"]["hidden"].as_array().unwrap().len(), 2);
        assert_eq!(back["run"]["seed"].as_integer(), Some(3));
    }
}
