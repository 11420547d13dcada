//! Embedding taskweave in your own program.
//!
//! Run it from the repository root after `make build`:
//!
//! ```sh
//! cargo run --release -p taskweave --example embed
//! ```
//!
//! It builds a runtime over the `plugins/` directory, loads a pipeline from a
//! string (the quickstart, shortened), overrides a value the way `--set` does,
//! trains it, and reads the results back as Rust values.

use std::path::Path;

fn main() -> Result<(), taskweave::Error> {
    // 1. Config → Runtime: the registry of built-in methods plus every plugin
    //    in the directories given. Files that fail to load are listed, not fatal.
    let mut config = taskweave::Config::new();
    config.plugin_dir("plugins");
    let runtime = taskweave::Runtime::new(&config);
    for problem in runtime.registry().problems() {
        eprintln!("skipped {}: {}", problem.path.display(), problem.reason);
    }

    // 2. Runtime → Pipeline: parsed and validated against every method's schema.
    //    Relative paths in the text resolve against the directory given.
    let text = r#"
        [run]
        name = "embedded"
        out_dir = "runs"
        [data]
        kind = "mmoe-synthetic"
        train = 2000
        [train]
        steps = 300
        weighting = { kind = "rlw" }
    "#;
    let overrides = ["train.batch=64".to_string()];
    let pipeline = taskweave::Pipeline::from_str(&runtime, text, Path::new("."), &overrides)?;
    println!("resolved config:\n{}", pipeline.resolved_toml());

    // 3. Pipeline → Run: takes runs/embedded/ (emptying an earlier run there)
    //    and holds it locked while it lives; training returns the per-task metrics.
    let run = taskweave::Run::start(pipeline, true)?;
    let summary = run.train(true)?;
    // Each task's metrics depend on its type; its primary one is always there.
    for (task, metrics) in summary.tasks.iter().zip(&summary.test) {
        let primary = task.primary;
        println!("{}: test {primary} {:.4}", task.name, metrics[primary]);
    }
    println!(
        "{:.0} steps/s, files in {}",
        summary.steps_per_second,
        summary.dir.display()
    );
    Ok(())
}
