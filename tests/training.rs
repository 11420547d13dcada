//! Training through the CLI and the embedding API: kill -9 and resume, atomic
//! files, non-finite losses, data errors, and method behaviour on real runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use taskweave::run::Summary;
use taskweave::{Config, Pipeline, Run, Runtime};
use taskweave_tests::*;

fn spawn(cwd: &Path, args: &[&str]) -> Child {
    Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Milliseconds in `0..n`, different on every call.
fn random_ms(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    taskweave_plugin_api::rng::SplitMix::at(nanos, 0).below(n)
}

const LONG: &str =
    "[train]\nsteps = 1500\ncheckpoint_every = 5\nweighting = \"dwa\"\n\n[eval]\nevery = 25\n";

fn every_file_is_whole(run: &Path) {
    for (_, path) in taskweave::train::checkpoint::list(&run.join("checkpoints")) {
        taskweave::train::checkpoint::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    if let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) {
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("torn metrics line {line:?}: {e}"));
        }
    }
}

/// Kills `args` with SIGKILL after a random delay once it has written a
/// checkpoint; returns whether it was still running when killed.
fn kill_mid_run(cwd: &Path, args: &[&str], run: &Path) -> bool {
    let mut child = spawn(cwd, args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while taskweave::train::checkpoint::list(&run.join("checkpoints")).is_empty()
        && Instant::now() < deadline
    {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(random_ms(400)));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

#[test]
fn kill_9_at_random_points_then_resume_gives_bitwise_identical_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reference = small_pipeline(d, "reference", LONG);
    assert_eq!(run_cli(d, &["-q", "run", reference.to_str().unwrap()]).0, 0);

    let killed = small_pipeline(d, "killed", LONG);
    let run: PathBuf = d.join("runs/killed");
    let mut kills = 0;
    let mut args: Vec<String> = vec!["-q".into(), "run".into(), killed.display().to_string()];
    for _ in 0..3 {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        if kill_mid_run(d, &argv, &run) {
            kills += 1;
            every_file_is_whole(&run);
        }
        args = vec!["-q".into(), "resume".into(), run.display().to_string()];
    }
    assert!(
        kills > 0,
        "the run always finished before it could be killed; make it longer"
    );
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    every_file_is_whole(&run);
    assert_same_final_parameters(&d.join("runs/reference"), &run, "after resume");
    // The losses and weights each row averages span the kills too.
    assert_same_metrics(&d.join("runs/reference"), &run, "after resume");
    // metrics.jsonl: one record per evaluation, none duplicated by the resumes.
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = records
        .iter()
        .filter(|r| r["final"] != true)
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    let periodic = steps.len();
    assert_eq!(records.len(), periodic + 2, "one final record per split");
    // Every 25 steps, the last one included.
    assert_eq!(periodic, 1500 / 25, "{steps:?}");
}

/// Training long enough to be interrupted, with no periodic checkpoint or
/// evaluation: without the interrupt's own checkpoint, every step is lost.
const LONG_UNCHECKPOINTED: &str =
    "[train]\nsteps = 20000\ncheckpoint_every = 100000\n[eval]\nevery = 100000\n";

/// Runs the CLI with `args` in `dir`, sends it `signal` (`"INT"`: Ctrl-C,
/// or `"TERM"`) 1.5 s in, well into training (the handler is installed
/// before the data load), and returns its stderr once it has exited with
/// 128 + the signal's number.
fn interrupted(dir: &Path, args: &[&str], signal: &str) -> String {
    let child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    // Linux's numbers.
    let number = match signal {
        "INT" => 2,
        _ => 15,
    };
    assert_eq!(output.status.code(), Some(128 + number), "{err}");
    err
}

#[test]
fn ctrl_c_checkpoints_the_step_it_reached_and_resume_ends_where_an_uninterrupted_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reference = small_pipeline(d, "reference", LONG_UNCHECKPOINTED);
    assert_eq!(run_cli(d, &["-q", "run", reference.to_str().unwrap()]).0, 0);

    let path = small_pipeline(d, "interrupted", LONG_UNCHECKPOINTED);
    let err = interrupted(d, &["-q", "run", path.to_str().unwrap()], "INT");
    assert!(
        err.contains("interrupted at step") && err.contains("taskweave resume"),
        "{err}"
    );
    let run = d.join("runs/interrupted");
    let checkpoints = taskweave::train::checkpoint::list(&run.join("checkpoints"));
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert!((1..20000).contains(&checkpoints[0].0), "{checkpoints:?}");
    let (code, _, err) = run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_same_final_parameters(
        &d.join("runs/reference"),
        &run,
        "after the interrupted run's resume",
    );
    assert_same_metrics(
        &d.join("runs/reference"),
        &run,
        "after the interrupted run's resume",
    );
}

