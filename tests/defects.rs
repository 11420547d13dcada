//! Regression tests for the defects a new user found (issue 8), each named
//! after what went wrong: data lost through run names, crashes on half-copied
//! plugins, unlocked run directories, panics on closed pipes, unchecked
//! checkpoints, inputs that were not errors, and debug text in messages.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskweave_tests::*;

fn cli(cwd: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(cwd).env_remove("RUST_LOG");
    cmd
}

#[test]
fn run_names_that_are_not_one_path_component_never_let_overwrite_delete_other_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keep = d.join("runs/other/keep");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::write(&keep, "precious").unwrap();
    let path = small_pipeline(d, "names", "[train]\nsteps = 3\n");
    let p = path.to_str().unwrap();
    for name in [
        "\"\"",
        "\".\"",
        "\"..\"",
        "\"../escape\"",
        "\"/tmp/abs\"",
        "\"a/b\"",
    ] {
        for _ in 0..2 {
            let set = format!("run.name={name}");
            let (code, _, err) = run_cli(d, &["-q", "run", p, "--overwrite", "--set", &set]);
            assert_eq!(code, 2, "{name}: {err}");
            assert!(err.contains("run.name") && err.contains("--set"), "{err}");
        }
    }
    assert!(keep.exists(), "a run name deleted another run");
    assert!(!d.join("escape").exists() && !Path::new("/tmp/abs/run.json").exists());
    // A directory that holds no run is not replaced, --overwrite or not.
    let (code, _, err) = run_cli(
        d,
        &["-q", "run", p, "--overwrite", "--set", "run.name=other"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no taskweave run"), "{err}");
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "precious");
}

