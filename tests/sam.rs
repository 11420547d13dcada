//! SAM-MTL loaded from its `.so`: composition with weightings, exact restore,
//! untouched normalisation statistics.

use std::path::Path;

use taskweave::{Config, Runtime, Summary};
use taskweave_tests::*;

fn runtime_with_sam(dir: &Path) -> Runtime {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        workspace_plugin("taskweave-sam-mtl"),
        plugins.join("libtaskweave_sam_mtl.so"),
    )
    .unwrap();
    let mut config = Config::new();
    config.plugin_dir(plugins);
    Runtime::new(&config)
}

fn train(rt: &Runtime, dir: &Path, name: &str, extra: &str, sets: &[&str]) -> Summary {
    let text = std::fs::read_to_string(small_pipeline(dir, name, extra)).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    rt.pipeline_from_str(&text, dir, &sets)
        .unwrap()
        .train(true, true)
        .unwrap()
}

/// Model parameters, buffers and method state of the final checkpoint, sorted by name.
fn params(summary: &Summary) -> Vec<(String, tch::Tensor)> {
    final_parameters(&summary.dir)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("optimizer."))
        .collect()
}

#[test]
fn with_rho_zero_sam_mtl_is_the_standard_step() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_sam(dir.path());
    let extra = "[train]\nsteps = 15\noptimizer = { kind = \"sgd\", lr = 0.05 }\n";
    let base = train(&rt, dir.path(), "base", extra, &[]);
    let sam = train(
        &rt,
        dir.path(),
        "sam",
        extra,
        &[r#"train.strategy={kind="sam-mtl", rho=0.0}"#],
    );
    for ((name, a), (_, b)) in params(&base).iter().zip(&params(&sam)) {
        assert!(a.allclose(b, 1e-5, 1e-6, false), "{name} differs");
    }
}

#[test]
fn perturbation_and_restore_are_exact_and_batch_norm_statistics_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_sam(dir.path());
    // One step with a learning rate far below any parameter's precision: the
    // parameters must come back bit for bit after T perturb/restore cycles.
    let extra = "[train]\nsteps = 1\noptimizer = { kind = \"sgd\", lr = 1e-300 }\n";
    let bn = "model.backbone.batch_norm=true";
    let base = train(&rt, dir.path(), "base", extra, &[bn]);
    let sam = train(
        &rt,
        dir.path(),
        "sam",
        extra,
        &[
            bn,
            r#"train.strategy={kind="sam-mtl", rho=5.0, adaptive=true}"#,
        ],
    );
    let (pa, pb) = (params(&base), params(&sam));
    assert!(
        pa.iter().any(|(n, _)| n.ends_with("running_mean")),
        "the model has batch-norm statistics"
    );
    for ((name, a), (_, b)) in pa.iter().zip(&pb) {
        // Running statistics: both runs updated them once, in the unperturbed pass.
        assert!(a.equal(b), "{name} differs after a SAM-MTL step");
    }
}

#[test]
fn sam_mtl_composes_with_gradient_and_loss_weightings() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_sam(dir.path());
    for (aggregator, weighting) in [
        ("\"pcgrad\"", "ew"),
        ("\"imtl-g\"", "ew"),
        ("\"nash-mtl\"", "ew"),
    ] {
        let strategy = format!("train.strategy={{kind=\"sam-mtl\", aggregator={aggregator}}}");
        let extra = format!("[train]\nsteps = 10\nweighting = \"{weighting}\"\n");
        let s = train(&rt, dir.path(), "compose", &extra, &[&strategy]);
        assert!(s.test.iter().all(|m| m["mse"].is_finite()), "{aggregator}");
    }
    // Without an aggregator it uses the pipeline's weighting, here a loss weighting.
    let s = train(
        &rt,
        dir.path(),
        "inherit",
        "[train]\nsteps = 10\nweighting = \"uw\"\nstrategy = \"sam-mtl\"\n",
        &[],
    );
    assert_eq!(s.steps, 10);
}
