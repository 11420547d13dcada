//! The single-task baselines Δm compares a pipeline against: one model per
//! task, stored where every later run of the same data and model finds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::dir::RunDir;
use super::fit::{train, RunContext};
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::pipeline::Pipeline;
use crate::sections::PipelineConfig;
use crate::spec::to_toml;
use crate::train::metrics::TaskMetrics;

/// Where the single-task baselines of `config` are stored: runs that share
/// data (its `[data]` table and its values, `values` from [`data_values`]),
/// backbone, heads, optimizer, steps, batch and seed share baselines.
fn baseline_path(config: &PipelineConfig, values: u64) -> PathBuf {
    // Every setting the baselines train with but the run's name: pipelines
    // whose baselines would train alike share them, and baselines trained
    // otherwise (another schedule, eval, seed) are kept apart, never over
    // these.
    let mut single = serde_json::to_value(single_task(config)).unwrap_or_default();
    single["run"]["name"] = Value::Null;
    let key = json!({"config": single, "values": format!("{values:016x}")});
    // FNV-1a over the canonical text: stable across processes and versions.
    let text = canonical(&key);
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    baselines_dir(config).join(format!("{hash:016x}.json"))
}

/// What a single-task baseline of `config` trains: the pipeline with hard
/// sharing, equal weighting and the standard step, from scratch (a
/// `train.init` would start it from the multi-task model it fine-tunes).
fn single_task(config: &PipelineConfig) -> PipelineConfig {
    let mut config = config.clone();
    config.model.architecture = json!({"kind": "hard-sharing"});
    config.train.strategy = json!({"kind": "standard"});
    config.train.weighting = json!({"kind": "ew"});
    config.train.init = None;
    config
}

/// Where every pipeline writing into `config`'s out_dir keeps its baselines.
pub(super) fn baselines_dir(config: &PipelineConfig) -> PathBuf {
    Path::new(&config.run.out_dir).join("baselines")
}

/// A hash of every tensor of `data`'s splits: a CSV edited in place, or
/// another file at the same path, keys other baselines than it did.
pub(super) fn data_values(data: &Dataset) -> Result<u64> {
    let mut hashes = Vec::new();
    for split in [&data.train, &data.val, &data.test] {
        let tensors = split
            .inputs
            .iter()
            .map(|(_, t)| t)
            .chain(&split.targets)
            .chain(split.masks.iter().flatten());
        for t in tensors {
            hashes.extend(crate::dist::fingerprint(t)?.to_le_bytes());
        }
    }
    Ok(xxhash_rust::xxh3::xxh3_64(&hashes))
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The stored single-task test metrics of `config`'s baselines on data of
/// [`data_values`] `values`, when `taskweave baselines` has run.
pub(super) fn load_baselines(
    config: &PipelineConfig,
    values: u64,
    tasks: &[Task],
) -> Option<Vec<TaskMetrics>> {
    let path = baseline_path(config, values);
    let text = std::fs::read_to_string(&path).ok()?;
    let stored = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|stored| {
            tasks
                .iter()
                .map(|t| serde_json::from_value(stored["tasks"][&t.name].clone()).ok())
                .collect()
        });
    if stored.is_none() {
        tracing::warn!(
            "{} holds no test metrics of these tasks (damaged, or of an older version): \
             run `taskweave baselines` with this pipeline again for Δm",
            path.display()
        );
    }
    stored
}

/// Trains one single-task model per task of `pipeline` (hard sharing, equal
/// weighting, the standard step, from scratch; everything else as in the
/// pipeline) and
/// stores their test metrics where later runs find them for Δm. A task's run
/// that an interrupted call with the same settings left continues from its
/// checkpoint. Returns the file written.
pub fn baselines(pipeline: &Pipeline, quiet: bool) -> Result<PathBuf> {
    if pipeline.config().diffusion.is_some() {
        return Err(Error::Input(
            "taskweave baselines trains one model per task of the data, for Δm; a [diffusion] \
             pipeline's tasks are timestep intervals of one denoiser, which have no single-task \
             models: compare diffusion runs by their samples (taskweave sample)"
                .into(),
        ));
    }
    let data = pipeline.load_data()?;
    let path = baseline_path(pipeline.config(), data_values(&data)?);
    // Said before any training, not after it.
    if path.is_dir() {
        return Err(Error::Input(format!(
            "{} is a directory; the baselines are stored in that file: move it away",
            path.display()
        )));
    }
    let ctx = RunContext::new(pipeline, quiet)?;
    let ctx = &ctx;
    let dir = path.with_extension("");
    let mut stored = serde_json::Map::new();
    for (t, task) in data.tasks.iter().enumerate() {
        // Task names come from data (CSV headers): the directory gets a safe name.
        let name = format!("{t}-{}", crate::names::name_from(&task.name));
        let task_dir = dir.join(&name);
        let mut config = single_task(ctx.config);
        // Pipelines of other names share these baselines: the run is named for its task.
        config.run.name = name;
        let single = RunContext {
            config: &config,
            task: Some(t),
            ..*ctx
        };
        tracing::info!("single-task baseline for `{}`", task.name);
        // A task's run that these very settings started (then killed, or
        // finished) continues; any other is replaced.
        let resolved = serde_json::to_value(&config).map_err(|e| Error::Run(e.to_string()))?;
        let held = task_dir.join(super::dir::MARKER).is_file();
        let same = held
            && std::fs::read_to_string(task_dir.join("config.toml")).ok()
                == Some(to_toml(&resolved));
        if held && !same {
            tracing::info!(
                "{} was trained with other settings (such as run.device, eval or the schedule): \
                 training it again from step 0",
                task_dir.display()
            );
        }
        let run = match same {
            true => RunDir::open(&task_dir)?,
            false => RunDir::create(&task_dir, true)?,
        };
        let again = || "the same `taskweave baselines` command".to_string();
        let summary = train(&single, data.only_task(t), &run, same).map_err(|e| match e {
            Error::Interrupted {
                signal, step, dir, ..
            } => Error::Interrupted {
                signal,
                step,
                dir,
                again: again(),
            },
            other => other,
        })?;
        stored.insert(task.name.clone(), json!(summary.test[0]));
        // Ctrl-C after a task's last step (or while a stored task was only
        // evaluated again) stops before the next task, not after all of them.
        if let Some(signal) = super::interrupt::requested().filter(|_| t + 1 < data.tasks.len()) {
            return Err(Error::Interrupted {
                signal: Some(signal),
                step: summary.steps,
                dir: task_dir,
                again: again(),
            });
        }
    }
    let json = json!({"pipeline": ctx.config.run.name, "tasks": stored});
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_atomic(
        &path,
        serde_json::to_string_pretty(&json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(path)
}
