//! PCGrad (Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for
//! Multi-Task Learning", NeurIPS 2020).
//!
//! For each task i, the other tasks are visited in a random order; whenever
//! the running `g_i^pc` conflicts with `g_j` (`g_i^pc·g_j < 0`), its component
//! along `g_j` is removed: `g_i^pc −= (g_i^pc·g_j)/‖g_j‖² g_j`. As in the paper
//! (Algorithm 1) and the official code, projections are always against the
//! original, unprojected `g_j`. The update is `Σ_i g_i^pc`.
//!
//! Every `g_i^pc` is a combination `Σ_j C_ij g_j` of the original gradients,
//! and every dot product above is `(C M)_ij` with `M = G Gᵀ`, so the whole
//! algorithm runs on the T×T coefficients and the update is one matmul with
//! the column sums of `C`.
//!
//! The visiting order of step s is a pure function of (seed, s), so a resumed
//! run projects exactly as an uninterrupted one without any saved state.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

use super::combine::{combine, Tasks};
use super::solvers::Matrix;

/// The PCGrad weighting.
struct PcGrad {
    tasks: Tasks,
    seed: u64,
}

impl PcGrad {
    /// For each task, the order in which step `step` visits the other tasks.
    fn orders(&self, step: u64) -> Vec<Vec<usize>> {
        let t = self.tasks.len();
        let mut rng = SplitMix::at(self.seed, step);
        (0..t)
            .map(|i| {
                let mut others: Vec<usize> = (0..t).filter(|&j| j != i).collect();
                rng.shuffle(&mut others);
                others
            })
            .collect()
    }
}

/// The projection coefficients: row i holds `C_i·` with `g_i^pc = Σ_j C_ij g_j`.
fn projections(gram: &Matrix, orders: &[Vec<usize>]) -> Matrix {
    let t = gram.n();
    let mut coef = Matrix::from_fn(t, |i, j| if i == j { 1.0 } else { 0.0 });
    for (i, order) in orders.iter().enumerate() {
        for &j in order {
            let conflict: f64 = (0..t).map(|k| coef[(i, k)] * gram[(k, j)]).sum();
            // A zero g_j gives exactly 0 here, so M_jj > 0 whenever we divide.
            if conflict < 0.0 {
                coef[(i, j)] -= conflict / gram[(j, j)];
            }
        }
    }
    coef
}

impl Weighting for PcGrad {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        combine(input, &self.tasks, |step| {
            let coef = projections(&step.gram, &self.orders(step.step));
            let t = coef.n();
            Ok((0..t).map(|j| (0..t).map(|i| coef[(i, j)]).sum()).collect())
        })
    }
}

fn create(_config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Weighting>> {
    Ok(Box::new(PcGrad {
        tasks: Tasks::new(ctx, host)?,
        seed: ctx.seed,
    }))
}

register_method!(Method::new(
    "pcgrad",
    env!("CARGO_PKG_VERSION"),
    "PCGrad: projects each task gradient off the others it conflicts with, then sums (Yu et al., NeurIPS 2020)",
    schema_for::<NoKeys>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient::solvers::dot;
    use crate::gradient::testing::{
        context, create, gram_of, instances, max_abs_diff, tensor_of, values, weigh,
    };
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn two_conflicting_gradients_end_up_without_conflict() {
        for (name, grads) in instances().into_iter().filter(|(_, g)| g.len() == 2) {
            let m = gram_of(&grads);
            let coef = projections(&m, &[vec![1], vec![0]]);
            for i in 0..2 {
                let j = 1 - i;
                let with_other: f64 = (0..2).map(|k| coef[(i, k)] * m[(k, j)]).sum();
                assert!(
                    with_other >= -1e-12 * m[(i, i)].max(m[(j, j)]),
                    "{name}: g_{i}^pc·g_{j} = {with_other}"
                );
                if m[(0, 1)] < 0.0 {
                    // Projected exactly onto the normal plane of the other gradient.
                    assert!(
                        with_other.abs() <= 1e-12 * m[(i, i)].max(m[(j, j)]),
                        "{name}: {with_other}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_conflicting_gradients_are_summed() {
        let grads = vec![
            vec![1.0, 0.0, 1.0],
            vec![0.5, 2.0, 0.0],
            vec![0.0, 1.0, 0.1],
        ];
        let mut pcgrad = create("pcgrad", json!({}), &context(3, 7));
        let out = weigh(&mut *pcgrad, 4, &tensor_of(&grads, Kind::Double), None).unwrap();
        assert_eq!(values(&out.weights.unwrap()), vec![1.0, 1.0, 1.0]);
        assert_eq!(values(&out.combined), vec![1.5, 3.0, 1.1]);
    }

    /// PCGrad done the textbook way, on the P-dimensional vectors.
    fn reference(grads: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<f64> {
        let mut update = vec![0.0; grads[0].len()];
        for (i, order) in orders.iter().enumerate() {
            let mut g = grads[i].clone();
            for &j in order {
                let conflict = dot(&g, &grads[j]);
                if conflict < 0.0 {
                    let scale = conflict / dot(&grads[j], &grads[j]);
                    g.iter_mut()
                        .zip(&grads[j])
                        .for_each(|(x, y)| *x -= scale * y);
                }
            }
            update.iter_mut().zip(&g).for_each(|(u, x)| *u += x);
        }
        update
    }

    #[test]
    fn matches_the_textbook_algorithm_with_the_same_orders() {
        for (name, grads) in instances() {
            let t = grads.len();
            let pcgrad = PcGrad {
                tasks: Tasks::named((0..t).map(|i| i.to_string()).collect()),
                seed: 11,
            };
            let mut weighting = create("pcgrad", json!({}), &context(t, 11));
            for step in [0, 1, 17] {
                let expected = reference(&grads, &pcgrad.orders(step));
                let out = weigh(
                    &mut *weighting,
                    step,
                    &tensor_of(&grads, Kind::Double),
                    None,
                )
                .unwrap();
                let scale = expected.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
                let diff = max_abs_diff(&values(&out.combined), &expected);
                assert!(diff < 1e-10 * scale, "{name}, step {step}: off by {diff}");
            }
        }
    }

    #[test]
    fn orders_depend_on_seed_and_step_only() {
        let pcgrad = |seed| PcGrad {
            tasks: Tasks::named((0..5).map(|i| i.to_string()).collect()),
            seed,
        };
        assert_eq!(pcgrad(3).orders(8), pcgrad(3).orders(8));
        let distinct: std::collections::HashSet<_> = (0..20).map(|s| pcgrad(3).orders(s)).collect();
        assert!(distinct.len() > 10, "orders barely change with the step");
        for (i, order) in pcgrad(3).orders(2).iter().enumerate() {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..5).filter(|&j| j != i).collect::<Vec<_>>());
        }
    }
}