#[test]
fn sigterm_in_baselines_checkpoints_and_the_same_command_continues_to_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "base", LONG_UNCHECKPOINTED);
    let p = path.to_str().unwrap();
    let stored = |out: &str| -> serde_json::Value {
        let folder = d.join(out).join("baselines");
        let file = std::fs::read_dir(&folder)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(file).unwrap()).unwrap()
            ["tasks"]
            .clone()
    };
    let (code, _, err) = run_cli(
        d,
        &["-q", "baselines", p, "--set", "run.out_dir=\"reference\""],
    );
    assert_eq!(code, 0, "{err}");
    // SIGTERM, what `kill`, `timeout` and batch schedulers send, as Ctrl-C.
    let err = interrupted(d, &["-q", "baselines", p], "TERM");
    assert!(
        err.contains("interrupted at step")
            && err.contains("the same `taskweave baselines` command"),
        "{err}"
    );
    let (code, _, err) = run_cli(d, &["-q", "baselines", p]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored("runs"), stored("reference"));
}

#[test]
fn a_nonfinite_loss_stops_with_step_and_task_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let diverge =
        "[train]\nsteps = 50\ncheckpoint_every = 1\noptimizer = { kind = \"sgd\", lr = 1e12 }\n";
    let path = small_pipeline(d, "nan", diverge);
    let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(": the loss of task `task") && err.contains("its checkpoints so far kept"),
        "{err}"
    );
    let run = d.join("runs/nan");
    every_file_is_whole(&run);
    for (name, t) in final_parameters(&run) {
        if t.kind() == tch::Kind::Float {
            assert!(
                bool::try_from(t.isfinite().all()).unwrap(),
                "{name} is not finite in the kept checkpoint"
            );
        }
    }

    let path = small_pipeline(
        d,
        "skip",
        &format!("{diverge}on_nonfinite = \"skip-step\"\nmax_skipped_fraction = 1.0\n"),
    );
    let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/skip/summary.json")).unwrap())
            .unwrap();
    assert!(summary["skipped"].as_u64().unwrap() > 0, "{summary}");
}

/// Rewrites every checkpoint of `run` so that task2's gradient overflows
/// while both losses stay finite: every hidden unit is 2e-38 for every row
/// (zero weights, that bias) and task2's head weighs each by 1e38, so its
/// output is 32 and its loss about 1e3, while the backbone bias's gradient
/// sums 128 rows' 1e38·∂L/∂y of one sign: beyond f32. Task1's head is
/// untouched: its gradient is finite.
fn overflow_task2_gradient(run: &Path) {
    use taskweave::train::checkpoint;
    for (_, path) in checkpoint::list(&run.join("checkpoints")) {
        let mut ckpt = checkpoint::read(&path).unwrap();
        for (name, t) in &mut ckpt.tensors {
            let value = match name.as_str() {
                "backbone.0.weight" | "heads.task2.0.bias" => 0.0,
                "backbone.0.bias" => 2e-38,
                "heads.task2.0.weight" => 1e38,
                _ => continue,
            };
            *t = t.full_like(value);
        }
        checkpoint::write(&path, &ckpt).unwrap();
    }
}

