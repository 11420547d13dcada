//! The training protocol: learning-rate schedules, selection of the best
//! validation checkpoint, epochs, bf16 autocast and gradient clipping, each
//! checked on real runs, and resume staying bitwise exact with all of them.

use std::path::Path;

use serde_json::Value;
use taskweave::run::Summary;
use taskweave::{Config, Pipeline, Run, Runtime};
use taskweave_tests::*;

fn train(dir: &Path, name: &str, extra: &str, sets: &[&str]) -> Summary {
    let text = std::fs::read_to_string(small_pipeline(dir, name, extra)).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_str(&rt, &text, dir, &sets).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap()
}

fn history(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn periodic(run: &Path) -> Vec<Value> {
    history(run)
        .into_iter()
        .filter(|r| r["final"] != true)
        .collect()
}

#[test]
fn best_val_reports_the_best_validation_step_and_resume_is_exact_with_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Little data, a wide model and a high rate: validation gets worse late.
    let extra = "[train]\nsteps = 240\ncheckpoint_every = 20\nclip_grad_norm = 5.0\n\
                 optimizer = { kind = \"adam\", lr = 0.02 }\n\
                 schedule = { kind = \"cosine\", warmup = 10, min_lr = 0.001 }\n\
                 [eval]\nevery = 20\n";
    let sets = [
        "data.train=64",
        "model.backbone.hidden=[128, 128]",
        "run.precision=bf16",
    ];
    let summary = train(d, "best", extra, &sets);
    let run = d.join("runs/best");
    let records = periodic(&run);
    let best = records
        .iter()
        .min_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    let final_val = history(&run)
        .into_iter()
        .find(|r| r["final"] == true && r["split"] == "val")
        .unwrap();
    if summary.selected_step < summary.steps {
        // The reported validation metrics are exactly those of the best periodic evaluation.
        assert_eq!(best["step"], summary.selected_step);
        assert_eq!(final_val["tasks"], best["tasks"]);
    }
    assert!(
        summary.selected_step < summary.steps,
        "validation never got worse; make the run overfit harder"
    );
    // The cosine schedule's rates, as logged at each evaluation (of the next
    // step; none after the last).
    assert!(records.last().unwrap()["lr"].is_null());
    for r in &records[..records.len() - 1] {
        let step = r["step"].as_u64().unwrap() as f64;
        let expected = if step < 10.0 {
            0.02 * (step + 1.0) / 10.0
        } else {
            let p = (step - 10.0) / (240.0 - 11.0);
            0.001 + (0.02 - 0.001) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        let lr = r["lr"].as_f64().unwrap();
        assert!(
            (lr - expected).abs() < 1e-12,
            "step {step}: lr {lr}, expected {expected}"
        );
    }
    assert_resume_is_exact(&run, &d.join("runs/best-copy"));
}

#[test]
fn plateau_lowers_the_rate_and_epochs_set_the_length_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "[train]\nepochs = 4\nbatch = 32\ncheckpoint_every = 8\n\
                 optimizer = { kind = \"sgd\", lr = 0.0001 }\n\
                 schedule = { kind = \"plateau\", factor = 0.5, patience = 0, threshold = 0.5 }\n\
                 [eval]\nevery = 8\nselect = \"last\"\n";
    let summary = train(d, "plateau", extra, &["data.train=256"]);
    // 256 rows / 32 = 8 steps per epoch.
    assert_eq!((summary.steps, summary.selected_step), (32, 32));
    let rates: Vec<f64> = periodic(&d.join("runs/plateau"))
        .iter()
        .filter_map(|r| r["lr"].as_f64())
        .collect();
    // A tiny rate never moves the score by the threshold (0.5 points of Δm):
    // after the first evaluation, each flat one halves the rate for the steps
    // after it (the log shows the rate of the step after each evaluation).
    assert_eq!(rates, [1e-4, 1e-4, 5e-5], "{rates:?}");
    assert_resume_is_exact(&d.join("runs/plateau"), &d.join("runs/plateau-copy"));
}

