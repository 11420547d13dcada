//! Property tests over every input a user hands the runtime: pipeline text,
//! `--set` overrides, CSV files and checkpoint files. For each generated
//! input the runtime must either accept it or refuse it as bad input (exit
//! code 2) saying where: never panic, never fail as a run error.
//!
//! `make test` runs a few hundred cases per target; `make fuzz` runs
//! `TASKWEAVE_FUZZ_CASES` (100,000) per target.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use taskweave::{Config, Error, Pipeline, Runtime};

/// Cases per target: `TASKWEAVE_FUZZ_CASES`, or a quick default.
fn cases() -> u32 {
    std::env::var("TASKWEAVE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(&Config::new()))
}

/// Every rejection is bad input with a location: config errors name where
/// each problem was written.
fn assert_input_error(err: &Error, what: &str) {
    assert_eq!(err.exit_code(), 2, "{what}: not an input error: {err}");
    if let Error::Config { diagnostics, .. } = err {
        for d in diagnostics {
            assert!(
                d.location.is_some(),
                "{what}: `{}` has no location: {err}",
                d.message
            );
        }
    }
}

const PIPELINE: &str = r#"[run]
name = "fuzz"
seed = 3
device = "cpu"
out_dir = "runs"

[data]
kind = "mmoe-synthetic"
tasks = 2
input_dim = 8
train = 64

[model]
backbone = { hidden = [16, 8], activation = "relu", dropout = 0.1 }
architecture = { kind = "mmoe", experts = 2 }
head = { hidden = [4] }

[train]
steps = 10
batch = 16
optimizer = { kind = "adam", lr = 0.001, betas = [0.9, 0.999] }
weighting = { kind = "cagrad", c = 0.4 }
strategy = "standard"

[eval]
every = 5
"#;

/// Fragments that tend to break parsers and validators.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e309".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("9223372036854775807".to_string()),
        Just("[".to_string()),
        Just("{".to_string()),
        Just("= =".to_string()),
        Just("[[train]]".to_string()),
        Just("[train.weighting]".to_string()),
        Just("kind = \"pcgard\"".to_string()),
        Just("kind = 3".to_string()),
        Just("\"..\"".to_string()),
        Just("\"/\"".to_string()),
        Just("1979-05-27".to_string()),
        Just("{ kind = \"uw\", init = [] }".to_string()),
        Just("[[], {}]".to_string()),
        Just("\"\\u0000\"".to_string()),
        "[a-z_.]{1,12} = [0-9]{1,6}",
        "\\PC{0,40}",
    ]
}

/// A line-level edit of the pipeline text.
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize),
    Insert(usize, String),
    ReplaceValue(usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..40).prop_map(Edit::Delete),
        (0usize..40, token()).prop_map(|(i, t)| Edit::Insert(i, t)),
        (0usize..40, token()).prop_map(|(i, t)| Edit::ReplaceValue(i, t)),
        (0usize..2000).prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Delete(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::Insert(i, t) => lines.insert(i % (lines.len() + 1), t.clone()),
            Edit::ReplaceValue(i, t) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {t}");
                }
            }
            Edit::Truncate(at) => {
                let joined = lines.join("\n");
                let mut cut = (*at).min(joined.len());
                while !joined.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines = joined[..cut].lines().map(str::to_string).collect();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

#[test]
fn pipelines_and_sets_are_accepted_or_refused_with_a_location_never_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let keys = prop_oneof![
        Just("run.name"),
        Just("run.device"),
        Just("run.threads"),
        Just("data.tasks"),
        Just("model.backbone.hidden"),
        Just("model.architecture"),
        Just("train.steps"),
        Just("train.weighting"),
        Just("train.weighting.kind"),
        Just("train.optimizer.lr"),
        Just("eval"),
        Just("x.y.z"),
    ];
    let set = (keys, token()).prop_map(|(k, v)| format!("{k}={v}"));
    let strategy = (
        prop::collection::vec(edit(), 0..6),
        prop::collection::vec(set, 0..3),
        any::<bool>(),
        "\\PC{0,300}",
    );
    runner()
        .run(&strategy, |(edits, sets, arbitrary, noise)| {
            let text = if arbitrary {
                noise.clone()
            } else {
                apply(PIPELINE, &edits)
            };
            if let Err(err) = Pipeline::from_str(runtime(), &text, dir.path(), &sets) {
                assert_input_error(&err, &format!("{text:?} with {sets:?}"));
            }
            Ok(())
        })
        .unwrap();
}

