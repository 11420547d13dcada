//! The command line: config errors with locations and suggestions, exit codes,
//! `--set`, `--print-config`.

use taskweave_tests::*;

#[test]
fn config_errors_name_file_line_column_path_and_suggestion_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pipeline(dir.path(), "typos", "[train]\nstpes = 10\nweighting = { kind = \"pcgard\" }\noptimizer = { kind = \"adam\", lr = \"fast\" }\n");
    let (code, out, err) = run_cli(dir.path(), &["validate", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let file = path.display().to_string();
    // small_pipeline writes 16 lines before `extra`.
    assert!(
        err.contains(&format!(
            "unknown key `stpes` in `train`\n  --> {file}:18:1"
        )),
        "{err}"
    );
    assert!(err.contains("= help: did you mean `steps`?"), "{err}");
    assert!(
        err.contains(&format!(
            "unknown Weighting `pcgard` at `train.weighting.kind`\n  --> {file}:19:22"
        )),
        "{err}"
    );
    assert!(err.contains("= help: did you mean `pcgrad`?"), "{err}");
    assert!(
        err.contains("wrong type for `train.optimizer.lr`: expected a number, found a string"),
        "{err}"
    );
    assert!(err.contains("missing required key `train.steps`"), "{err}");
    assert!(err.contains("4 errors in"), "{err}");
}

#[test]
fn a_key_a_method_or_the_trainer_refuses_is_shown_where_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-meta-rtl");
    let path = method_pipeline(
        d,
        "refused",
        "strategy = { kind = \"meta-rtl\", target = \"task9\" }",
        5,
    );
    let file = path.display().to_string();
    // The plugin's constructor refuses the value; the schema could not.
    let (code, out, err) = run_cli(d, &["run", &file]);
    assert_eq!(code, 2, "{out}{err}");
    let line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.contains("task9"))
        .unwrap()
        + 1;
    assert!(
        err.contains("train.strategy.target: no task `task9`")
            && err.contains(&format!("  --> {file}:{line}:42")),
        "{err}"
    );
    // The trainer's refusal of a `--set` points at the override.
    let plain = method_pipeline(d, "plain", "weighting = \"ew\"", 5);
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            plain.to_str().unwrap(),
            "--set",
            "run.batch_threads=2",
            "--set",
            "model.backbone.dropout=0.1",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("  --> --set run.batch_threads=2"), "{err}");
}

#[test]
fn every_shipped_pipeline_validates_or_only_lacks_its_data() {
    // The data sets of some pipelines need a `make` target (qm9, images,
    // census) that CI does not run: then the one error is the one naming it.
    let root = workspace();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let file = path.to_str().unwrap();
        let (code, out, err) = run_cli(&root, &["validate", file]);
        let only_data = code == 2 && err.contains("make ") && err.matches("error").count() == 1;
        assert!(
            code == 0 && out.contains(": ok") || only_data,
            "{file}: {code}\n{err}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked} pipelines");
}