#[test]
fn half_copied_plugins_and_odd_files_named_so_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let rlw = std::fs::read(workspace_plugin("taskweave-rlw")).unwrap();
    std::fs::write(plugins.join("libcopying.so"), &rlw[..rlw.len() * 2 / 3]).unwrap();
    std::fs::write(plugins.join("librlw.so"), &rlw).unwrap();
    std::os::unix::fs::symlink("gone.so", plugins.join("libbroken.so")).unwrap();
    std::fs::create_dir(plugins.join("libdir.so")).unwrap();
    let made = Command::new("mkfifo")
        .arg(plugins.join("libfifo.so"))
        .status()
        .unwrap();
    assert!(made.success());

    let (code, out, err) = run_cli(d, &["plugins", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    for (file, reason) in [
        ("libcopying.so", "truncated"),
        ("libbroken.so", "broken symbolic link"),
        ("libdir.so", "a directory"),
        ("libfifo.so", "FIFO"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported:\n{out}"));
        assert!(line.contains(reason), "{line}");
    }
    assert!(out.contains("librlw.so"), "the good plugin loads: {out}");
    let pipeline = small_pipeline(
        d,
        "halfcopy",
        "[plugins]\ndirs = [\"plugins\"]\n[train]\nsteps = 3\nweighting = \"rlw\"\n",
    );
    for command in ["validate", "run"] {
        let (code, _, err) = run_cli(d, &["-q", command, pipeline.to_str().unwrap()]);
        assert_eq!(code, 0, "{command}: {err}");
    }
}

#[test]
fn a_second_run_or_resume_into_a_run_directory_in_use_exits_2_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "locked", "[train]\nsteps = 4000\n");
    let p = path.to_str().unwrap();
    let mut first = cli(d)
        .args(["-q", "run", p])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = d.join("runs/locked");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.join("run.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let holder = format!("in use by process {}", first.id());
    let (code, _, err) = run_cli(d, &["-q", "run", p, "--overwrite"]);
    let (resume_code, _, resume_err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    let still_running = first.try_wait().unwrap().is_none();
    let status = first.wait().unwrap();
    assert!(
        still_running,
        "the first run ended before the others tried; make it longer"
    );
    assert_eq!((code, resume_code), (2, 2), "{err}\n{resume_err}");
    assert!(err.contains(&holder), "{err}");
    assert!(resume_err.contains(&holder), "{resume_err}");
    assert!(status.success());
    // The first run's directory is whole: it resumes (to its end) and has one config.
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_closed_or_full_stdout_or_stderr_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "pipes", "[train]\nsteps = 5\n");
    let p = path.to_str().unwrap();
    // `taskweave run ... | true`: the reader is gone before the table is printed.
    let mut child = cli(d)
        .args(["-q", "run", p])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("error"),
        "{}",
        text(&out.stderr)
    );

    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[train\n").unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let status = cli(d)
        .args(["validate", bad.to_str().unwrap()])
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "a full stderr does not abort");
    let out = cli(d)
        .args(["validate", p])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot write to standard output: No space left on device"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn damaged_checkpoints_are_detected_and_resume_continues_from_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "ckpt", "[train]\nsteps = 40\ncheckpoint_every = 10\n");
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    let run = d.join("runs/ckpt");
    let finished = final_parameters(&run);
    let ckpts = run.join("checkpoints");
    let newest = taskweave::train::checkpoint::path_for(&ckpts, 40);
    // Flip one bit inside the tensor data: it used to load silently.
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();
    let orphan = ckpts.join(".step-000000050.safetensors.tmp-4242");
    std::fs::write(&orphan, "left by kill -9").unwrap();

    let (code, _, err) = run_cli(d, &["resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("step-000000040.safetensors is damaged") && err.contains("resuming"),
        "{err}"
    );
    assert!(!orphan.exists(), "the orphaned temporary file is removed");
    // Set aside, not counted among the checkpoints the run keeps.
    let aside = ckpts.join("step-000000040.safetensors.damaged");
    assert_eq!(std::fs::read(&aside).unwrap(), bytes);
    let again = final_parameters(&run);
    assert_eq!(again.len(), finished.len());
    for ((name, a), (_, b)) in finished.iter().zip(&again) {
        assert!(a.equal(b), "`{name}` differs after resuming from step 30");
    }
    // A truncated newest checkpoint falls back the same way.
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run_cli(d, &["resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from step 30"), "{err}");
}

#[test]
fn sizes_threads_and_values_out_of_range_are_input_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "sizes", "[train]\nsteps = 2\n");
    let p = path.to_str().unwrap();
    for (set, expect) in [
        ("run.threads=100000", "`run.threads` must be <="),
        (
            "model.backbone.hidden=[4000000000]",
            "`model.backbone.hidden[0]` must be <=",
        ),
        (
            "model.backbone.hidden=[16000000, 16000000]",
            "model.backbone.hidden[1] = 16000000 makes a layer of",
        ),
        (
            "data.train=1000000000000",
            "rows of data.input_dim = 8 needs at least",
        ),
        (
            "run.device=tpu",
            "run.device = \"tpu\": expected auto, cpu, cuda or cuda:N",
        ),
        (
            "run.cuda_allocator=\"garbage:::\"",
            "unknown allocator setting `garbage`",
        ),
        (
            "train.schedule={kind=\"plateau\", min_lr=0.5}",
            "train.schedule.min_lr = 0.5 is above the optimizer's lr = 0.001",
        ),
    ] {
        for command in ["validate", "run"] {
            let (code, _, err) = run_cli(d, &["-q", command, p, "--set", set]);
            let fails_at_run = set.contains("16000000") || set.contains("data.train");
            if command == "validate" && fails_at_run {
                continue; // Sizes that need the data are checked when it is loaded.
            }
            assert_eq!(code, 2, "{command} --set {set}: {err}");
            assert!(err.contains(expect), "{command} --set {set}: {err}");
            assert!(
                !err.contains("Internal torch error") && !err.contains("frame #"),
                "{err}"
            );
        }
    }
    // A model whose weights and gradients fit in the free memory but not
    // with Adam's moments and a checkpoint's copy: refused before it starts.
    let free: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .unwrap()
        * 1024;
    // Two layers of h × h: about 2h² parameters, a tenth of the free bytes.
    let h = ((free / 20) as f64).sqrt() as u64;
    let set = format!("model.backbone.hidden=[{h}, {h}]");
    let (code, _, err) = run_cli(d, &["-q", "run", p, "--set", &set]);
    assert_eq!(code, 2, "--set {set}: {err}");
    assert!(
        err.contains("needs at least") && err.contains("make it smaller"),
        "{err}"
    );
    let (code, _, err) = run_cli(d, &["validate", p, "--set", "model.backbone.hidden=[64,"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid TOML value for `model.backbone.hidden`")
            && err.contains("--> --set model.backbone.hidden=[64,"),
        "{err}"
    );
}

#[test]
fn a_shared_head_over_classes_of_different_counts_names_both_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: String = (0..20)
        .map(|i| format!("{i},{},{}\n", i % 3, i % 5))
        .collect();
    std::fs::write(d.join("t.csv"), format!("x,a,b\n{rows}")).unwrap();
    let text = "[data]\nkind = \"csv\"\npath = \"t.csv\"\n\
                tasks = { a = { type = \"multiclass\", classes = 3 }, b = { type = \"multiclass\", classes = 5 } }\n\
                [model]\nhead = { shared = true }\n[train]\nsteps = 2\n";
    std::fs::write(d.join("c.toml"), text).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "c.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("task `a` is multiclass (3 outputs) and task `b` is multiclass (5 outputs)"),
        "{err}"
    );
}