fn csv_cell() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (-1e6f64..1e6).prop_map(|v| v.to_string()),
        2 => (0u8..3).prop_map(|v| v.to_string()),
        1 => Just(String::new()),
        1 => Just("nan".to_string()),
        1 => Just("1e39".to_string()),
        1 => Just("-inf".to_string()),
        1 => Just("\"1,2\"".to_string()),
        1 => Just("train".to_string()),
        1 => Just("\u{feff}".to_string()),
        1 => "\\PC{0,6}",
    ]
}

#[test]
fn csv_files_load_or_are_refused_naming_the_file_never_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    let header = prop_oneof![
        Just("x,y,c".to_string()),
        Just("x,y".to_string()),
        Just("x,,c".to_string()),
        Just("y,y,c".to_string()),
        "\\PC{0,12}",
    ];
    let rows = prop::collection::vec(prop::collection::vec(csv_cell(), 0..5), 0..12);
    let config = prop_oneof![
        Just(serde_json::json!({"y": {"type": "regression", "loss": "mse", "standardize": true}})),
        Just(
            serde_json::json!({"y": {"type": "binary"}, "c": {"type": "multiclass", "classes": 3}})
        ),
        Just(serde_json::json!({"c": {"type": "binary"}})),
    ];
    runner()
        .run(
            &(header, rows, config, any::<bool>()),
            |(header, rows, tasks, by_column)| {
                let mut text = header.clone();
                for row in &rows {
                    text.push('\n');
                    text.push_str(&row.join(","));
                }
                std::fs::write(&path, &text).unwrap();
                let mut config = serde_json::json!({
                    "kind": "csv", "path": "t.csv", "tasks": tasks, "shuffle": true, "seed": 1,
                    "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "standardize_inputs": true,
                });
                if by_column {
                    config["split_column"] = serde_json::json!("c");
                    config.as_object_mut().unwrap().remove("split");
                }
                if let Err(err) = taskweave::data::load(&config, dir.path()) {
                    assert_input_error(&err, &text);
                    let message = err.to_string();
                    assert!(
                        message.contains("t.csv") || message.contains("data."),
                        "no file or key named: {message}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

fn checkpoint_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("original.safetensors");
    let w = tch::Tensor::randn([8, 4], (tch::Kind::Float, tch::Device::Cpu));
    let steps = tch::Tensor::from_slice(&[3i64, 4]);
    let checkpoint = taskweave::train::checkpoint::Checkpoint {
        tensors: vec![("w".into(), w), ("steps".into(), steps)],
        meta: serde_json::json!({"step": 7, "optimizer": {"t": 7}}),
    };
    taskweave::train::checkpoint::write(&path, &checkpoint).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn damaged_checkpoint_files_are_refused_naming_the_file_or_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let original = checkpoint_bytes(dir.path());
    let path = dir.path().join("step-000000007.safetensors");
    let reference = {
        std::fs::write(&path, &original).unwrap();
        taskweave::train::checkpoint::read(&path).unwrap()
    };
    let damage = prop_oneof![
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
            .prop_map(|flips| (flips, None, None)),
        any::<prop::sample::Index>().prop_map(|cut| (Vec::new(), Some(cut), None)),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|junk| (Vec::new(), None, Some(junk))),
    ];
    runner()
        .run(&damage, |(flips, cut, junk)| {
            let mut bytes = original.clone();
            for (at, xor) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Some(junk) = &junk {
                bytes = junk.clone();
            }
            std::fs::write(&path, &bytes).unwrap();
            match taskweave::train::checkpoint::read(&path) {
                Err(err) => {
                    assert_input_error(&err, "checkpoint");
                    assert!(err.to_string().contains("step-000000007"), "{err}");
                }
                // Only damage that changes nothing (header padding) may load.
                Ok(back) => {
                    assert_eq!(back.meta, reference.meta);
                    assert_eq!(back.tensors.len(), reference.tensors.len());
                    for (name, a) in &back.tensors {
                        let b = &reference.tensors.iter().find(|(n, _)| n == name);
                        assert!(
                            b.is_some_and(|(_, b)| a.equal(b)),
                            "`{name}` loaded changed"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
