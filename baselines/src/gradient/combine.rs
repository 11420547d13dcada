//! The plumbing every gradient weighting shares: check the input, reduce the
//! T×P gradients to their T×T Gramian (f64 accumulation), let the method
//! choose one coefficient per task in plain Rust, and return the update `cᵀG`.
//!
//! Working on the Gramian keeps exactly one T×P matrix in memory (the input):
//! the methods' projections, rescalings and normalisations all become
//! operations on T×T numbers and on the T coefficients.

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Error, Host, MethodContext, Result, WeightingInput, WeightingOutput};

use super::solvers::Matrix;

/// The relative rounding of a Gramian formed from f32 products: one f32
/// `[T, P]×[P, T]` product (as TorchJD and plain PyTorch form it, and the
/// fastest way to), whose entries are then solved on in f64. BLAS sums each
/// entry in blocks, so its error is typically `sqrt(P)·ε₃₂` of the terms,
/// well inside the precision of f32 gradients themselves.
pub(super) const F32_ROUNDING: f64 = f32::EPSILON as f64;

/// How many gradient entries are converted to f64 at a time on the exact path
/// (a block overflowed f32): the f64 copy of a chunk stays at 64 MiB.
const CHUNK_ELEMENTS: i64 = 1 << 23;

/// One step's input as the methods see it, everything in f64 on the CPU.
pub(super) struct Step<'a> {
    /// The training step.
    pub step: u64,
    /// The Gramian `M = G Gᵀ` of the per-task gradients, symmetric.
    pub gram: Matrix,
    /// The unit rounding of the products `gram` was summed from (f32's or
    /// f64's epsilon): solvers that need `gram` positive semi-definite add a
    /// ridge of this order, which covers its rounding.
    pub rounding: f64,
    /// The number of columns of G (shared parameters).
    pub params: usize,
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

/// The tasks a Gramian-based weighting combines, and the host whose kernels
/// form their Gramian (on CUDA a kernel that was 4–14× faster than cuBLAS's
/// f32 product on an H200; an f32 product elsewhere). Reads as the task names.
pub(super) struct Tasks {
    names: Vec<String>,
    host: Host,
}

impl Tasks {
    /// The pipeline's tasks (at least one), with `host`.
    pub fn new(ctx: &MethodContext, host: &Host) -> Result<Tasks> {
        Ok(Tasks {
            names: task_names(ctx)?,
            host: host.clone(),
        })
    }

    /// Tasks `names` with a standalone host (plain libtorch), for unit tests.
    #[cfg(test)]
    pub fn named(names: Vec<String>) -> Tasks {
        Tasks {
            names,
            host: Host::standalone(),
        }
    }
}

impl std::ops::Deref for Tasks {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.names
    }
}

/// Runs one gradient weighting: validates `input` against `tasks`, builds the
/// [`Step`], asks `coefficients` for one coefficient per task, and returns the
/// update `Σ_i c_i g_i` (shape `[P]`, the gradients' dtype and device) with
/// the coefficients as the weights.
pub(super) fn combine(
    input: &WeightingInput<'_>,
    tasks: &Tasks,
    coefficients: impl FnOnce(&Step<'_>) -> Result<Vec<f64>>,
) -> Result<WeightingOutput> {
    let (grads, losses) = checked(input, tasks)?;
    let t = tasks.len();
    let (gram, rounding) = gramian(grads, &tasks.host)?;
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
        rounding,
        params: grads.size2()?.1 as usize,
        losses,
        tasks,
    };
    let coefficients = coefficients(&step)?;
    if coefficients.len() != t || coefficients.iter().any(|c| !c.is_finite()) {
        return Err(Error::msg(format!(
            "internal error: the method produced invalid coefficients {coefficients:?}"
        )));
    }
    weighted(grads, &coefficients)
}