#[test]
fn commands_reading_a_trained_run_use_its_selected_parameters_or_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 16 training rows overfit: the best validation score comes early, so
    // best.safetensors alone holds the selected parameters.
    let text = std::fs::read_to_string(small_pipeline(
        d,
        "sel",
        "[train]\nsteps = 300\noptimizer = { kind = \"adam\", lr = 0.01 }\n[eval]\nevery = 20\n",
    ))
    .unwrap()
    .replace("train = 512", "train = 16");
    std::fs::write(d.join("sel.toml"), text).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "sel.toml"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/sel/summary.json")).unwrap())
            .unwrap();
    assert!(summary["selected_step"].as_u64() < Some(300), "{summary}");
    let flatness = |run: &str| run_cli(d, &["-q", "flatness", run, "--samples", "1"]);
    assert_eq!(flatness("runs/sel").0, 0);
    let best = d.join("runs/sel/checkpoints/best.safetensors");
    let kept = std::fs::read(&best).unwrap();
    // Another step's parameters in its place, or none: never the newest silently.
    std::fs::copy(
        d.join("runs/sel/checkpoints/step-000000300.safetensors"),
        &best,
    )
    .unwrap();
    let (code, _, err) = flatness("runs/sel");
    assert!(
        code == 2 && err.contains("it holds step 300"),
        "{code}: {err}"
    );
    std::fs::remove_file(&best).unwrap();
    let (code, _, err) = flatness("runs/sel");
    assert!(
        code == 2 && err.contains("best.safetensors: missing"),
        "{code}: {err}"
    );
    std::fs::write(&best, kept).unwrap();
    // A checkpoint of a model with fewer heads is not loaded half-way.
    let three = [
        "--set",
        "data.tasks=3",
        "--set",
        "run.name=three",
        "--set",
        "eval.select=\"last\"",
    ];
    let (code, _, err) = run_cli(d, &[&["-q", "run", "sel.toml"][..], &three[..]].concat());
    assert_eq!(code, 0, "{err}");
    std::fs::copy(
        d.join("runs/sel/checkpoints/step-000000300.safetensors"),
        d.join("runs/three/checkpoints/step-000000300.safetensors"),
    )
    .unwrap();
    let (code, _, err) = flatness("runs/three");
    assert!(
        code == 2 && err.contains("has no `heads.task3"),
        "{code}: {err}"
    );
    // The last step's checkpoint gone: no earlier one in its place.
    std::fs::remove_file(d.join("runs/three/checkpoints/step-000000300.safetensors")).unwrap();
    let (code, _, err) = flatness("runs/three");
    assert!(
        code == 2 && err.contains("newest usable checkpoint is step"),
        "{code}: {err}"
    );
    // An unfinished run (no summary): its newest checkpoint, and it says so.
    std::fs::remove_file(d.join("runs/three/summary.json")).unwrap();
    let (code, _, err) = flatness("runs/three");
    assert!(
        code == 0 && err.contains("has not finished"),
        "{code}: {err}"
    );
    // A single-task baseline's run reopens with its one task.
    let (code, _, err) = run_cli(
        d,
        &["-q", "baselines", "sel.toml", "--set", "train.steps=40"],
    );
    assert_eq!(code, 0, "{err}");
    let task1 = std::fs::read_dir(d.join("runs/baselines"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("0-task1")))
        .find(|p| p.is_dir())
        .unwrap();
    let (code, out, err) = flatness(task1.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task1") && !out.contains("task2"), "{out}");
}

