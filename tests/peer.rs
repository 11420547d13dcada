//! Cross-checks of the gradient weightings against TorchJD 0.18.0, the
//! .venv's (pinned in requirements.txt with the solvers of its `full`
//! extra): every aggregator both libraries have, on random and adversarial
//! f32 matrices (conflicting, nearly collinear, duplicate and zero rows,
//! norms over six decades, T = 1, T = 32, P = 1), each library's own
//! defaults unless a convention differs (named per pair).
//!
//! How each pair is compared:
//! - `Exact`: both solve the same problem to optimality, so the updates agree
//!   to `tol` relative to `Σ_i ‖g_i‖` (the size of any aggregation of G).
//! - `Close`: TorchJD stops its iterative solver at a tolerance (Nash-MTL's
//!   ECOS sequence, CAGrad's Clarabel, FairGrad's `least_squares`): cosine
//!   and norm ratio near 1.
//! - `NoWorse`: MGDA's min-norm point; TorchJD's Frank-Wolfe stops at
//!   `epsilon = 1e-3`, taskweave's solver is exact, so taskweave's update is
//!   never longer and points the same way.
//!
//! Randomised methods are compared where the randomness cannot matter:
//! PCGrad and GradVac with T ≤ 2 (one visiting order), GradDrop on matrices
//! whose columns each have one sign. RGW (TorchJD's `Random`) has nothing
//! comparable beyond its own property test.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{json, Value};
use taskweave::{Config, Runtime};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{aggregate, MethodContext, Role, Weighting};
use taskweave_tests::workspace;

/// How a pair's updates must agree.
#[derive(Clone, Copy, Debug)]
enum Check {
    Exact { tol: f64 },
    Close { cos: f64, ratio: f64 },
    NoWorse,
}

/// One aggregator both libraries have.
struct Pair {
    label: &'static str,
    taskweave: Value,
    torchjd: &'static str,
    check: Check,
    /// Whether taskweave solves in f64 what TorchJD solves in the input's
    /// dtype: then TorchJD gets float64 input on the `extreme` case.
    f64_solve: bool,
    /// Which cases it runs on.
    cases: fn(&Case) -> bool,
    /// Calls on the same matrix before comparing (stateful methods: 3).
    calls: usize,
}

/// One input matrix.
struct Case {
    name: String,
    rows: Vec<Vec<f32>>,
    /// No two rows share a direction and none is zero.
    regular: bool,
    /// Every column holds entries of one sign only.
    unanimous: bool,
    /// Norms six decades apart: TorchJD's float32 solves (a pseudo-inverse
    /// of the Gramian, `least_squares`, ECOS) lose the answer, so pairs with
    /// `f64_solve` get TorchJD's float64 result as the reference.
    extreme: bool,
}

impl Case {
    fn t(&self) -> usize {
        self.rows.len()
    }
}

fn normal_rows(rng: &mut SplitMix, t: usize, p: usize) -> Vec<Vec<f32>> {
    (0..t)
        .map(|_| (0..p).map(|_| rng.normal() as f32).collect())
        .collect()
}

