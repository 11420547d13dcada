//! Every CPU reference against a naive definition on random inputs.
use taskweave_kernels::{reference, Error, Kernels};
use tch::{Device, Kind, Tensor};

use crate::common::{
    bit_equal, copies, fusion_objective, param_shapes, randn_list, rel_err, sam_expected,
};

const CPU: Device = Device::Cpu;

#[test]
fn sam_perturb_matches_its_definition() {
    tch::manual_seed(1);
    for adaptive in [false, true] {
        let params = randn_list(&param_shapes(20), Kind::Float, CPU);
        let grads = randn_list(&param_shapes(20), Kind::Float, CPU);
        let (norm, expected) = sam_expected(&params, &grads, 0.05, adaptive);
        let mut backup = Vec::new();
        let got = Kernels::new()
            .sam_perturb(&params, &grads, &mut backup, 0.05, adaptive)
            .unwrap();
        assert_eq!(got.kind(), Kind::Double);
        assert!(
            (got.double_value(&[]) - norm).abs() <= 1e-9 * norm,
            "norm {} vs {norm}",
            got.double_value(&[])
        );
        for (p, e) in params.iter().zip(&expected) {
            assert!(
                rel_err(p, e) <= 1e-6,
                "adaptive={adaptive}: rel err {}",
                rel_err(p, e)
            );
        }
    }
}

#[test]
fn sam_restore_after_perturb_is_bit_exact_and_backup_is_reused() {
    tch::manual_seed(2);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Double] {
        let params: Vec<Tensor> = randn_list(&param_shapes(14), kind, CPU)
            .into_iter()
            .map(|p| p.set_requires_grad(true))
            .collect();
        let grads = randn_list(&param_shapes(14), kind, CPU);
        let original = copies(&params);
        let kernels = Kernels::new();
        let mut backup = Vec::new();
        let _ = kernels
            .sam_perturb(&params, &grads, &mut backup, 2.0, true)
            .unwrap();
        assert!(
            params
                .iter()
                .zip(&original)
                .any(|(p, o)| p.numel() > 0 && !bit_equal(p, o)),
            "{kind:?}: perturb changed nothing"
        );
        let first_ptrs: Vec<_> = backup.iter().map(|b| b.data_ptr()).collect();
        kernels.sam_restore(&params, &backup).unwrap();
        for (p, o) in params.iter().zip(&original) {
            assert!(bit_equal(p, o), "{kind:?}: restore is not bit-exact");
        }
        let _ = kernels
            .sam_perturb(&params, &grads, &mut backup, 2.0, true)
            .unwrap();
        let second_ptrs: Vec<_> = backup.iter().map(|b| b.data_ptr()).collect();
        assert_eq!(first_ptrs, second_ptrs, "{kind:?}: backup was reallocated");
        kernels.sam_restore(&params, &backup).unwrap();
        assert!(
            params.iter().all(|p| p.requires_grad()),
            "parameters lost requires_grad"
        );
    }
}

#[test]
fn sam_rejects_bad_groups_with_errors() {
    let p = vec![Tensor::zeros([3], (Kind::Float, CPU))];
    let k = Kernels::new();
    let mut b = Vec::new();
    let e = k.sam_perturb(&p, &[], &mut b, 1.0, false).unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e}");
    assert!(e.to_string().contains("expected 1"), "{e}");
    let e = k
        .sam_perturb(
            &p,
            &[Tensor::zeros([4], (Kind::Float, CPU))],
            &mut b,
            1.0,
            false,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = k
        .sam_perturb(
            &p,
            &[Tensor::zeros([3], (Kind::Double, CPU))],
            &mut b,
            1.0,
            false,
        )
        .unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = k
        .sam_perturb(
            &p,
            &[Tensor::zeros([3], (Kind::Float, CPU))],
            &mut b,
            -1.0,
            false,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e}");
    let ints = vec![Tensor::zeros([3], (Kind::Int64, CPU))];
    let e = k.sam_perturb(&ints, &ints, &mut b, 1.0, false).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = k
        .sam_restore(&p, &[Tensor::zeros([2], (Kind::Float, CPU))])
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // An empty group is a no-op.
    let norm = k.sam_perturb(&[], &[], &mut b, 1.0, true).unwrap();
    assert_eq!(norm.double_value(&[]), 0.0);
}