#[test]
fn csv_values_beyond_float32_and_keys_of_another_task_type_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("t.csv"), "x,y,b\n1,2,0\n2,1e39,1\n3,4,0\n4,5,1\n").unwrap();
    let pipeline = |tasks: &str| {
        let text = format!(
            "[data]\nkind = \"csv\"\npath = \"t.csv\"\ntasks = {tasks}\n[train]\nsteps = 2\n"
        );
        std::fs::write(d.join("c.toml"), text).unwrap();
    };
    pipeline("{ y = { type = \"regression\" } }");
    let (code, _, err) = run_cli(d, &["-q", "run", "c.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("t.csv: row 3, column `y`: `1e39` is outside the float32 range"),
        "{err}"
    );
    pipeline("{ b = { type = \"binary\", loss = \"mae\" } }");
    let (code, _, err) = run_cli(d, &["validate", "c.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `loss` in `data.tasks.b`"),
        "{err}"
    );
    pipeline("{ b = \"binary\" }");
    let (code, out, err) = run_cli(d, &["run", "c.toml", "--print-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tasks = { b = { type = \"binary\" } }") && !out.contains("loss ="),
        "{out}"
    );
    pipeline("{ b = { type = \"multiclass\" } }");
    let (code, _, err) = run_cli(d, &["validate", "c.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("missing required key `data.tasks.b.classes`"),
        "{err}"
    );
    // validate checks that the data are there, where run would fail.
    pipeline("{ b = \"binary\" }");
    std::fs::remove_file(d.join("t.csv")).unwrap();
    let (code, _, err) = run_cli(d, &["validate", "c.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read data file") && err.contains("No such file or directory"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn flatness_and_call_arguments_out_of_range_exit_2_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "flatargs", "[train]\nsteps = 3\n");
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    for args in [
        ["--samples", "0"],
        ["--radius", "-1"],
        ["--radius", "nan"],
        ["--radius", "inf"],
        // Finite, but the perturbed loss overflows: no inf or NaN printed as a result.
        ["--radius", "1e38"],
    ] {
        let (code, _, err) = run_cli(d, &["flatness", "runs/flatargs", args[0], args[1]]);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let empty = tch::Tensor::zeros([0, 3], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("grads", &empty)], d.join("g0.safetensors")).unwrap();
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "ew",
            "--grads",
            "g0.safetensors",
            "--out",
            "o.safetensors",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is [0, 3]") && err.contains("at least one task"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "ew",
            "--grads",
            "g0.safetensors",
            "--out",
            "no/such/dir/o.safetensors",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!d.join("no").exists(), "the output directory was created");
    let (code, _, err) = run_cli(
        d,
        &[
            "call",
            "weighting",
            "ew",
            "--grads",
            "missing.safetensors",
            "--out",
            "o.safetensors",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read missing.safetensors: No such file or directory"),
        "{err}"
    );
    // Non-finite gradients or losses are the file's fault, named; losses a
    // method cannot take (GLS's logarithm of 0) are bad input too.
    let grads = tch::Tensor::from_slice(&[1.0f32, f32::NAN, 0.5, 2.0]).view([2, 2]);
    tch::Tensor::write_safetensors(&[("grads", &grads)], d.join("gnan.safetensors")).unwrap();
    let good = tch::Tensor::from_slice(&[1.0f32, 0.0, 0.5, 2.0]).view([2, 2]);
    tch::Tensor::write_safetensors(&[("grads", &good)], d.join("g.safetensors")).unwrap();
    for (losses, value) in [(1.0f32, f32::INFINITY), (1.0, 0.0)] {
        let l = tch::Tensor::from_slice(&[losses, value]);
        tch::Tensor::write_safetensors(&[("losses", &l)], d.join(format!("l{value}.safetensors")))
            .unwrap();
    }
    for (method, grads, losses, want) in [
        (
            "ew",
            "gnan.safetensors",
            None,
            "`grads` in gnan.safetensors holds NaN at [0, 1]",
        ),
        ("pcgrad", "gnan.safetensors", None, "holds NaN"),
        (
            "uw",
            "g.safetensors",
            Some("linf.safetensors"),
            "`losses` in linf.safetensors holds inf at [1]",
        ),
        (
            "gls",
            "g.safetensors",
            Some("l0.safetensors"),
            "needs positive, finite losses",
        ),
    ] {
        let mut args = vec![
            "call",
            "weighting",
            method,
            "--grads",
            grads,
            "--out",
            "o.safetensors",
        ];
        if let Some(l) = losses {
            args.extend(["--losses", l]);
        }
        let (code, _, err) = run_cli(d, &args);
        assert!(code == 2 && err.contains(want), "{method}: {code}: {err}");
    }
}

#[test]
fn a_run_that_skips_most_steps_fails_instead_of_reporting_inf_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let diverge = "[train]\nsteps = 40\non_nonfinite = \"skip-step\"\noptimizer = { kind = \"sgd\", lr = 1e12 }\n[eval]\nevery = 5\n";
    let path = small_pipeline(d, "skips", diverge);
    let (code, _, err) = run_cli(d, &["run", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("train.max_skipped_fraction = 0.5") && err.contains("steps were skipped"),
        "{err}"
    );
    assert!(!d.join("runs/skips/summary.json").exists());
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            path.to_str().unwrap(),
            "--overwrite",
            "--set",
            "train.max_skipped_fraction=1.0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("steps skipped for non-finite losses"),
        "a warning at evaluations: {err}"
    );
}

#[test]
fn a_loss_that_is_inf_before_any_update_does_not_blame_the_learning_rate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Labels whose squares overflow float32 (kept as they are): inf at step 0.
    let rows: String = (0..40).map(|i| format!("{i},{}e30\n", i % 3 + 1)).collect();
    std::fs::write(d.join("huge.csv"), format!("x,y\n{rows}")).unwrap();
    std::fs::write(
        d.join("huge.toml"),
        "[data]\nkind = \"csv\"\npath = \"huge.csv\"\n\
         tasks = { y = { type = \"regression\", standardize = false } }\n[train]\nsteps = 5\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(d, &["run", "huge.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("step 0: the loss of task")
            && err.contains("the learning rate is not the cause")
            && err.contains("train.strategy"),
        "{err}"
    );
    // Divergence after updates still points at the step sizes.
    let path = small_pipeline(d, "diverges", "[train]\nsteps = 5\n");
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            path.to_str().unwrap(),
            "--set",
            "train.optimizer={ kind = \"sgd\", lr = 1e12 }",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        !err.contains("step 0:") && err.contains("Lower the learning rate"),
        "{err}"
    );
}

