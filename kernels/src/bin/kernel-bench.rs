//! Measures every kernel against its eager libtorch composite on CUDA device 0.
//!
//! Run: `cargo run --release -p taskweave-kernels --bin kernel-bench -- [--json PATH] [--runs N]`
//! (on a machine built elsewhere, first `eval "$(shared/scripts/cuda-env.sh)"`).
//!
//! For each case it counts the bytes the operation must move at least, gives
//! the floor at 4.3 TB/s (this card's copy ceiling, shared/GPU.md), and times
//! the kernel and the eager composite with CUDA events on libtorch's stream
//! after warm-up, on random (never zero) inputs, reporting medians. On a
//! machine without CUDA it says so and exits 0.
use std::process::ExitCode;

use serde_json::json;
use taskweave_kernels::{
    cuda_info, load_libtorch_cuda, GramianBackend, Kernels, Result, StreamTimer,
};
use tch::{Device, Kind, Tensor};

const PEAK_BYTES_PER_S: f64 = 4.3e12;
const WARMUP: usize = 3;

struct Row {
    case: String,
    bytes: f64,
    kernel_us: f64,
    eager_us: f64,
    target: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Median µs of `f` over `runs` timed calls after warm-up.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP {
        f()?;
    }
    let mut timer = StreamTimer::new(0)?;
    for _ in 0..runs {
        timer.time(&mut f)?;
    }
    Ok(median(timer.finish()?))
}

fn elt(kind: Kind) -> f64 {
    kind.elt_size_in_bytes() as f64
}

fn sam_cases(dev: Device, runs: usize, rows: &mut Vec<Row>) -> Result<()> {
    let kernel = Kernels::new();
    let eager = Kernels::new().prefer_reference(true);
    // A ResNet-like group (200 tensors, 47 M parameters) and an MLP-like one
    // (120 small tensors, launch-bound when eager).
    let resnet: Vec<Vec<i64>> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                vec![256, 256, 3, 3]
            } else {
                vec![256]
            }
        })
        .collect();
    let mlp: Vec<Vec<i64>> = (0..120)
        .map(|i| {
            if i % 2 == 0 {
                vec![128, 128]
            } else {
                vec![128]
            }
        })
        .collect();
    for (name, shapes) in [
        ("resnet-like 200 tensors", resnet),
        ("mlp-like 120 tensors", mlp),
    ] {
        for kind in [Kind::Float, Kind::BFloat16] {
            let params: Vec<Tensor> = shapes
                .iter()
                .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, dev)).to_kind(kind))
                .collect();
            let grads: Vec<Tensor> = shapes
                .iter()
                .map(|s| (Tensor::randn(s.as_slice(), (Kind::Float, dev)) * 1e-3).to_kind(kind))
                .collect();
            let n: f64 = params.iter().map(|p| p.numel() as f64).sum();
            let (mut bk, mut be) = (Vec::new(), Vec::new());
            // Perturb then restore, so parameters do not drift across runs.
            let perturb_k = time(runs, || {
                let _ = kernel.sam_perturb(&params, &grads, &mut bk, 0.05, true)?;
                kernel.sam_restore(&params, &bk)
            })?;
            let perturb_e = time(runs, || {
                let _ = eager.sam_perturb(&params, &grads, &mut be, 0.05, true)?;
                eager.sam_restore(&params, &be)
            })?;
            let restore_k = time(runs, || kernel.sam_restore(&params, &bk))?;
            let restore_e = time(runs, || eager.sam_restore(&params, &be))?;
            // Norm pass reads θ and g; update reads θ, g, writes backup and θ; restore copies.
            let s = elt(kind);
            rows.push(Row {
                case: format!("sam perturb+restore {name} {kind:?}"),
                bytes: 8.0 * n * s,
                kernel_us: perturb_k,
                eager_us: perturb_e,
                target: ">= 2x eager".into(),
            });
            rows.push(Row {
                case: format!("sam restore {name} {kind:?}"),
                bytes: 2.0 * n * s,
                kernel_us: restore_k,
                eager_us: restore_e,
                target: ">= 2x eager".into(),
            });
        }
    }
    Ok(())
}

