//! Gradient weightings: they combine the per-task gradients of the shared
//! parameters (a T×P matrix) into one update, working on the T×T Gramian
//! wherever the method allows.
//!
//! | method | config (defaults) | weights reported |
//! |---|---|---|
//! | `pcgrad` | none | column sums of the projection coefficients |
//! | `cagrad` | `c = 0.4`, `rescale = 1` | `(1/T + λw*)/rescale` |
//! | `mgda` | `normalization = "none"` | the min-norm point `w` (sums to 1) |
//! | `imtl-g` | none | `α` (sums to 1) |
//! | `imtl` | `lr = 1e-3` (of the loss scales) | `α̃ e^s` (state: `s`, Adam's moments) |
//! | `nash-mtl` | `max_norm = 1.0`, `update_weights_every = 1`, `optim_niter = 20` | `α`, times the clipping factor |
//! | `upgrad` | `pref_vector = 1/T`, `norm_eps = 1e-4`, `reg_eps = 1e-4` | the summed projection weights |
//! | `dualproj` | as `upgrad` | the projection weights |
//! | `aligned-mtl` | `pref_vector = 1/T`, `scale_mode = "min"` | `σ V Λ^(−1/2) Vᵀ u` |
//! | `config` | `pref_vector = 1` | the coefficients of `d` |
//! | `fairgrad` | `alpha = 1.0`, `max_iters = 100` | `w` |
//! | `gradvac` | `beta = 0.5`, `eps = 1e-8` | column sums of the coefficients |
//! | `krum` | `n_byzantine = 0`, `n_selected = 1` | `1/n_selected` on the selected tasks |
//! | `rgw` | none | `softmax(z)` |
//! | `trimmed-mean` | `trim_number = 1` | none |
//! | `graddrop` | `leak = 0` | none |
//! | `modo` | `gamma = 0.1`, `rho = 0.1`, `double_sampling = true` | `λ` (state) |
//! | `sdmgrad` | `lr = 10`, `momentum = 0.5`, `n_iter = 20`, `lambda = 0.3`, `pref_vector = 1/T`, `double_sampling = true` | `(w + λw̃)/(1 + λ)` |
//! | `excess-mtl` | `robust_step_size = 1`, `n_warmup_steps = 0` | the softmax weights (state) |
//! | `pcd` | `tau = 0.02`, `beta = 0.999`, `eps = 1e-8` | `(1, μ)` scaled |
//! | `cr-mogm` | `base = mgda`, `alpha = 0.9` | the smoothed base weights |
//! | `constant` | `weights = 1` each | `weights` |
//! | `db-mtl` | `beta = 0.9`, `beta_sigma = 0` | the norm-balancing scales (of the tracked gradients) |
//! | `moco` | `beta = 0.5`, `beta_sigma = 0.5`, `gamma = 0.1`, `gamma_sigma = 0.5`, `rho = 0` | `λ` (of the tracked gradients) |
//! | `gradnorm` | `alpha = 1.5`, `lr = 0.025` | `T·softmax(s)` |
//!
//! All but the last three share one path (`combine`): the input is checked
//! (gradients present, shape `[T, P]`, finite values, naming the task
//! otherwise; `graddrop`, `rgw` and `constant` leave the values to the
//! runtime's check of every update, which names the task too), the Gramian `M = G Gᵀ` is formed once (one f32 product for
//! f32 input, as TorchJD does, summed in f64; exact f64 for f64 input and
//! where f32 products would over- or underflow), the method chooses T
//! coefficients `c` from `M` (and the losses) with the small dense f64
//! solvers in `solvers`, and the update is `cᵀG` in the gradients' dtype and
//! device. So only the input T×P matrix ever exists, and every reported
//! weight vector satisfies `update = weightsᵀ G` exactly. `rgw` skips the
//! Gramian; `trimmed-mean` and `graddrop` work entry by entry
//! (`coordinatewise`).
//!
//! All are deterministic functions of their input, the run's seed, the step
//! and (IMTL, Nash-MTL, GradVac, MoDo, SDMGrad, ExcessMTL, PCD, CR-MOGM)
//! their saved state.