#[test]
fn messages_carry_no_debug_formatting_or_colours_and_json_logs_carry_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "words", "[train]\nsteps = 3\n");
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            path.to_str().unwrap(),
            "--set",
            "data.tasks=1",
            "--set",
            "data.input_dim=4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 task,") && err.contains("on cpu"), "{err}");
    assert!(!err.contains("Cpu") && !err.contains("1 tasks"), "{err}");
    assert!(!err.contains('\x1b'), "no colours off a terminal: {err:?}");

    let (code, _, err) = run_cli(
        d,
        &[
            "validate",
            path.to_str().unwrap(),
            "--set",
            "train.strategy=\"mmoe\"",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("it is an Architecture"), "{err}");

    let out = cli(d)
        .args([
            "--log-format",
            "json",
            "validate",
            path.to_str().unwrap(),
            "--set",
            "train.stpes=3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let records: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let diagnostic = records
        .iter()
        .find(|r| r["fields"]["path"] == "train.stpes")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(diagnostic["fields"]["location"], "--set train.stpes=3");
    assert_eq!(diagnostic["fields"]["help"], "did you mean `steps`?");
    assert!(
        records.iter().any(|r| r["fields"]["exit_code"] == 2),
        "{records:?}"
    );
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn resuming_a_finished_run_changes_nothing_it_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Best-validation selection where the last step is the best: a resume
    // used to report an earlier step from the stale best checkpoint.
    let path = small_pipeline(
        d,
        "finished",
        "[train]\nsteps = 40\ncheckpoint_every = 10\n[eval]\nevery = 10\nselect = \"best-val\"\n",
    );
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    let run = d.join("runs/finished");
    let metrics = || std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let (before, rows) = (summary(&run), metrics());
    assert_eq!(before["selected_step"], 40, "the case under test: {before}");
    // best.safetensors holds the reported step, the last one here too.
    let best =
        taskweave::train::checkpoint::read(&run.join("checkpoints/best.safetensors")).unwrap();
    assert_eq!(best.meta["step"], 40, "{}", best.meta);
    for _ in 0..2 {
        let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(summary(&run), before);
        // Byte for byte: the final rows keep their wall times too.
        assert_eq!(metrics(), rows);
    }
    // The last step's checkpoint lost: best.safetensors holds the same step.
    let args = [
        "-q",
        "flatness",
        run.to_str().unwrap(),
        "--samples",
        "2",
        "--json",
    ];
    let base = || {
        let (code, out, err) = run_cli(d, &args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["base"].clone()
    };
    let from_last = base();
    std::fs::remove_file(taskweave::train::checkpoint::path_for(
        &run.join("checkpoints"),
        40,
    ))
    .unwrap();
    assert_eq!(base(), from_last);
}

#[test]
fn a_damaged_best_checkpoint_is_dropped_with_a_warning_and_the_resumed_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(
        d,
        "best",
        "[train]\nsteps = 40\ncheckpoint_every = 10\n[eval]\nevery = 10\nselect = \"best-val\"\n",
    );
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    let run = d.join("runs/best");
    let ckpts = run.join("checkpoints");
    // As if killed after step 30's checkpoint, with its best checkpoint damaged.
    std::fs::remove_file(taskweave::train::checkpoint::path_for(&ckpts, 40)).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let best = ckpts.join("best.safetensors");
    let bytes = std::fs::read(&best).unwrap();
    std::fs::write(&best, &bytes[..bytes.len() / 2]).unwrap();

    let (code, _, err) = run_cli(d, &["resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("best-validation checkpoint of step")
            && err.contains("cannot be used")
            && err.contains("starts again at step 30"),
        "{err}"
    );
    let done = summary(&run);
    assert_eq!(done["steps"], 40, "{done}");
    assert!(done["selected_step"].as_u64().unwrap() >= 30, "{done}");
}

#[test]
fn a_finished_run_whose_best_checkpoint_is_damaged_is_left_as_it_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Little data, a wide model and a high rate: validation gets worse late.
    let path = small_pipeline(
        d,
        "early",
        "[train]\nsteps = 240\ncheckpoint_every = 20\noptimizer = { kind = \"adam\", lr = 0.02 }\n\
         [eval]\nevery = 20\nselect = \"best-val\"\n",
    );
    let sets = [
        "--set",
        "data.train=64",
        "--set",
        "model.backbone.hidden=[128, 128]",
    ];
    let mut args = vec!["-q", "run", path.to_str().unwrap()];
    args.extend(sets);
    assert_eq!(run_cli(d, &args).0, 0);
    let run = d.join("runs/early");
    let (before, rows) = (summary(&run), metrics_rows(&run));
    assert!(
        before["selected_step"].as_u64().unwrap() < 240,
        "validation never got worse; make the run overfit harder: {before}"
    );
    // The last step's evaluation is recorded though another step is reported.
    assert!(
        rows.iter()
            .any(|r| r["step"] == 240 && r["split"] == "val" && r["final"].is_null()),
        "{rows:?}"
    );
    let best = run.join("checkpoints/best.safetensors");
    std::fs::write(&best, b"damaged").unwrap();
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the run is finished and reported step"),
        "{err}"
    );
    assert_eq!(summary(&run), before);
    assert_eq!(metrics_rows(&run), rows);
}

#[test]
fn resume_refuses_a_config_edited_in_what_the_run_computes_and_takes_a_longer_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(
        d,
        "edited",
        "[train]\nsteps = 40\ncheckpoint_every = 10\n[eval]\nevery = 10\n",
    );
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    let run = d.join("runs/edited");
    let config = run.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let (before, rows) = (summary(&run), metrics_rows(&run));
    let edited = |from: &str, to: &str| {
        assert!(original.contains(from), "{from} not in {original}");
        std::fs::write(&config, original.replacen(from, to, 1)).unwrap();
        run_cli(d, &["-q", "resume", run.to_str().unwrap()])
    };
    // The seed, then the optimizer: refused at the key's line, nothing rewritten.
    for (from, to, key) in [
        ("seed = 0", "seed = 7", "run.seed"),
        ("lr = 0.001", "lr = 0.002", "train.optimizer.lr"),
    ] {
        let (code, _, err) = edited(from, to);
        assert_eq!(code, 2, "{key}: {err}");
        assert!(
            err.contains(key) && err.contains("config.toml:"),
            "{key}: {err}"
        );
        assert_eq!(summary(&run), before);
        assert_eq!(metrics_rows(&run), rows);
    }
    // Fewer steps than the run has reached.
    let (code, _, err) = edited("steps = 40", "steps = 20");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has reached step 40"), "{err}");
    // More steps: the run goes on.
    let (code, _, err) = edited("steps = 40", "steps = 60");
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&run)["steps"], 60);
    // A run another version started: said.
    let marker = run.join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    info["version"] = serde_json::json!("0.0.1");
    std::fs::write(&marker, info.to_string()).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("was started by taskweave 0.0.1"), "{err}");
    // metrics.jsonl gone: said, not silently rewritten from here on.
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the rows before the resumed step are lost"),
        "{err}"
    );
}

