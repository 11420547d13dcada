//! Kernels against their references on a CUDA device. Each test returns
//! early, printing why, on a machine without one, unless
//! `TASKWEAVE_REQUIRE_GPU=1` (scripts/gpu-check.sh sets it): then a missing
//! GPU fails every test instead. On a CUDA machine they all run (no
//! `#[ignore]`). Outputs are poisoned with NaN first: the allocator
//! is handed NaN-filled blocks of the outputs' sizes, and backups are filled
//! with NaN, so a kernel that skips an element fails the comparison.
use taskweave_kernels::{cuda_info, load_libtorch_cuda, memory, reference, Kernels};
use tch::{Device, Kind, Tensor};

use crate::common::{bit_equal, copies, param_shapes, randn_list, rel_err, sam_expected};

/// Whether a skipped GPU test must fail instead (`TASKWEAVE_REQUIRE_GPU=1`).
fn required() -> bool {
    std::env::var("TASKWEAVE_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips (returns None, saying why) or, when a GPU is required, fails.
fn skip(why: impl std::fmt::Display) -> Option<Device> {
    assert!(!required(), "TASKWEAVE_REQUIRE_GPU is set, but: {why}");
    eprintln!("skipped: {why}");
    None
}

fn cuda() -> Option<Device> {
    let ready = load_libtorch_cuda().and_then(|_| cuda_info(0));
    match ready {
        Ok(info) if tch::Cuda::is_available() => {
            eprintln!(
                "running on {} (sm_{}{}), stream: {:?}",
                info.name, info.compute_capability.0, info.compute_capability.1, info.stream
            );
            Some(Device::Cuda(0))
        }
        Ok(_) => skip("libtorch reports no CUDA"),
        Err(e) => skip(e),
    }
}

fn tol(kind: Kind) -> f64 {
    if kind == Kind::BFloat16 {
        1e-2
    } else {
        1e-5
    }
}

/// Hands NaN-filled blocks of `numel` elements of `kind` back to the caching
/// allocator, so the next allocations of that size start as NaN.
fn poison(device: Device, sizes: &[(i64, Kind)]) {
    let held: Vec<Tensor> = sizes
        .iter()
        .map(|&(n, k)| Tensor::full([n], f64::NAN, (k, device)))
        .collect();
    drop(held);
}

#[test]
fn sam_perturb_and_restore_match_the_reference() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(11);
    // 300 tensors: more than one launch's 256 (the multi-launch path).
    for (kind, count) in [
        (Kind::Float, 150),
        (Kind::BFloat16, 150),
        (Kind::Float, 300),
    ] {
        for adaptive in [true, false] {
            let shapes = param_shapes(count);
            let params = randn_list(&shapes, kind, dev);
            let grads = randn_list(&shapes, kind, dev);
            let original = copies(&params);
            let ref_params = copies(&params);
            let mut backup: Vec<Tensor> = params.iter().map(|p| p.full_like(f64::NAN)).collect();
            let mut ref_backup = Vec::new();
            poison(dev, &[(1000, Kind::Double)]);
            let norm = Kernels::new()
                .sam_perturb(&params, &grads, &mut backup, 0.05, adaptive)
                .unwrap();
            let _ = reference::sam_perturb(&ref_params, &grads, &mut ref_backup, 0.05, adaptive)
                .unwrap();
            // The norm against its f64 definition: the reference forms A·g in
            // the parameters' dtype (bf16 rounding, ~1e-5 on the norm), the
            // kernel in f32, which is the closer of the two.
            let (exact, _) = sam_expected(&original, &grads, 0.05, adaptive);
            let got = norm.double_value(&[]);
            assert!(
                (got - exact).abs() <= 1e-6 * exact,
                "{kind:?} adaptive={adaptive} norm {got} vs {exact} (f64 definition)"
            );
            for (i, (p, r)) in params.iter().zip(&ref_params).enumerate() {
                assert!(
                    rel_err(p, r) <= tol(kind),
                    "{kind:?} adaptive={adaptive} params[{i}] rel err {}",
                    rel_err(p, r)
                );
            }
            for (b, o) in backup.iter().zip(&original) {
                assert!(bit_equal(b, o), "{kind:?}: backup is not an exact copy");
            }
            Kernels::new().sam_restore(&params, &backup).unwrap();
            for (p, o) in params.iter().zip(&original) {
                assert!(bit_equal(p, o), "{kind:?}: restore is not bit-exact");
            }
        }
    }
}

#[test]
fn gramian_and_combine_match_the_reference() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(12);
    for kind in [Kind::Float, Kind::BFloat16] {
        // Odd widths take the one-column path, multiples of 4 the four-column one.
        for (t, p) in [
            (1, 1000),
            (3, 1_000_003),
            (5, 1_000_000),
            (8, 2_000_001),
            (16, 300_007),
            (16, 300_008),
        ] {
            let g = Tensor::randn([t, p], (Kind::Float, dev)).to_kind(kind);
            let exact = g
                .to_kind(Kind::Double)
                .matmul(&g.to_kind(Kind::Double).tr());
            poison(dev, &[(t * t, Kind::Float)]);
            let got = Kernels::new().gramian(&g).unwrap();
            assert_eq!(got.size(), vec![t, t]);
            // The Gramian is f32 for bf16 inputs too, summed in f64 from the
            // same (rounded) values as `exact`: f32 accuracy either way.
            assert!(
                rel_err(&got, &exact) <= 1e-5,
                "{kind:?} t={t}: gramian rel err {}",
                rel_err(&got, &exact)
            );
            for w in [
                Tensor::randn([t], (Kind::Float, dev)),
                Tensor::randn([3, t], (Kind::Float, dev)),
            ] {
                let exact = w.to_kind(Kind::Double).matmul(&g.to_kind(Kind::Double));
                poison(dev, &[(exact.numel() as i64, kind)]);
                let got = Kernels::new().combine(&w, &g).unwrap();
                assert_eq!(got.size(), exact.size());
                assert!(
                    rel_err(&got, &exact) <= tol(kind),
                    "{kind:?} t={t}: combine rel err {}",
                    rel_err(&got, &exact)
                );
            }
        }
    }
}

