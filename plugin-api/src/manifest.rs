//! What a method says about itself before it is created.

use std::fmt;

use abi_stable::std_types::RString;
use abi_stable::StableAbi;

/// The one job a method does in a pipeline. See the crate docs for the table.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Combines per-task losses or gradients into one update ([`crate::Weighting`]).
    Weighting,
    /// Runs the whole training step ([`crate::Strategy`]).
    Strategy,
    /// Trainable modules between the backbone and the heads ([`crate::Architecture`]).
    Architecture,
    /// Fuses several models' logits at one decoding step ([`crate::Fusion`]).
    Fusion,
    /// Partitions many tasks into a few groups ([`crate::Grouping`]).
    Grouping,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 5] = [
        Role::Weighting,
        Role::Strategy,
        Role::Architecture,
        Role::Fusion,
        Role::Grouping,
    ];

    /// The role's name as written in schemas (`x-taskweave-role`) and listings.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weighting => "Weighting",
            Role::Strategy => "Strategy",
            Role::Architecture => "Architecture",
            Role::Fusion => "Fusion",
            Role::Grouping => "Grouping",
        }
    }

    /// The role called `name` (as [`Role::name`] writes it).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method's self-description, readable without creating it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct MethodManifest {
    /// The name pipelines use in `kind = "..."`. Unique across all loaded plugins.
    pub name: RString,
    /// The method's role.
    pub role: Role,
    /// The method's own version (usually its crate's).
    pub version: RString,
    /// One line on what it computes, with the paper where there is one.
    pub description: RString,
    /// JSON Schema of its config table, serialised. Defaults live in `default` keys.
    pub schema: RString,
}

impl MethodManifest {
    /// The schema, parsed.
    pub fn schema(&self) -> crate::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.schema)?)
    }
}