#[test]
fn a_run_started_with_plugins_on_the_command_line_resumes_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-rlw");
    let path = small_pipeline(
        d,
        "plugged",
        "[train]\nsteps = 6\ncheckpoint_every = 2\nweighting = \"rlw\"\n",
    );
    let (code, _, err) = run_cli(
        d,
        &["-q", "run", path.to_str().unwrap(), "--plugins", "plugins"],
    );
    assert_eq!(code, 0, "{err}");
    let run = d.join("runs/plugged");
    // As if killed after step 4.
    std::fs::remove_file(taskweave::train::checkpoint::path_for(
        &run.join("checkpoints"),
        6,
    ))
    .unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(elsewhere.path(), &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&run)["steps"], 6);
}

#[test]
fn a_weighting_that_refuses_the_pipeline_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "refused", "[train]\nsteps = 2\n");
    for (set, expect) in [
        ("train.weighting=krum", "needs at least 3 tasks"),
        (
            "train.weighting={kind=\"upgrad\", pref_vector=[1]}",
            "pref_vector",
        ),
    ] {
        let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap(), "--set", set]);
        assert_eq!(code, 2, "--set {set}: {err}");
        // Located at what set the weighting.
        let at = format!("--> --set {set}");
        assert!(
            err.contains(expect) && err.contains(&at),
            "--set {set}: {err}"
        );
    }
}