fn fusion_case(dev: Device, kind: Kind, b: i64, v: i64, t: usize, alphas: &[f64], scale: f64) {
    let large = (Tensor::randn([b, v], (Kind::Float, dev)) * 3.0 * scale).to_kind(kind);
    let small = Tensor::randn([b, v], (Kind::Float, dev)) * 2.0 * scale;
    let experts: Vec<Tensor> = (0..t)
        .map(|_| (&small + Tensor::randn([b, v], (Kind::Float, dev)) * 0.7 * scale).to_kind(kind))
        .collect();
    let small = small.to_kind(kind);
    poison(
        dev,
        &[
            (b * v, Kind::Float),
            (b * t as i64, Kind::Float),
            (b, Kind::Float),
        ],
    );
    let got = Kernels::new()
        .fusion_grid(&large, &small, &experts, alphas)
        .unwrap();
    // The reference in f64 on the same (rounded) inputs.
    let to64 = |x: &Tensor| x.to_kind(Kind::Double);
    let want = reference::fusion_grid(
        &to64(&large),
        &to64(&small),
        &experts.iter().map(to64).collect::<Vec<_>>(),
        alphas,
    )
    .unwrap();
    let what = format!(
        "{kind:?} b={b} v={v} t={t} a={} scale={scale}",
        alphas.len()
    );
    // A row may hold a near tie that f32 sums resolve the other way: the
    // kernel's candidate must then score within 1e-3 of the best by the f64
    // definition, and its outputs are checked against that candidate.
    let (want_lp, want_obj) = (want.log_probs.copy(), want.objective.copy());
    for r in 0..b {
        let chosen: Vec<f64> = Vec::try_from(
            got.alpha
                .get(r)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu),
        )
        .unwrap();
        let best: Vec<f64> = Vec::try_from(
            want.alpha
                .get(r)
                .to_kind(Kind::Float)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu),
        )
        .unwrap();
        if chosen == best {
            continue;
        }
        let t_k = chosen.iter().position(|&x| x != 0.0).unwrap_or(0);
        // The grid value the kernel's f32 α stands for.
        let a_k = *alphas
            .iter()
            .min_by(|x, y| {
                (*x - chosen[t_k])
                    .abs()
                    .total_cmp(&(*y - chosen[t_k]).abs())
            })
            .unwrap();
        let row = |x: &Tensor| x.get(r).to_kind(Kind::Double).to_device(Device::Cpu);
        let es: Vec<Tensor> = experts.iter().map(row).collect();
        let (l, s) = (row(&large), row(&small));
        let score = crate::common::fusion_objective(&l, &s, &es, a_k, t_k);
        let top = want.objective.double_value(&[r]);
        assert!(
            (score - top).abs() <= 1e-3 * top.abs(),
            "{what}: row {r} chose {chosen:?} scoring {score}, the best {best:?} scores {top}"
        );
        want_lp
            .get(r)
            .copy_(&(&l + (&es[t_k] - &s) * a_k).log_softmax(0, Kind::Double));
        let _ = want_obj.get(r).fill_(score);
    }
    assert!(
        got.log_probs.isnan().any().int64_value(&[]) == 0,
        "{what}: NaN left in log_probs"
    );
    let e = rel_err(&got.log_probs, &want_lp);
    assert!(e <= 1e-5, "{what}: log_probs rel err {e}");
    let e = rel_err(&got.objective, &want_obj);
    // The objective is a sum of squared differences of KL terms, which
    // amplifies f32 rounding of the sums; 1e-3 still separates candidates.
    assert!(e <= 1e-3, "{what}: objective rel err {e}");
}

