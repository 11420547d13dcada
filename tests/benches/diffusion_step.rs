//! `cargo bench --bench diffusion_step`: what clustering the timesteps costs
//! a diffusion training step. pipelines/diffusion-2d.toml (MLP denoiser,
//! batch 250, EW) trained for 2,000 steps without a grouping (one task,
//! uniform t) and with k = 5 intervals by timestep and by SNR (stratified
//! draws, five masked per-interval losses, EW over them), in alternating
//! rounds on one thread; the median steps/s of each and the clustered
//! step's overhead. The partition itself is computed once per run, before
//! the first step (`make bench`'s interval-DP table times it: milliseconds).
//!
//! `BENCH_ROUNDS` (default 3) rounds.

use std::path::Path;

use taskweave::{Config, Pipeline, Run, Runtime};
use taskweave_tests::median;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("pipelines/diffusion-2d.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut config = Config::new();
    config.plugin_dir(root.join("plugins"));
    let runtime = Runtime::new(&config);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let variants = [
        ("uniform t, one task", None),
        ("timestep intervals, k = 5", Some("timestep")),
        ("SNR intervals, k = 5", Some("snr")),
    ];
    let mut rates = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, cost)) in variants.iter().enumerate() {
            let mut sets = vec![
                "train.steps=2000".to_string(),
                "eval.every=2000".to_string(),
                "run.threads=1".to_string(),
                "run.device=\"cpu\"".to_string(),
                format!("run.out_dir=\"{}\"", out.path().display()),
                "plugins.dirs=[]".to_string(),
            ];
            if let Some(cost) = cost {
                sets.push(format!(
                    "train.grouping={{kind=\"interval-clustering\", cost=\"{cost}\", k=5}}"
                ));
            }
            let pipeline = Pipeline::from_str(&runtime, &text, &root.join("pipelines"), &sets)
                .unwrap_or_else(|e| panic!("{e}"));
            let summary = Run::start(pipeline, true).unwrap().train(true).unwrap();
            rates[i].push(summary.steps_per_second);
        }
    }
    println!("diffusion training step, pipelines/diffusion-2d.toml, EW, 1 thread, median of {rounds} rounds");
    println!("{:28} {:>10} {:>10}", "timesteps", "steps/s", "overhead");
    let base = median(&rates[0]);
    for ((label, _), r) in variants.iter().zip(&rates) {
        let m = median(r);
        println!("{label:28} {m:>10.1} {:>9.1}%", 100.0 * (base / m - 1.0));
    }
}