#[test]
fn a_nonfinite_gradient_with_finite_losses_stops_naming_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = small_pipeline(d, "base", "[train]\nsteps = 1\n");
    let (code, _, err) = run_cli(d, &["-q", "run", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    overflow_task2_gradient(&d.join("runs/base"));
    // A loss weighting, and the gradient weightings that leave the check to
    // the runtime (the Gramian-based ones name the task themselves).
    for weighting in ["ew", "constant", "rgw", "graddrop"] {
        let extra =
            format!("[train]\nsteps = 3\ninit = \"runs/base\"\nweighting = \"{weighting}\"\n");
        let path = small_pipeline(d, weighting, &extra);
        let (code, _, err) = run_cli(d, &["-q", "run", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{weighting}: {err}");
        assert!(
            err.contains("step 0: the gradient of task `task2` is not finite (its loss is finite)")
                && err.contains("its checkpoints so far kept"),
            "{weighting}: {err}"
        );
    }
    // Skipped instead, every step: the parameters never move.
    let extra = "[train]\nsteps = 3\ninit = \"runs/base\"\non_nonfinite = \"skip-step\"\nmax_skipped_fraction = 1.0\n";
    let path = small_pipeline(d, "skip", extra);
    let (code, out, err) = run_cli(d, &["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        format!("{out}{err}")
            .contains("step 2: skipped, the gradient of task `task2` is not finite"),
        "{out}{err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/skip/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["skipped"], 3, "{summary}");
    let kept = final_parameters(&d.join("runs/skip"));
    let bias = &kept.iter().find(|(n, _)| n == "backbone.0.bias").unwrap().1;
    assert_eq!(bias.max().double_value(&[]), 2e-38f32 as f64);
}

#[test]
fn data_errors_name_file_row_and_column_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("table.csv"), "x1,x2,y\n1,2,3\n4,five,6\n7,8,9\n").unwrap();
    let pipeline = "[run]\nout_dir = \"runs\"\n[data]\nkind = \"csv\"\npath = \"table.csv\"\ntasks = { y = { type = \"regression\" } }\n[train]\nsteps = 5\n";
    std::fs::write(d.join("csv.toml"), pipeline).unwrap();
    let (code, _, err) = run_cli(d, &["-q", "run", "csv.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("table.csv: row 3, column `x2`: `five` is not a finite number"),
        "{err}"
    );
}

fn train_in_process(dir: &Path, name: &str, extra: &str, sets: &[&str]) -> Summary {
    let text = std::fs::read_to_string(small_pipeline(dir, name, extra)).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_str(&rt, &text, dir, &sets).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap()
}

#[test]
fn runs_trained_concurrently_in_one_process_match_a_run_trained_alone() {
    // libtorch's generator is per process; dropout draws from it every step.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "[train]\nsteps = 60\n";
    let dropout = ["model.backbone.dropout=0.3"];
    let alone = train_in_process(d, "alone", extra, &dropout);
    let together: Vec<PathBuf> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || train_in_process(d, &format!("together{i}"), extra, &dropout).dir)
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for run in &together {
        assert_same_final_parameters(&alone.dir, run, "beside the run alone");
    }
}

#[test]
fn one_run_trained_twice_continues_and_never_by_two_threads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "twice", "[train]\nsteps = 400\n");
    let rt = Runtime::new(&Config::new());
    let run = Run::start(Pipeline::from_file(&rt, &path, &[]).unwrap(), false).unwrap();
    let metrics = || std::fs::read(d.join("runs/twice/metrics.jsonl")).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2).map(|_| s.spawn(|| run.train(true))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let refused = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect::<Vec<_>>();
    assert!(
        refused
            .iter()
            .all(|e| e.to_string().contains("is being trained already")),
        "{refused:?}"
    );
    let first = metrics();
    // Trained again, it continues where it ended: nothing retrained or lost.
    assert_eq!(run.train(true).unwrap().steps, 400);
    assert_eq!(metrics(), first);
    // Another Run of the directory in this process: refused while this one lives.
    let again = Pipeline::from_file(&rt, &path, &[]).unwrap();
    let e = Run::start(again, true).unwrap_err();
    assert!(e.to_string().contains("in use by this process"), "{e}");
}

/// A program stops a run from another thread as Ctrl-C stops the CLI's:
/// after the step in progress, checkpointed; training it again continues,
/// and the run ends where one never stopped ends.
#[test]
fn a_stop_handle_stops_a_run_after_its_step_and_training_again_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = Runtime::new(&Config::new());
    let start = |name: &str, steps: u64| {
        let path = small_pipeline(d, name, &format!("[train]\nsteps = {steps}\n"));
        Run::start(Pipeline::from_file(&rt, &path, &[]).unwrap(), false).unwrap()
    };
    let stopped_at = |result: taskweave::Result<Summary>| match result {
        Err(taskweave::Error::Interrupted {
            signal: None, step, ..
        }) => step,
        other => panic!("not stopped by the handle: {other:?}"),
    };
    let newest = |run: &Run| {
        taskweave::train::checkpoint::list(&run.dir().join("checkpoints"))
            .last()
            .map(|c| c.0)
    };
    // Asked before training: the next call stops after its first step.
    let run = start("stopped", 200);
    run.stop_handle().stop();
    assert_eq!(stopped_at(run.train(true)), 1);
    assert_eq!(newest(&run), Some(1));
    assert_eq!(run.train(true).unwrap().steps, 200);
    let alone = train_in_process(d, "alone", "[train]\nsteps = 200\n", &[]);
    assert_same_final_parameters(&alone.dir, run.dir(), "after a stop");
    // From another thread while it trains.
    let long = start("long", 1_000_000);
    let handle = long.stop_handle();
    let step = std::thread::scope(|s| {
        let training = s.spawn(|| long.train(true));
        std::thread::sleep(std::time::Duration::from_millis(500));
        handle.stop();
        stopped_at(training.join().unwrap())
    });
    assert!((1..1_000_000).contains(&step), "{step}");
    assert_eq!(newest(&long), Some(step));
}

