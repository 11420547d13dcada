//! `taskweave call fusion` with the logit-fusion plugin and the built-in
//! baselines: the plugin's choices against the definition (`Kernels::fusion_grid`'s doc)
//! computed here one candidate at a time, in f64, on random logits with
//! masked tokens, huge magnitudes and ties; exit 2 for bad input.

use std::path::Path;

use taskweave_tests::*;
use tch::{Device, Kind, Tensor};

/// A directory with the plugin in `plugins/`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_plugin(dir.path(), "taskweave-logit-fusion");
    dir
}

/// Writes the logits and runs `call fusion NAME`; returns (code, stderr).
fn call(dir: &Path, name: &str, logits: &[(&str, &Tensor)], sets: &[&str]) -> (i32, String) {
    let file = dir.join("logits.safetensors");
    Tensor::write_safetensors(logits, &file).unwrap();
    let mut args = vec![
        "-q",
        "call",
        "fusion",
        name,
        "--logits",
        "logits.safetensors",
        "--out",
        "out.safetensors",
        "--plugins",
        "plugins",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (code, _, err) = run_cli(dir, &args);
    (code, err)
}

fn output(dir: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(dir.join("out.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let (b, v) = t.size2().unwrap();
    let flat = Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap();
    (0..b as usize)
        .map(|i| flat[i * v as usize..(i + 1) * v as usize].to_vec())
        .collect()
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = x.iter().map(|v| (v - max).exp()).sum();
    x.iter().map(|v| v - max - sum.ln()).collect()
}

/// KL(p‖q) from log-probabilities, with 0·log 0 = 0.
fn kl(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .filter(|(p, _)| p.exp() > 0.0)
        .map(|(p, q)| p.exp() * (p - q))
        .sum()
}

/// The objective of candidate (expert `t`, coefficient `a`) on one row, over
/// every expert's targets, with the fused log-probabilities; NaN counts as +∞.
fn candidate(
    large: &[f64],
    small: &[f64],
    experts: &[&[f64]],
    t: usize,
    a: f64,
) -> (f64, Vec<f64>) {
    let (log_p, log_q) = (log_softmax(large), log_softmax(small));
    let fused: Vec<f64> = large
        .iter()
        .zip(experts[t].iter().zip(small))
        // −∞ − −∞ = 0: a token both rule out moves nothing.
        .map(|(l, (e, s))| l + if e == s { 0.0 } else { a * (e - s) })
        .collect();
    let log_f = log_softmax(&fused);
    let (k1, k2) = (kl(&log_f, &log_p), kl(&log_p, &log_f));
    let objective: f64 = experts
        .iter()
        .map(|e| {
            let log_qt = log_softmax(e);
            (k1 - kl(&log_qt, &log_q)).powi(2) + (k2 - kl(&log_q, &log_qt)).powi(2)
        })
        .sum();
    (
        if objective.is_nan() {
            f64::INFINITY
        } else {
            objective
        },
        log_f,
    )
}

/// One row's best (objective, expert, a, fused log-probabilities), scanning
/// the grid outermost so that the first minimum is the earliest a, then the
/// smallest expert.
fn best(
    large: &[f64],
    small: &[f64],
    experts: &[&[f64]],
    alphas: &[f64],
) -> (f64, usize, f64, Vec<f64>) {
    let mut found: Option<(f64, usize, f64, Vec<f64>)> = None;
    for &a in alphas {
        for t in 0..experts.len() {
            let (objective, log_f) = candidate(large, small, experts, t, a);
            if found.as_ref().is_none_or(|f| objective < f.0) {
                found = Some((objective, t, a, log_f));
            }
        }
    }
    found.unwrap()
}

/// The paper's grid, 0, 0.1, ..., 2.0.
fn grid() -> Vec<f64> {
    (0..=20).map(|i| i as f64 / 10.0).collect()
}

/// Checks the written output against [`best`] row by row. A row whose
/// choice differs must be a tie: both candidates' objectives within `tol`.
fn check(dir: &Path, large: &Tensor, small: &Tensor, experts: &Tensor, tol: f64) {
    let (l, s) = (rows(large), rows(small));
    let e: Vec<Vec<Vec<f64>>> = experts.unbind(0).iter().map(rows).collect();
    let (log_probs, expert, alpha) = (
        rows(&output(dir, "log_probs")),
        Vec::<i64>::try_from(output(dir, "expert")).unwrap(),
        Vec::<f64>::try_from(output(dir, "alpha").to_kind(Kind::Double)).unwrap(),
    );
    for b in 0..l.len() {
        let row_experts: Vec<&[f64]> = e.iter().map(|x| x[b].as_slice()).collect();
        let (objective, t, a, want) = best(&l[b], &s[b], &row_experts, &grid());
        if (t as i64, a) != (expert[b], alpha[b]) {
            let (theirs, _) = candidate(&l[b], &s[b], &row_experts, expert[b] as usize, alpha[b]);
            assert!(
                (objective - theirs).abs() <= tol * objective.abs().max(1.0),
                "row {b}: chose expert {} a {} ({theirs}) but the definition's optimum is expert {t} a {a} ({objective})",
                expert[b],
                alpha[b]
            );
            continue;
        }
        for (got, want) in log_probs[b].iter().zip(&want) {
            assert!(
                (got == want) || (got - want).abs() <= tol * want.abs().max(1.0),
                "row {b}: {got} vs {want}"
            );
        }
    }
}

fn randn(shape: &[i64], scale: f64) -> Tensor {
    Tensor::randn(shape, (Kind::Double, Device::Cpu)) * scale
}

#[test]
fn logit_fusion_finds_the_definition_s_optimum_on_ordinary_masked_huge_and_tied_logits() {
    tch::manual_seed(7);
    let dir = setup();
    let d = dir.path();
    let (b, v, t) = (6, 40, 3);
    let ordinary = (
        randn(&[b, v], 3.0),
        randn(&[b, v], 2.0),
        randn(&[t, b, v], 2.0),
    );
    // Masked vocabulary entries: −∞ in the small model and every expert (and
    // in the large model for the last ones).
    let (l, s, e) = (
        randn(&[b, v], 3.0),
        randn(&[b, v], 2.0),
        randn(&[t, b, v], 2.0),
    );
    let _ = s.narrow(1, 30, 10).fill_(f64::NEG_INFINITY);
    let _ = e.narrow(2, 30, 10).fill_(f64::NEG_INFINITY);
    let _ = l.narrow(1, 36, 4).fill_(f64::NEG_INFINITY);
    let masked = (l, s, e);
    let huge = (
        randn(&[b, v], 1e4),
        randn(&[b, v], 1e4),
        randn(&[t, b, v], 1e4),
    );
    // Ties: expert 1 repeats expert 0, expert 2 is the small model (it moves nothing).
    let (l, s) = (randn(&[b, v], 3.0), randn(&[b, v], 2.0));
    let first = randn(&[b, v], 2.0);
    let tied = (
        l,
        s.shallow_clone(),
        Tensor::stack(&[first.shallow_clone(), first, s], 0),
    );
    for (case, (large, small, experts)) in [
        ("ordinary", ordinary),
        ("masked", masked),
        ("huge", huge),
        ("tied", tied),
    ] {
        let (code, err) = call(
            d,
            "logit-fusion",
            &[("large", &large), ("small", &small), ("experts", &experts)],
            &[],
        );
        assert_eq!(code, 0, "{case}: {err}");
        check(d, &large, &small, &experts, 1e-9);
        if case == "tied" {
            let chosen = Vec::<i64>::try_from(output(d, "expert")).unwrap();
            assert!(
                chosen.iter().all(|&t| t == 0),
                "ties go to the first expert: {chosen:?}"
            );
        }
    }
}

#[test]
fn the_baselines_are_the_large_model_proxy_tuning_and_one_expert() {
    tch::manual_seed(3);
    let dir = setup();
    let d = dir.path();
    let (large, small, experts) = (
        randn(&[2, 9], 2.0),
        randn(&[2, 9], 1.0),
        randn(&[2, 2, 9], 1.0),
    );
    let logits = [("large", &large), ("small", &small), ("experts", &experts)];
    let cases = [
        ("large", vec![], large.log_softmax(-1, Kind::Double), 0.0),
        (
            "proxy",
            vec!["expert=1"],
            (&large + (experts.get(1) - &small)).log_softmax(-1, Kind::Double),
            1.0,
        ),
        (
            "expert",
            vec!["expert=1"],
            experts.get(1).log_softmax(-1, Kind::Double),
            0.0,
        ),
    ];
    for (name, sets, want, a) in cases {
        let (code, err) = call(d, name, &logits, &sets);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            output(d, "log_probs").allclose(&want, 1e-12, 1e-12, false),
            "{name}"
        );
        let alpha = Vec::<f64>::try_from(output(d, "alpha")).unwrap();
        assert_eq!(alpha, vec![a; 2], "{name}");
    }
}

#[test]
fn bad_logits_are_exit_2_naming_the_tensor() {
    let dir = setup();
    let d = dir.path();
    let large = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
    let small = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
    let other_vocab = Tensor::zeros([1, 2, 6], (Kind::Float, Device::Cpu));
    let (code, err) = call(
        d,
        "logit-fusion",
        &[
            ("large", &large),
            ("small", &small),
            ("experts", &other_vocab),
        ],
        &[],
    );
    assert!(
        code == 2 && err.contains("`experts` is [1, 2, 6]") && err.contains("same vocabulary"),
        "{code}: {err}"
    );
    let (code, err) = call(
        d,
        "logit-fusion",
        &[("large", &large), ("small", &small)],
        &[],
    );
    assert!(
        code == 2 && err.contains("no tensor `experts`"),
        "{code}: {err}"
    );
    let experts = Tensor::zeros([1, 2, 5], (Kind::Float, Device::Cpu));
    let logits = [("large", &large), ("small", &small), ("experts", &experts)];
    let (code, err) = call(d, "logit-fusion", &logits, &["alphas=[]"]);
    assert!(code == 2 && err.contains("alphas"), "{code}: {err}");
    // Finite as f64, -inf in the float32 grid.
    let (code, err) = call(d, "logit-fusion", &logits, &["alphas=[-1e39]"]);
    assert!(
        code == 2 && err.contains("not a finite float32 number"),
        "{code}: {err}"
    );
    // NaN anywhere, or a row with no finite logit, is the file's fault;
    // −inf for masked tokens is not.
    let mut nan = Vec::<f32>::try_from(experts.flatten(0, -1)).unwrap();
    nan[7] = f32::NAN;
    let nan = Tensor::from_slice(&nan).view([1, 2, 5]);
    let fuse = |large: &Tensor, experts: &Tensor| {
        let logits = [("large", large), ("small", &small), ("experts", experts)];
        call(d, "logit-fusion", &logits, &[])
    };
    let (code, err) = fuse(&large, &nan);
    assert!(
        code == 2 && err.contains("`experts` in logits.safetensors holds NaN at [0, 1, 2]"),
        "{code}: {err}"
    );
    let masked = large.copy();
    let _ = masked.get(1).fill_(f64::NEG_INFINITY);
    let (code, err) = fuse(&masked, &experts);
    assert!(
        code == 2 && err.contains("−inf everywhere in row [1]"),
        "{code}: {err}"
    );
    let _ = masked.get(1).narrow(0, 0, 1).fill_(0.0);
    let (code, err) = fuse(&masked, &experts);
    assert_eq!(code, 0, "{err}");
    let (code, err) = call(d, "proxy", &logits, &["expert=3"]);
    assert!(
        code == 2 && err.contains("expert = 3, but there are 1 experts"),
        "{code}: {err}"
    );
}