fn cases() -> Vec<Case> {
    let mut rng = SplitMix::at(2026, 12);
    let mut out = Vec::new();
    let mut push = |name: &str, rows: Vec<Vec<f32>>, regular: bool| {
        let extreme = name.starts_with("scales");
        let p = rows[0].len();
        let unanimous =
            (0..p).all(|j| rows.iter().all(|r| r[j] >= 0.0) || rows.iter().all(|r| r[j] <= 0.0));
        out.push(Case {
            name: name.to_string(),
            rows,
            regular,
            unanimous,
            extreme,
        });
    };
    for (t, p) in [(2, 40), (3, 40), (5, 60), (11, 200)] {
        push(
            &format!("random-{t}x{p}"),
            normal_rows(&mut rng, t, p),
            true,
        );
    }
    // Shared component c, per-task signs: about half the pairs conflict.
    let c: Vec<f32> = (0..80).map(|_| rng.normal() as f32).collect();
    let conflicting: Vec<Vec<f32>> = (0..6)
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -0.8 };
            c.iter()
                .map(|x| sign * x + 0.5 * rng.normal() as f32)
                .collect()
        })
        .collect();
    push("conflicting-6x80", conflicting, true);
    let collinear: Vec<Vec<f32>> = (0..4)
        .map(|_| c.iter().map(|x| x + 0.02 * rng.normal() as f32).collect())
        .collect();
    push("collinear-4x80", collinear, true);
    let scales: Vec<Vec<f32>> = normal_rows(&mut rng, 4, 50)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.iter().map(|x| x * 10f32.powi(2 * i as i32 - 3)).collect())
        .collect();
    push("scales-4x50", scales, true);
    push("one-task", normal_rows(&mut rng, 1, 30), true);
    push("many-tasks-32x300", normal_rows(&mut rng, 32, 300), true);
    push(
        "one-param-3x1",
        vec![vec![1.5], vec![-0.5], vec![2.0]],
        false,
    );
    let mut zero = normal_rows(&mut rng, 3, 30);
    zero[1] = vec![0.0; 30];
    push("zero-row-3x30", zero, false);
    let mut duplicate = normal_rows(&mut rng, 3, 30);
    duplicate[2] = duplicate[0].clone();
    push("duplicate-3x30", duplicate, false);
    let pair = normal_rows(&mut rng, 2, 30);
    push("two-tasks", pair, true);
    let unanimous: Vec<Vec<f32>> = {
        let signs: Vec<f32> = (0..40)
            .map(|_| if rng.uniform() < 0.5 { 1.0 } else { -1.0 })
            .collect();
        (0..4)
            .map(|_| signs.iter().map(|s| s * rng.uniform() as f32).collect())
            .collect()
    };
    push("unanimous-4x40", unanimous, true);
    out
}