/// The update `Σ_i c_i g_i` in the gradients' dtype and device, with the
/// coefficients as the reported weights.
pub(super) fn weighted(grads: &Tensor, coefficients: &[f64]) -> Result<WeightingOutput> {
    // Built in the gradients' dtype where it is f32 (the common case): no cast.
    let weights = match grads.f_kind()? {
        Kind::Float => {
            let narrow: Vec<f32> = coefficients.iter().map(|&c| c as f32).collect();
            Tensor::f_from_slice(&narrow)?
        }
        kind => Tensor::f_from_slice(coefficients)?.f_to_kind(kind)?,
    }
    .f_to_device(grads.device())?;
    let grads = grads.f_detach()?;
    // A row with a zero coefficient is never read: it adds nothing (so a
    // task Constant weighs 0 does not count even with a NaN row), and where
    // most coefficients are zero (Krum's selected rows) the others are all
    // that is read.
    let used: Vec<i64> = (0..coefficients.len() as i64)
        .filter(|&i| coefficients[i as usize] != 0.0)
        .collect();
    let combined = match used.as_slice() {
        [] => grads.f_select(0, 0)?.f_zeros_like()?,
        [i] => grads.f_select(0, *i)?.f_mul(&weights.f_get(*i)?)?,
        some if some.len() < coefficients.len() => {
            let rows = Tensor::f_from_slice(some)?.f_to_device(grads.device())?;
            weights
                .f_index_select(0, &rows)?
                .f_matmul(&grads.f_index_select(0, &rows)?)?
        }
        _ => weights.f_matmul(&grads)?,
    };
    Ok(WeightingOutput {
        combined,
        weights: Some(weights),
    })
}

/// The gradients and losses of `input`, checked against `tasks`: gradients
/// present, floating point, shape `[T, P]`; losses `[T]` and finite. Finite
/// gradients are checked where the method reads them (the Gramian's diagonal,
/// or [`check_finite_rows`]).
pub(super) fn checked<'a>(
    input: &WeightingInput<'a>,
    tasks: &[String],
) -> Result<(&'a Tensor, Vec<f64>)> {
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
    Ok((grads, losses))
}

/// Fails naming the first task whose gradient has a NaN or infinite entry,
/// for the methods that never form the Gramian. Row maxima and minima
/// propagate NaN and keep ±∞, and cost two reductions (a boolean
/// `isfinite().all()` costs about twenty times more on the CPU).
pub(super) fn check_finite_rows(grads: &Tensor, tasks: &[String]) -> Result<()> {
    let to_vec =
        |t: Tensor| -> Result<Vec<f64>> { Ok(Vec::<f64>::try_from(&t.f_to_kind(Kind::Double)?)?) };
    let largest = to_vec(grads.f_amax([1].as_slice(), false)?)?;
    let smallest = to_vec(grads.f_amin([1].as_slice(), false)?)?;
    match (0..tasks.len()).find(|&i| !(largest[i].is_finite() && smallest[i].is_finite())) {
        Some(i) => Err(Error::msg(format!(
            "{} has a non-finite gradient (NaN or infinite entries)",
            task_label(tasks, i)
        ))),
        None => Ok(()),
    }
}

/// `update` if it is finite; otherwise the error naming the first task with
/// a non-finite gradient, found only then. For the stateful methods that
/// never form the Gramian (their state must not keep a NaN: a step skipped
/// by the runtime's `on_nonfinite` policy would not undo it), whose update
/// is non-finite whenever an input entry is. A non-finite update from finite
/// gradients (an f32 overflow) is returned as it is, for that policy.
pub(super) fn finite_or_named(
    update: WeightingOutput,
    grads: &Tensor,
    tasks: &[String],
) -> Result<WeightingOutput> {
    // One BLAS dot (cheaper than a sum reduction): finite unless an entry is
    // not (or the squares overflow, which only costs the row check).
    let total = update
        .combined
        .f_dot(&update.combined)?
        .f_double_value(&[])?;
    if !total.is_finite() {
        check_finite_rows(grads, tasks)?;
    }
    Ok(update)
}

/// Below this, a squared norm summed from f32 products may have lost digits
/// to subnormal underflow (`f32::MIN_POSITIVE / f32::EPSILON`, about 1e-31).
const F32_UNDERFLOW: f64 = 1.1754944e-38 / 1.1920929e-7;

/// `G Gᵀ` and the unit rounding of its products: for f32, bf16 and f16
/// input the host's Gramian (an f32 product of the f32 values, or on CUDA a
/// kernel summing them in f64: f32 accuracy or better either way), in f64
/// for f64, symmetrised (a matmul's two triangles may round differently, and
/// the solvers assume exact symmetry). Where f32 products overflow (entries
/// beyond about 1e19) or underflow (a non-zero row whose entries are all
/// below about 1e-19), the Gramian is formed again exactly in f64 chunks, so
/// only NaN or infinite gradients give a non-finite diagonal and tiny
/// gradients keep their directions.
fn gramian(grads: &Tensor, host: &Host) -> Result<(Matrix, f64)> {
    let t = grads.size2()?.0;
    let exact = || blockwise(grads, (CHUNK_ELEMENTS / t.max(1)).max(1));
    if grads.f_kind()? == Kind::Double {
        return Ok((exact()?, f64::EPSILON));
    }
    let gram = symmetrised(&host.gramian(&grads.f_detach()?)?, t as usize)?;
    for i in 0..gram.n() {
        let d = gram[(i, i)];
        let lost = d.is_infinite()
            || (d < F32_UNDERFLOW
                && grads
                    .f_select(0, i as i64)?
                    .f_abs()?
                    .f_max()?
                    .f_double_value(&[])?
                    > 0.0);
        if lost {
            return Ok((exact()?, f64::EPSILON));
        }
    }
    Ok((gram, F32_ROUNDING))
}

