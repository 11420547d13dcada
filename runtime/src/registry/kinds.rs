//! What a pipeline may name in `kind = "..."`: the registry's methods by role,
//! plus the data kinds (role `Data`), with their schemas.

use serde_json::Value;
use taskweave_plugin_api::config::did_you_mean;
use taskweave_plugin_api::{Error as ApiError, Role};

use super::{Entry, LookupError, Registry};
use crate::spec::{validate, KindError, Kinds, Node, Origin};

/// The role of `[data]` tables: data kinds are not methods.
const DATA: &str = "Data";

/// Every kind a pipeline may name: registry methods by role, plus the runtime's tables.
pub struct KindTable<'a> {
    /// The methods.
    pub registry: &'a Registry,
}

impl Kinds for KindTable<'_> {
    fn lookup(&self, role: &str, kind: &str) -> Result<Value, KindError> {
        if role == DATA {
            return crate::data::schema(kind).ok_or(KindError::Unknown);
        }
        let role = Role::from_name(role).ok_or(KindError::Unknown)?;
        match self.registry.get(role, kind) {
            Ok(entry) => Ok(entry.schema.clone()),
            Err(LookupError::Unknown) => Err(KindError::Unknown),
            Err(other) => Err(KindError::Unusable(other.to_string())),
        }
    }

    fn kinds(&self, role: &str) -> Vec<String> {
        match Role::from_name(role) {
            Some(role) => self.registry.names(role),
            None if role == DATA => crate::data::kinds(),
            None => Vec::new(),
        }
    }
}

/// Validates a method's config (its table without `kind`) given as JSON, as
/// methods that build other methods through the host do. Returns the entry and
/// the config with defaults filled in.
pub fn validate_method<'r>(
    registry: &'r Registry,
    role: Role,
    kind: &str,
    config: &Value,
) -> Result<(&'r Entry, Value), ApiError> {
    let entry = registry.get(role, kind).map_err(|e| {
        let names = registry.names(role);
        let near = matches!(e, LookupError::Unknown)
            .then(|| did_you_mean(kind, names.iter().map(String::as_str)))
            .flatten()
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        ApiError::msg(format!("{role} `{kind}` cannot be used: {e}{near}"))
    })?;
    let node = Node::from_json(config, &Origin::Generated);
    let resolved =
        validate(&node, &entry.schema, kind, &KindTable { registry }).map_err(|diagnostics| {
            let lines: Vec<String> = diagnostics
                .iter()
                .map(|d| match &d.help {
                    Some(help) => format!("{} ({help})", d.message),
                    None => d.message.clone(),
                })
                .collect();
            ApiError::msg(lines.join("; "))
        })?;
    Ok((entry, resolved))
}
