//! `__METHOD__`: a grouping of many tasks into a few. It starts as equal
//! contiguous intervals; change `partition`.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Grouping, GroupingInput, Host, Method, MethodContext, Partition,
    Result,
};

/// The config: what `grouping = { kind = "__METHOD__", ... }` may say.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub struct Config {
    /// Number of groups.
    #[schemars(range(min = 1))]
    pub groups: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { groups: 5 }
    }
}

/// The grouping.
pub struct __TYPE__ {
    groups: usize,
}

impl Grouping for __TYPE__ {
    fn partition(&mut self, input: &GroupingInput<'_>) -> Result<Partition> {
        let (n, k) = (input.num_tasks, self.groups.clamp(1, input.num_tasks.max(1)));
        let groups: Vec<usize> = (0..n).map(|t| t * k / n.max(1)).collect();
        Ok(groups.into())
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Grouping>> {
    let Config { groups } = typed(config)?;
    Ok(Box::new(__TYPE__ { groups }))
}

register_method!(Method::new(
    "__METHOD__",
    env!("CARGO_PKG_VERSION"),
    "A task grouping written with `taskweave plugin new`",
    schema_for::<Config>,
    Constructor::Grouping(create),
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_groups_of_nearly_equal_size() {
        let input = GroupingInput {
            num_tasks: 10,
            signals: &[],
        };
        let partition = __TYPE__ { groups: 3 }.partition(&input).unwrap();
        assert_eq!(partition.groups, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }
}