fn gramian_cases(dev: Device, runs: usize, rows: &mut Vec<Row>) -> Result<()> {
    let kernel = Kernels::new().gramian_backend(GramianBackend::Kernel);
    let cublas = Kernels::new().gramian_backend(GramianBackend::Cublas);
    let eager = Kernels::new().prefer_reference(true);
    for kind in [Kind::Float, Kind::BFloat16] {
        for (t, p) in [(4i64, 16i64 << 20), (8, 16 << 20), (16, 8 << 20)] {
            let g = Tensor::randn([t, p], (Kind::Float, dev)).to_kind(kind);
            let k = time(runs, || kernel.gramian(&g).map(drop))?;
            let e = time(runs, || cublas.gramian(&g).map(drop))?;
            rows.push(Row {
                case: format!("gramian T={t} P={p} {kind:?} (eager = cuBLAS)"),
                bytes: (t * p) as f64 * elt(kind),
                kernel_us: k,
                eager_us: e,
                target: ">= 80% of 4.3 TB/s, faster than cuBLAS".into(),
            });
            for nk in [1i64, 2] {
                let w = if nk == 1 {
                    Tensor::rand([t], (Kind::Float, dev))
                } else {
                    Tensor::rand([nk, t], (Kind::Float, dev))
                };
                let k = time(runs, || kernel.combine(&w, &g).map(drop))?;
                let e = time(runs, || eager.combine(&w, &g).map(drop))?;
                rows.push(Row {
                    case: format!("combine K={nk} T={t} P={p} {kind:?}"),
                    bytes: ((t + nk) * p) as f64 * elt(kind),
                    kernel_us: k,
                    eager_us: e,
                    target: ">= 80% of 4.3 TB/s".into(),
                });
            }
        }
    }
    Ok(())
}

fn fusion_cases(dev: Device, runs: usize, rows: &mut Vec<Row>) -> Result<()> {
    let kernel = Kernels::new();
    let eager = Kernels::new().prefer_reference(true);
    let grid: Vec<f64> = (0..=20).map(|k| k as f64 * 0.1).collect();
    for (b, v, t, kind, target) in [
        (8i64, 32_000i64, 4usize, Kind::Float, ">= 100x eager"),
        (64, 128_256, 8, Kind::Float, "within 3x of the floor"),
        (64, 128_256, 8, Kind::BFloat16, "within 3x of the floor"),
    ] {
        let large = (Tensor::randn([b, v], (Kind::Float, dev)) * 3.0).to_kind(kind);
        let small = Tensor::randn([b, v], (Kind::Float, dev)) * 2.0;
        let experts: Vec<Tensor> = (0..t)
            .map(|_| (&small + Tensor::randn([b, v], (Kind::Float, dev)) * 0.7).to_kind(kind))
            .collect();
        let small = small.to_kind(kind);
        let k = time(runs, || {
            kernel
                .fusion_grid(&large, &small, &experts, &grid)
                .map(drop)
        })?;
        let e = time(runs.min(10), || {
            eager.fusion_grid(&large, &small, &experts, &grid).map(drop)
        })?;
        // The floor reads every input once; the kernel also re-reads three
        // inputs and writes the output for the chosen candidate.
        let bytes = (t as f64 + 2.0) * (b * v) as f64 * elt(kind);
        rows.push(Row {
            case: format!("fusion grid B={b} V={v} T={t} A={} {kind:?}", grid.len()),
            bytes,
            kernel_us: k,
            eager_us: e,
            target: target.into(),
        });
    }
    Ok(())
}

