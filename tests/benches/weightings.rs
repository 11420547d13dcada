//! `make bench`: one call of each gradient weighting on QM9-shaped input, timed
//! in taskweave; `bench/weightings_torch.py` times the same math in plain
//! PyTorch and `bench/weightings_torchjd.py` times TorchJD 0.18.0's
//! aggregators, on the same file, and both check the updates against the ones
//! written here.
//!
//! Input (seeded, written to `target/bench/weightings/inputs.safetensors`):
//! T = 11 tasks (QM9's targets) and P = 75,008 shared parameters (an MLP
//! 34→256→256: 34·256+256+256·256+256). Row i of G is
//! `s_i·(a_i·c + sqrt(1 − a_i²)·n_i)` with c, n_i ~ N(0, I_P) (c shared by all
//! tasks, n_i per task), a_i uniform in [−0.6, 1] and s_i = exp(N(0, 0.5²)), so
//! cos(g_i, g_j) ≈ a_i·a_j: tasks whose a have opposite signs conflict (about a
//! third of the pairs), and the norms differ by up to ~4×. Losses are uniform
//! in [0.5, 2]. All draws come from `SplitMix::at(2026, 0)`.
//!
//! Each method is created through `Runtime::create_method` (as a pipeline
//! would) with the run seed 0, and called through `aggregate` (that is `weigh`
//! for the gradient weightings; for `ew`, a loss weighting, it is `weigh` plus
//! the weights-times-gradients matmul that makes its update). Timing: a
//! warm-up, then one `Instant` per call, step numbers 1, 2, ... (PCGrad draws a
//! new order each step); reported is the median. `nash-mtl` keeps one instance
//! across calls, so every solve is warm-started from the previous α (as in
//! training); `nash-mtl (cold)` calls a fresh instance each time (the first
//! step of a run: α starts from 1/‖g_i‖).
//!
//! Modes: without arguments (`cargo bench --bench weightings`) it writes the
//! inputs, each method's first-call update (step 0, fresh instance) to
//! `taskweave-updates.safetensors`, and the timings with this executable's path
//! to `taskweave.json`, then prints its own table. With `--time-only --out
//! FILE [--budget-ms MS]` it only times (to FILE): the Python script runs it
//! that way in rounds alternating with its own, so both see the same machine.
//! `BENCH_THREADS=N` sets libtorch's intra-op threads (default: libtorch's).
//!
//! On a GPU (scripts/gpu-check.sh): `BENCH_DEVICE=cuda:0` (or `cpu`) with
//! `--time-only` times every method on that device (on CUDA a device
//! synchronisation ends each timed call), adds `floor` (libtorch's `G Gᵀ`
//! plus `w G`, cuBLAS on CUDA) and prints the table; `BENCH_PARAMS=P` sets
//! the number of columns (the same generator, longer rows).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use taskweave::{Config, Runtime};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::tch::{self, Device, Kind, Tensor};
use taskweave_plugin_api::{aggregate, MethodContext, Role, Weighting};
use taskweave_tests::median;

const TASKS: usize = 11;
const PARAMS: usize = 34 * 256 + 256 + 256 * 256 + 256;
const INPUT_SEED: u64 = 2026;
/// The run seed the methods see (PCGrad's visiting orders).
const RUN_SEED: u64 = 0;

/// (label, method table). The options are those `bench/weightings_torchjd.py`
/// gives TorchJD where the two libraries differ (Krum's `n_byzantine` has no
/// default there).
fn methods() -> Vec<(&'static str, Value)> {
    vec![
        ("ew", json!({"kind": "ew"})),
        ("pcgrad", json!({"kind": "pcgrad"})),
        ("cagrad", json!({"kind": "cagrad"})),
        ("mgda", json!({"kind": "mgda", "normalization": "none"})),
        ("imtl-g", json!({"kind": "imtl-g"})),
        ("nash-mtl", json!({"kind": "nash-mtl"})),
        ("nash-mtl (cold)", json!({"kind": "nash-mtl"})),
        ("upgrad", json!({"kind": "upgrad"})),
        ("dualproj", json!({"kind": "dualproj"})),
        ("aligned-mtl", json!({"kind": "aligned-mtl"})),
        ("config", json!({"kind": "config"})),
        ("fairgrad", json!({"kind": "fairgrad"})),
        ("gradvac", json!({"kind": "gradvac"})),
        ("krum", json!({"kind": "krum", "n_byzantine": 1})),
        ("trimmed-mean", json!({"kind": "trimmed-mean"})),
        ("graddrop", json!({"kind": "graddrop"})),
        ("rgw", json!({"kind": "rgw"})),
        // TorchJD's MoDo and SDMGrad are the single-batch forms.
        ("modo", json!({"kind": "modo", "double_sampling": false})),
        (
            "sdmgrad",
            json!({"kind": "sdmgrad", "double_sampling": false}),
        ),
        ("excess-mtl", json!({"kind": "excess-mtl"})),
        ("pcd", json!({"kind": "pcd"})),
        (
            "cr-mogm",
            json!({"kind": "cr-mogm", "base": {"kind": "upgrad"}}),
        ),
        ("constant", json!({"kind": "constant"})),
        ("db-mtl", json!({"kind": "db-mtl"})),
        ("moco", json!({"kind": "moco"})),
        ("gradnorm", json!({"kind": "gradnorm"})),
    ]
}