mod aligned_mtl;
mod cagrad;
mod combine;
mod conflict_free;
mod coordinatewise;
mod cr_mogm;
mod double_sampling;
mod dual_cone;
mod excess_mtl;
mod fairgrad;
mod gradnorm;
mod gradvac;
mod imtl;
mod krum;
mod mgda;
mod nash;
mod pcd;
mod pcgrad;
mod preference;
mod solvers;
mod tracking;

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{
        context, create, defaults, degenerate, instances, tensor_of, values, weigh,
    };
    use taskweave_plugin_api::method::registered;
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{Device, Kind, Tensor};
    use taskweave_plugin_api::{Role, WeightingInput, WeightingKind};

    const METHODS: [&str; 24] = [
        "pcgrad",
        "cagrad",
        "mgda",
        "imtl-g",
        "imtl",
        "nash-mtl",
        "upgrad",
        "dualproj",
        "aligned-mtl",
        "config",
        "fairgrad",
        "gradvac",
        "krum",
        "rgw",
        "trimmed-mean",
        "graddrop",
        "modo",
        "sdmgrad",
        "excess-mtl",
        "pcd",
        "constant",
        "db-mtl",
        "moco",
        "gradnorm",
    ];

    /// The condition number of the Gramian of `grads` on its numerical span
    /// (the eigenvalues above λ_max·T·ε₃₂, as the solvers keep them).
    fn span_condition(grads: &[Vec<f64>]) -> f64 {
        let (values, _) = super::solvers::symmetric_eigen(&super::testing::gram_of(grads));
        let cut = values[0] * grads.len() as f64 * f32::EPSILON as f64;
        let kept = values.iter().filter(|&&l| l > cut);
        kept.fold(1.0_f64, |c, &l| c.max(values[0] / l))
    }

    /// Krum and the trimmed mean need at least three tasks with their defaults.
    fn fits(name: &str, tasks: usize) -> bool {
        tasks >= 3 || !matches!(name, "krum" | "trimmed-mean")
    }

    /// Whether the method reports per-task weights that reproduce its update
    /// from this step's gradients.
    fn weighs(name: &str) -> bool {
        !matches!(name, "trimmed-mean" | "graddrop" | "db-mtl" | "moco")
    }

    #[test]
    fn every_method_is_registered_with_a_documented_schema() {
        for name in METHODS {
            let method = registered()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(method.manifest().role, Role::Weighting);
            let schema = (method.schema)();
            assert_eq!(schema["type"], "object", "{name}");
            for (key, property) in schema["properties"].as_object().into_iter().flatten() {
                assert!(
                    property.get("default").is_some(),
                    "{name}.{key} has no default"
                );
                assert!(
                    property["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{name}.{key}"
                );
            }
            assert_eq!(
                create(name, defaults(), &context(3, 0)).kind(),
                WeightingKind::Gradient
            );
        }
    }

    #[test]
    fn the_same_input_gives_bitwise_the_same_output() {
        for name in METHODS {
            for (_, grads) in instances().into_iter().step_by(7) {
                if !fits(name, grads.len()) {
                    continue;
                }
                let ctx = context(grads.len(), 5);
                let grads = tensor_of(&grads, Kind::Float);
                let a = weigh(&mut *create(name, defaults(), &ctx), 3, &grads, None).unwrap();
                let b = weigh(&mut *create(name, defaults(), &ctx), 3, &grads, None).unwrap();
                assert!(a.combined.equal(&b.combined), "{name}");
                if weighs(name) {
                    assert!(a.weights.unwrap().equal(&b.weights.unwrap()), "{name}");
                }
            }
        }
    }

    #[test]
    fn the_weights_reproduce_the_update_in_the_input_dtype() {
        for name in METHODS.into_iter().filter(|&name| weighs(name)) {
            for kind in [Kind::BFloat16, Kind::Float, Kind::Double] {
                let (_, grads) = &instances()[5];
                let grads = tensor_of(grads, kind);
                let out = weigh(
                    &mut *create(name, defaults(), &context(3, 0)),
                    0,
                    &grads,
                    None,
                )
                .unwrap();
                assert_eq!(out.combined.kind(), kind, "{name}");
                assert_eq!(out.combined.size(), vec![grads.size()[1]], "{name}");
                let weights = out.weights.unwrap();
                assert_eq!(weights.size(), vec![3], "{name}");
                assert!(out.combined.equal(&weights.matmul(&grads)), "{name}");
            }
        }
    }

    #[test]
    fn cuda_agrees_with_the_cpu() {
        // This binary links only libtorch_cpu: CUDA is absent until the
        // CUDA backend is loaded. scripts/gpu-check.sh runs this test with
        // TASKWEAVE_REQUIRE_GPU=1, which turns the skip into a failure.
        let loaded = taskweave_kernels::load_libtorch_cuda();
        if loaded.is_err() || !taskweave_plugin_api::tch::Cuda::is_available() {
            let required =
                std::env::var("TASKWEAVE_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "TASKWEAVE_REQUIRE_GPU is set, but no CUDA: {loaded:?}"
            );
            eprintln!("skipped: no CUDA ({loaded:?})");
            return;
        }
        let cuda = taskweave_plugin_api::tch::Device::Cuda(0);
        // Every method and instance runs; the failures are listed together.
        let mut failures = Vec::new();
        for name in METHODS {
            for (what, grads) in instances().into_iter().step_by(3) {
                if !fits(name, grads.len()) {
                    continue;
                }
                let ctx = context(grads.len(), 1);
                let cpu = tensor_of(&grads, Kind::Float);
                let gpu = cpu.to_device(cuda);
                let on_cpu = weigh(&mut *create(name, defaults(), &ctx), 2, &cpu, None).unwrap();
                let on_gpu = match weigh(&mut *create(name, defaults(), &ctx), 2, &gpu, None) {
                    Ok(out) => out,
                    Err(e) => {
                        failures.push(format!("{name}, {what}: {e}"));
                        continue;
                    }
                };
                if on_gpu.combined.device() != cuda {
                    failures.push(format!("{name}, {what}: the update left the GPU"));
                    continue;
                }
                let (a, b) = (
                    values(&on_cpu.combined),
                    values(&on_gpu.combined.to_device(Device::Cpu)),
                );
                let scale = a.iter().fold(1e-3_f64, |m, x| m.max(x.abs()));
                // Each device forms the f32 Gramian with its own summation
                // order; a solver on it moves by up to ε₃₂ times the
                // Gramian's condition number (about 1e4 for the nearly
                // collinear rows, where Aligned-MTL differed by 1e-3 on an
                // H200), and the f32 sums of the weighted rows cancel more
                // where the weights are large: both widen the tolerance.
                let terms = on_cpu.weights.as_ref().map_or(0.0, |w| {
                    let w = values(w);
                    (0..grads[0].len())
                        .map(|j| {
                            w.iter()
                                .zip(&grads)
                                .map(|(w, g)| (w * g[j]).abs())
                                .sum::<f64>()
                        })
                        .fold(0.0, f64::max)
                });
                let tol = scale * 1e-3_f64.max(10.0 * f32::EPSILON as f64 * span_condition(&grads))
                    + 1e-5 * terms;
                let diff = super::testing::max_abs_diff(&a, &b);
                if diff >= tol {
                    failures.push(format!("{name}, {what}: {a:?} vs {b:?}"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "CPU and CUDA disagree:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn one_task_gives_its_own_gradient_up_to_the_methods_scaling() {
        let g = vec![vec![0.3, -0.4]];
        for (name, factor) in [
            ("pcgrad", 1.0),
            ("mgda", 1.0),
            ("imtl-g", 1.0),
            ("cagrad", 1.4 / 1.16),
            ("nash-mtl", 1.0),
            ("upgrad", 1.0),
            ("dualproj", 1.0),
            ("aligned-mtl", 1.0),
            ("config", 1.0),
            // w = 1/‖g‖ solves ‖g‖²w = 1/w.
            ("fairgrad", 2.0),
            ("gradvac", 1.0),
            ("rgw", 1.0),
            ("graddrop", 1.0),
            ("modo", 1.0),
            ("sdmgrad", 1.0),
            ("excess-mtl", 1.0),
            ("pcd", 1.0),
            ("constant", 1.0),
            // The average starts at 0: b = (1 − β)·g/(L + 1e-8) with L = 1,
            // scaled by ‖b‖/(‖b‖ + 1e-8), ‖b‖ = 0.05/(1 + 1e-8).
            ("db-mtl", {
                let b = 0.1 / (1.0 + 1e-8);
                let n = 0.5 * b;
                b * n / (n + 1e-8)
            }),
            // y = β·L·g/(‖g‖ + 1e-8) with β = 0.5, L = 1, ‖g‖ = 0.5.
            ("moco", 0.5 / (0.5 + 1e-8)),
            ("gradnorm", 1.0),
            ("imtl", 1.0),
        ] {
            let out = weigh(
                &mut *create(name, defaults(), &context(1, 0)),
                0,
                &tensor_of(&g, Kind::Double),
                None,
            );
            let update = values(&out.unwrap().combined);
            assert!(
                (update[0] - 0.3 * factor).abs() < 1e-12
                    && (update[1] + 0.4 * factor).abs() < 1e-12,
                "{name}: {update:?}"
            );
        }
    }

    #[test]
    fn degenerate_gradients_give_finite_updates() {
        let mut cases = vec![
            vec![vec![0.0, 0.0], vec![0.0, 0.0]],
            vec![vec![1.0, 2.0], vec![0.0, 0.0], vec![-2.0, 1.0]],
            vec![vec![0.0, 0.0, 0.0]],
        ];
        cases.extend(degenerate().into_iter().map(|(_, g)| g));
        for name in METHODS {
            for grads in cases.iter().filter(|g| fits(name, g.len())) {
                for kind in [Kind::Float, Kind::Double] {
                    let mut weighting = create(name, defaults(), &context(grads.len(), 0));
                    for step in 0..2 {
                        let out =
                            weigh(&mut *weighting, step, &tensor_of(grads, kind), None).unwrap();
                        let update = values(&out.combined);
                        let weights = out.weights.as_ref().map(values).unwrap_or_default();
                        assert!(
                            update.iter().chain(&weights).all(|x| x.is_finite()),
                            "{name} {kind:?} {grads:?}: {update:?} {weights:?}"
                        );
                    }
                }
            }
        }
        // With a zero gradient among them, MGDA's min-norm point is 0.
        let mut mgda = create("mgda", defaults(), &context(3, 0));
        let out = weigh(&mut *mgda, 0, &tensor_of(&cases[1], Kind::Float), None).unwrap();
        assert_eq!(values(&out.combined), vec![0.0, 0.0]);
    }

    /// The stateless methods that never form the Gramian: a non-finite
    /// gradient entry gives a non-finite update, not an error.
    const UNCHECKED: [&str; 3] = ["graddrop", "rgw", "constant"];

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for name in METHODS.into_iter().filter(|&name| fits(name, 2)) {
            let mut weighting = create(name, defaults(), &context(2, 0));
            let losses = Tensor::from_slice(&[1.0f32, 1.0]);
            let missing = weighting.weigh(&WeightingInput {
                step: 0,
                losses: &losses,
                grads: None,
                more_grads: &[],
            });
            assert!(missing.is_err(), "{name}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let grads = Tensor::from_slice(&[1.0f32, 0.0, 0.0, bad]).reshape([2, 2]);
                let result = weigh(&mut *weighting, 0, &grads, None);
                if UNCHECKED.contains(&name) {
                    // Left to the runtime's check of the update, which must see it.
                    let update = values(&result.unwrap().combined);
                    assert!(!update[1].is_finite(), "{name} {bad}: {update:?}");
                    continue;
                }
                let err = result
                    .err()
                    .unwrap_or_else(|| panic!("{name} accepted {bad}"))
                    .to_string();
                assert!(
                    err.contains("task `task1` (row 1) has a non-finite gradient"),
                    "{name}: {err}"
                );
            }
            let wrong = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
            assert!(
                weigh(&mut *weighting, 0, &wrong, Some(&losses)).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn resuming_from_a_saved_state_continues_bitwise() {
        // Three steps, a checkpoint, then two more steps: a fresh instance
        // loaded from the checkpoint must give the same updates and weights.
        let family: Vec<_> = instances()
            .into_iter()
            .filter(|(n, _)| n.contains("T=5") && !n.starts_with("low-rank"))
            .collect();
        let losses = Tensor::from_slice(&[0.5f32, 1.0, 1.5, 2.0, 2.5]);
        for name in METHODS {
            let ctx = context(5, 7);
            let mut straight = create(name, defaults(), &ctx);
            for (step, (_, g)) in family.iter().take(3).enumerate() {
                weigh(
                    &mut *straight,
                    step as u64,
                    &tensor_of(g, Kind::Float),
                    Some(&losses),
                )
                .unwrap();
            }
            let mut resumed = create(name, defaults(), &ctx);
            resumed.load_state(straight.state().unwrap()).unwrap();
            for (step, (_, g)) in family.iter().enumerate().skip(3).take(2) {
                let g = tensor_of(g, Kind::Float);
                let a = weigh(&mut *straight, step as u64, &g, Some(&losses)).unwrap();
                let b = weigh(&mut *resumed, step as u64, &g, Some(&losses)).unwrap();
                assert!(a.combined.equal(&b.combined), "{name} step {step}");
                if let (Some(x), Some(y)) = (a.weights, b.weights) {
                    assert!(x.equal(&y), "{name} step {step}");
                }
            }
        }
    }

    #[test]
    fn invalid_options_are_refused_by_the_schema_or_the_config_type() {
        // The host validates every config against the schema before `create`
        // (bounds, enums); what reaches `create` unvalidated still fails on its type.
        let method = |name: &str| registered().find(|m| m.name == name).unwrap();
        let host = taskweave_plugin_api::Host::standalone;
        let ctx = context(2, 0);
        for (name, config) in [
            ("mgda", json!({ "normalization": "max" })),
            ("nash-mtl", json!({ "optim_niter": "many" })),
            ("cagrad", json!({ "rescale": 3 })),
            ("cagrad", json!({ "c": 0.4, "radius": 1 })),
        ] {
            assert!(
                method(name).create(&config, &ctx, &host()).is_err(),
                "{name} accepted {config}"
            );
        }
        let bound = |name: &str, key: &str, bound: &str| {
            (method(name).schema)()["properties"][key][bound].clone()
        };
        assert_eq!(bound("cagrad", "c", "minimum"), json!(0.0));
        assert_eq!(bound("cagrad", "rescale", "enum"), json!([0, 1, 2]));
        assert_eq!(
            bound("nash-mtl", "update_weights_every", "minimum"),
            json!(1)
        );
        assert!(method("pcgrad")
            .create(&json!({}), &context(0, 0), &host())
            .is_err());
    }
}
