//! Denoising diffusion models in the training engine: noise schedules, the
//! denoising objective that turns a data set's samples into per-interval
//! tasks, the timestep intervals a grouping method chooses, sampling, and
//! sample quality.

pub mod affinity;
mod objective;
pub mod quality;
pub mod sampler;

use serde_json::Value;
use taskweave_plugin_api::{GroupingInput, Host, MethodContext, Role};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::sections::DiffusionConfig;

pub use objective::{intervals_of, Denoising};

/// `count` timesteps of 1..=T evenly spaced, 1 and T included, ascending
/// (all of them when `count` ≥ T; T alone when `count` is 1; none when T is 0).
pub fn timestep_grid(steps: usize, count: usize) -> Vec<i64> {
    if steps == 0 {
        return Vec::new();
    }
    let count = count.clamp(1, steps);
    if count == 1 {
        return vec![steps as i64];
    }
    let mut ts: Vec<i64> = (0..count)
        .map(|i| 1 + ((i * (steps - 1)) as f64 / (count - 1) as f64).round() as i64)
        .collect();
    ts.dedup();
    ts
}

/// Why signals measured on a run whose diffusion settings `meta` records
/// (`taskweave affinity` writes them) do not fit `config`: task affinities
/// of another noise schedule or length describe other timesteps.
pub fn check_measured(config: &DiffusionConfig, meta: &Value) -> std::result::Result<(), String> {
    let ours = serde_json::to_value(config.schedule).unwrap_or_default();
    match (&meta["schedule"], meta["steps"].as_u64()) {
        (theirs, _) if !theirs.is_null() && *theirs != ours => Err(format!(
            "was measured with schedule = {theirs}, and this pipeline's diffusion.schedule is {ours}: \
             measure them on a run of this schedule (taskweave affinity)"
        )),
        (_, Some(steps)) if steps != config.steps as u64 => Err(format!(
            "was measured over {steps} timesteps, and this pipeline's diffusion.steps is {}",
            config.steps
        )),
        _ => Ok(()),
    }
}

/// `signals` with a noise schedule's SNR `snr` added as the signal `snr`,
/// or the input error `conflict` where they hold one already: a grouping
/// would read one of the two by chance.
pub fn with_snr(
    mut signals: Vec<(String, Tensor)>,
    snr: &[f64],
    conflict: &str,
) -> Result<Vec<(String, Tensor)>> {
    if signals.iter().any(|(name, _)| name == "snr") {
        return Err(Error::Input(conflict.into()));
    }
    signals.push(("snr".into(), Tensor::from_slice(snr)));
    Ok(signals)
}

/// The timestep intervals of the tasks: those `grouping` (a `Grouping`
/// method table, `[train] grouping`) partitions 1..=T into, given `signals`
/// (the tensors of `diffusion.signals`, which may not hold an `snr`) and the
/// schedule's SNR as the signal `snr`; one interval without a grouping.
pub fn intervals(
    config: &DiffusionConfig,
    grouping: Option<&Value>,
    registry: &Registry,
    host: &Host,
    signals: Vec<(String, Tensor)>,
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
    let signals = with_snr(
        signals,
        &config.schedule.snr(steps),
        "diffusion.signals holds a signal `snr`, which the noise schedule gives \
         ([diffusion] schedule): remove it from the file",
    )?;
    let partition = method
        .partition(&GroupingInput {
            num_tasks: steps,
            signals: &signals,
        })
        .map_err(|e| Error::from(e).input_context("train.grouping"))?;
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

#[cfg(test)]
mod tests {
    use super::timestep_grid;

    #[test]
    fn grids_are_evenly_spaced_from_1_to_t() {
        assert_eq!(timestep_grid(1000, 4), vec![1, 334, 667, 1000]);
        assert!(timestep_grid(0, 5).is_empty());
        assert_eq!(timestep_grid(10, 50), (1..=10).collect::<Vec<_>>());
        assert_eq!(timestep_grid(10, 1), vec![10]);
    }
}
