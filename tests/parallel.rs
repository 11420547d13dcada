//! Data-parallel training under `mpirun` (issue 18): two ranks train what one
//! process trains with the same global batch, for loss weightings, gradient
//! weightings and SAM-MTL; ranks that diverge stop the run; a killed rank
//! ends the job and the run resumes. Skipped (saying so) where this build has
//! no MPI: `make test` enables it where Open MPI and libclang are installed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use taskweave_tests::*;

/// `mpirun -np <ranks>` over the CLI with `args` in `cwd`, or `None` (and a
/// note) when this build cannot join an MPI job.
fn mpirun(cwd: &Path, ranks: usize, args: &[&str]) -> Option<Command> {
    if !taskweave::dist::WITH_MPI {
        eprintln!(
            "skipped: this build has no MPI (install Open MPI and libclang, then `make test`)"
        );
        return None;
    }
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .arg(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        // Open MPI refuses root unless told; CI machines run as root.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    Some(cmd)
}

fn succeeded(output: &Output, what: &str) {
    assert!(output.status.success(), "{what}: {}", text(&output.stderr));
}

/// One pipeline per method, each trained by one process and by two ranks
/// with the same global batch (two halves of 64 rows).
#[test]
fn two_ranks_train_what_one_process_trains_for_every_kind_of_method() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-sam-mtl");
    for (name, keys, tolerance) in COMPARED_METHODS {
        let path = method_pipeline(d, name, keys, 60);
        let p = path.to_str().unwrap();
        let threads = "run.threads=1";
        let (code, _, err) = run_cli(
            d,
            &["-q", "run", p, "--set", threads, "--set", "run.name=one"],
        );
        assert_eq!(code, 0, "{name}, one process: {err}");
        let Some(mut two) = mpirun(
            d,
            2,
            &["-q", "run", p, "--set", threads, "--set", "run.name=two"],
        ) else {
            return;
        };
        // Exit 0 also means that both ranks held the same parameters, bit for
        // bit, at the start, at every evaluation and at every checkpoint.
        succeeded(&two.output().unwrap(), &format!("{name}, two ranks"));
        let worst = max_relative_difference(&d.join("runs/one"), &d.join("runs/two"));
        assert!(
            worst <= tolerance,
            "{name}: two ranks end {worst:e} away from one process"
        );
        // The run directory is rank 0's alone, complete as one process leaves it.
        for file in [
            "run.json",
            "config.toml",
            "metrics.jsonl",
            "summary.json",
            "curves.png",
        ] {
            assert!(d.join("runs/two").join(file).is_file(), "{name}: no {file}");
        }
        for run in ["one", "two"] {
            std::fs::remove_dir_all(d.join("runs").join(run)).unwrap();
        }
    }
}

#[test]
fn ranks_started_with_different_settings_stop_at_once_naming_the_rank() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "diverged", "[train]\nsteps = 50\n");
    let p = path.to_str().unwrap();
    let Some(mut cmd) = mpirun(d, 1, &["-q", "run", p, "--set", "run.seed=0"]) else {
        return;
    };
    // Open MPI's MPMD form: one more rank, with another seed.
    cmd.args([":", "-np", "1"])
        .arg(binary())
        .args(["-q", "run", p, "--set", "run.seed=1"]);
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "rank 1 was started with another [run] section (its resolved values) than rank 0"
        ),
        "{err}"
    );
    assert!(
        checkpoints(&d.join("runs/diverged")).is_empty(),
        "a checkpoint was written by ranks that disagree"
    );
}

/// A warning every rank would give (it comes from the pipeline and the
/// data, the same on each) is printed once, by rank 0, as one process does.
#[test]
fn a_warning_every_rank_would_give_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "warned", "[train]\nsteps = 4\nbatch = 1000\n");
    let p = path.to_str().unwrap();
    let warning = "train.batch = 1000 is more than the 512 training rows";
    let one = run_cli(d, &["run", p, "--set", "run.name=one"]);
    assert_eq!(one.0, 0, "{}", one.2);
    assert_eq!(one.2.matches(warning).count(), 1, "{}", one.2);
    let Some(mut two) = mpirun(d, 2, &["run", p, "--set", "run.name=two"]) else {
        return;
    };
    let output = two.output().unwrap();
    let err = text(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert_eq!(err.matches(warning).count(), 1, "{err}");
}

fn checkpoints(run: &Path) -> Vec<(u64, std::path::PathBuf)> {
    taskweave::train::checkpoint::list(&run.join("checkpoints"))
}

#[test]
fn commands_that_do_not_train_refuse_to_run_under_mpirun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "stats", "");
    let Some(mut cmd) = mpirun(d, 2, &["stats", path.to_str().unwrap()]) else {
        return;
    };
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("only `run`, `resume` and `lm train`"), "{err}");
}

/// The pid of rank `rank` among the processes mpirun `parent` started.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|&b| b == 0)
                        .any(|var| var == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes())
                })
                .unwrap_or(false)
        })
}

