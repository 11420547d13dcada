//! Structured inputs end to end: named inputs and backbones that read them,
//! label masks, the census-income data kind on a fixture, and what happens
//! when the model and the data do not fit together.

use std::path::Path;

use taskweave::{Config, Pipeline, Run, Runtime};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_tests::*;

/// Census-income files of `rows` training and `rows / 2` test rows in the
/// real format (42 `", "`-separated cells). Income follows the class of
/// worker and age; marital status follows age, so both tasks are learnable.
fn census_fixture(dir: &Path, rows: usize) {
    let mut rng = SplitMix::at(7, 0);
    let mut line = || {
        let age = 18 + (rng.next_u64() % 60) as u32;
        let worker = [
            "Private",
            "Self-employed",
            "Not in universe",
            "Federal government",
        ][(rng.next_u64() % 4) as usize];
        let rich = (worker == "Self-employed" || worker == "Federal government") && age > 35;
        let single = age < 30;
        let cells: Vec<String> = (0..42)
            .map(|c| match c {
                0 => age.to_string(),
                1 => worker.to_string(),
                4 => ["High school graduate", "Bachelors degree(BA AB BS)"]
                    [(rng.next_u64() % 2) as usize]
                    .to_string(),
                7 => if single { "Never married" } else { "Divorced" }.to_string(),
                5 | 16 | 17 | 18 | 24 | 30 | 39 => (rng.next_u64() % 100).to_string(),
                41 => if rich { "50000+." } else { "- 50000." }.to_string(),
                _ => format!("v{}", rng.next_u64() % 3),
            })
            .collect();
        cells.join(", ")
    };
    let train: Vec<String> = (0..rows).map(|_| line()).collect();
    let test: Vec<String> = (0..rows / 2).map(|_| line()).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("census_income_1994_1995_train.csv"),
        train.join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("census_income_1994_1995_test.csv"),
        test.join("\n") + "\n",
    )
    .unwrap();
}

/// `pipelines/census-mmoe.toml` over the fixture in `dir/census`, with `sets`.
fn census_run(dir: &Path, sets: &[&str]) -> taskweave::run::Summary {
    let text = std::fs::read_to_string(workspace().join("pipelines/census-mmoe.toml")).unwrap();
    let mut all: Vec<String> = vec![
        "data.dir=\"census\"".into(),
        "run.device=\"cpu\"".into(),
        format!("run.out_dir={:?}", dir.join("runs").display().to_string()),
        "train.steps=135".into(),
        "train.optimizer={kind=\"adam\", lr=0.01}".into(),
        "train.batch=64".into(),
        "eval.every=20".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_str(&rt, &text, dir, &all).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap()
}

#[test]
fn census_trains_with_mmoe_ple_and_shared_bottom_on_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    census_fixture(&dir.path().join("census"), 1200);
    for (name, arch) in [
        (
            "mmoe",
            "model.architecture={kind=\"mmoe\", experts=4, expert_hidden=[8]}",
        ),
        (
            "ple",
            "model.architecture={kind=\"ple\", levels=2, expert_hidden=[8]}",
        ),
        ("shared", "model.architecture={kind=\"hard-sharing\"}"),
    ] {
        let backbone = match name {
            "shared" => "model.backbone={kind=\"embedding\", dim=4, hidden=[32]}",
            _ => "model.backbone={kind=\"embedding\", dim=4, hidden=[]}",
        };
        let run_name = format!("run.name=\"{name}\"");
        let summary = census_run(dir.path(), &[arch, backbone, &run_name]);
        let auc: Vec<f64> = summary.test.iter().map(|m| m["auc"]).collect();
        assert!(auc.iter().all(|&a| a > 0.75), "{name}: test AUC {auc:?}");
    }
}

#[test]
fn census_without_its_files_says_to_run_make_census_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = workspace().join("pipelines/census-mmoe.toml");
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "-q",
            "run",
            pipeline.to_str().unwrap(),
            "--set",
            "data.dir=\"/nonexistent\"",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("data.dir") && err.contains("make census"),
        "{err}"
    );
}

#[test]
fn a_backbone_that_reads_inputs_the_data_lack_is_exit_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "[train]\nsteps = 2\n";
    let path = small_pipeline(d, "embed", extra);
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            path.to_str().unwrap(),
            "--set",
            "model.backbone={kind=\"embedding\"}",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("model.backbone: backbone `embedding` reads the input `fields`")
            && err.contains("the data have: `features` float32 [B, 8]"),
        "{err}"
    );
}

#[test]
fn a_backbone_without_a_kind_is_an_mlp_and_unknown_kinds_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "plain", "[train]\nsteps = 2\n");
    let (code, out, err) = run_cli(d, &["run", "--print-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kind = \"mlp\""), "{out}");
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            path.to_str().unwrap(),
            "--set",
            "model.backbone.kind=\"mpl\"",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown backbone `mpl`") && err.contains("did you mean `mlp`?"),
        "{err}"
    );
}

#[test]
fn a_csv_with_missing_labels_trains_and_an_all_missing_label_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = SplitMix::at(3, 0);
    let mut text = String::from("x1,x2,a,b\n");
    for i in 0..400 {
        let (x1, x2) = (
            (rng.next_u64() % 100) as f64 / 50.0 - 1.0,
            (rng.next_u64() % 100) as f64 / 50.0 - 1.0,
        );
        let a = u8::from(x1 + x2 > 0.0);
        // Task b is labelled on every third row only.
        let b = if i % 3 == 0 {
            format!("{}", 2.0 * x1 - x2)
        } else {
            String::new()
        };
        text.push_str(&format!("{x1},{x2},{a},{b}\n"));
    }
    std::fs::write(d.join("t.csv"), &text).unwrap();
    // In-process runs resolve out_dir against the working directory: keep it in `d`.
    let pipeline = format!(
        "[run]\nout_dir = {:?}\ndevice = \"cpu\"\n[data]\nkind = \"csv\"\npath = \"t.csv\"\n\
         tasks = {{ a = {{ type = \"binary\" }}, b = {{ type = \"regression\" }} }}\n[train]\nsteps = 150\nbatch = 32\n",
        d.join("runs").display().to_string()
    );
    std::fs::write(d.join("m.toml"), pipeline).unwrap();
    let rt = Runtime::new(&Config::new());
    let summary = Run::start(
        Pipeline::from_file(&rt, &d.join("m.toml"), &[]).unwrap(),
        true,
    )
    .unwrap()
    .train(true)
    .unwrap();
    let b = &summary.test[1];
    assert!(
        b["mae"].is_finite() && b["mae"] < 0.8,
        "b learns from its labelled rows: {b:?}"
    );
    // No label for b at all.
    let blank: String = text
        .lines()
        .map(|l| match l.rsplit_once(',') {
            Some((head, _)) if l != "x1,x2,a,b" => format!("{head},\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(d.join("t.csv"), blank).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "--overwrite", "m.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("data.tasks.b: no row of the training split has a label"),
        "{err}"
    );
}
