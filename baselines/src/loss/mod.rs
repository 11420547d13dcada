//! Loss weightings: they combine the per-task losses into one scalar loss.

mod dwa;
mod ew;
mod famo;
mod gls;
mod imtl_l;
mod stch;
mod uw;

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Result, WeightingOutput};

/// `Σ_t w_t L_t` with constant weights `w`, reported as the task weights.
fn weighted_sum(losses: &Tensor, weights: &[f64]) -> Result<WeightingOutput> {
    let w = Tensor::from_slice(weights)
        .f_to_kind(losses.kind())?
        .f_to_device(losses.device())?;
    let loss = losses
        .f_mul(&w)?
        .f_sum(Kind::Float)?
        .f_to_kind(losses.kind())?;
    Ok(WeightingOutput {
        combined: loss,
        weights: Some(w),
    })
}

/// The losses' values, detached, as f64 on the CPU.
fn values(losses: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        losses
            .f_detach()?
            .f_to_kind(Kind::Double)?
            .f_to_device(taskweave_plugin_api::tch::Device::Cpu)?,
    )?)
}

/// Fails naming the first task whose loss is not positive, for the methods
/// that take logarithms of the losses: an input error (the pipeline's
/// losses, or `call`'s file, do not suit the method).
pub(crate) fn check_positive(method: &str, losses: &[f64]) -> Result<()> {
    match losses.iter().position(|&l| !(l > 0.0 && l.is_finite())) {
        Some(i) => Err(taskweave_plugin_api::Error::input(format!(
            "{method} takes the logarithm of every loss, but task {i}'s loss is {}: it needs positive, finite losses",
            losses[i]
        ))),
        None => Ok(()),
    }
}