#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes_where_it_was_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra =
        "[train]\nsteps = 4000\nbatch = 64\ncheckpoint_every = 50\n\n[eval]\nevery = 1000\n";
    let path = small_pipeline(d, "killed", extra);
    let p = path.to_str().unwrap();
    let args = ["-q", "run", p, "--set", "run.threads=1"];
    let Some(mut whole) = mpirun(d, 2, &[&args[..], &["--set", "run.name=whole"]].concat()) else {
        return;
    };
    succeeded(&whole.output().unwrap(), "the uninterrupted run");

    let mut job = mpirun(d, 2, &args)
        .unwrap()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = d.join("runs/killed");
    let started = Instant::now();
    while checkpoints(&run).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint came"
        );
        assert!(
            job.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(job.id(), 1).expect("rank 1's process");
    assert!(Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the other rank hangs after rank 1 was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("signal 9") || err.contains("Killed"),
        "no message names the kill: {err}"
    );
    let last = checkpoints(&run).pop().unwrap().0;
    assert!(
        last < 4000,
        "the run finished before the kill (checkpoint {last})"
    );

    let resume = mpirun(d, 2, &["-q", "resume", run.to_str().unwrap()])
        .unwrap()
        .output()
        .unwrap();
    succeeded(&resume, "resume under mpirun");
    assert_same_final_parameters(
        &d.join("runs/whole"),
        &run,
        "from the uninterrupted run after the resume",
    );
}

/// Ranks resuming from different checkpoints (a run directory that a
/// lagging file system shows them differently), or mixing `run` and
/// `resume`, stop before training with exit 2 and the run untouched.
#[test]
fn ranks_that_would_start_from_different_places_stop_at_once_naming_the_rank() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "apart", "[train]\nsteps = 40\ncheckpoint_every = 10\n");
    let p = path.to_str().unwrap();
    assert_eq!(run_cli(d, &["-q", "run", p]).0, 0);
    // Rank 1 sees an older copy of the run (a file system that lags).
    let lagging = d.join("lagging");
    std::fs::create_dir_all(lagging.join("runs")).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(d.join("runs/apart"))
        .arg(lagging.join("runs"))
        .status()
        .unwrap();
    assert!(status.success());
    let checkpoints = lagging.join("runs/apart/checkpoints");
    for step in [30, 40] {
        let path = taskweave::train::checkpoint::path_for(&checkpoints, step);
        std::fs::remove_file(path).unwrap();
    }
    let before = std::fs::read(d.join("runs/apart/metrics.jsonl")).unwrap();
    let resume = &["-q", "resume", "runs/apart"][..];
    for (second, needle) in [
        (
            &["-wdir", lagging.to_str().unwrap()][..],
            "found another newest checkpoint",
        ),
        (&[][..], "`run` and `resume` mixed"),
    ] {
        let Some(mut cmd) = mpirun(d, 1, resume) else {
            return;
        };
        cmd.args([":", "-np", "1"]).args(second).arg(binary());
        match second.is_empty() {
            true => cmd.args(["-q", "run", p, "--overwrite"]),
            false => cmd.args(resume),
        };
        let out = cmd.output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("rank 1 ") && err.contains(needle), "{err}");
        assert_eq!(
            std::fs::read(d.join("runs/apart/metrics.jsonl")).unwrap(),
            before
        );
    }
}

/// Diffusion pipelines are not data-parallel yet: under mpirun the ranks
/// refuse at the start (exit 2 each), saying to run without it, and write
/// no run.
#[test]
fn a_diffusion_pipeline_under_mpirun_is_refused_saying_to_run_it_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("diffusion.toml");
    std::fs::write(
        &path,
        "[run]\nname = \"diffusion\"\ndevice = \"cpu\"\nthreads = 1\nout_dir = \"runs\"\n\n\
         [data]\nkind = \"toy-2d\"\ntrain = 500\nval = 100\ntest = 100\n\n\
         [diffusion]\nsteps = 100\n\n[model]\nbackbone = { hidden = [16] }\n\n[train]\nsteps = 5\nbatch = 64\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let Some(mut two) = mpirun(d, 2, &["-q", "run", p]) else {
        return;
    };
    let output = two.output().unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("a [diffusion] pipeline trains in one process for now: run it without mpirun"),
        "{err}"
    );
    assert!(!d.join("runs/diffusion/summary.json").exists());
    // A schema error is prefixed with the rank that met it, like any other.
    let Some(mut two) = mpirun(d, 2, &["-q", "run", p, "--set", "train.nosuch=1"]) else {
        return;
    };
    let output = two.output().unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error (rank ") && err.contains("nosuch"),
        "{err}"
    );
}

/// A loss that overflows stops two ranks as it stops one process, naming
/// the same task and value (an infinite share once read as NaN on the ranks).
#[test]
fn an_infinite_loss_under_mpirun_is_named_as_one_process_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = small_pipeline(d, "overflow", "[train]\nsteps = 20\n");
    let p = path.to_str().unwrap();
    let sets = [
        "--set",
        "train.optimizer={kind=\"sgd\", lr=1e30}",
        "--set",
        "run.threads=1",
    ];
    let one = run_cli(
        d,
        &[&["-q", "run", p, "--set", "run.name=one"][..], &sets].concat(),
    );
    assert_eq!(one.0, 1, "{}", one.2);
    let said = |err: &str| {
        let at = err
            .find("the loss of task")
            .unwrap_or_else(|| panic!("{err}"));
        err[at..]
            .split([':', '\n', ';'])
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let Some(mut two) = mpirun(
        d,
        2,
        &[&["-q", "run", p, "--set", "run.name=two"][..], &sets].concat(),
    ) else {
        return;
    };
    let output = two.output().unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(said(&err), said(&one.2), "{err}");
}