/// The gradients `[T, P]` (f32) and losses `[T]` (f32) described above, with
/// `params` columns.
fn inputs(params: usize) -> (Tensor, Tensor) {
    let mut rng = SplitMix::at(INPUT_SEED, 0);
    let shared: Vec<f64> = (0..params).map(|_| rng.normal()).collect();
    let mut rows = Vec::with_capacity(TASKS * params);
    for _ in 0..TASKS {
        let a = -0.6 + 1.6 * rng.uniform();
        let s = (0.5 * rng.normal()).exp();
        let b = (1.0 - a * a).sqrt();
        rows.extend(
            shared
                .iter()
                .map(|c| (s * (a * c + b * rng.normal())) as f32),
        );
    }
    let losses: Vec<f32> = (0..TASKS)
        .map(|_| (0.5 + 1.5 * rng.uniform()) as f32)
        .collect();
    (
        Tensor::from_slice(&rows).reshape([TASKS as i64, params as i64]),
        Tensor::from_slice(&losses),
    )
}

fn context(tasks: usize, table: &Value, device: Device) -> MethodContext {
    MethodContext {
        tasks: (0..tasks)
            .map(|t| format!("task{t}").as_str().into())
            .collect(),
        device: match device {
            Device::Cuda(n) => format!("cuda:{n}"),
            _ => "cpu".into(),
        }
        .as_str()
        .into(),
        seed: RUN_SEED,
        weighting: table.to_string().as_str().into(),
        ..Default::default()
    }
}

fn create(runtime: &Runtime, table: &Value, tasks: usize, device: Device) -> Box<dyn Weighting> {
    let method = runtime
        .create_method(Role::Weighting, table, &context(tasks, table, device))
        .unwrap_or_else(|e| panic!("creating {table}: {e}"));
    method
        .into_weighting()
        .unwrap_or_else(|e| panic!("{table} is not a weighting: {e}"))
}

