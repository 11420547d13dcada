//! The plumbing every gradient weighting shares: check the input, reduce the
//! T×P gradients to their T×T Gramian in f64, let the method choose one
//! coefficient per task in plain Rust, and return the update `cᵀG`.
//!
//! Working on the Gramian keeps exactly one T×P matrix in memory (the input):
//! the methods' projections, rescalings and normalisations all become
//! operations on T×T numbers and on the T coefficients.

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Error, MethodContext, Result, WeightingInput, WeightingOutput};

use super::solvers::Matrix;

/// How many gradient entries are converted to f64 at a time while forming the
/// Gramian: the f64 copy of a chunk stays at 64 MiB whatever P is.
const CHUNK_ELEMENTS: i64 = 1 << 23;

/// One step's input as the methods see it, everything in f64 on the CPU.
pub(super) struct Step<'a> {
    /// The training step.
    pub step: u64,
    /// The Gramian `M = G Gᵀ` of the per-task gradients, symmetric.
    pub gram: Matrix,
    /// The per-task losses.
    pub losses: Vec<f64>,
    /// The task names, for error messages.
    pub tasks: &'a [String],
}

impl Step<'_> {
    /// Names task `i` in an error message.
    pub fn task(&self, i: usize) -> String {
        task_label(self.tasks, i)
    }

    /// The tasks whose gradient is not exactly zero: the rows a method that
    /// normalises by the gradient norm can use.
    pub fn nonzero_rows(&self) -> Vec<usize> {
        (0..self.gram.n())
            .filter(|&i| self.gram[(i, i)] > 0.0)
            .collect()
    }
}

fn task_label(tasks: &[String], i: usize) -> String {
    format!("task `{}` (row {i})", tasks[i])
}

/// Runs one gradient weighting: validates `input` against `tasks`, builds the
/// [`Step`], asks `coefficients` for one coefficient per task, and returns the
/// update `Σ_i c_i g_i` (shape `[P]`, the gradients' dtype and device) with
/// the coefficients as the weights.
pub(super) fn combine(
    input: &WeightingInput<'_>,
    tasks: &[String],
    coefficients: impl FnOnce(&Step<'_>) -> Result<Vec<f64>>,
) -> Result<WeightingOutput> {
    let grads = input.grads.ok_or_else(|| {
        Error::msg("a gradient weighting needs the per-task gradients, but got none")
    })?;
    let t = tasks.len();
    let shape = grads.size();
    if shape.len() != 2 || shape[0] != t as i64 {
        return Err(Error::msg(format!(
            "gradients must have shape [{t}, P], one row per task, got {shape:?}"
        )));
    }
    let kind = grads.f_kind()?;
    if !grads.f_is_floating_point()? {
        return Err(Error::msg(format!(
            "gradients must be floating point, got {kind:?}"
        )));
    }
    let losses = input.losses.size();
    if losses != [t as i64] {
        return Err(Error::msg(format!(
            "losses must have shape [{t}], one per task, got {losses:?}"
        )));
    }
    let losses = Vec::<f64>::try_from(&input.losses.f_detach()?.f_to_kind(Kind::Double)?)?;
    if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
        return Err(Error::msg(format!(
            "{} has a non-finite loss ({})",
            task_label(tasks, i),
            losses[i]
        )));
    }
    let gram = gramian(grads, CHUNK_ELEMENTS)?;
    // A NaN or infinite entry makes its row's squared norm NaN or infinite,
    // and |M_ij| ≤ sqrt(M_ii M_jj): checking the diagonal checks everything.
    if let Some(i) = (0..t).find(|&i| !gram[(i, i)].is_finite()) {
        return Err(Error::msg(format!(
            "{} has a non-finite gradient (NaN or infinite entries, or a squared norm beyond f64)",
            task_label(tasks, i)
        )));
    }
    let step = Step {
        step: input.step,
        gram,
        losses,
        tasks,
    };
    let coefficients = coefficients(&step)?;
    if coefficients.len() != t || coefficients.iter().any(|c| !c.is_finite()) {
        return Err(Error::msg(format!(
            "internal error: the method produced invalid coefficients {coefficients:?}"
        )));
    }
    let weights = Tensor::f_from_slice(&coefficients)?
        .f_to_kind(kind)?
        .f_to_device(grads.device())?;
    let combined = weights.f_matmul(&grads.f_detach()?)?;
    Ok(WeightingOutput {
        combined,
        weights: Some(weights),
    })
}

