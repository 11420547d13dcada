//! Images, tokens and per-pixel tasks end to end, through the `tensors` data
//! kind: the `conv`, `vit` and `transformer-lm` backbones, the dense heads
//! and their metrics, and what happens when a head does not fit the task.

use std::path::{Path, PathBuf};

use taskweave::{Config, Pipeline, Run, Runtime};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_tests::*;
use tch::{Kind, Tensor};

const SIDE: i64 = 8;

/// `n` 1×8×8 images of noise with a bright square of side 2–4 somewhere; the
/// targets: `seg` (1 inside the square, 0 outside, the top row unlabelled),
/// `depth` (2 inside, 1 outside, the top-left pixel missing) and `big`
/// (side ≥ 3, labelled on even rows only); `features` holds the square's
/// corner and side, so a model that reads it alone also has something.
fn images(n: i64, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = SplitMix::at(seed, 0);
    let image = Tensor::randn([n, 1, SIDE, SIDE], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let seg = Tensor::zeros([n, SIDE, SIDE], (Kind::Int64, tch::Device::Cpu));
    let mut big = Vec::new();
    let mut features = Vec::new();
    for i in 0..n {
        let side = 2 + (rng.next_u64() % 3) as i64;
        let (r, c) = (
            (rng.next_u64() % (SIDE - side + 1) as u64) as i64,
            (rng.next_u64() % (SIDE - side + 1) as u64) as i64,
        );
        let _ = image
            .get(i)
            .get(0)
            .narrow(0, r, side)
            .narrow(1, c, side)
            .fill_(1.0);
        let _ = seg.get(i).narrow(0, r, side).narrow(1, c, side).fill_(1);
        big.push(f32::from(side >= 3));
        features.extend([r as f32, c as f32, side as f32, 0.0]);
    }
    let depth = (seg.to_kind(Kind::Float) + 1.0).unsqueeze(1);
    let _ = depth.narrow(2, 0, 1).narrow(3, 0, 1).fill_(f64::NAN);
    let _ = seg.narrow(1, 0, 1).fill_(255);
    let mask: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    vec![
        ("inputs.image".into(), image),
        (
            "inputs.features".into(),
            Tensor::from_slice(&features).view([n, 4]),
        ),
        ("targets.seg".into(), seg),
        ("targets.depth".into(), depth),
        ("targets.big".into(), Tensor::from_slice(&big)),
        ("masks.big".into(), Tensor::from_slice(&mask)),
    ]
}

/// Writes the three splits of `make(rows, seed)` to `dir/name`.
fn write(dir: &Path, name: &str, make: impl Fn(i64, u64) -> Vec<(String, Tensor)>) -> PathBuf {
    let mut all = Vec::new();
    for (split, rows, seed) in [("train", 192, 1), ("val", 48, 2), ("test", 48, 3)] {
        for (key, t) in make(rows, seed) {
            all.push((format!("{split}.{key}"), t));
        }
    }
    let path = dir.join(name);
    let refs: Vec<(&str, &Tensor)> = all.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &path).unwrap();
    path
}

const IMAGE_TASKS: &str = "[data.tasks.seg]\ntype = \"dense-multiclass\"\nclasses = 2\n\
     [data.tasks.depth]\ntype = \"dense-regression\"\n[data.tasks.big]\ntype = \"binary\"\n";

/// A pipeline over `file` with `tasks` and `extra` tables, in `dir`.
fn pipeline(dir: &Path, file: &str, tasks: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[run]\nout_dir = {:?}\ndevice = \"cpu\"\n[data]\nkind = \"tensors\"\npath = {file:?}\n\
         {extra}\n{tasks}",
        dir.join("runs").display().to_string()
    );
    let path = dir.join("p.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(path: &Path, sets: &[String]) -> taskweave::run::Summary {
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_file(&rt, path, sets).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap()
}