/// A run opened to read what it trained writes nothing into its directory,
/// shares it with other readers, keeps a process that would train there
/// out, and cannot itself be trained.
#[test]
fn a_run_opened_to_read_writes_nothing_shares_with_readers_and_keeps_training_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "read", "[train]\nsteps = 20\n");
    let rt = Runtime::new(&Config::new());
    let run_dir = {
        let run = Run::start(Pipeline::from_file(&rt, &path, &[]).unwrap(), false).unwrap();
        run.train(true).unwrap();
        run.dir().to_path_buf()
    };
    // What Run::open would remove as left by a killed write.
    let left = run_dir.join(".metrics.jsonl.tmp-4242");
    std::fs::write(&left, "x").unwrap();
    let first = Run::open_to_read(&rt, &run_dir).unwrap();
    let second = Run::open_to_read(&rt, &run_dir).unwrap();
    assert!(second.flatness("train", 0.05, 1).is_ok());
    assert!(
        left.exists(),
        "a reader removed a file of the run directory"
    );
    let e = Run::open(&rt, &run_dir).unwrap_err().to_string();
    assert!(
        e.contains("is in use by") && e.contains("reading it"),
        "{e}"
    );
    let e = first.train(true).unwrap_err().to_string();
    assert!(e.contains("was opened to read"), "{e}");
    drop((first, second));
    Run::open(&rt, &run_dir).unwrap();
    assert!(!left.exists());
}

#[test]
fn uncertainty_weighting_learns_larger_log_variance_for_the_larger_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Task `big` is task `small` times 10 (plus noise): its loss is ~100x larger.
    let mut rows = String::from("a,b,small,big\n");
    let mut rng = taskweave_plugin_api::rng::SplitMix::at(1, 1);
    for _ in 0..600 {
        let (a, b) = (rng.normal(), rng.normal());
        let y = (a * 1.5).sin() + 0.5 * b + 0.3 * rng.normal();
        rows.push_str(&format!("{a},{b},{y},{}\n", 10.0 * y + 3.0 * rng.normal()));
    }
    std::fs::write(d.join("uw.csv"), rows).unwrap();
    let extra =
        "[train]\nsteps = 600\nweighting = \"uw\"\noptimizer = { kind = \"adam\", lr = 0.01 }\n";
    let csv = r#"data={kind="csv", path="uw.csv", tasks={small={type="regression", standardize=false}, big={type="regression", standardize=false}}}"#;
    let summary = train_in_process(d, "uw", extra, &[csv]);
    let params = final_parameters(&summary.dir);
    let log_var = &params
        .iter()
        .find(|(n, _)| n == "strategy.weighting.log_var")
        .expect("UW's parameter is checkpointed")
        .1;
    let s = Vec::<f32>::try_from(log_var).unwrap();
    let mse: Vec<f64> = summary.test.iter().map(|m| m["mse"]).collect();
    // At the optimum s_t = log L_t, so the gap tracks log(L_big / L_small) > 0.
    assert!(
        s[1] - s[0] > 2.0,
        "log-variances {s:?} for test MSEs {mse:?}"
    );
}

