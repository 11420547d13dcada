//! SAM-MTL loaded from its `.so`: composition with weightings, exact restore,
//! untouched normalisation statistics.

use std::path::Path;

use taskweave::run::Summary;
use taskweave::{Config, Pipeline, Run, Runtime};
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
    let pipeline = Pipeline::from_str(rt, &text, dir, &sets).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap()
}

/// Model parameters and buffers of the final checkpoint, sorted by name
/// (method state and optimizer moments differ in layout between strategies).
fn params(summary: &Summary) -> Vec<(String, tch::Tensor)> {
    final_parameters(&summary.dir)
        .into_iter()
        .filter(|(n, _)| {
            ["backbone.", "architecture.", "heads."]
                .iter()
                .any(|p| n.starts_with(p))
        })
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
    assert!(same_parameters(&base, &sam));
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
    assert_eq!(pa.len(), pb.len());
    assert!(
        pa.iter().any(|(n, _)| n.ends_with("running_mean")),
        "the model has batch-norm statistics"
    );
    for ((name, a), (_, b)) in pa.iter().zip(&pb) {
        // Running statistics: both runs updated them once, in the unperturbed pass.
        assert!(a.equal(b), "{name} differs after a SAM-MTL step");
    }
}

/// Whether two runs' parameters agree to within float rounding.
fn same_parameters(a: &Summary, b: &Summary) -> bool {
    let (pa, pb) = (params(a), params(b));
    assert_eq!(pa.len(), pb.len(), "the two runs have different tensors");
    pa.iter()
        .zip(&pb)
        .all(|((na, a), (nb, b))| na == nb && a.allclose(b, 1e-5, 1e-6, false))
}

#[test]
fn sam_mtl_aggregates_with_the_configured_weighting_not_the_pipelines() {
    // With ρ = 0 every perturbed gradient equals the plain one, so the flat
    // family is zero (every aggregator maps zero rows to a zero update) and a
    // SAM-MTL step is the standard step with its aggregator as the weighting.
    // Tasks with negatively correlated labels make the weightings differ.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_sam(dir.path());
    let extra = "[train]\nsteps = 15\noptimizer = { kind = \"sgd\", lr = 0.05 }\n";
    let conflict = "data.correlation=-0.8";
    let ew = train(&rt, dir.path(), "ew", extra, &[conflict]);
    // (PCGrad is left out: on these tasks the shared gradients rarely conflict,
    // so it often equals EW and the comparison would prove nothing.)
    for aggregator in ["imtl-g", "nash-mtl", "cagrad"] {
        let direct = train(
            &rt,
            dir.path(),
            "direct",
            extra,
            &[conflict, &format!("train.weighting={aggregator}")],
        );
        let sam = train(
            &rt,
            dir.path(),
            "sam",
            extra,
            &[
                conflict,
                &format!(
                    "train.strategy={{kind=\"sam-mtl\", rho=0.0, aggregator=\"{aggregator}\"}}"
                ),
            ],
        );
        assert!(
            same_parameters(&sam, &direct),
            "SAM-MTL (ρ = 0, aggregator {aggregator}) differs from the standard step with {aggregator}"
        );
        assert!(
            !same_parameters(&sam, &ew),
            "{aggregator} gave the same parameters as EW: the test cannot tell them apart"
        );
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

#[test]
fn an_uncertainty_weighting_aggregator_learns_inside_sam_mtl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = runtime_with_sam(d);
    // Task `big` is task `small` times 10 (plus noise): its loss is ~100x larger.
    let mut rows = String::from("a,b,small,big\n");
    let mut rng = taskweave_plugin_api::rng::SplitMix::at(1, 1);
    for _ in 0..600 {
        let (a, b) = (rng.normal(), rng.normal());
        let y = (a * 1.5).sin() + 0.5 * b + 0.3 * rng.normal();
        rows.push_str(&format!("{a},{b},{y},{}\n", 10.0 * y + 3.0 * rng.normal()));
    }
    std::fs::write(d.join("uw.csv"), rows).unwrap();
    let extra = "[train]\nsteps = 300\nweighting = \"uw\"\nstrategy = { kind = \"sam-mtl\", rho = 0.01, adaptive = false }\n\
                 optimizer = { kind = \"adam\", lr = 0.01 }\n";
    let csv = r#"data={kind="csv", path="uw.csv", tasks={small={type="regression", standardize=false}, big={type="regression", standardize=false}}}"#;
    let summary = train(&rt, d, "sam-uw", extra, &[csv]);
    let params = final_parameters(&summary.dir);
    for family in ["loss_family", "flat_family"] {
        let name = format!("strategy.{family}.log_var");
        let log_var = &params
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("`{name}` is not checkpointed"))
            .1;
        let s = Vec::<f32>::try_from(log_var).unwrap();
        // Both families see the same losses: s_t → log L_t, the gap → log(L_big / L_small).
        assert!(s[1] - s[0] > 1.0, "{family}: log-variances {s:?}");
    }
}

#[test]
fn an_aggregator_of_its_own_leaves_train_weighting_unused_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-sam-mtl");
    let extra = "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 2\nweighting = \"uw\"\n";
    let path = small_pipeline(d, "aggregated", extra);
    let p = path.to_str().unwrap();
    for (strategy, unused) in [
        ("{kind=\"sam-mtl\", aggregator=\"pcgrad\"}", true),
        ("{kind=\"sam-mtl\"}", false),
    ] {
        let set = format!("train.strategy={strategy}");
        let (code, _, err) = run_cli(d, &["-q", "run", p, "--set", &set, "--overwrite"]);
        assert_eq!(code, 0, "{err}");
        let said = err.contains("train.strategy `sam-mtl` does not use train.weighting (`uw`)");
        assert_eq!(said, unused, "{set}: {err}");
    }
}