#[test]
fn output_paths_that_are_files_or_directories_the_wrong_way_round_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a-file"), "not a directory").unwrap();
    let path = small_pipeline(d, "paths", "[train]\nsteps = 2\n");
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            path.to_str().unwrap(),
            "--set",
            "run.out_dir=\"a-file\"",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot create the run directory") && err.contains("run.out_dir"),
        "{err}"
    );
    install_plugin(d, "taskweave-diffusion-clustering");
    for (out, expect) in [
        (".", "it is a directory; name a file"),
        ("a-file/out.safetensors", "a-file is not a directory"),
    ] {
        let (code, _, err) = run_cli(
            d,
            &[
                "-q",
                "call",
                "grouping",
                "interval-clustering",
                "--plugins",
                "plugins",
                "--tasks",
                "10",
                "--set",
                "k=2",
                "--out",
                out,
            ],
        );
        assert_eq!(code, 2, "--out {out}: {err}");
        assert!(err.contains(expect), "--out {out}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(d.join("a-file")).unwrap(),
        "not a directory"
    );
}

#[test]
fn an_overwrite_that_fails_before_training_leaves_the_old_run_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "kept", "[train]\nsteps = 3\n");
    let p = path.to_str().unwrap();
    assert_eq!(run_cli(d, &["-q", "run", p]).0, 0);
    let run = d.join("runs/kept");
    let before = summary(&run);
    // Refused at the data load (not by the schema): after the directory was taken.
    let (code, _, err) = run_cli(
        d,
        &[
            "-q",
            "run",
            p,
            "--overwrite",
            "--set",
            "model.head.hidden=[4000000000]",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(summary(&run), before, "the old run was emptied");
    assert!(!final_parameters(&run).is_empty());
    // A successful overwrite still replaces it.
    let (code, _, err) = run_cli(
        d,
        &["-q", "run", p, "--overwrite", "--set", "train.steps=4"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&run)["steps"], 4);
}

#[test]
fn split_fractions_that_do_not_add_up_fail_validate_where_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("t.csv"), "x,y\n1,2\n3,4\n5,6\n7,8\n").unwrap();
    std::fs::write(
        d.join("split.toml"),
        "[data]\nkind = \"csv\"\npath = \"t.csv\"\ntasks = { y = { type = \"regression\" } }\n\
         split = { train = 0.8, val = 0.3, test = 0.3 }\n[train]\nsteps = 2\n",
    )
    .unwrap();
    for command in ["validate", "run"] {
        let (code, _, err) = run_cli(d, &["-q", command, "split.toml"]);
        assert_eq!(code, 2, "{command}: {err}");
        assert!(
            err.contains("the fractions must add up to 1"),
            "{command}: {err}"
        );
        assert!(err.contains("split.toml:"), "{command}: no position: {err}");
    }
}