#[test]
fn conv_and_vit_backbones_learn_segmentation_depth_and_a_masked_binary_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "shapes.safetensors", images);
    let extra = "[train]\nsteps = 300\nbatch = 32\noptimizer = { kind = \"adam\", lr = 0.01 }\n\
                 [model.head]\nhidden = [8]\n";
    let path = pipeline(d, "shapes.safetensors", IMAGE_TASKS, extra);
    let test = images(48, 3);
    let depth = &test[3].1;
    let labelled = depth.isnan().logical_not();
    let trivial = (depth - 1.0)
        .abs()
        .masked_select(&labelled)
        .mean(Kind::Double)
        .double_value(&[]);
    for backbone in [
        "{kind=\"conv\", channels=[16], style=\"plain\"}",
        "{kind=\"conv\", channels=[8, 8], style=\"residual\"}",
        "{kind=\"vit\", patch=2, dim=16, depth=2, heads=2}",
    ] {
        let sets = vec![
            format!("model.backbone={backbone}"),
            format!("run.name=\"b{}\"", backbone.len()),
        ];
        let summary = train(&path, &sets);
        let (seg, depth) = (&summary.test[0], &summary.test[1]);
        // Predicting background everywhere scores mIoU ≈ 0.4 and, for depth,
        // an absolute error of `trivial` (1 everywhere: the median).
        assert!(
            seg["miou"] > 0.8 && seg["pixel_accuracy"] > 0.9,
            "{backbone}: {seg:?}"
        );
        assert!(
            depth["abs_err"] < 0.75 * trivial && depth["rel_err"].is_finite(),
            "{backbone}: {depth:?} vs {trivial}"
        );
        assert!(
            summary.test[2]["auc"] > 0.9,
            "{backbone}: {:?}",
            summary.test[2]
        );
    }
}

/// `n` sequences of 12 ids in 0..16; task `seen`: which of ids 1–4 occur.
fn sequences(n: i64, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = SplitMix::at(seed, 1);
    let ids: Vec<i64> = (0..n * 12).map(|_| (rng.next_u64() % 16) as i64).collect();
    let tokens = Tensor::from_slice(&ids).view([n, 12]);
    let seen: Vec<Tensor> = (1..=4)
        .map(|id| tokens.eq(id).any_dim(1, false).to_kind(Kind::Float))
        .collect();
    vec![
        ("inputs.tokens".into(), tokens),
        ("targets.seen".into(), Tensor::stack(&seen, 1)),
    ]
}

#[test]
fn a_transformer_lm_learns_a_multilabel_task_over_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "seq.safetensors", sequences);
    let extra = "vocab = { tokens = [16] }\n[train]\nsteps = 300\nbatch = 32\n\
                 optimizer = { kind = \"adam\", lr = 0.003 }\n\
                 [model]\nbackbone = { kind = \"transformer-lm\", dim = 32, depth = 2, heads = 4 }\n\
                 head = { hidden = [32] }\n";
    let path = pipeline(
        d,
        "seq.safetensors",
        "[data.tasks.seen]\ntype = \"multilabel\"\n",
        extra,
    );
    let summary = train(&path, &[]);
    let seen = &summary.test[0];
    // Each id occurs with probability 1 − (15/16)^12 ≈ 0.54: guessing scores F1 ≈ 0.7.
    assert!(seen["f1"] > 0.85, "{seen:?}");
}

#[test]
fn a_per_pixel_task_on_flat_features_and_a_corrupt_file_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = write(d, "shapes.safetensors", images);
    let path = pipeline(d, "shapes.safetensors", IMAGE_TASKS, "[train]\nsteps = 2\n");
    let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("model.backbone: task `seg` is dense-multiclass (one output per pixel), but backbone `mlp` gives one feature vector per example")
            && err.contains("use backbone `conv` (without `flatten`) or `vit`"),
        "{err}"
    );
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            "--overwrite",
            path.to_str().unwrap(),
            "--set",
            "model.backbone={kind=\"conv\"}",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shapes.safetensors"), "{err}");
}