#[test]
fn clipping_bounds_each_update_and_bf16_changes_little() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = |summary: &Summary| -> Vec<(String, tch::Tensor)> {
        final_parameters(&summary.dir)
            .into_iter()
            .filter(|(n, _)| n.starts_with("backbone.") || n.starts_with("heads."))
            .collect()
    };
    let one_step = |name: &str, lr: &str, clip: &str| {
        let extra = format!(
            "[train]\nsteps = 1\nclip_grad_norm = {clip}\noptimizer = {{ kind = \"sgd\", lr = {lr} }}\n"
        );
        train(d, name, &extra, &[])
    };
    let start = model(&one_step("start", "1e-30", "0.0"));
    let clipped = model(&one_step("clipped", "1.0", "0.01"));
    let free = model(&one_step("free", "1.0", "0.0"));
    let moved = |after: &[(String, tch::Tensor)]| -> f64 {
        start
            .iter()
            .zip(after)
            .map(|((_, a), (_, b))| (b - a).square().sum(tch::Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    };
    let (clipped, free) = (moved(&clipped), moved(&free));
    assert!(
        clipped <= 0.01 * 1.0001,
        "an SGD step of rate 1 moved {clipped} > clip 0.01"
    );
    assert!(free > 0.05, "unclipped, the step is larger: {free}");

    let extra = "[train]\nsteps = 60\n";
    let fp32 = train(d, "fp32", extra, &[]);
    let bf16 = train(d, "bf16", extra, &["run.precision=bf16"]);
    let (a, b) = (model(&fp32), model(&bf16));
    assert!(
        b.iter().all(|(_, t)| t.kind() == tch::Kind::Float),
        "fp32 master weights"
    );
    assert!(
        a.iter().zip(&b).any(|((_, x), (_, y))| !x.equal(y)),
        "bf16 had no effect"
    );
    for (m32, m16) in fp32.test.iter().zip(&bf16.test) {
        let (x, y) = (m32["mse"], m16["mse"]);
        assert!((x - y).abs() < 0.1 * x, "fp32 {x} vs bf16 {y}");
    }
}

#[test]
fn steps_or_epochs_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let both = small_pipeline(d, "both", "[train]\nsteps = 5\nepochs = 2\n");
    let (code, _, err) = run_cli(d, &["validate", both.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("give only one of `steps`, `epochs` in `train`"),
        "{err}"
    );
    let neither = small_pipeline(d, "neither", "[train]\nbatch = 5\n");
    let (code, _, err) = run_cli(d, &["validate", neither.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("missing required key `train.steps` (or `train.epochs`)"),
        "{err}"
    );
    // 2^55 epochs of 512 steps: the count wrapped to 0 steps, and exit 0.
    let huge = small_pipeline(
        d,
        "huge",
        "[train]\nepochs = 36028797018963968\nbatch = 1\n",
    );
    let (code, _, err) = run_cli(d, &["run", huge.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("train.epochs: 36028797018963968 epochs of 512 steps are more steps"),
        "{err}"
    );
}

#[test]
fn train_init_starts_from_the_shared_tensors_of_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pre = train(d, "pre", "[train]\nsteps = 30\n", &[]);
    // One step at a negligible rate: the fine-tuning run reports what the
    // pre-trained model scores.
    let tiny = "[train]\nsteps = 1\noptimizer = { kind = \"sgd\", lr = 1e-12 }\n";
    let fine = train(d, "fine", tiny, &["train.init=\"runs/pre\""]);
    for (a, b) in pre.test.iter().zip(&fine.test) {
        let (a, b) = (a["mse"], b["mse"]);
        assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} vs {b}");
    }
    let text = std::fs::read_to_string(small_pipeline(d, "wide", tiny)).unwrap();
    let rt = Runtime::new(&Config::new());
    let err = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let pipeline = Pipeline::from_str(&rt, &text, d, &sets).unwrap();
        Run::start(pipeline, true)
            .and_then(|r| r.train(true))
            .unwrap_err()
    };
    let e = err(&["train.init=\"runs/pre\"", "model.backbone.hidden=[8]"]);
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().contains(
            "train.init: `backbone.0.weight` is [16, 8] in the checkpoint but [8, 8] in this model"
        ),
        "{e}"
    );
    let e = err(&["train.init=\"runs/nothing\"", "run.name=\"other\""]);
    assert!(e.to_string().contains("holds no checkpoint"), "{e}");
}