#[test]
fn malformed_toml_and_missing_files_exit_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[train\nsteps = 1\n").unwrap();
    let (code, _, err) = run_cli(dir.path(), &["run", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid TOML") && err.contains("bad.toml:1:7"),
        "{err}"
    );
    for args in [
        vec!["run", "missing.toml"],
        vec!["resume", "no-such-run"],
        vec!["validate", "bad.toml", "--set", "nodots"],
        vec!["validate", "bad.toml", "--set", "=1"],
        vec!["call-nothing"],
    ] {
        let (code, _, err) = run_cli(dir.path(), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{args:?}: {err}"
        );
    }
    std::fs::write(&bad, "").unwrap();
    let (code, _, err) = run_cli(dir.path(), &["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("missing required key `data`"), "{err}");
}

#[test]
fn set_overrides_are_validated_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pipeline(dir.path(), "sets", "[train]\nsteps = 10\n");
    let p = path.to_str().unwrap();
    let (code, out, err) = run_cli(
        dir.path(),
        &[
            "run",
            p,
            "--print-config",
            "--set",
            "train.steps=25",
            "--set",
            "train.weighting.kind=uw",
            "--set",
            "model.backbone.hidden=[8, 4]",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("steps = 25"), "{out}");
    assert!(
        out.contains("weighting = { kind = \"uw\", init = 0.0 }"),
        "{out}"
    );
    assert!(out.contains("hidden = [8, 4]"), "{out}");
    assert!(
        out.contains("on_nonfinite = \"stop\""),
        "defaults are filled in: {out}"
    );
    let (code, _, err) = run_cli(dir.path(), &["validate", p, "--set", "train.stesp=3"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--> --set train.stesp=3") && err.contains("did you mean `steps`?"),
        "{err}"
    );
    let (code, _, err) = run_cli(dir.path(), &["validate", p, "--set", "train.steps.x=3"]);
    assert_eq!(code, 2);
    assert!(err.contains("`train.steps` is not a table"), "{err}");
    // A number beyond TOML's floats is not taken for a word.
    let (code, _, err) = run_cli(
        dir.path(),
        &["validate", p, "--set", "train.optimizer.lr=1e400"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("`train.optimizer.lr`: 1e400 is beyond the range"),
        "{err}"
    );
    // Nor is an integer beyond TOML's (it was "expected an integer, found a string").
    let (code, _, err) = run_cli(
        dir.path(),
        &["validate", p, "--set", "train.steps=18446744073709551616"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("`train.steps`: 18446744073709551616 is beyond the range of 64-bit integers"),
        "{err}"
    );
    // A number TOML refuses that is no overflow stays a word: a run named 007.
    let (code, _, err) = run_cli(dir.path(), &["validate", p, "--set", "run.name=007"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_second_run_into_the_same_directory_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pipeline(dir.path(), "twice", "[train]\nsteps = 5\n");
    let p = path.to_str().unwrap();
    assert_eq!(run_cli(dir.path(), &["-q", "run", p]).0, 0);
    let (code, _, err) = run_cli(dir.path(), &["-q", "run", p]);
    assert_eq!(code, 2);
    assert!(
        err.contains("already holds a run") && err.contains("taskweave resume"),
        "{err}"
    );
    assert_eq!(run_cli(dir.path(), &["-q", "run", p, "--overwrite"]).0, 0);
}

fn write_grads(dir: &std::path::Path, rows: &[[f32; 3]]) -> std::path::PathBuf {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let g = tch::Tensor::from_slice(&flat).reshape([rows.len() as i64, 3]);
    let path = dir.join("g.safetensors");
    tch::Tensor::write_safetensors(&[("grads", &g)], &path).unwrap();
    path
}

fn read(path: &std::path::Path, name: &str) -> Vec<f32> {
    let tensors = tch::Tensor::read_safetensors(path).unwrap();
    Vec::<f32>::try_from(&tensors.into_iter().find(|(n, _)| n == name).unwrap().1).unwrap()
}

#[test]
fn call_weighting_matches_a_pytorch_implementation_of_pcgrad() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grads = write_grads(d, &[[1.0, 0.5, -2.0], [-1.0, 1.0, 1.5]]);
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "pcgrad",
            "--grads",
            grads.to_str().unwrap(),
            "--out",
            "out.safetensors",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ours = read(&d.join("out.safetensors"), "update");
    // PCGrad for two conflicting tasks, written independently in PyTorch.
    let script = "import warnings; warnings.filterwarnings('ignore')\nimport torch\n\
        g = torch.tensor([[1.0, 0.5, -2.0], [-1.0, 1.0, 1.5]], dtype=torch.float64)\nout = []\n\
        for i, j in [(0, 1), (1, 0)]:\n    gi = g[i].clone()\n    d = gi @ g[j]\n\
        \x20   if d < 0: gi = gi - d / (g[j] @ g[j]) * g[j]\n    out.append(gi)\n\
        print(' '.join(repr(v) for v in (out[0] + out[1]).tolist()))";
    let out = std::process::Command::new(workspace().join(".venv/bin/python"))
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours {ours:?} vs PyTorch {theirs:?}"
    );
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (*a as f64 - b).abs() < 1e-5,
            "ours {ours:?} vs PyTorch {theirs:?}"
        );
    }
}

#[test]
fn a_weighting_that_refuses_the_pipeline_is_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grads = write_grads(d, &[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 1.0]]);
    let g = grads.to_str().unwrap();
    for (method, set, message) in [
        (
            "krum",
            "n_byzantine=1",
            "needs at least 4 tasks (n_byzantine + 3), there are 3",
        ),
        ("trimmed-mean", "trim_number=2", "needs at least 5 tasks"),
        (
            "upgrad",
            "pref_vector=[1.0, 2.0]",
            "`pref_vector` has 2 entries, but there are 3 tasks",
        ),
        ("upgrad", "reg_epss=0.1", "did you mean `reg_eps`?"),
    ] {
        let args = [
            "call",
            "weighting",
            method,
            "--grads",
            g,
            "--set",
            set,
            "--out",
            "x.safetensors",
        ];
        let (code, _, err) = run_cli(d, &args);
        assert_eq!(code, 2, "{method} {set}: {err}");
        assert!(err.contains(message), "{method} {set}: {err}");
    }
    // No parameter column, and an output that would overwrite the input.
    let empty = d.join("empty.safetensors");
    let none = tch::Tensor::zeros([2, 0], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("grads", &none)], &empty).unwrap();
    let before = std::fs::read(&grads).unwrap();
    for (input, out, message) in [
        (empty.to_str().unwrap(), "x.safetensors", "is [2, 0]"),
        (g, g, "which this command reads; name another file"),
    ] {
        let args = [
            "call",
            "weighting",
            "pcgrad",
            "--grads",
            input,
            "--out",
            out,
        ];
        let (code, _, err) = run_cli(d, &args);
        assert_eq!(code, 2, "{input} -> {out}: {err}");
        assert!(err.contains(message), "{input} -> {out}: {err}");
    }
    assert_eq!(std::fs::read(&grads).unwrap(), before);
    // MoDo's default double sampling needs batches one gradient matrix cannot give.
    let args = [
        "call",
        "weighting",
        "modo",
        "--grads",
        g,
        "--out",
        "x.safetensors",
    ];
    let (code, _, err) = run_cli(d, &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need `double_sampling = false`"), "{err}");
    // The same refusal met on the toy problem is bad input too (it was exit 1).
    let (code, _, err) = run_cli(
        d,
        &[
            "toy",
            "cagrad",
            "--weighting",
            "modo",
            "--steps",
            "5",
            "--out",
            "toy.png",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need `double_sampling = false`"), "{err}");
}

#[test]
fn call_weighting_writes_weights_for_loss_weightings_and_validates_sets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grads = write_grads(d, &[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]);
    let g = grads.to_str().unwrap();
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "ew",
            "--grads",
            g,
            "--out",
            "ew.safetensors",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read(&d.join("ew.safetensors"), "update"),
        vec![1.0, 2.0, 0.0]
    );
    assert_eq!(read(&d.join("ew.safetensors"), "weights"), vec![1.0, 1.0]);
    // MGDA on orthogonal gradients of norms 1 and 2: weights 0.8, 0.2.
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "mgda",
            "--grads",
            g,
            "--set",
            "normalization=\"none\"",
            "--out",
            "m.safetensors",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let w = read(&d.join("m.safetensors"), "weights");
    assert!(
        (w[0] - 0.8).abs() < 1e-5 && (w[1] - 0.2).abs() < 1e-5,
        "{w:?}"
    );
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "mgda",
            "--grads",
            g,
            "--set",
            "normalisation=l2",
            "--out",
            "x.safetensors",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--> --set normalisation=l2") && err.contains("did you mean `normalization`?"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "mgda",
            "--grads",
            "missing.safetensors",
            "--out",
            "x.safetensors",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "mgda",
            "--grads",
            g,
            "--losses",
            g,
            "--out",
            "x.safetensors",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("has no tensor `losses` (it has: grads)"),
        "{err}"
    );
}

#[test]
fn gpu_info_and_cuda_devices_fail_clearly_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(dir.path(), &["gpu-info"]);
    assert_eq!(code, 0, "{err}");
    // The libtorch that runs (here the .venv's), not the one tch was built for.
    let torch = std::process::Command::new(workspace().join(".venv/bin/python"))
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&torch.stdout).trim().to_string();
    assert!(
        !version.is_empty(),
        "{}",
        String::from_utf8_lossy(&torch.stderr)
    );
    assert!(
        out.starts_with(&format!("libtorch {version} from ")),
        "expected the loaded libtorch {version}: {out}"
    );
    let (code, json, _) = run_cli(dir.path(), &["gpu-info", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["libtorch"], version.as_str());
    if taskweave::device::cuda_available() {
        return; // The rest is about machines without CUDA.
    }
    assert!(out.contains("CUDA not available:"), "{out}");
    let path = small_pipeline(dir.path(), "gpu", "[train]\nsteps = 2\n");
    let (code, _, err) = run_cli(
        dir.path(),
        &["run", path.to_str().unwrap(), "--set", "run.device=cuda:0"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("run.device = \"cuda:0\" but CUDA cannot be used here")
            && err.contains("\"cpu\""),
        "{err}"
    );
}

#[test]
fn toy_cagrad_draws_trajectories_into_a_png_and_rejects_bad_tables() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = run_cli(
        d,
        &[
            "toy",
            "cagrad",
            "--steps",
            "200",
            "--weighting",
            "mgda",
            "--weighting",
            "{kind=\"cagrad\", c=0.5}",
            "--out",
            "toy.png",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("mgda")).count(),
        5,
        "one line per start point: {out}"
    );
    assert!(out.contains("cagrad(c=0.5"), "{out}");
    let png = std::fs::read(d.join("toy.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let (code, _, err) = run_cli(
        d,
        &[
            "toy",
            "cagrad",
            "--steps",
            "10",
            "--weighting",
            "pcgard",
            "--out",
            "x.png",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pcgard") && err.contains("did you mean `pcgrad`?"),
        "{err}"
    );
}

#[test]
fn stats_counts_labels_and_correlates_scalar_tasks_over_rows_both_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // b = 1 − 2a where labelled, c binary, k multiclass; b lacks two labels.
    let mut csv = String::from("x,a,b,c,k\n");
    // The first 20 rows are the training split.
    for i in 0..40 {
        let a = (i * 7 % 11) as f64;
        let b = if i % 10 == 3 {
            String::new()
        } else {
            format!("{}", 1.0 - 2.0 * a)
        };
        csv += &format!("{i},{a},{b},{},{}\n", i % 2, i % 3);
    }
    std::fs::write(d.join("t.csv"), csv).unwrap();
    let pipeline = "[data]\nkind = \"csv\"\npath = \"t.csv\"\nshuffle = false\n\
        split = { train = 0.5, val = 0.25, test = 0.25 }\n\
        tasks = { a = { type = \"regression\" }, b = { type = \"regression\" }, \
        c = \"binary\", k = { type = \"multiclass\", classes = 3 } }\n[train]\nsteps = 1\n";
    std::fs::write(d.join("p.toml"), pipeline).unwrap();
    let (code, out, err) = run_cli(d, &["stats", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["rows"], 20);
    assert_eq!(stats["labelled"], serde_json::json!([20, 18, 20, 20]));
    let r = &stats["correlation"];
    assert!((r[0][1].as_f64().unwrap() + 1.0).abs() < 1e-9, "{r}");
    assert!(r[0][2].as_f64().unwrap().abs() < 1.0);
    assert!(r[0][3].is_null() && r[3][0].is_null(), "multiclass: {r}");
    // The table names every task; a bad split is exit 2.
    let (code, out, _) = run_cli(d, &["stats", "p.toml"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("train split: 20 rows") && out.contains("-1.000"),
        "{out}"
    );
    let (code, _, err) = run_cli(d, &["stats", "p.toml", "--split", "dev"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn call_refuses_folders_devices_one_file_for_two_outputs_and_overflowing_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let call = |args: &[&str]| run_cli(d, args);
    for (grads, expect) in [(".", "it is a directory"), ("/dev/zero", "it is a device")] {
        let (code, _, err) = call(&[
            "call",
            "weighting",
            "pcgrad",
            "--grads",
            grads,
            "--out",
            "o.safetensors",
        ]);
        assert_eq!(code, 2, "--grads {grads}: {err}");
        assert!(err.contains(&format!("--grads {grads}: {expect}")), "{err}");
    }
    // Finite gradients whose sum passes float32's range: nothing written.
    let big = write_grads(d, &[[3e38, 0.0, 0.0], [3e38, 0.0, 0.0]]);
    let (code, _, err) = call(&[
        "call",
        "weighting",
        "ew",
        "--grads",
        big.to_str().unwrap(),
        "--out",
        "o.safetensors",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("non-finite `update`"), "{err}");
    assert!(!d.join("o.safetensors").exists());
    // Output names a grouping refuses: --out and --plot naming one file, and
    // a PNG under another format's name.
    for (out, plot, expect) in [
        ("same.png", "./same.png", "--out and --plot both name"),
        (
            "g.safetensors",
            "g.svg",
            "--plot g.svg: the image written is a PNG; name it .png",
        ),
    ] {
        let (code, _, err) = call(&[
            "call",
            "grouping",
            "interval-clustering",
            "--tasks",
            "10",
            "--schedule",
            "linear",
            "--set",
            "k=2",
            "--out",
            out,
            "--plot",
            plot,
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expect), "{err}");
    }
    // The method named again as a key: refused, not ignored.
    let small = write_grads(d, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
    let (code, _, err) = call(&[
        "call",
        "weighting",
        "cagrad",
        "--grads",
        small.to_str().unwrap(),
        "--set",
        "kind=pcgrad",
        "--out",
        "o.safetensors",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the method is the argument after `weighting`"),
        "{err}"
    );
}

#[test]
fn plugin_show_lists_a_methods_keys_with_types_defaults_and_docs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = run_cli(d, &["plugin", "show", "cagrad"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("cagrad (Weighting, "), "{out}");
    let c = out
        .lines()
        .find(|l| l.starts_with("c "))
        .expect("a row for `c`");
    assert!(
        c.contains("number ≥ 0") && c.contains("0.4") && c.contains("Radius of the ball"),
        "{c}"
    );
    assert!(out.contains("0 | 1 | 2"), "choices of `rescale`: {out}");
    let (code, out, err) = run_cli(d, &["plugin", "show", "cagrad", "--json"]);
    assert_eq!(code, 0, "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["role"], "Weighting");
    assert_eq!(view["schema"]["properties"]["c"]["default"], 0.4);
    let (code, _, err) = run_cli(d, &["plugin", "show", "cagard"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean `cagrad`?"), "{err}");
}