/// Per-call times in µs: `WARMUP` calls, then calls until `budget_ms` has
/// passed (at least `MIN_SAMPLES`, at most `MAX_SAMPLES`). `setup` runs
/// before each call, untimed; on CUDA each timed call ends with a
/// synchronisation of `device`.
fn time_calls<S>(
    budget_ms: f64,
    device: Device,
    mut setup: impl FnMut() -> S,
    mut call: impl FnMut(S, u64),
) -> Vec<f64> {
    let sync = || {
        if let Device::Cuda(n) = device {
            tch::Cuda::synchronize(n as i64);
        }
    };
    const WARMUP: u64 = 10;
    const MIN_SAMPLES: usize = 25;
    const MAX_SAMPLES: usize = 2000;
    for step in 1..=WARMUP {
        call(setup(), step);
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut step = WARMUP;
    while samples.len() < MIN_SAMPLES
        || (samples.len() < MAX_SAMPLES && started.elapsed().as_secs_f64() * 1e3 < budget_ms)
    {
        step += 1;
        let state = setup();
        sync();
        let t0 = Instant::now();
        call(state, step);
        sync();
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    samples
}

fn time_all(
    runtime: &Runtime,
    grads: &Tensor,
    losses: &Tensor,
    budget_ms: f64,
) -> Vec<(&'static str, Vec<f64>)> {
    let device = grads.device();
    methods()
        .into_iter()
        .map(|(label, table)| {
            let samples = if label.ends_with("(cold)") {
                // A fresh instance per call, created untimed.
                time_calls(
                    budget_ms,
                    device,
                    || create(runtime, &table, TASKS, device),
                    |mut w, step| {
                        black_box(aggregate(w.as_mut(), step, losses, grads).unwrap());
                    },
                )
            } else {
                let mut w = create(runtime, &table, TASKS, device);
                time_calls(
                    budget_ms,
                    device,
                    || (),
                    |(), step| {
                        black_box(aggregate(w.as_mut(), step, losses, grads).unwrap());
                    },
                )
            };
            (label, samples)
        })
        .collect()
}

fn timings_json(timings: &[(&str, Vec<f64>)]) -> Value {
    let methods: serde_json::Map<String, Value> = timings
        .iter()
        .map(|(label, s)| {
            (
                label.to_string(),
                json!({"median_us": median(s), "samples_us": s}),
            )
        })
        .collect();
    json!({"threads": tch::get_num_threads(), "methods": methods})
}

fn out_dir() -> PathBuf {
    // This executable is target/release/deps/weightings-<hash>.
    let exe = std::env::current_exe().expect("bench executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/release/deps/<bench>")
        .to_path_buf();
    target.join("bench").join("weightings")
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let budget_ms: f64 = arg("--budget-ms").map_or(1000.0, |b| b.parse().expect("--budget-ms MS"));
    if let Ok(threads) = std::env::var("BENCH_THREADS") {
        tch::set_num_threads(threads.parse().expect("BENCH_THREADS: a number of threads"));
    }
    let runtime = Runtime::new(&Config::new());

    if args.iter().any(|a| a == "--time-only") {
        let out = PathBuf::from(arg("--out").expect("--time-only needs --out FILE"));
        let named = std::env::var("BENCH_DEVICE");
        let device = match named.as_deref() {
            Err(_) | Ok("cpu") => Device::Cpu,
            Ok(name) => Device::Cuda(
                name.strip_prefix("cuda:")
                    .and_then(|n| n.parse().ok())
                    .expect("BENCH_DEVICE: cpu or cuda:N"),
            ),
        };
        let params = std::env::var("BENCH_PARAMS").map_or(PARAMS, |p| {
            p.parse().expect("BENCH_PARAMS: a number of columns")
        });
        let (grads, losses) = inputs(params);
        let (grads, losses) = (grads.to_device(device), losses.to_device(device));
        let mut timings = time_all(&runtime, &grads, &losses, budget_ms);
        if named.is_ok() {
            let weights = Tensor::ones([TASKS as i64], (Kind::Float, device));
            let floor = time_calls(
                budget_ms,
                device,
                || (),
                |(), _| {
                    drop(black_box(grads.matmul(&grads.tr())));
                    drop(black_box(weights.matmul(&grads)));
                },
            );
            timings.push(("floor", floor));
            print_table(&timings, &format!("{device:?}"), params);
        }
        let mut report = timings_json(&timings);
        report["device"] = json!(format!("{device:?}"));
        report["params"] = json!(params);
        write_json(&out, &report);
        return;
    }
    let (grads, losses) = inputs(PARAMS);

    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let inputs_path = dir.join("inputs.safetensors");
    Tensor::write_safetensors(&[("grads", &grads), ("losses", &losses)], &inputs_path).unwrap();

    // Each method's first call (fresh instance, step 0), for the cross-check.
    let mut updates: Vec<(String, Tensor)> = Vec::new();
    for (label, table) in methods() {
        if label.ends_with("(cold)") {
            continue;
        }
        let out = aggregate(
            create(&runtime, &table, TASKS, Device::Cpu).as_mut(),
            0,
            &losses,
            &grads,
        )
        .unwrap();
        updates.push((format!("update/{label}"), out.combined));
        if let Some(w) = out.weights {
            updates.push((format!("weights/{label}"), w.to_kind(Kind::Float)));
        }
    }
    // PCGrad on the first two tasks: with T = 2 the order cannot matter.
    let two = grads.narrow(0, 0, 2);
    let out = aggregate(
        create(&runtime, &json!({"kind": "pcgrad"}), 2, Device::Cpu).as_mut(),
        0,
        &losses.narrow(0, 0, 2),
        &two,
    )
    .unwrap();
    updates.push(("update/pcgrad-t2".into(), out.combined));
    let updates_path = dir.join("taskweave-updates.safetensors");
    Tensor::write_safetensors(&updates, &updates_path).unwrap();

    let timings = time_all(&runtime, &grads, &losses, budget_ms);
    let mut report = timings_json(&timings);
    report["exe"] = json!(std::env::current_exe().unwrap());
    report["inputs"] = json!(inputs_path);
    report["updates"] = json!(updates_path);
    report["tasks"] = json!(TASKS);
    report["params"] = json!(PARAMS);
    report["run_seed"] = json!(RUN_SEED);
    let json_path = dir.join("taskweave.json");
    write_json(&json_path, &report);

    print_table(&timings, "CPU", PARAMS);
    println!("inputs, updates and timings: {}", json_path.display());
}

fn print_table(timings: &[(&str, Vec<f64>)], device: &str, params: usize) {
    println!(
        "weighting calls in taskweave, T = {TASKS}, P = {params}, {device}, {} threads",
        tch::get_num_threads()
    );
    println!("{:18} {:>12} {:>8}", "method", "median (µs)", "calls");
    for (label, samples) in timings {
        println!("{label:18} {:>12.1} {:>8}", median(samples), samples.len());
    }
}
