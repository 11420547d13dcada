//! The `dtrn` Architecture plugin on `multi-behaviour-synthetic`, where each
//! task's answer is in one behaviour sequence: DTRN learns it and a shared
//! bottom over the fields alone cannot; the same construction as a user's own
//! CSV log; bad configs and ids are exit 2.

use std::path::Path;

use taskweave_plugin_api::rng::SplitMix;
use taskweave_tests::*;
use tch::{Device, Kind, Tensor};

fn pipeline(dir: &Path) {
    let text = format!(
        r#"[run]
name = "dtrn"
device = "cpu"
out_dir = "{out}"

[plugins]
dirs = ["plugins"]

[data]
kind = "multi-behaviour-synthetic"
items = 40
categories = 4
train = 4000
val = 500
test = 2000

[model]
backbone = {{ kind = "embedding", dim = 8, hidden = [32] }}
architecture = {{ kind = "dtrn", candidate = 0, behaviours = ["liked", "other"], dim = 8, heads = 2, hyper_dim = 8 }}
head = {{ hidden = [16] }}

[train]
steps = 300
batch = 128
optimizer = {{ kind = "adam", lr = 0.01 }}

[eval]
every = 100
"#,
        out = dir.join("runs").display()
    );
    std::fs::write(dir.join("dtrn.toml"), text).unwrap();
}

fn test_auc(dir: &Path, run: &str) -> [f64; 2] {
    let text = std::fs::read_to_string(dir.join("runs").join(run).join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    ["watch", "like"].map(|t| summary["test"][t]["auc"].as_f64().unwrap())
}

fn train(dir: &Path, sets: &[&str]) {
    let mut args = vec!["-q", "run", "dtrn.toml", "--overwrite"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (code, _, err) = run_cli(dir, &args);
    assert_eq!(code, 0, "{args:?}: {err}");
}

#[test]
fn dtrn_reads_each_task_s_behaviour_where_a_shared_bottom_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-dtrn");
    pipeline(d);
    train(d, &[]);
    train(
        d,
        &[
            "run.name=shared",
            "model.architecture={kind=\"hard-sharing\"}",
            "model.backbone.sequences=\"ignore\"",
        ],
    );
    let (dtrn, shared) = (test_auc(d, "dtrn"), test_auc(d, "shared"));
    // Bayes AUC here is about 0.86; the fields alone carry nothing.
    for t in 0..2 {
        assert!(dtrn[t] > 0.75, "DTRN {dtrn:?}");
        assert!(shared[t] < 0.6, "shared bottom {shared:?}");
    }
    // The parameter counts per component reach metrics.jsonl.
    let log = std::fs::read_to_string(d.join("runs/dtrn/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let sizes = &last["architecture"];
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/dtrn/summary.json")).unwrap())
            .unwrap();
    assert_eq!(&summary["architecture"], sizes, "summary.json has them too");
    let hyper = sizes["parameters.hypernetwork"].as_f64().unwrap();
    let encoder = sizes["parameters.encoder"].as_f64().unwrap();
    assert!(
        hyper > 0.0 && hyper + encoder < sizes["parameters.separate_encoders"].as_f64().unwrap(),
        "{sizes}"
    );
}

#[test]
fn dtrn_refuses_missing_behaviours_and_ids_outside_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-dtrn");
    pipeline(d);
    let refused = |sets: &[&str], needle: &str| {
        let mut args = vec!["run", "dtrn.toml", "--set", "train.steps=1"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (code, _, err) = run_cli(d, &args);
        assert_eq!(code, 2, "{sets:?}: {err}");
        assert!(err.contains(needle), "{sets:?}: {err}");
    };
    refused(
        &["model.architecture.behaviours=[\"liked\", \"cart\"]"],
        "behaviours: `cart` is named, but the data have no input `seq.cart`",
    );
    refused(
        &["model.architecture.candidate=2"],
        "candidate: column 2 does not exist",
    );
    // The user's own tensors: an item id beyond the declared vocabulary.
    let mut tensors = Vec::new();
    for split in ["train", "val", "test"] {
        let ids =
            |high: i64, cols: i64| Tensor::randint(high, [16, cols], (Kind::Int64, Device::Cpu));
        let sequence = ids(7, 4);
        if split == "train" {
            let _ = sequence.get(3).get(2).fill_(9);
        }
        tensors.push((format!("{split}.inputs.fields"), ids(5, 2)));
        tensors.push((format!("{split}.inputs.seq.liked"), sequence));
        tensors.push((
            format!("{split}.targets.watch"),
            Tensor::randint(2, [16], (Kind::Float, Device::Cpu)),
        ));
    }
    Tensor::write_safetensors(&tensors, d.join("logs.safetensors")).unwrap();
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            "dtrn.toml",
            "--set",
            "train.steps=2",
            "--set",
            "data={kind=\"tensors\", path=\"logs.safetensors\", vocab={fields=[5], \"seq.liked\"=[7]}, tasks={watch={type=\"binary\"}}}",
            "--set",
            "model.architecture.behaviours=[\"liked\"]",
            "--set",
            "train.batch=16",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("seq.liked") && err.contains('9'), "{err}");
}

/// A user's own log as CSV: the candidate item, its category, and the items
/// liked and otherwise watched before it (`i3|i17|…`, oldest first), with the
/// labels of `multi-behaviour-synthetic`'s construction (each task follows
/// the category that dominates one sequence).
fn csv_log(rows: usize) -> String {
    let mut rng = SplitMix::at(7, 0);
    let (items, categories) = (40, 4);
    let mut text = String::from("item,category,liked,other,watch,like\n");
    for _ in 0..rows {
        let (watch_cat, like_cat) = (rng.below(categories), rng.below(categories));
        let sequence = |category: u64, rng: &mut SplitMix| {
            let length = rng.below(11);
            (0..length)
                .map(|_| {
                    let item = if rng.uniform() < 0.8 {
                        category + categories * rng.below(items / categories)
                    } else {
                        rng.below(items)
                    };
                    format!("i{item}")
                })
                .collect::<Vec<_>>()
                .join("|")
        };
        let liked = sequence(like_cat, &mut rng);
        let other = sequence(watch_cat, &mut rng);
        let candidate = rng.below(items);
        let mut label = |category: u64| {
            let p = if candidate % categories == category {
                0.8
            } else {
                0.2
            };
            u8::from(rng.uniform() < p)
        };
        let (watch, like) = (label(watch_cat), label(like_cat));
        let category = candidate % categories;
        text += &format!("i{candidate},c{category},{liked},{other},{watch},{like}\n");
    }
    text
}

#[test]
fn dtrn_trains_on_a_users_own_csv_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-dtrn");
    pipeline(d);
    std::fs::write(d.join("log.csv"), csv_log(6500)).unwrap();
    let data = "data={kind=\"csv\", path=\"log.csv\", fields=[\"item\", \"category\"], \
        sequences={liked={field=\"item\", length=10}, other={field=\"item\", length=10}}, \
        tasks={watch={type=\"binary\"}, like={type=\"binary\"}}, \
        split={train=0.7, val=0.1, test=0.2}}";
    train(d, &[data]);
    let auc = test_auc(d, "dtrn");
    for t in 0..2 {
        assert!(auc[t] > 0.7, "DTRN on the CSV log {auc:?}");
    }
    // A sequence that keeps nothing is refused before training, naming the key.
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            "dtrn.toml",
            "--set",
            data,
            "--set",
            "data.sequences.liked.length=0",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("data.sequences.liked.length"), "{err}");
}