fn gate_cases(dev: Device, runs: usize, rows: &mut Vec<Row>) -> Result<()> {
    let kernel = Kernels::new();
    let eager = Kernels::new().prefer_reference(true);
    // TaskExpert at B = 32 images of N = 256 tokens, C = 384, 8 experts, 3 tasks.
    let (t, r, n, d) = (3i64, 32 * 256i64, 8i64, 384i64);
    for kind in [Kind::Float, Kind::BFloat16] {
        let logits = Tensor::randn([t, r, n + 1], (Kind::Float, dev)).to_kind(kind);
        let experts = Tensor::randn([r, n, d], (Kind::Float, dev)).to_kind(kind);
        let memory = Tensor::randn([t, r, d], (Kind::Float, dev)).to_kind(kind);
        let k = time(runs, || {
            kernel.gate_mix(&logits, &experts, Some(&memory)).map(drop)
        })?;
        let e = time(runs, || {
            eager.gate_mix(&logits, &experts, Some(&memory)).map(drop)
        })?;
        // Experts and memory read, the mixture written, logits read, f32 weights written.
        let bytes = ((r * n * d + 2 * t * r * d + t * r * (n + 1)) as f64) * elt(kind)
            + (t * r * (n + 1)) as f64 * 4.0;
        rows.push(Row {
            case: format!("gate mix T={t} R={r} n={n} d={d} {kind:?}"),
            bytes,
            kernel_us: k,
            eager_us: e,
            target: ">= 3x eager, >= 70% of 4.3 TB/s".into(),
        });
    }
    Ok(())
}

fn run(json_path: &str, runs: usize) -> Result<()> {
    let info = cuda_info(0)?;
    let dev = Device::Cuda(0);
    println!(
        "{} (sm_{}{}, {} SMs), stream: {:?}, {runs} timed runs after {WARMUP} warm-up, medians",
        info.name, info.compute_capability.0, info.compute_capability.1, info.sm_count, info.stream
    );
    Kernels::new().precompile(0)?;
    tch::manual_seed(0);
    let _no_grad = tch::no_grad_guard();
    let mut rows = Vec::new();
    sam_cases(dev, runs, &mut rows)?;
    gramian_cases(dev, runs, &mut rows)?;
    fusion_cases(dev, runs, &mut rows)?;
    gate_cases(dev, runs, &mut rows)?;
    println!(
        "{:<62} {:>10} {:>9} {:>10} {:>7} {:>7} {:>10} {:>8}  target",
        "case", "MB", "floor µs", "kernel µs", "%4.3TB", "xfloor", "eager µs", "speedup"
    );
    let mut out = Vec::new();
    for r in &rows {
        let floor = r.bytes / PEAK_BYTES_PER_S * 1e6;
        let frac = floor / r.kernel_us;
        let speedup = r.eager_us / r.kernel_us;
        println!(
            "{:<62} {:>10.1} {:>9.1} {:>10.1} {:>6.0}% {:>7.2} {:>10.1} {:>7.1}x  {}",
            r.case,
            r.bytes / 1e6,
            floor,
            r.kernel_us,
            frac * 100.0,
            r.kernel_us / floor,
            r.eager_us,
            speedup,
            r.target
        );
        out.push(json!({
            "case": r.case, "bytes": r.bytes, "floor_us": floor, "kernel_us": r.kernel_us,
            "fraction_of_4_3_tbps": frac, "times_floor": r.kernel_us / floor,
            "eager_us": r.eager_us, "speedup": speedup, "target": r.target,
        }));
    }
    let doc = json!({ "device": info.name, "compute_capability": [info.compute_capability.0, info.compute_capability.1], "peak_bytes_per_s": PEAK_BYTES_PER_S, "runs": runs, "results": out });
    match std::fs::write(
        json_path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ) {
        Ok(()) => println!("wrote {json_path}"),
        Err(e) => eprintln!("kernel-bench: could not write {json_path}: {e}"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json_path = "kernel-bench.json".to_string();
    let mut runs = 30;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--json", Some(p)) => json_path = p.clone(),
            ("--runs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                runs = n.parse().unwrap_or(30)
            }
            _ => {
                eprintln!("usage: kernel-bench [--json PATH] [--runs N]");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = load_libtorch_cuda().and_then(|_| cuda_info(0)) {
        println!("kernel-bench: {e}; nothing to measure on this machine");
        return ExitCode::SUCCESS;
    }
    if !tch::Cuda::is_available() {
        println!("kernel-bench: libtorch reports no CUDA; nothing to measure on this machine");
        return ExitCode::SUCCESS;
    }
    match run(&json_path, runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
