//! Interval clustering of diffusion timesteps (Go et al., "Addressing
//! Negative Transfer in Diffusion Models", NeurIPS 2023) as a
//! `Grouping`: timesteps 1..T are tasks, partitioned into `k` contiguous
//! intervals of least total cost, exactly ([`dp`]).
//!
//! Costs (`cost = ...`), each over an interval I with centre c:
//! - `timestep`: Σ |t − c|;
//! - `snr`: Σ |SNR(t) − SNR(c)|, from the signal `snr` `[T]` (SNR in timestep order);
//! - `log-snr`: the same on ln SNR;
//! - `gradient`: −Σ TAS(c, t), from the signal `tas` `[T, T]` (task affinity scores).
//!
//! Where this differs from the reference script (gohyojun15/ANT_diffusion,
//! `interval_clustering.py`): it returns the optimum of the objective above.
//! The script's centre is ⌈(l + r)/2⌉ on 0-based indices (one step later than
//! the spec's ⌊(l + r)/2⌋ on 1-based timesteps for intervals of even length),
//! its interval bounds come out shifted by one (the stored split point is the
//! end of the previous interval but is used as the start of the next), its
//! last bound is fixed at 1000 whatever T is, and it drops every candidate
//! split whose total is exactly 0 (so partitions of zero cost, such as single
//! steps under `timestep` or a constant SNR, can never be chosen).

pub mod dp;

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::Kind;
use taskweave_plugin_api::{
    register_method, Constructor, Error, Grouping, GroupingInput, Host, Method, MethodContext,
    Partition, Result,
};

use dp::Costs;

/// What an interval costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", rename_all = "kebab-case")]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
enum Cost {
    /// Distance of each timestep to the centre.
    Timestep,
    /// Distance of each SNR to the centre's (signal `snr`).
    Snr,
    /// Distance of each log-SNR to the centre's (signal `snr`).
    LogSnr,
    /// Negated affinity of each timestep to the centre (signal `tas`).
    Gradient,
}

impl Cost {
    /// The signals it reads.
    fn reads(self) -> &'static [&'static str] {
        match self {
            Cost::Timestep => &[],
            Cost::Snr | Cost::LogSnr => &["snr"],
            Cost::Gradient => &["tas"],
        }
    }
}

/// `interval-clustering`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// What an interval costs.
    cost: Cost,
    /// Number of intervals (at most the number of timesteps).
    #[schemars(range(min = 1, max = 1_000_000))]
    k: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cost: Cost::Snr,
            k: 5,
        }
    }
}

struct IntervalClustering {
    config: Config,
}

/// The signal `name` as f64 values, with the shape `shape`.
fn signal(input: &GroupingInput<'_>, name: &str, shape: &[i64]) -> Result<Vec<f64>> {
    let Some((_, t)) = input.signals.iter().find(|(n, _)| n == name) else {
        let have: Vec<&str> = input.signals.iter().map(|(n, _)| n.as_str()).collect();
        let hint = match name {
            "tas" => {
                "`taskweave affinity RUN --out tas.safetensors` measures it on a trained run; give \
                 that file as [diffusion] signals (or --signals of `taskweave call grouping`)"
            }
            "snr" => {
                "a noise schedule gives it: --schedule of `taskweave call grouping` (a \
                 pipeline's [diffusion] schedule always does)"
            }
            _ => "give a signals file holding it",
        };
        return Err(Error::input(format!(
            "this cost needs the signal `{name}` {shape:?}; the signals given are [{}]: {hint}",
            have.join(", ")
        )));
    };
    if t.size() != shape {
        return Err(Error::input(format!(
            "the signal `{name}` is {:?}; it must be {shape:?}",
            t.size()
        )));
    }
    let flat = t.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_contiguous()?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

impl IntervalClustering {
    fn costs(&self, input: &GroupingInput<'_>) -> Result<Costs> {
        let n = input.num_tasks;
        // The host always passes the schedule's `snr`; any other signal came
        // from the user (diffusion.signals, whose file may hold more than the
        // cost reads): a cost that reads none of them would ignore the file.
        let cost = self.config.cost;
        let mut given: Vec<&str> = input
            .signals
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| *name != "snr")
            .collect();
        // A file's tensors come in no fixed order: name them sorted.
        given.sort_unstable();
        if !given.is_empty() && !given.iter().any(|name| cost.reads().contains(name)) {
            let hint = if given.contains(&"tas") {
                "cost = \"gradient\" reads a task-affinity file (taskweave affinity)"
            } else if cost.reads().contains(&"tas") {
                "the file holds no tensor named `tas`; taskweave affinity writes one"
            } else {
                "the signals are what a cost reads"
            };
            // `json!` writes the cost as the config spells it, quoted.
            return Err(Error::input(format!(
                "the signals [{}] are given, and cost = {} reads [{}]: {hint}; \
                 otherwise leave the signals file out ([diffusion] signals, or --signals)",
                given.join(", "),
                json!(cost),
                cost.reads().join(", ")
            )));
        }
        let costs = match self.config.cost {
            Cost::Timestep => {
                let steps: Vec<f64> = (1..=n).map(|t| t as f64).collect();
                Costs::values("timestep", &steps)
            }
            Cost::Snr => Costs::values("snr", &signal(input, "snr", &[n as i64])?),
            Cost::LogSnr => {
                let snr = signal(input, "snr", &[n as i64])?;
                if let Some(i) = snr.iter().position(|&s| s.is_nan() || s <= 0.0) {
                    return Err(Error::input(format!(
                        "`snr` is {} at index {i} (timestep {}); log-snr needs positive values",
                        snr[i],
                        i + 1
                    )));
                }
                Costs::values("snr", &snr.iter().map(|s| s.ln()).collect::<Vec<_>>())
            }
            Cost::Gradient => {
                let tas = signal(input, "tas", &[n as i64, n as i64])?;
                Costs::affinity("tas", tas, n)
            }
        };
        costs.map_err(|e| Error::input(e.0))
    }
}

impl Grouping for IntervalClustering {
    fn partition(&mut self, input: &GroupingInput<'_>) -> Result<Partition> {
        let (n, k) = (input.num_tasks, self.config.k as usize);
        if k > n {
            return Err(Error::input(format!(
                "k = {k} intervals of {n} timesteps: k must be at most the number of timesteps"
            )));
        }
        let (intervals, cost) = dp::solve(&self.costs(input)?, k).map_err(|e| Error::input(e.0))?;
        let mut groups = vec![0; n];
        for (g, &(l, r)) in intervals.iter().enumerate() {
            groups[l..=r].fill(g);
        }
        Ok(Partition {
            groups,
            scores: vec![("cost".into(), cost)],
        })
    }
}

fn create(config: &Value, _ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Grouping>> {
    Ok(Box::new(IntervalClustering {
        config: typed(config)?,
    }))
}

register_method!(Method::new(
    "interval-clustering",
    env!("CARGO_PKG_VERSION"),
    "Diffusion timesteps as k contiguous intervals of least cost (ANT, Go et al. 2023)",
    schema_for::<Config>,
    Constructor::Grouping(create),
));