/// `G Gᵀ` in f64, accumulated over column chunks of about `chunk_elements`
/// entries so that no f64 copy of the whole T×P matrix is ever made, then
/// symmetrised (a matmul's two triangles may round differently, and the
/// solvers assume exact symmetry).
fn gramian(grads: &Tensor, chunk_elements: i64) -> Result<Matrix> {
    let (t, p) = grads.size2()?;
    let width = (chunk_elements / t.max(1)).max(1);
    let mut gram = Tensor::f_zeros([t, t], (Kind::Double, grads.device()))?;
    let mut start = 0;
    while start < p {
        let len = width.min(p - start);
        let chunk = grads
            .f_narrow(1, start, len)?
            .f_detach()?
            .f_to_kind(Kind::Double)?;
        gram = gram.f_addmm(&chunk, &chunk.f_tr()?)?;
        start += len;
    }
    let flat = Vec::<f64>::try_from(&gram.f_reshape([-1])?)?;
    let t = t as usize;
    Ok(Matrix::from_fn(t, |i, j| {
        0.5 * (flat[i * t + j] + flat[j * t + i])
    }))
}

/// The task names of `ctx`; a gradient weighting needs at least one task.
pub(super) fn task_names(ctx: &MethodContext) -> Result<Vec<String>> {
    if ctx.tasks.is_empty() {
        return Err(Error::msg("a gradient weighting needs at least one task"));
    }
    Ok(ctx.tasks.iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient::testing::{gram_of, random_grads, tensor_of};
    use taskweave_plugin_api::rng::SplitMix;

    fn run(grads: Option<&Tensor>, losses: &Tensor) -> Result<WeightingOutput> {
        let tasks = vec!["seg".to_string(), "depth".to_string()];
        combine(
            &WeightingInput {
                step: 0,
                losses,
                grads,
            },
            &tasks,
            |_| Ok(vec![1.0, 2.0]),
        )
    }

    #[test]
    fn the_update_is_the_coefficients_times_the_gradients() {
        let grads = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
        let out = run(Some(&grads), &Tensor::from_slice(&[0.5f32, 0.25])).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&out.combined).unwrap(),
            vec![9.0, 12.0, 15.0]
        );
        assert_eq!(
            Vec::<f32>::try_from(&out.weights.unwrap()).unwrap(),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn the_gramian_is_exact_across_chunks_and_dtypes() {
        let mut rng = SplitMix::at(9, 0);
        let rows = random_grads(&mut rng, 3, 999);
        let expected = gram_of(&rows);
        for kind in [Kind::Float, Kind::Double] {
            let grads = tensor_of(&rows, kind);
            // 7 entries: chunks of 2 columns, the last one of 1.
            let gram = gramian(&grads, 7).unwrap();
            for i in 0..3 {
                for j in 0..3 {
                    let tol = if kind == Kind::Double { 1e-10 } else { 1e-4 } * expected[(i, i)];
                    assert!(
                        (gram[(i, j)] - expected[(i, j)]).abs() < tol,
                        "{kind:?} ({i}, {j})"
                    );
                    assert_eq!(gram[(i, j)], gram[(j, i)]);
                }
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_naming_the_problem() {
        let losses = Tensor::from_slice(&[0.5f32, 0.25]);
        let err =
            |grads: Option<&Tensor>, losses: &Tensor| run(grads, losses).err().unwrap().to_string();
        assert!(err(None, &losses).contains("needs the per-task gradients"));
        let wrong = Tensor::zeros(
            [3, 4],
            (Kind::Float, taskweave_plugin_api::tch::Device::Cpu),
        );
        assert!(err(Some(&wrong), &losses).contains("shape [2, P]"));
        let ints = Tensor::from_slice(&[1i64, 2, 3, 4]).reshape([2, 2]);
        assert!(err(Some(&ints), &losses).contains("floating point"));
        let grads = Tensor::from_slice(&[1.0f32, 2.0, f32::NAN, 4.0]).reshape([2, 2]);
        assert!(
            err(Some(&grads), &losses).contains("task `depth` (row 1) has a non-finite gradient")
        );
        let grads = Tensor::from_slice(&[f32::INFINITY, 2.0, 3.0, 4.0]).reshape([2, 2]);
        assert!(err(Some(&grads), &losses).contains("task `seg` (row 0) has a non-finite gradient"));
        let fine = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let nan_loss = Tensor::from_slice(&[f32::NAN, 0.25]);
        assert!(err(Some(&fine), &nan_loss).contains("task `seg` (row 0) has a non-finite loss"));
        assert!(
            err(Some(&fine), &Tensor::from_slice(&[1.0f32])).contains("losses must have shape [2]")
        );
    }
}