#[test]
fn gramian_is_g_times_g_transposed() {
    tch::manual_seed(3);
    for (t, p) in [(1, 7), (3, 1001), (8, 4096), (17, 300)] {
        let g = Tensor::randn([t, p], (Kind::Float, CPU));
        let got = Kernels::new().gramian(&g).unwrap();
        assert_eq!(got.size(), vec![t, t]);
        assert_eq!(got.kind(), Kind::Float);
        let gd = g.to_kind(Kind::Double);
        for i in 0..t {
            for j in 0..t {
                let dot = (gd.get(i) * gd.get(j)).sum(Kind::Double).double_value(&[]);
                let v = got.double_value(&[i, j]);
                assert!(
                    (v - dot).abs() <= 1e-4 * dot.abs().max(1.0),
                    "[{i},{j}] {v} vs {dot}"
                );
            }
        }
    }
    // bf16 gradients give an f32-accurate Gramian of their (rounded) values,
    // not one rounded to bf16 (as a bf16 matmul's output would be).
    let bf = Tensor::randn([4, 256], (Kind::Float, CPU)).to_kind(Kind::BFloat16);
    let got = Kernels::new().gramian(&bf).unwrap();
    assert_eq!(got.kind(), Kind::Float);
    let wide = bf.to_kind(Kind::Double);
    let e = rel_err(&got, &wide.matmul(&wide.tr()));
    assert!(e <= 1e-5, "bf16 gramian rel err {e}");
    let e = Kernels::new()
        .gramian(&Tensor::zeros([5], (Kind::Float, CPU)))
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn combine_is_the_weighted_sum_of_rows() {
    tch::manual_seed(4);
    let (t, p) = (5, 333);
    let g = Tensor::randn([t, p], (Kind::Float, CPU));
    let w = Tensor::randn([t], (Kind::Float, CPU));
    let got = Kernels::new().combine(&w, &g).unwrap();
    assert_eq!(got.size(), vec![p]);
    let mut expected = Tensor::zeros([p], (Kind::Double, CPU));
    for i in 0..t {
        expected += g.get(i).to_kind(Kind::Double) * w.double_value(&[i]);
    }
    assert!(rel_err(&got, &expected) <= 1e-6);
    let w2 = Tensor::randn([3, t], (Kind::Float, CPU));
    let got = Kernels::new().combine(&w2, &g).unwrap();
    assert_eq!(got.size(), vec![3, p]);
    for k in 0..3 {
        let row = Kernels::new().combine(&w2.get(k), &g).unwrap();
        assert!(rel_err(&got.get(k), &row) <= 1e-6);
    }
    let e = Kernels::new()
        .combine(&Tensor::ones([4], (Kind::Float, CPU)), &g)
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

fn grid() -> Vec<f64> {
    (0..=20).map(|k| k as f64 * 0.1).collect()
}

/// The literal definition: every row, every candidate, one softmax each.
fn fusion_naive(
    large: &Tensor,
    small: &Tensor,
    experts: &[Tensor],
    alphas: &[f64],
) -> (Tensor, Vec<Vec<f64>>, Vec<f64>) {
    let b = large.size()[0];
    let mut rows = Vec::new();
    let (mut alpha_rows, mut objs) = (Vec::new(), Vec::new());
    for r in 0..b {
        let l = large.get(r).to_kind(Kind::Double);
        let s = small.get(r).to_kind(Kind::Double);
        let es: Vec<Tensor> = experts
            .iter()
            .map(|e| e.get(r).to_kind(Kind::Double))
            .collect();
        let mut best = (f64::INFINITY, 0usize, 0usize);
        for (k, &a) in alphas.iter().enumerate() {
            for t in 0..es.len() {
                let obj = fusion_objective(&l, &s, &es, a, t);
                if obj < best.0 {
                    best = (obj, k, t);
                }
            }
        }
        let (obj, k, t) = best;
        let a = alphas[k];
        rows.push((&l + (&es[t] - &s) * a).log_softmax(0, Kind::Double));
        let mut alpha = vec![0.0; es.len()];
        alpha[t] = a;
        alpha_rows.push(alpha);
        objs.push(obj);
    }
    (Tensor::stack(&rows, 0), alpha_rows, objs)
}

fn fusion_inputs(b: i64, v: i64, t: usize, kind: Kind) -> (Tensor, Tensor, Vec<Tensor>) {
    let large = Tensor::randn([b, v], (Kind::Float, CPU)) * 3.0;
    let small = Tensor::randn([b, v], (Kind::Float, CPU)) * 2.0;
    // Experts near the small model, as fine-tuned experts are.
    let experts = (0..t)
        .map(|_| (&small + Tensor::randn([b, v], (Kind::Float, CPU)) * 0.7).to_kind(kind))
        .collect();
    (large.to_kind(kind), small.to_kind(kind), experts)
}

fn check_fusion(kind: Kind, tol: f64) {
    let (large, small, experts) = fusion_inputs(4, 97, 3, kind);
    let alphas = grid();
    let out = reference::fusion_grid(&large, &small, &experts, &alphas).unwrap();
    let (log_probs, alpha_rows, objs) = fusion_naive(&large, &small, &experts, &alphas);
    assert!(
        rel_err(&out.log_probs, &log_probs) <= tol,
        "{kind:?} log_probs rel err {}",
        rel_err(&out.log_probs, &log_probs)
    );
    for (r, (want_alpha, want_obj)) in alpha_rows.iter().zip(&objs).enumerate() {
        let got: Vec<f64> = (0..3)
            .map(|t| out.alpha.double_value(&[r as i64, t]))
            .collect();
        for (g, w) in got.iter().zip(want_alpha) {
            assert!(
                (g - w).abs() <= 1e-6,
                "{kind:?} row {r}: alpha {got:?} vs {want_alpha:?}"
            );
        }
        let o = out.objective.double_value(&[r as i64]);
        assert!(
            (o - want_obj).abs() <= 1e3 * tol * want_obj.abs().max(1e-3),
            "{kind:?} row {r}: objective {o} vs {want_obj}"
        );
    }
}

#[test]
fn fusion_grid_reference_matches_the_literal_candidate_loop() {
    tch::manual_seed(5);
    check_fusion(Kind::Double, 1e-12);
    check_fusion(Kind::Float, 1e-6);
}

#[test]
fn fusion_grid_ties_go_to_the_earliest_grid_value_then_the_smallest_t() {
    tch::manual_seed(6);
    let (large, small, _) = fusion_inputs(2, 50, 1, Kind::Float);
    // Experts equal to the small model: every candidate is P itself.
    let experts = vec![small.copy(), small.copy(), small.copy()];
    let alphas = [0.5, 1.0, 1.5];
    let out = Kernels::new()
        .fusion_grid(&large, &small, &experts, &alphas)
        .unwrap();
    let want = Tensor::from_slice(&[0.5f32, 0.0, 0.0, 0.5, 0.0, 0.0]).view([2, 3]);
    assert!(bit_equal(&out.alpha, &want), "{}", out.alpha);
    // Two identical experts: whichever a wins, t = 0 beats t = 1.
    let e = (&small + Tensor::randn([2, 50], (Kind::Float, CPU))).to_kind(Kind::Float);
    let out = Kernels::new()
        .fusion_grid(&large, &small, &[e.copy(), e], &grid())
        .unwrap();
    for r in 0..2 {
        assert_eq!(out.alpha.double_value(&[r, 1]), 0.0, "{}", out.alpha);
    }
}

/// Rows whose tokens `masked` are −∞ in every model score as the same rows
/// without those tokens: same α, same objective, the same log-probabilities
/// on the other tokens and −∞ on the masked ones (0 log 0 = 0, −∞ − −∞ = 0).
pub fn check_masked_rows(kernels: &Kernels, device: tch::Device) {
    tch::manual_seed(8);
    let (large, small, experts) = fusion_inputs(3, 40, 2, Kind::Float);
    let keep: Vec<i64> = (0..40).filter(|i| i % 5 != 2).collect();
    let keep = Tensor::from_slice(&keep);
    let masked = Tensor::from_slice(&(0..40).map(|i| i % 5 == 2).collect::<Vec<_>>());
    let mask = |t: &Tensor| t.masked_fill(&masked, f64::NEG_INFINITY).to_device(device);
    let cut = |t: &Tensor| t.index_select(1, &keep).to_device(device);
    let alphas = grid();
    let full = kernels
        .fusion_grid(
            &mask(&large),
            &mask(&small),
            &experts.iter().map(mask).collect::<Vec<_>>(),
            &alphas,
        )
        .unwrap();
    let short = kernels
        .fusion_grid(
            &cut(&large),
            &cut(&small),
            &experts.iter().map(cut).collect::<Vec<_>>(),
            &alphas,
        )
        .unwrap();
    assert!(
        bit_equal(&full.alpha, &short.alpha),
        "{} vs {}",
        full.alpha,
        short.alpha
    );
    assert!(
        full.objective.isfinite().all().int64_value(&[]) == 1,
        "{}",
        full.objective
    );
    assert!(rel_err(&full.objective, &short.objective) <= 1e-5);
    let kept = full.log_probs.index_select(1, &keep.to_device(device));
    assert!(
        rel_err(&kept, &short.log_probs) <= 1e-5,
        "{}",
        rel_err(&kept, &short.log_probs)
    );
    let gone = full
        .log_probs
        .index_select(1, &Tensor::from_slice(&[2i64, 7, 37]).to_device(device));
    assert!(gone.isneginf().all().int64_value(&[]) == 1, "{gone}");
}

#[test]
fn fusion_grid_masked_tokens_are_ignored_not_nan() {
    check_masked_rows(&Kernels::new(), CPU);
}

#[test]
fn fusion_grid_rejects_bad_inputs_with_errors() {
    let (large, small, experts) = fusion_inputs(2, 10, 2, Kind::Float);
    let k = Kernels::new();
    let e = k
        .fusion_grid(&large, &small.narrow(1, 0, 9), &experts, &grid())
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(e.to_string().contains("expected [2, 10]"), "{e}");
    let e = k.fusion_grid(&large, &small, &[], &grid()).unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e}");
    let many: Vec<Tensor> = (0..17).map(|_| small.copy()).collect();
    assert!(matches!(
        k.fusion_grid(&large, &small, &many, &grid()).unwrap_err(),
        Error::Argument { .. }
    ));
    assert!(matches!(
        k.fusion_grid(&large, &small, &experts, &[]).unwrap_err(),
        Error::Argument { .. }
    ));
    assert!(matches!(
        k.fusion_grid(&large, &small, &experts, &[f64::NAN])
            .unwrap_err(),
        Error::Argument { .. }
    ));
    let e = k
        .fusion_grid(&large, &small.to_kind(Kind::Double), &experts, &grid())
        .unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = k
        .fusion_grid(&large.get(0), &small, &experts, &grid())
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// The gate by its definition: a loop over tasks and tokens, in f64.
fn gate_naive(logits: &Tensor, experts: &Tensor, memory: Option<&Tensor>) -> (Tensor, Tensor) {
    let (t, r, s) = logits.size3().unwrap();
    let n = experts.size()[1];
    let (mut mixed, mut weights) = (Vec::new(), Vec::new());
    for task in 0..t {
        for row in 0..r {
            let l: Vec<f64> =
                Vec::try_from(logits.get(task).get(row).to_kind(Kind::Double)).unwrap();
            let top = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = l.iter().map(|x| (x - top).exp()).collect();
            let w: Vec<f64> = e.iter().map(|x| x / e.iter().sum::<f64>()).collect();
            let mut out = Tensor::zeros([experts.size()[2]], (Kind::Double, CPU));
            for (j, wj) in w.iter().take(n as usize).enumerate() {
                out += experts.get(row).get(j as i64).to_kind(Kind::Double) * *wj;
            }
            if let (Some(m), true) = (memory, s == n + 1) {
                out += m.get(task).get(row).to_kind(Kind::Double) * w[n as usize];
            }
            mixed.push(out);
            weights.push(Tensor::from_slice(&w));
        }
    }
    let d = experts.size()[2];
    (
        Tensor::stack(&mixed, 0).reshape([t, r, d]),
        Tensor::stack(&weights, 0).reshape([t, r, s]),
    )
}

#[test]
fn gate_mix_reference_matches_its_definition() {
    tch::manual_seed(21);
    let (t, r, n, d) = (3, 7, 4, 5);
    let experts = Tensor::randn([r, n, d], (Kind::Float, CPU));
    let memory = Tensor::randn([t, r, d], (Kind::Float, CPU));
    for (s, memory) in [(n, None), (n + 1, None), (n + 1, Some(&memory))] {
        let logits = Tensor::randn([t, r, s], (Kind::Float, CPU)) * 3.0;
        let (mixed, weights) = reference::gate_mix(&logits, &experts, memory).unwrap();
        let (want_mixed, want_weights) = gate_naive(&logits, &experts, memory);
        assert_eq!(weights.kind(), Kind::Float);
        assert!(rel_err(&weights, &want_weights) <= 1e-6, "s={s}");
        assert!(
            rel_err(&mixed, &want_mixed) <= 1e-6,
            "s={s} memory={}",
            memory.is_some()
        );
    }
}

#[test]
fn gate_mix_reference_is_differentiable() {
    let logits = Tensor::randn([2, 3, 3], (Kind::Float, CPU)).set_requires_grad(true);
    let experts = Tensor::randn([3, 2, 4], (Kind::Float, CPU)).set_requires_grad(true);
    let memory = Tensor::randn([2, 3, 4], (Kind::Float, CPU)).set_requires_grad(true);
    let (mixed, _) = Kernels::new()
        .gate_mix(&logits, &experts, Some(&memory))
        .unwrap();
    mixed.square().sum(Kind::Float).backward();
    for (name, x) in [
        ("logits", &logits),
        ("experts", &experts),
        ("memory", &memory),
    ] {
        assert!(
            x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name}"
        );
    }
}

#[test]
fn gate_mix_rejects_bad_inputs_with_errors() {
    let k = Kernels::new();
    let experts = Tensor::randn([4, 3, 8], (Kind::Float, CPU));
    let logits = Tensor::randn([2, 4, 4], (Kind::Float, CPU));
    let memory = Tensor::randn([2, 4, 8], (Kind::Float, CPU));
    // S must be n or n + 1.
    let e = k
        .gate_mix(&logits.narrow(2, 0, 2), &experts, None)
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // A memory needs its slot, and the shape [T, R, d].
    let e = k
        .gate_mix(&logits.narrow(2, 0, 3), &experts, Some(&memory))
        .unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
    let e = k
        .gate_mix(&logits, &experts, Some(&memory.narrow(2, 0, 7)))
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = k
        .gate_mix(&logits.to_kind(Kind::Double), &experts, None)
        .unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let wide = Tensor::randn([4, 40, 8], (Kind::Float, CPU));
    let e = k
        .gate_mix(&Tensor::randn([1, 4, 41], (Kind::Float, CPU)), &wide, None)
        .unwrap_err();
    assert!(e.to_string().contains("at most 32"), "{e}");
}