fn num_tasks(losses: &Tensor) -> usize {
    losses.size().first().copied().unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, values};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::{Kind, Tensor};
    use taskweave_plugin_api::{Weighting, WeightingInput};

    /// The combined loss, the reported weights and the autograd gradient of
    /// the combined loss with respect to each task loss.
    fn run(weighting: &mut dyn Weighting, step: u64, losses: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let l = Tensor::from_slice(losses).set_requires_grad(true);
        let out = weighting
            .weigh(&WeightingInput {
                step,
                losses: &l,
                grads: None,
                more_grads: &[],
            })
            .unwrap();
        out.combined.backward();
        (
            out.combined.double_value(&[]),
            values(&out.weights.unwrap()),
            values(&l.grad()),
        )
    }

    #[test]
    fn gls_is_the_geometric_mean_and_reports_its_gradient() {
        let mut gls = create("gls", json!({}), &context(3, 0));
        let (loss, weights, grads) = run(&mut *gls, 0, &[1.0, 8.0, 27.0]);
        assert!((loss - 6.0).abs() < 1e-5, "{loss}");
        for (w, g) in weights.iter().zip(&grads) {
            assert!((w - g).abs() < 1e-6, "{weights:?} vs {grads:?}");
        }
        let err = gls
            .weigh(&WeightingInput {
                step: 1,
                losses: &Tensor::from_slice(&[1.0f32, 0.0, 2.0]),
                grads: None,
                more_grads: &[],
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("task 1's loss is 0"), "{err}");
    }

    #[test]
    fn imtl_l_drives_every_scaled_loss_to_one() {
        let mut imtl = create("imtl-l", json!({}), &context(2, 0));
        let mut params = imtl.parameters().unwrap();
        let mut log_scale = params.remove(0).1;
        let losses = [4.0, 0.25];
        for step in 0..2000 {
            let l = Tensor::from_slice(&losses).to_kind(Kind::Float);
            let out = imtl
                .weigh(&WeightingInput {
                    step,
                    losses: &l,
                    grads: None,
                    more_grads: &[],
                })
                .unwrap();
            out.combined.backward();
            let step = log_scale.grad().f_mul_scalar(0.05).unwrap();
            taskweave_plugin_api::tch::no_grad(|| {
                let _ = log_scale.f_sub_(&step);
            });
            let _ = log_scale.grad().f_zero_();
        }
        let scales = values(&log_scale.exp());
        assert!(
            (scales[0] * 4.0 - 1.0).abs() < 1e-3 && (scales[1] * 0.25 - 1.0).abs() < 1e-3,
            "{scales:?}"
        );
    }

    #[test]
    fn stch_calibrates_then_focuses_on_the_worst_normalised_task() {
        let mut stch = create(
            "stch",
            json!({ "mu": 0.01, "warmup": 1, "nadir_steps": 2 }),
            &context(2, 0),
        );
        for step in 0..3 {
            let (_, _, grads) = run(&mut *stch, step, &[2.0, 4.0]);
            assert!((grads[0] - 0.5).abs() < 1e-9 && (grads[1] - 0.25).abs() < 1e-9);
        }
        // Nadir (2, 4): task 1 at 2× its nadir is the worst; μ small: it takes
        // all the weight, T·1 on its log-loss, 2/8 on its loss.
        let (_, weights, grads) = run(&mut *stch, 3, &[2.0, 8.0]);
        assert!(
            (weights[1] - 2.0 / 8.0).abs() < 1e-6 && weights[0] < 1e-6,
            "{weights:?}"
        );
        assert!((grads[1] - 2.0 / 8.0).abs() < 1e-6, "{grads:?}");
        let mut resumed = create(
            "stch",
            json!({ "mu": 0.01, "warmup": 1, "nadir_steps": 2 }),
            &context(2, 0),
        );
        resumed.load_state(stch.state().unwrap()).unwrap();
        assert_eq!(
            run(&mut *resumed, 4, &[3.0, 4.0]).1,
            run(&mut *stch, 4, &[3.0, 4.0]).1
        );
    }

    /// The weights a loss weighting reports are what each task's gradient
    /// row is scaled by when it aggregates gradients (`call weighting`,
    /// SAM-MTL's aggregator): the gradient of its combined loss with
    /// respect to each task loss, before and after a stateful one's
    /// calibration.
    #[test]
    fn every_loss_weighting_reports_the_gradient_of_its_loss_as_its_weights() {
        for (name, config) in [
            ("ew", json!({})),
            ("uw", json!({ "init": 0.3 })),
            ("dwa", json!({ "window": 2 })),
            ("gls", json!({})),
            ("famo", json!({})),
            ("imtl-l", json!({})),
            ("stch", json!({ "warmup": 1, "nadir_steps": 2 })),
        ] {
            let mut method = create(name, config, &context(3, 0));
            for step in 0..6 {
                let losses = [0.5 + 0.1 * step as f64, 2.0 / (1.0 + step as f64), 1.5];
                let (_, weights, grads) = run(&mut *method, step, &losses);
                for (w, g) in weights.iter().zip(&grads) {
                    assert!(
                        (w - g).abs() <= 1e-5 * g.abs().max(1e-3),
                        "{name} step {step}: weights {weights:?}, gradient {grads:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn stateful_loss_weightings_resume_bitwise() {
        for (name, config) in [
            ("famo", json!({})),
            ("stch", json!({ "nadir_steps": 2 })),
            ("dwa", json!({ "window": 2 })),
        ] {
            let mut straight = create(name, config.clone(), &context(3, 0));
            let losses = |k: u64| [1.0 + 0.1 * k as f64, 2.0 / (1.0 + k as f64), 0.5];
            for step in 0..4 {
                run(&mut *straight, step, &losses(step));
            }
            let mut resumed = create(name, config, &context(3, 0));
            resumed.load_state(straight.state().unwrap()).unwrap();
            for step in 4..7 {
                let a = run(&mut *straight, step, &losses(step));
                let b = run(&mut *resumed, step, &losses(step));
                assert_eq!(a.0.to_bits(), b.0.to_bits(), "{name} step {step}");
                assert_eq!(a.1, b.1, "{name} step {step}");
            }
        }
    }

    #[test]
    fn famo_shifts_weight_to_the_task_whose_loss_stalls() {
        let mut famo = create("famo", json!({}), &context(2, 0));
        let mut weights = vec![];
        for step in 0..50 {
            // Task 0 stalls at 1.0; task 1 falls by 5% a step.
            let losses = [1.0, 0.95f64.powi(step as i32)];
            let (_, w, grads) = run(&mut *famo, step, &losses);
            for (a, b) in w.iter().zip(&grads) {
                assert!(
                    (a - b).abs() < 1e-6 * a.abs().max(1.0),
                    "{w:?} vs {grads:?}"
                );
            }
            weights = w;
        }
        // The weights on the log-losses are z/c; task 0's share must have grown.
        let share0 = weights[0] * 1.0 / (weights[0] * 1.0 + weights[1] * 0.95f64.powi(49));
        assert!(share0 > 0.6, "{weights:?}");
    }
}