#[test]
fn preview_draws_images_and_per_pixel_labels_and_refuses_data_without_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "shapes.safetensors", images);
    pipeline(d, "shapes.safetensors", IMAGE_TASKS, "[train]\nsteps = 1\n");
    let (code, out, err) = run_cli(
        d,
        &["-q", "preview", "p.toml", "--n", "3", "--out", "shapes.png"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote shapes.png (3 train examples)"), "{out}");
    let png = std::fs::read(d.join("shapes.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Three rows of image, seg and depth, each magnified 3×: the grid is
    // wider than it is tall only with three pictures per row.
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert!(w > 3 * 3 * 8 && h > 3 * 3 * 8, "{w}×{h}");
    // A trained run's directory: each per-pixel target beside its
    // prediction, five pictures a row, the same rows.
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            "p.toml",
            "--set",
            "model.backbone={kind=\"conv\"}",
            "--set",
            "run.name=\"conv\"",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        d,
        &[
            "-q",
            "preview",
            "runs/conv",
            "--n",
            "3",
            "--split",
            "test",
            "--out",
            "pred.png",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote pred.png (3 test examples)"), "{out}");
    let png = std::fs::read(d.join("pred.png")).unwrap();
    let (pw, ph) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert!(
        pw * 3 > w * 5 - 60 && pw * 3 < w * 5 + 60 && ph == h,
        "{pw}×{ph} vs {w}×{h}"
    );
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "preview",
            "runs/conv",
            "--set",
            "train.steps=3",
            "--out",
            "x.png",
        ],
    );
    assert!(code == 2 && err.contains("run directory"), "{code}: {err}");
    let (code, _, err) = run_cli(
        d,
        &["-q", "preview", "p.toml", "--out", "missing/shapes.png"],
    );
    assert!(code == 2 && err.contains("does not exist"), "{code}: {err}");
    // Writing over the pipeline or into the run directory it reads would lose them.
    let config = std::fs::read(d.join("runs/conv/config.toml")).unwrap();
    for (input, out) in [("p.toml", "p.toml"), ("runs/conv", "runs/conv/config.toml")] {
        let (code, _, err) = run_cli(d, &["-q", "preview", input, "--out", out]);
        assert!(
            code == 2 && (err.contains("which this command reads") || err.contains("lies inside")),
            "{code}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(d.join("runs/conv/config.toml")).unwrap(),
        config
    );
    assert!(std::fs::read_to_string(d.join("p.toml"))
        .unwrap()
        .contains("[train]"));
    // A new file beside the run's own is fine.
    let (code, _, err) = run_cli(
        d,
        &["-q", "preview", "runs/conv", "--out", "runs/conv/pred.png"],
    );
    assert_eq!(code, 0, "{err}");
    // Tabular data have nothing to draw.
    let synthetic = "[run]\ndevice = \"cpu\"\n[data]\nkind = \"mmoe-synthetic\"\ntrain = 8\nval = 4\ntest = 4\n[train]\nsteps = 1\n";
    std::fs::write(d.join("tab.toml"), synthetic).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "preview", "tab.toml", "--out", "t.png"]);
    assert!(
        code == 2 && err.contains("no image input and no per-pixel task"),
        "{code}: {err}"
    );
}

#[test]
fn taskexpert_trains_on_vit_tokens_and_logs_each_task_s_gate_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-taskexpert");
    write(d, "shapes.safetensors", images);
    let extra =
        "[plugins]\ndirs = [\"plugins\"]\n[train]\nsteps = 20\nbatch = 32\n[eval]\nevery = 10\n\
                 [model]\nbackbone = {kind=\"vit\", patch=2, dim=16, depth=2, heads=2}\n\
                 architecture = {kind=\"taskexpert\", experts=2, expert_hidden=[8]}\n";
    let path = pipeline(d, "shapes.safetensors", IMAGE_TASKS, extra);
    // Feature maps are no tokens: refused before training, naming the key.
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            "p.toml",
            "--set",
            "model.backbone={kind=\"conv\", channels=[8]}",
        ],
    );
    assert!(
        code == 2 && err.contains("model.backbone: TaskExpert decomposes tokens"),
        "{code}: {err}"
    );
    // At the key to change, though the runtime names the architecture first.
    assert!(
        err.contains("--> --set model.backbone={kind=\"conv\", channels=[8]}"),
        "{err}"
    );
    let summary = train(&path, &[]);
    assert!(summary.test[0]["miou"].is_finite());
    let history = std::fs::read_to_string(summary.dir.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 3, "two evaluations and the final records");
    for r in &records {
        let gates = r["architecture"].as_object().expect("gate weights");
        for task in ["seg", "depth", "big"] {
            for block in [0, 1] {
                let prefix = format!("gate.{task}.{block}.");
                let sum: f64 = gates
                    .iter()
                    .filter(|(n, _)| n.starts_with(&prefix))
                    .map(|(_, v)| v.as_f64().unwrap())
                    .sum();
                assert!((sum - 1.0).abs() < 1e-6, "{prefix}: {sum}");
            }
        }
    }
    // `balance` reaches each task's training loss through the ABI's
    // auxiliary losses: the same run with a large weight logs a larger one.
    let first_loss = |summary: &taskweave::run::Summary| {
        let text = std::fs::read_to_string(summary.dir.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        ["seg", "depth", "big"].map(|t| first["train_loss"][t].as_f64().unwrap())
    };
    let balanced = train(
        &path,
        &[
            "run.name=balanced".into(),
            "model.architecture.balance=100".into(),
        ],
    );
    let (plain, heavy) = (first_loss(&summary), first_loss(&balanced));
    for t in 0..3 {
        assert!(heavy[t] > plain[t] + 10.0, "{plain:?} vs {heavy:?}");
    }
}