#[test]
fn mmoe_on_identical_tasks_beats_mmoe_on_unrelated_tasks() {
    // Mean test MSE over 4 seeds: one seed's initialisation can leave an
    // expert idle, which moves a single run more than the correlation does.
    let dir = tempfile::tempdir().unwrap();
    let extra = "[train]\nsteps = 1500\noptimizer = { kind = \"adam\", lr = 0.01 }\n";
    let arch = r#"model.architecture={kind="mmoe", experts=4, expert_hidden=[16]}"#;
    let mean_mse = |p: &str| {
        let runs: Vec<f64> = (0..4)
            .map(|seed| {
                let sets = [format!("data.correlation={p}"), format!("run.seed={seed}")];
                let s = train_in_process(
                    dir.path(),
                    &format!("p{p}-s{seed}"),
                    extra,
                    &[
                        arch,
                        &sets[0],
                        &sets[1],
                        "data.input_dim=16",
                        "data.train=4000",
                    ],
                );
                s.test.iter().map(|m| m["mse"]).sum::<f64>() / s.test.len() as f64
            })
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let (related, unrelated) = (mean_mse("1.0"), mean_mse("0.0"));
    assert!(related < unrelated, "p = 1: {related}, p = 0: {unrelated}");
}

#[test]
fn checkpoints_load_in_pytorch_with_safetensors_load_file() {
    let dir = tempfile::tempdir().unwrap();
    let summary = train_in_process(dir.path(), "pytorch", "[train]\nsteps = 5\n", &[]);
    let (_, path) = taskweave::train::checkpoint::list(&summary.dir.join("checkpoints"))
        .pop()
        .unwrap();
    let script = "import sys, warnings\nwarnings.filterwarnings('ignore')\nfrom safetensors.torch import load_file\n\
                  t = load_file(sys.argv[1])\nw = t['backbone.0.weight']\nprint(len(t), tuple(w.shape), repr(w.double().sum().item()))";
    let out = Command::new(workspace().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ours = final_parameters(&summary.dir);
    let w = &ours
        .iter()
        .find(|(n, _)| n == "backbone.0.weight")
        .unwrap()
        .1;
    let sum = w
        .to_kind(tch::Kind::Double)
        .sum(tch::Kind::Double)
        .double_value(&[]);
    assert_eq!(printed, format!("{} (16, 8) {sum:?}", ours.len()));
}

#[test]
fn flatness_grows_with_the_perturbation_and_leaves_the_run_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let summary = train_in_process(dir.path(), "flat", "[train]\nsteps = 200\n", &[]);
    let before = final_parameters(&summary.dir);
    let rt = Runtime::new(&Config::new());
    let run = Run::open(&rt, &summary.dir).unwrap();
    let small = run.flatness("train", 0.01, 8).unwrap();
    let large = run.flatness("train", 0.3, 8).unwrap();
    drop(run);
    assert_eq!(
        small.base, large.base,
        "the trained point is restored exactly between samples"
    );
    assert!(
        large.mean_increase() > small.mean_increase() && small.mean_increase() > 0.0,
        "{small:?} {large:?}"
    );
    let after = final_parameters(&summary.dir);
    assert_eq!(before.len(), after.len());
    for ((n, a), (m, b)) in before.iter().zip(&after) {
        assert!(n == m && a.equal(b), "{n} changed");
    }
}

#[test]
fn double_sampling_draws_extra_batches_that_change_the_weights() {
    // MoDo's weights on the cross-Gramian of two extra batches differ from
    // those on the step's own Gramian; the heads' gradients average three
    // batches. Either changes the trained parameters.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut finals = Vec::new();
    for (name, double) in [("double", true), ("single", false)] {
        let extra = format!(
            "[train]\nsteps = 8\nweighting = {{ kind = \"modo\", gamma = 1.0, double_sampling = {double} }}\n[eval]\nevery = 8\n"
        );
        train_in_process(d, name, &extra, &[]);
        finals.push(final_parameters(&d.join("runs").join(name)));
    }
    let changed = finals[0]
        .iter()
        .zip(&finals[1])
        .filter(|((n, _), _)| n.starts_with("backbone.") || n.starts_with("heads."))
        .any(|((_, a), (_, b))| !a.allclose(b, 1e-6, 1e-6, false));
    assert!(changed);
}

#[test]
fn stateful_weightings_checkpoint_their_state_and_resume_exactly() {
    // Weightings whose state is a [T, P] matrix (moco, excess-mtl), another
    // weighting nested inside (cr-mogm around gradvac), Adam moments (famo,
    // gradnorm, imtl), moving averages (pcd) and a simplex point stepped on extra
    // batches drawn each step (modo's double sampling): through real
    // checkpoints.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, table) in [
        ("moco", "{ kind = \"moco\" }"),
        ("excess", "{ kind = \"excess-mtl\", n_warmup_steps = 5 }"),
        (
            "crmogm",
            "{ kind = \"cr-mogm\", base = { kind = \"gradvac\" } }",
        ),
        ("famo", "{ kind = \"famo\" }"),
        ("gradnorm", "{ kind = \"gradnorm\" }"),
        ("pcd", "{ kind = \"pcd\" }"),
        ("modo", "{ kind = \"modo\" }"),
        ("imtl", "{ kind = \"imtl\" }"),
    ] {
        let extra = format!(
            "[train]\nsteps = 30\ncheckpoint_every = 10\nweighting = {table}\n[eval]\nevery = 10\n"
        );
        train_in_process(d, name, &extra, &[]);
        assert_resume_is_exact(
            &d.join("runs").join(name),
            &d.join("runs").join(format!("{name}-copy")),
        );
    }
}