fn pairs() -> Vec<Pair> {
    let regular = |c: &Case| c.regular;
    let all = |_: &Case| true;
    vec![
        Pair {
            label: "upgrad",
            taskweave: json!({"kind": "upgrad"}),
            torchjd: "UPGrad()",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: all,
            calls: 1,
        },
        Pair {
            label: "dualproj",
            taskweave: json!({"kind": "dualproj"}),
            torchjd: "DualProj()",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: all,
            calls: 1,
        },
        Pair {
            label: "aligned-mtl",
            taskweave: json!({"kind": "aligned-mtl"}),
            torchjd: "AlignedMTL()",
            check: Check::Exact { tol: 1e-4 },
            // Exactly dependent rows leave eigenvalues at the f32 rounding
            // level, where both libraries' rank cutoffs decide on noise.
            f64_solve: false,
            cases: regular,
            calls: 1,
        },
        Pair {
            label: "aligned-mtl-median",
            taskweave: json!({"kind": "aligned-mtl", "scale_mode": "median"}),
            torchjd: "AlignedMTL(scale_mode='median')",
            check: Check::Exact { tol: 1e-4 },
            f64_solve: false,
            cases: regular,
            calls: 1,
        },
        Pair {
            label: "config",
            taskweave: json!({"kind": "config"}),
            torchjd: "ConFIG()",
            check: Check::Exact { tol: 1e-4 },
            f64_solve: false,
            cases: all,
            calls: 1,
        },
        Pair {
            label: "imtl-g",
            taskweave: json!({"kind": "imtl-g"}),
            torchjd: "IMTLG()",
            check: Check::Exact { tol: 1e-4 },
            // TorchJD's pseudo-inverse and taskweave's zero-gradient rule
            // differ on singular Gramians (README).
            f64_solve: true,
            cases: regular,
            calls: 1,
        },
        Pair {
            label: "krum",
            taskweave: json!({"kind": "krum", "n_byzantine": 1, "n_selected": 2}),
            torchjd: "Krum(n_byzantine=1, n_selected=2)",
            check: Check::Exact { tol: 1e-6 },
            f64_solve: false,
            cases: |c| c.t() >= 4,
            calls: 1,
        },
        Pair {
            label: "trimmed-mean",
            taskweave: json!({"kind": "trimmed-mean", "trim_number": 1}),
            torchjd: "TrimmedMean(trim_number=1)",
            check: Check::Exact { tol: 1e-6 },
            f64_solve: false,
            cases: |c| c.t() >= 3,
            calls: 1,
        },
        Pair {
            label: "fairgrad",
            taskweave: json!({"kind": "fairgrad", "alpha": 1.0}),
            torchjd: "FairGrad(alpha=1.0)",
            check: Check::Close {
                cos: 1.0 - 1e-6,
                ratio: 1e-3,
            },
            f64_solve: false,
            // On norms six decades apart SciPy's least_squares stops far from
            // the solution even in float64 (w·Mw = 62 instead of 1 for one
            // task); taskweave's solution is checked there by fairgrad.rs.
            cases: |c| c.regular && !c.extreme && c.t() <= 11,
            calls: 1,
        },
        Pair {
            label: "fairgrad-alpha2",
            taskweave: json!({"kind": "fairgrad", "alpha": 2.0}),
            torchjd: "FairGrad(alpha=2.0)",
            check: Check::Close {
                cos: 1.0 - 1e-6,
                ratio: 1e-3,
            },
            f64_solve: false,
            // On norms six decades apart SciPy's least_squares stops far from
            // the solution even in float64 (w·Mw = 62 instead of 1 for one
            // task); taskweave's solution is checked there by fairgrad.rs.
            cases: |c| c.regular && !c.extreme && c.t() <= 11,
            calls: 1,
        },
        Pair {
            label: "cagrad",
            // TorchJD does not rescale; taskweave's default divides by 1 + c².
            taskweave: json!({"kind": "cagrad", "c": 0.4, "rescale": 0}),
            torchjd: "CAGrad(c=0.4)",
            check: Check::Close {
                cos: 1.0 - 1e-6,
                ratio: 1e-4,
            },
            // On norms six decades apart TorchJD returns 0: the dual's g_w is
            // below its norm_eps (1e-4 of the Frobenius norm) there.
            f64_solve: false,
            cases: |c| c.regular && !c.extreme,
            calls: 1,
        },
        Pair {
            label: "nash-mtl",
            taskweave: json!({"kind": "nash-mtl"}),
            torchjd: "NashMTL(n_tasks=T, max_norm=1.0, update_weights_every=1, optim_niter=20)",
            check: Check::Close {
                cos: 0.999,
                ratio: 0.02,
            },
            // TorchJD's cvxpy problem cannot be built for T = 1; on norms six
            // decades apart its ECOS sequence stops short, as FairGrad's
            // least_squares does.
            f64_solve: false,
            cases: |c| c.regular && !c.extreme && (2..=11).contains(&c.t()),
            calls: 1,
        },
        Pair {
            label: "mgda",
            taskweave: json!({"kind": "mgda"}),
            torchjd: "MGDA()",
            check: Check::NoWorse,
            f64_solve: false,
            cases: regular,
            calls: 1,
        },
        Pair {
            label: "modo",
            // TorchJD's MoDo is the single-batch form.
            taskweave: json!({"kind": "modo", "double_sampling": false}),
            torchjd: "Gramian(MoDoWeighting())",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: regular,
            calls: 3,
        },
        Pair {
            label: "sdmgrad",
            // The default lr = 10 makes the inner projected-gradient steps
            // bounce between simplex vertices once T ≥ 3 (lr·λ_max(A) ≫ 2),
            // where float rounding decides the end point; with lr = 0.1 they
            // contract and both libraries reach the same weights.
            taskweave: json!({"kind": "sdmgrad", "lr": 0.1, "double_sampling": false}),
            torchjd: "Gramian(SDMGradWeighting(lr=0.1))",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: regular,
            calls: 3,
        },
        Pair {
            label: "excess-mtl",
            taskweave: json!({"kind": "excess-mtl"}),
            torchjd: "ExcessMTL()",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: all,
            calls: 3,
        },
        Pair {
            label: "pcd",
            taskweave: json!({"kind": "pcd"}),
            torchjd: "PCD()",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            // With P = 1 a secondary task opposite the primary makes the
            // constraints infeasible: there is no answer to agree on.
            cases: |c| c.t() == 1 || c.rows[0].len() > 1,
            calls: 3,
        },
        Pair {
            label: "cr-mogm",
            taskweave: json!({"kind": "cr-mogm", "base": {"kind": "upgrad"}, "alpha": 0.9}),
            torchjd: "Gramian(CRMOGMWeighting(UPGradWeighting(), alpha=0.9))",
            check: Check::Exact { tol: 1e-5 },
            f64_solve: false,
            cases: all,
            calls: 3,
        },
        Pair {
            label: "pcgrad",
            taskweave: json!({"kind": "pcgrad"}),
            torchjd: "PCGrad()",
            check: Check::Exact { tol: 1e-6 },
            f64_solve: false,
            cases: |c| c.t() <= 2,
            calls: 1,
        },
        Pair {
            label: "gradvac",
            taskweave: json!({"kind": "gradvac"}),
            torchjd: "GradVac()",
            check: Check::Exact { tol: 1e-6 },
            f64_solve: false,
            cases: |c| c.t() <= 2,
            calls: 1,
        },
        Pair {
            label: "graddrop",
            taskweave: json!({"kind": "graddrop"}),
            torchjd: "GradDrop()",
            check: Check::Exact { tol: 1e-6 },
            f64_solve: false,
            cases: |c| c.unanimous,
            calls: 1,
        },
    ]
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    Tensor::from_slice(&rows.concat()).reshape([rows.len() as i64, -1])
}