/// `G Gᵀ` exactly in f64, over column blocks of `width`, symmetrised.
fn blockwise(grads: &Tensor, width: i64) -> Result<Matrix> {
    let t = grads.size2()?.0 as usize;
    let flat = blockwise_product(grads, grads, width, Kind::Double)?;
    Ok(symmetric(&flat, t))
}

/// The `[t, t]` tensor `gram` as a symmetric f64 matrix.
fn symmetrised(gram: &Tensor, t: usize) -> Result<Matrix> {
    let flat = Vec::<f64>::try_from(&gram.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
    Ok(symmetric(&flat, t))
}

/// The mean of the row-major `t × t` entries `flat` and their transpose.
fn symmetric(flat: &[f64], t: usize) -> Matrix {
    Matrix::from_fn(t, |i, j| 0.5 * (flat[i * t + j] + flat[j * t + i]))
}

/// `A Bᵀ` (both `[T, P]`) summed in f64 over column blocks of `width`, each
/// block's product computed in `precision`: the `T × T` entries, row-major.
fn blockwise_product(a: &Tensor, b: &Tensor, width: i64, precision: Kind) -> Result<Vec<f64>> {
    let (t, p) = a.size2()?;
    let (a, b) = (a.f_detach()?, b.f_detach()?);
    let mut sum = Tensor::f_zeros([t, t], (Kind::Double, a.device()))?;
    let mut start = 0;
    while start < p {
        let len = width.min(p - start);
        let left = a.f_narrow(1, start, len)?.f_to_kind(precision)?;
        let right = b.f_narrow(1, start, len)?.f_to_kind(precision)?;
        let product = left.f_matmul(&right.f_tr()?)?;
        sum = sum.f_add(&product.f_to_kind(Kind::Double)?)?;
        start += len;
    }
    Ok(Vec::<f64>::try_from(&sum.f_reshape([-1])?)?)
}

/// The cross-Gramian `A Bᵀ` of the per-task gradients of two independent
/// batches (not symmetric; its expectation is the Gramian of the expected
/// gradients, which `G Gᵀ` of one batch overestimates by the noise): one
/// product in the gradients' precision as [`gramian`], again exactly in f64
/// chunks where f32 overflowed. Both must be `[T, P]` like the step's
/// gradients `like`; a non-finite entry fails naming its task.
pub(super) fn cross_gramian(
    a: &Tensor,
    b: &Tensor,
    like: &Tensor,
    tasks: &[String],
) -> Result<Matrix> {
    for g in [a, b] {
        if g.size() != like.size() {
            return Err(Error::msg(format!(
                "the gradients of an extra batch have shape {:?}, those of the step's batch {:?}",
                g.size(),
                like.size()
            )));
        }
    }
    let (t, p) = a.size2()?;
    let precision = match a.f_kind()? {
        Kind::Double => Kind::Double,
        _ => Kind::Float,
    };
    let mut flat = blockwise_product(a, b, p.max(1), precision)?;
    if flat.iter().any(|x| !x.is_finite()) {
        check_finite_rows(a, tasks)?;
        check_finite_rows(b, tasks)?;
        flat = blockwise_product(a, b, (CHUNK_ELEMENTS / t.max(1)).max(1), Kind::Double)?;
    }
    let t = t as usize;
    Ok(Matrix::from_fn(t, |i, j| flat[i * t + j]))
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
        let tasks = Tasks::named(vec!["seg".to_string(), "depth".to_string()]);
        combine(
            &WeightingInput {
                step: 0,
                losses,
                grads,
                more_grads: &[],
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
    fn zero_coefficients_leave_their_rows_unread_and_the_rest_agree_with_the_product() {
        let mut rng = SplitMix::at(3, 0);
        for kind in [Kind::Float, Kind::Double] {
            let grads = tensor_of(&random_grads(&mut rng, 7, 1000), kind);
            for coefficients in [
                vec![0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0],
                vec![0.0, 1.5, 0.0, 0.0, -0.25, 0.0, 0.0],
                vec![0.0, 1.5, 2.0, 0.0, -0.25, 0.0, 0.0],
                vec![1.0, 1.5, 2.0, 0.0, -0.25, 0.0, 3.0],
                vec![0.0; 7],
            ] {
                let out = weighted(&grads, &coefficients).unwrap();
                let dense = out.weights.as_ref().unwrap().matmul(&grads);
                let err = (&out.combined - &dense).abs().max().double_value(&[]);
                let scale = dense.abs().max().double_value(&[]).max(1.0);
                assert!(err <= 1e-6 * scale, "{kind:?} {coefficients:?}: {err}");
                assert_eq!(out.combined.size(), [1000]);
                assert_eq!(out.combined.kind(), kind);
            }
            // One row: exactly that row times its coefficient.
            let one = weighted(&grads, &[0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]).unwrap();
            assert!(one.combined.equal(&(grads.get(2) * 0.5)));
            // A NaN in a row weighed 0 never reaches the update.
            let _ = grads.get(3).get(5).fill_(f64::NAN);
            for coefficients in [
                vec![1.0, 1.5, 2.0, 0.0, -0.25, 0.0, 3.0],
                vec![0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0],
                vec![0.0; 7],
            ] {
                let out = weighted(&grads, &coefficients).unwrap();
                assert!(
                    bool::try_from(out.combined.isfinite().all()).unwrap(),
                    "{coefficients:?}"
                );
            }
        }
    }

    #[test]
    fn the_gramian_is_exact_in_both_dtypes() {
        let mut rng = SplitMix::at(9, 0);
        let rows = random_grads(&mut rng, 3, 999);
        let expected = gram_of(&rows);
        for kind in [Kind::Float, Kind::Double] {
            let grads = tensor_of(&rows, kind);
            let (gram, _) = gramian(&grads, &Host::standalone()).unwrap();
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
    fn f32_products_keep_the_gramian_near_f32_precision() {
        let mut rng = SplitMix::at(11, 0);
        let rows = random_grads(&mut rng, 4, 200_000);
        let (exact, _) = gramian(&tensor_of(&rows, Kind::Double), &Host::standalone()).unwrap();
        // The f32 input itself rounds each entry; the reference is its exact Gramian.
        let rounded: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|&x| x as f32 as f64).collect())
            .collect();
        let expected = gram_of(&rounded);
        let reference = gram_of(&rows);
        let (fast, rounding) =
            gramian(&tensor_of(&rows, Kind::Float), &Host::standalone()).unwrap();
        assert_eq!(rounding, F32_ROUNDING);
        // Rounding errors of the f32 sums behave like a random walk: about
        // sqrt(P)·ε₃₂ ≈ 5e-5 of the terms they sum; P·ε₃₂ ≈ 0.02 bounds it.
        let bound = 4.0 * (200_000f64).sqrt() * F32_ROUNDING;
        for i in 0..4 {
            for j in 0..4 {
                let scale = (expected[(i, i)] * expected[(j, j)]).sqrt();
                let error = (fast[(i, j)] - expected[(i, j)]).abs() / scale;
                assert!(error < bound, "({i}, {j}): {error:e}");
                assert!((exact[(i, j)] - reference[(i, j)]).abs() < 1e-12 * scale);
            }
        }
    }

    #[test]
    fn gradients_out_of_f32_product_range_fall_back_to_f64() {
        // 1e25² overflows f32 and 1e-25² underflows it, not f64: the Gramian
        // stays finite and exact; a zero row alone does not fall back.
        for rows in [
            vec![vec![1e25, -2e25, 3e25], vec![1.0, 1.0, 1.0]],
            vec![vec![1e-25, -2e-25, 3e-25], vec![1.0, 1.0, 1.0]],
            vec![vec![0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0]],
        ] {
            let (gram, _) = gramian(&tensor_of(&rows, Kind::Float), &Host::standalone()).unwrap();
            let expected = gram_of(&rows);
            for (i, j) in [(0, 0), (0, 1), (1, 1)] {
                let e = expected[(i, j)];
                assert!(
                    (gram[(i, j)] - e).abs() <= 1e-6 * e.abs(),
                    "{rows:?} ({i}, {j}): {}",
                    gram[(i, j)]
                );
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
