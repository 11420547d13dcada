//! Denoising diffusion models in the training engine: noise schedules, the
//! denoising objective that turns a data set's samples into per-interval
//! tasks, the timestep intervals a grouping method chooses, sampling, and
//! sample quality.

mod objective;
pub mod quality;
pub mod sampler;
mod schedule;

use serde_json::Value;
use taskweave_plugin_api::{GroupingInput, Host, MethodContext, Role};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::sections::DiffusionConfig;

pub use objective::{intervals_of, Denoising, FEATURES};
pub use schedule::NoiseSchedule;

/// The timestep intervals of the tasks: those `grouping` (a `Grouping`
/// method table, `[train] grouping`) partitions 1..=T into, given the
/// schedule's SNR as the signal `snr`; one interval without a grouping.
pub fn intervals(
    config: &DiffusionConfig,
    grouping: Option<&Value>,
    registry: &Registry,
    host: &Host,
) -> Result<Vec<(i64, i64)>> {
    let steps = config.steps as usize;
    let Some(table) = grouping else {
        return Ok(vec![(1, steps as i64)]);
    };
    let ctx = MethodContext {
        tasks: (1..=steps)
            .map(|t| format!("t{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        ..Default::default()
    };
    let mut method = registry
        .create_table(Role::Grouping, table, &ctx, host)?
        .into_grouping()?;
    let snr = Tensor::from_slice(&config.schedule.snr(steps));
    let partition = method
        .partition(&GroupingInput {
            num_tasks: steps,
            signals: &[("snr".to_string(), snr)],
        })
        .map_err(|e| match Error::from(e) {
            Error::Input(why) => Error::Input(format!("train.grouping: {why}")),
            other => other,
        })?;
    if partition.groups.len() != steps {
        return Err(Error::Method(format!(
            "train.grouping returned {} groups for {steps} timesteps",
            partition.groups.len()
        )));
    }
    intervals_of(&partition.groups).ok_or_else(|| {
        Error::Method(
            "train.grouping: the groups are not contiguous intervals of timesteps in order; a diffusion pipeline needs intervals".into(),
        )
    })
}