fn created(runtime: &Runtime, table: &Value, t: usize) -> Box<dyn Weighting> {
    let ctx = MethodContext {
        tasks: (0..t).map(|i| format!("task{i}").as_str().into()).collect(),
        device: "cpu".into(),
        seed: 0,
        weighting: table.to_string().as_str().into(),
        ..Default::default()
    };
    let method = runtime
        .create_method(Role::Weighting, table, &ctx)
        .unwrap_or_else(|e| panic!("creating {table}: {e}"));
    method.into_weighting().unwrap()
}

/// The update of the `calls`-th call on the case's matrix (one instance, so
/// stateful methods move on between calls).
fn ours(runtime: &Runtime, table: &Value, case: &Case, calls: usize) -> Vec<f64> {
    let mut weighting = created(runtime, table, case.t());
    let losses = Tensor::ones(
        [case.t() as i64],
        (Kind::Float, taskweave_plugin_api::tch::Device::Cpu),
    );
    let grads = tensor(&case.rows);
    let mut out = None;
    for step in 0..calls {
        out = Some(aggregate(weighting.as_mut(), step as u64, &losses, &grads).unwrap());
    }
    Vec::<f64>::try_from(&out.unwrap().combined.to_kind(Kind::Double)).unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn every_shared_aggregator_agrees_with_torchjd() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let pairs = pairs();
    let named: HashMap<String, Tensor> = cases
        .iter()
        .map(|c| (c.name.clone(), tensor(&c.rows)))
        .collect();
    let named: Vec<(&str, &Tensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, dir.path().join("cases.safetensors")).unwrap();
    let listing: Vec<Value> = pairs
        .iter()
        .map(|p| {
            let names: Vec<&str> = cases
                .iter()
                .filter(|c| (p.cases)(c))
                .map(|c| c.name.as_str())
                .collect();
            json!({"label": p.label, "torchjd": p.torchjd, "cases": names, "calls": p.calls})
        })
        .collect();
    let f64_keys: Vec<String> = pairs
        .iter()
        .filter(|p| p.f64_solve)
        .flat_map(|p| {
            cases
                .iter()
                .filter(|c| c.extreme && (p.cases)(c))
                .map(move |c| format!("{}/{}", p.label, c.name))
        })
        .collect();
    let listing = json!({"pairs": listing, "f64": f64_keys});
    std::fs::write(dir.path().join("pairs.json"), listing.to_string()).unwrap();
    let status = Command::new(workspace().join(".venv/bin/python"))
        .arg(workspace().join("tests/peer/torchjd_aggregate.py"))
        .arg(dir.path())
        .status()
        .expect("running .venv/bin/python (make venv)");
    assert!(status.success(), "the TorchJD side failed: {status}");
    let theirs: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("torchjd.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let runtime = Runtime::new(&Config::new());
    let mut failures = Vec::new();
    let mut compared = 0;
    for pair in &pairs {
        for case in cases.iter().filter(|c| (pair.cases)(c)) {
            let a = ours(&runtime, &pair.taskweave, case, pair.calls);
            let b = Vec::<f64>::try_from(
                &theirs[&format!("{}/{}", pair.label, case.name)].to_kind(Kind::Double),
            )
            .unwrap();
            let size: f64 = case
                .rows
                .iter()
                .map(|r| r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt())
                .sum();
            let (na, nb) = (dot(&a, &a).sqrt(), dot(&b, &b).sqrt());
            let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
            let error = dot(&diff, &diff).sqrt() / size.max(f64::MIN_POSITIVE);
            let cos = if na > 0.0 && nb > 0.0 {
                dot(&a, &b) / (na * nb)
            } else {
                f64::NAN
            };
            let ok = match pair.check {
                Check::Exact { tol } => error <= tol,
                Check::Close {
                    cos: min_cos,
                    ratio,
                } => (na == 0.0 && nb == 0.0) || (cos >= min_cos && (na / nb - 1.0).abs() <= ratio),
                Check::NoWorse => {
                    na <= nb * (1.0 + 1e-6) + 1e-7 * size
                        && (nb == 0.0 || cos >= 0.99 || na <= 1e-3 * size)
                }
            };
            compared += 1;
            if !ok {
                failures.push(format!(
                    "{} on {}: error {error:.2e}, cos {cos:.8}, |ours| {na:.6e}, |torchjd| {nb:.6e} ({:?})",
                    pair.label, case.name, pair.check
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 100, "only {compared} comparisons");
}

/// Weights of one call (f64 gradients).
fn weights_of(weighting: &mut dyn Weighting, step: u64, rows: &[Vec<f32>]) -> Vec<f64> {
    let grads = tensor(rows).to_kind(Kind::Double);
    let losses = Tensor::ones(
        [rows.len() as i64],
        (Kind::Double, taskweave_plugin_api::tch::Device::Cpu),
    );
    let out = aggregate(weighting, step, &losses, &grads).unwrap();
    Vec::<f64>::try_from(&out.weights.unwrap()).unwrap()
}

#[test]
fn cr_mogm_smooths_its_base_and_resumes_exactly() {
    let runtime = Runtime::new(&Config::new());
    let mut rng = SplitMix::at(4, 4);
    let (a, b) = (normal_rows(&mut rng, 4, 20), normal_rows(&mut rng, 4, 20));
    let table = json!({"kind": "cr-mogm", "base": {"kind": "upgrad"}, "alpha": 0.75});
    let mut smoothed = created(&runtime, &table, 4);
    let mut base = created(&runtime, &json!({"kind": "upgrad"}), 4);
    let (first, second) = (
        weights_of(base.as_mut(), 0, &a),
        weights_of(base.as_mut(), 1, &b),
    );
    assert_eq!(weights_of(smoothed.as_mut(), 0, &a), first);
    let state = smoothed.state().unwrap();
    let s2 = weights_of(smoothed.as_mut(), 1, &b);
    for i in 0..4 {
        assert!(
            (s2[i] - (0.75 * first[i] + 0.25 * second[i])).abs() < 1e-12,
            "{s2:?}"
        );
    }
    let mut resumed = created(&runtime, &table, 4);
    resumed.load_state(state).unwrap();
    assert_eq!(weights_of(resumed.as_mut(), 1, &b), s2);
    // A base without per-task weights is refused when it first runs.
    let mut blind = created(
        &runtime,
        &json!({"kind": "cr-mogm", "base": {"kind": "graddrop"}}),
        4,
    );
    let losses = Tensor::ones([4], (Kind::Float, taskweave_plugin_api::tch::Device::Cpu));
    let err = aggregate(blind.as_mut(), 0, &losses, &tensor(&a))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("reports no per-task weights"),
        "{err}"
    );
}