#[test]
fn fusion_grid_matches_the_reference() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(13);
    let grid: Vec<f64> = (0..=20).map(|k| k as f64 * 0.1).collect();
    let uneven = [0.0, 0.05, 0.3, 0.31, 1.0, 1.7, 2.0];
    for kind in [Kind::Float, Kind::BFloat16] {
        fusion_case(dev, kind, 8, 32_000, 4, &grid, 1.0);
        fusion_case(dev, kind, 3, 2_561, 2, &grid, 1.0);
        fusion_case(dev, kind, 5, 50_257, 8, &uneven, 1.0);
        // Wide logit spreads force short windows in the kernel.
        fusion_case(dev, kind, 4, 10_007, 3, &grid, 20.0);
    }
    fusion_case(dev, Kind::Float, 64, 128_256, 8, &grid, 1.0);
}

/// The gate kernel against the reference run in f64 on the same inputs.
fn gate_case(
    dev: Device,
    kind: Kind,
    (t, r, n, d): (i64, i64, i64, i64),
    slot: bool,
    memory: bool,
    offset: bool,
) {
    let s = n + i64::from(slot);
    let logits = (Tensor::randn([t, r, s], (Kind::Float, dev)) * 2.0).to_kind(kind);
    // `offset`: a contiguous view 4 bytes into its storage (the unaligned path).
    let skip = i64::from(offset);
    let experts = Tensor::randn([r * n * d + skip], (Kind::Float, dev))
        .to_kind(kind)
        .narrow(0, skip, r * n * d)
        .view([r, n, d]);
    let memory = memory.then(|| Tensor::randn([t, r, d], (Kind::Float, dev)).to_kind(kind));
    poison(dev, &[(t * r * d, kind), (t * r * s, Kind::Float)]);
    let (mixed, weights) = Kernels::new()
        .gate_mix(&logits, &experts, memory.as_ref())
        .unwrap();
    let to64 = |x: &Tensor| x.to_kind(Kind::Double);
    let (want_mixed, want_weights) = reference::gate_mix(
        &to64(&logits),
        &to64(&experts),
        memory.as_ref().map(to64).as_ref(),
    )
    .unwrap();
    let what = format!(
        "{kind:?} t={t} r={r} n={n} d={d} slot={slot} memory={} offset={offset}",
        memory.is_some()
    );
    assert_eq!(mixed.size(), vec![t, r, d], "{what}");
    assert_eq!(
        (mixed.kind(), weights.kind()),
        (kind, Kind::Float),
        "{what}"
    );
    let e = rel_err(&weights, &want_weights);
    assert!(e <= 1e-6, "{what}: weights rel err {e}");
    let e = rel_err(&mixed, &want_mixed);
    assert!(e <= tol(kind), "{what}: mixture rel err {e}");
}

