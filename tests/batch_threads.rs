//! `run.batch_threads`: each training batch split over CPU threads, each part
//! through its own copy of the model. It trains what one thread trains (up
//! to the rounding of the summed parts, within the tolerances of two MPI
//! ranks) for loss weightings, weightings with parameters, gradient
//! weightings and SAM-MTL; it resumes exactly; and a run
//! whose model must not be copied is refused, naming the key.

use taskweave_tests::*;

fn pipeline(d: &std::path::Path, name: &str, keys: &str) -> String {
    let path = method_pipeline(d, name, keys, 40);
    path.to_str().unwrap().to_string()
}

#[test]
fn two_batch_threads_train_what_one_trains_for_every_kind_of_method() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-sam-mtl");
    for (name, keys, tolerance) in COMPARED_METHODS {
        let p = pipeline(d, name, keys);
        for (run, threads) in [("one", "1"), ("two", "2")] {
            let (code, _, err) = run_cli(
                d,
                &[
                    "run",
                    &p,
                    "--set",
                    "run.threads=1",
                    "--set",
                    &format!("run.batch_threads={threads}"),
                    "--set",
                    &format!("run.name={run}"),
                ],
            );
            assert_eq!(code, 0, "{name}, {run}: {err}");
            assert_eq!(
                err.contains("batch parts side by side on 2 threads"),
                run == "two",
                "{name}, {run}: {err}"
            );
        }
        let worst = max_relative_difference(&d.join("runs/one"), &d.join("runs/two"));
        assert!(
            worst <= tolerance,
            "{name}: two batch threads end {worst:e} away from one"
        );
        for run in ["one", "two"] {
            std::fs::remove_dir_all(d.join("runs").join(run)).unwrap();
        }
    }
}

#[test]
fn a_run_on_two_batch_threads_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // UW: the weighting's own parameters get their gradient beside the parts'.
    let p = pipeline(d, "uw", "weighting = \"uw\"");
    let (code, _, err) = run_cli(d, &["-q", "run", &p, "--set", "run.batch_threads=2"]);
    assert_eq!(code, 0, "{err}");
    assert_resume_is_exact(&d.join("runs/uw"), &d.join("runs/uw-copy"));
}

#[test]
fn batch_threads_refuse_a_model_that_must_not_be_copied() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "dropout", "weighting = \"ew\"");
    let (code, _, err) = run_cli(
        d,
        &[
            "run",
            &p,
            "--set",
            "run.batch_threads=2",
            "--set",
            "model.backbone.dropout=0.1",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("run.batch_threads = 2") && err.contains("no dropout in the backbone"),
        "{err}"
    );
    assert!(!d.join("runs/dropout/metrics.jsonl").exists());
}
