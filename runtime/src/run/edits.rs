//! What a resumed run may change of the config it started with.
//!
//! A run records its resolved config in `run.json` when it starts; `resume`
//! reads `config.toml`, which a user can edit in between. Edits that change
//! what the checkpoints hold or how the next steps are computed (the data,
//! the model, the optimizer, a method, a seed, the batch, the evaluation
//! points that a plateau schedule and best-validation selection read) would
//! continue a different run from this one's parameters and report it as
//! this one: they are refused. Where the run goes on (device, threads),
//! where its files are (plugins, data), how long it trains and how often it
//! logs or checkpoints may change.

use serde_json::Value;

use crate::error::{Error, Result};

/// Keys (and the tables under them) a resume may change.
const MAY_CHANGE: [&str; 14] = [
    "run.name",
    "run.out_dir",
    "run.device",
    "run.threads",
    // Like the number of ranks, which a resume may change too.
    "run.batch_threads",
    "run.gpu_memory_fraction",
    "run.cuda_allocator",
    "plugins",
    "data.path",
    "data.dir",
    "train.steps",
    "train.epochs",
    "train.log_every",
    "train.checkpoint_every",
];

/// Refuses a config (`now`, resolved) that differs from the one the run
/// started with (`started`) in a key outside [`MAY_CHANGE`]; the first
/// such key leads the message, so that the pipeline can point at it.
pub fn check(started: &Value, now: &Value) -> Result<()> {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    leaves("", started, &mut before);
    leaves("", now, &mut after);
    let value_of = |list: &[(String, Value)], key: &str| {
        list.iter()
            .find(|(k, _)| k == key)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    let mut keys: Vec<&String> = before.iter().chain(&after).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<(&String, Value, Value)> = keys
        .into_iter()
        .filter(|key| !may_change(key))
        .map(|key| (key, value_of(&before, key), value_of(&after, key)))
        .filter(|(_, was, is)| was != is)
        .collect();
    let Some((key, was, is)) = changed.first() else {
        return Ok(());
    };
    let more = match changed.len() {
        1 => String::new(),
        n => format!(
            " ({} more: {})",
            n - 1,
            changed[1..]
                .iter()
                .map(|(k, _, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Error::Input(format!(
        "{key}: config.toml now says {}, but the run trained with {}{more}. A resumed run goes on \
         with what it trained with; only how long it trains (train.steps, train.epochs), how often \
         it logs and checkpoints, its device and threads, and where its plugins and data are may \
         change. Put the value back, or train the new settings as a new run of the pipeline",
        shown(is),
        shown(was)
    )))
}

fn may_change(key: &str) -> bool {
    MAY_CHANGE.iter().any(|k| {
        key == *k
            || key
                .strip_prefix(k)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        v => v.to_string(),
    }
}

/// Every scalar or array of `value` with its dotted key.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = match prefix {
                    "" => k.clone(),
                    p => format!("{p}.{k}"),
                };
                leaves(&key, v, out);
            }
        }
        v => out.push((prefix.to_string(), v.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn started() -> Value {
        json!({"run": {"seed": 0, "device": "cpu"},
               "train": {"steps": 100, "optimizer": {"kind": "adam", "lr": 0.001}},
               "data": {"path": "a.csv"}, "plugins": {"dirs": ["p"]}})
    }

    #[test]
    fn location_length_and_device_may_change() {
        let now = json!({"run": {"seed": 0, "device": "cuda:0", "threads": 4,
                                 "batch_threads": 2},
                         "train": {"steps": 500, "optimizer": {"kind": "adam", "lr": 0.001},
                                   "checkpoint_every": 7},
                         "data": {"path": "moved/a.csv"}, "plugins": {"dirs": ["q", "r"]}});
        check(&started(), &now).unwrap();
    }

    #[test]
    fn what_the_run_computes_may_not_and_the_key_leads() {
        let mut now = started();
        now["train"]["optimizer"]["kind"] = json!("sgd");
        now["run"]["seed"] = json!(7);
        let e = check(&started(), &now).unwrap_err().to_string();
        assert!(
            e.starts_with("run.seed: config.toml now says 7, but the run trained with 0 (1 more: train.optimizer.kind)"),
            "{e}"
        );
        // A key added or removed counts as changed.
        let mut now = started();
        now["train"]["weighting"] = json!({"kind": "uw"});
        let e = check(&started(), &now).unwrap_err().to_string();
        assert!(e.starts_with("train.weighting.kind: config.toml now says \"uw\", but the run trained with nothing"), "{e}");
        // A prefix of an allowed key is not allowed.
        let mut now = started();
        now["train"]["steps_extra"] = json!(1);
        assert!(check(&started(), &now).is_err());
    }
}