#[test]
fn gate_mix_matches_the_reference() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(15);
    for kind in [Kind::Float, Kind::BFloat16] {
        // The benchmark's shape (tokens of 4 images), four floats per thread.
        gate_case(dev, kind, (3, 1024, 8, 384), true, true, false);
        // The first selected block: a memory slot over zeros.
        gate_case(dev, kind, (3, 333, 4, 64), true, false, false);
        // No memory slot (the ablation); 11 tasks take two launches.
        gate_case(dev, kind, (11, 200, 6, 96), false, false, false);
        // d not a multiple of 4, and unaligned experts: one float per thread.
        gate_case(dev, kind, (2, 257, 3, 383), true, true, false);
        gate_case(dev, kind, (2, 64, 31, 64), true, true, true);
    }
}

#[test]
fn gate_mix_with_gradients_takes_the_differentiable_reference() {
    let Some(dev) = cuda() else { return };
    let logits = Tensor::randn([2, 16, 5], (Kind::Float, dev)).set_requires_grad(true);
    let experts = Tensor::randn([16, 4, 8], (Kind::Float, dev));
    let (mixed, _) = Kernels::new().gate_mix(&logits, &experts, None).unwrap();
    assert!(mixed.requires_grad());
    mixed.sum(Kind::Float).backward();
    assert!(logits.grad().defined());
    let _no_grad = tch::no_grad_guard();
    let (mixed, _) = Kernels::new()
        .gate_mix(&logits.detach(), &experts, None)
        .unwrap();
    assert!(!mixed.requires_grad());
}

#[test]
fn fusion_grid_masked_tokens_are_ignored_not_nan() {
    let Some(dev) = cuda() else { return };
    crate::reference::check_masked_rows(&Kernels::new(), dev);
}

#[test]
fn the_automatic_gramian_backend_takes_the_kernel_wherever_one_exists() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(16);
    // The kernel wherever one exists (f64 sums: not bit-equal to cuBLAS),
    // bf16 at 16 tasks included (cuBLAS would round it to bf16); cuBLAS
    // (bit-equal to the reference) beyond 16 tasks.
    for (kind, t, cublas) in [
        (Kind::BFloat16, 16, false),
        (Kind::BFloat16, 8, false),
        (Kind::Float, 16, false),
        (Kind::Float, 17, true),
    ] {
        let g = Tensor::randn([t, 100_003], (Kind::Float, dev)).to_kind(kind);
        let auto = Kernels::new().gramian(&g).unwrap();
        let reference = reference::gramian(&g).unwrap();
        assert_eq!(bit_equal(&auto, &reference), cublas, "{kind:?} t={t}");
    }
}

#[test]
fn prefer_reference_runs_the_reference_and_cpu_tensors_stay_on_the_cpu() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(14);
    let g = Tensor::randn([4, 100_003], (Kind::Float, dev));
    let reference = reference::gramian(&g).unwrap();
    let kernel = Kernels::new().gramian(&g).unwrap();
    // The two paths round differently (f64 sums vs cuBLAS's f32), so bit
    // equality below shows which one ran.
    assert!(
        !bit_equal(&kernel, &reference),
        "kernel and reference agree to the bit"
    );
    let preferred = Kernels::new().prefer_reference(true).gramian(&g).unwrap();
    assert!(bit_equal(&preferred, &reference));
    let cpu = g.to_device(Device::Cpu);
    let on_cpu = Kernels::new().gramian(&cpu).unwrap();
    assert_eq!(on_cpu.device(), Device::Cpu);
    assert!(bit_equal(&on_cpu, &reference::gramian(&cpu).unwrap()));
}