#[test]
fn baselines_of_other_data_values_at_the_same_path_are_not_compared_against() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = |scale: f64| {
        let rows: String = (0..60)
            .map(|i| {
                let x = i as f64 / 60.0;
                format!("{x},{},{}\n", scale * x, scale * (1.0 - x))
            })
            .collect();
        std::fs::write(d.join("t.csv"), format!("x,y,z\n{rows}")).unwrap();
    };
    std::fs::write(
        d.join("c.toml"),
        "[data]\nkind = \"csv\"\npath = \"t.csv\"\n\
         tasks = { y = { type = \"regression\" }, z = { type = \"regression\" } }\n\
         [train]\nsteps = 5\n",
    )
    .unwrap();
    csv(1.0);
    let (code, _, err) = run_cli(d, &["-q", "baselines", "c.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(d, &["run", "c.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Δm vs single-task baselines"), "{out}");
    // The same file name, other values: the stored baselines are another data set's.
    csv(1e6);
    let (code, out, err) = run_cli(d, &["run", "c.toml", "--overwrite"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no single-task baselines stored"), "{out}");
}

#[test]
fn settings_that_run_but_not_as_written_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(
        d,
        "warned",
        "[train]\nsteps = 5\nbatch = 100000\nschedule = { kind = \"cosine\", warmup = 1000 }\n",
    );
    let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("train.batch = 100000 is more than the 512 training rows"),
        "{err}"
    );
    assert!(
        err.contains("train.schedule.warmup = 1000 is not shorter than the run's 5 steps"),
        "{err}"
    );
    // A binary task whose training labels are all one class.
    // (Both classes where it is scored: the AUC needs them.)
    let rows: String = (0..60)
        .map(|i| match i {
            0..40 => format!("{i},1,train\n"),
            40..50 => format!("{i},{},val\n", i % 2),
            _ => format!("{i},{},test\n", i % 2),
        })
        .collect();
    std::fs::write(d.join("one.csv"), format!("x,c,s\n{rows}")).unwrap();
    let text = "[data]\nkind = \"csv\"\npath = \"one.csv\"\nsplit_column = \"s\"\n\
                tasks = { c = { type = \"binary\" } }\n[train]\nsteps = 2\n";
    std::fs::write(d.join("one.toml"), text).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "one.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("task `c` has one class only in the training split (every label 1)"),
        "{err}"
    );
    // Categorical columns under the default `mlp` backbone, which reads none.
    let rows: String = (0..60)
        .map(|i| format!("{i},{},{}\n", ["a", "b"][i % 2], i % 3))
        .collect();
    std::fs::write(d.join("cat.csv"), format!("x,region,y\n{rows}")).unwrap();
    let text = "[data]\nkind = \"csv\"\npath = \"cat.csv\"\nfields = [\"region\"]\n\
                tasks = { y = { type = \"regression\" } }\n[train]\nsteps = 2\n";
    std::fs::write(d.join("cat.toml"), text).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "cat.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the `mlp` backbone reads only `features`, so the data's `fields` go unused"),
        "{err}"
    );
}

/// Settings that train, but not as written, are said when training starts;
/// a command that only reads the trained run (flatness) does not repeat them.
#[test]
fn warnings_about_training_settings_come_from_training_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "noted", "[train]\nsteps = 5\nbatch = 1000\n");
    let warning = "train.batch = 1000 is more than the 512 training rows";
    let (code, _, err) = run_cli(d, &["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    let (code, _, err) = run_cli(d, &["flatness", "runs/noted", "--samples", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(warning), "{err}");
}

/// Baselines are kept per setting they train with: a run is compared with
/// the baselines its own settings would train, not with the last ones
/// trained under another schedule (which used to replace them), and they
/// train from scratch whatever `train.init` the pipeline fine-tunes from.
#[test]
fn baselines_are_kept_per_training_setting_and_train_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "base", "[train]\nsteps = 20\n");
    let p = path.to_str().unwrap();
    let cosine = "train.schedule={kind=\"cosine\"}";
    let delta = |sets: &[&str]| {
        let mut args = vec!["-q", "run", p, "--overwrite"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let (code, out, err) = run_cli(d, &args);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .find(|l| l.starts_with("Δm"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert_eq!(run_cli(d, &["-q", "baselines", p]).0, 0);
    let constant = delta(&[]);
    assert!(constant.contains("vs single-task baselines"), "{constant}");
    assert!(delta(&[cosine]).contains("no single-task baselines stored"));
    let (code, _, err) = run_cli(d, &["-q", "baselines", p, "--set", cosine]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        delta(&[]),
        constant,
        "the other schedule's baselines replaced these"
    );
    assert!(delta(&[cosine]).contains("vs single-task baselines"));
    // A pipeline fine-tuning an MMoE: its heads read the experts (12 wide),
    // a baseline's the backbone (16): the baselines start from scratch.
    let mmoe = "model.architecture={kind=\"mmoe\", expert_hidden=[12]}";
    delta(&[mmoe, "run.name=src"]);
    let sets = [mmoe, "train.init=\"runs/src\""];
    let (code, _, err) = run_cli(
        d,
        &["-q", "baselines", p, "--set", sets[0], "--set", sets[1]],
    );
    assert_eq!(code, 0, "{err}");
    assert!(delta(&sets).contains("vs single-task baselines"));
}