#[test]
fn memory_stats_follow_allocations() {
    let Some(dev) = cuda() else { return };
    if let Err(e) = memory::shim_status() {
        eprintln!("skipped: {e}");
        return;
    }
    let before = memory::memory_stats(0).unwrap();
    let t = Tensor::zeros([64 << 20], (Kind::Float, dev));
    let during = memory::memory_stats(0).unwrap();
    assert!(
        during.allocated >= before.allocated + (256 << 20),
        "{before:?} -> {during:?}"
    );
    assert!(during.reserved >= during.allocated && during.peak_allocated >= during.allocated);
    drop(t);
    memory::reset_peak_memory(0).unwrap();
    let after = memory::memory_stats(0).unwrap();
    assert!(after.peak_allocated < during.peak_allocated, "{after:?}");
    memory::empty_cache().unwrap();
}

#[test]
fn nvrtc_output_for_this_device_goes_to_the_disk_cache() {
    let Some(_) = cuda() else { return };
    let info = cuda_info(0).unwrap();
    let arch = format!(
        "compute_{}{}",
        info.compute_capability.0, info.compute_capability.1
    );
    let dir = std::env::temp_dir().join(format!(
        "taskweave-kernels-gpu-cache-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = taskweave_kernels::compile::DiskCache::new(dir.clone());
    // Compiled here directly: the process's loaded modules (and nvcc's
    // prebuilt PTX) would otherwise skip NVRTC and leave the cache empty.
    for m in &taskweave_kernels::compile::MODULES {
        taskweave_kernels::compile::compile(m, &arch, Some(&cache)).unwrap();
    }
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), taskweave_kernels::compile::MODULES.len());
    for m in &taskweave_kernels::compile::MODULES {
        for k in m.kernels {
            let entry = format!(".entry {k}(");
            assert!(files.iter().any(|f| f.contains(&entry)), "no cached {k}");
        }
    }
    // A fresh runtime with that cache precompiles every module for the device.
    Kernels::new()
        .cache_dir(Some(dir.clone()))
        .precompile(0)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_one_rank_nccl_communicator_sums_and_broadcasts_in_place() {
    use taskweave_kernels::nccl::{self, Communicator};
    let Some(dev) = cuda() else { return };
    let id = nccl::unique_id().unwrap();
    let mut comm = Communicator::join(&id, 0, 1, 0).unwrap();
    assert_eq!(comm.size(), 1);
    tch::manual_seed(5);
    for kind in [Kind::Float, Kind::Double, Kind::BFloat16, Kind::Half] {
        let t = Tensor::randn([1000, 37], (kind, dev));
        let before = t.copy();
        comm.all_sum_(&t).unwrap();
        comm.broadcast_(&t).unwrap();
        assert!(bit_equal(&t, &before), "{kind:?}");
    }
    let ints = Tensor::arange(100, (Kind::Int64, dev));
    comm.all_sum_(&ints).unwrap();
    assert!(ints.equal(&Tensor::arange(100, (Kind::Int64, dev))));
    // A strided view: summed through a contiguous copy, written back.
    let base = Tensor::randn([64, 64], (Kind::Float, dev));
    let column = base.narrow(1, 3, 1);
    let before = base.copy();
    comm.all_sum_(&column).unwrap();
    assert!(bit_equal(&base, &before));
    // Refused: a CPU tensor, an unsupported dtype, a rank beyond the size.
    assert!(comm
        .all_sum_(&Tensor::ones([3], (Kind::Float, Device::Cpu)))
        .is_err());
    assert!(comm
        .all_sum_(&Tensor::ones([3], (Kind::Bool, dev)))
        .is_err());
    assert!(Communicator::join(&id, 1, 1, 0).is_err());
}
