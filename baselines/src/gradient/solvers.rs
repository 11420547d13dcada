//! Small dense f64 linear algebra for the T×T problems of the gradient
//! weightings: a linear solver, the min-norm / simplex QP solver, the
//! non-negative QP of the dual-cone projections, a symmetric
//! eigendecomposition, CAGrad's dual and the bargaining systems of Nash-MTL
//! and FairGrad.
//!
//! T is the number of tasks (a few, rarely more than a few dozen), so plain
//! O(T³) loops are the right tool: no dependency, no allocation worth
//! mentioning, and every result is a bitwise reproducible function of its input.

use std::ops::{Index, IndexMut};

/// A dense square matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Matrix {
    n: usize,
    a: Vec<f64>,
}

impl Matrix {
    /// The `n`×`n` matrix with entries `f(i, j)`.
    pub(super) fn from_fn(n: usize, f: impl Fn(usize, usize) -> f64) -> Matrix {
        Matrix {
            n,
            a: (0..n * n).map(|k| f(k / n, k % n)).collect(),
        }
    }

    /// The number of rows (and columns).
    pub(super) fn n(&self) -> usize {
        self.n
    }

    /// `A x`.
    pub(super) fn mul_vec(&self, x: &[f64]) -> Vec<f64> {
        self.a.chunks_exact(self.n).map(|row| dot(row, x)).collect()
    }

    /// `xᵀ A x`.
    pub(super) fn quad(&self, x: &[f64]) -> f64 {
        dot(x, &self.mul_vec(x))
    }

    /// The principal submatrix on rows and columns `idx`.
    pub(super) fn sub(&self, idx: &[usize]) -> Matrix {
        Matrix::from_fn(idx.len(), |i, j| self[(idx[i], idx[j])])
    }

    fn swap_rows(&mut self, i: usize, j: usize) {
        for k in 0..self.n {
            self.a.swap(i * self.n + k, j * self.n + k);
        }
    }

    fn swap_cols(&mut self, i: usize, j: usize) {
        for k in 0..self.n {
            self.a.swap(k * self.n + i, k * self.n + j);
        }
    }
}

impl Index<(usize, usize)> for Matrix {
    type Output = f64;
    fn index(&self, (i, j): (usize, usize)) -> &f64 {
        &self.a[i * self.n + j]
    }
}

impl IndexMut<(usize, usize)> for Matrix {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut f64 {
        &mut self.a[i * self.n + j]
    }
}

/// `aᵀ b`.
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `A x = b` by Gaussian elimination with complete pivoting.
///
/// Where `A` is singular to working precision (a pivot below `n·ε·max|A|`),
/// the unknowns left without a pivot are set to 0: for a consistent system
/// (duplicate tasks in IMTL-G) that is one of its solutions, and nothing
/// divides by a vanishing pivot.
pub(super) fn solve_linear(mut a: Matrix, mut b: Vec<f64>) -> Vec<f64> {
    let n = a.n;
    let largest = a.a.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let tol = largest * n as f64 * f64::EPSILON;
    // cols[k]: the unknown whose column sits at position k after column swaps.
    let mut cols: Vec<usize> = (0..n).collect();
    let mut rank = n;
    for k in 0..n {
        let (mut pi, mut pj, mut best) = (k, k, 0.0);
        for i in k..n {
            for j in k..n {
                if a[(i, j)].abs() > best {
                    (pi, pj, best) = (i, j, a[(i, j)].abs());
                }
            }
        }
        if best <= tol {
            rank = k;
            break;
        }
        a.swap_rows(k, pi);
        b.swap(k, pi);
        a.swap_cols(k, pj);
        cols.swap(k, pj);
        for i in k + 1..n {
            let f = a[(i, k)] / a[(k, k)];
            for j in k..n {
                a[(i, j)] -= f * a[(k, j)];
            }
            b[i] -= f * b[k];
        }
    }
    let mut y = vec![0.0; n];
    for k in (0..rank).rev() {
        let rest: f64 = (k + 1..rank).map(|j| a[(k, j)] * y[j]).sum();
        y[k] = (b[k] - rest) / a[(k, k)];
    }
    let mut x = vec![0.0; n];
    for (k, &col) in cols.iter().enumerate() {
        x[col] = y[k];
    }
    x
}

/// The minimiser stops once the Frank-Wolfe duality gap is below this
/// (on the problem scaled so that the largest `|M_ii| + |q_i|` is 1).
const GAP_TOL: f64 = 1e-14;

/// Minimises `wᵀMw + 2qᵀw` over the probability simplex, from `start` (a
/// simplex point) or else from the best vertex. `M` must be symmetric
/// positive semi-definite.
///
/// With `q = 0` this is MGDA's min-norm point of the convex hull of the
/// gradients. Sener & Koltun use plain Frank-Wolfe, which converges
/// sublinearly (thousands of iterations to reach 1e-12 on ill-conditioned
/// Gramians). This is Wolfe's min-norm-point algorithm (1976), the fully
/// corrective Frank-Wolfe: the Frank-Wolfe vertex (the task with the smallest
/// gradient component) joins the active set, then the iterate moves to the
/// minimiser on the active face's affine hull, dropping tasks whose weight
/// would turn negative on the way. It stops after finitely many steps (about
/// one per task in the solution's support) with the optimality conditions met
/// to rounding error.
pub(super) fn simplex_qp(m: &Matrix, q: &[f64], start: Option<Vec<f64>>) -> Vec<f64> {
    let n = m.n;
    // The minimiser is invariant to scaling the objective; scaling it to 1
    // makes the tolerances absolute and the KKT systems well balanced.
    let scale = (0..n)
        .map(|i| m[(i, i)].abs() + q[i].abs())
        .fold(0.0, f64::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let m = Matrix::from_fn(n, |i, j| m[(i, j)] / scale);
    let q: Vec<f64> = q.iter().map(|x| x / scale).collect();
    let mut w = start.unwrap_or_else(|| {
        let best = (0..n).fold(0, |b, i| {
            if m[(i, i)] + 2.0 * q[i] < m[(b, b)] + 2.0 * q[b] {
                i
            } else {
                b
            }
        });
        (0..n).map(|i| if i == best { 1.0 } else { 0.0 }).collect()
    });
    let mut active: Vec<bool> = w.iter().map(|&x| x > 0.0).collect();
    // Each pass adds one task; a task can only re-enter after others left,
    // so a few passes per task always suffice.
    for _ in 0..4 * n + 4 {
        // Each corrective step either arrives or drops a task.
        for _ in 0..=n {
            if correct(&m, &q, &mut w, &mut active) {
                break;
            }
        }
        let grad: Vec<f64> = m.mul_vec(&w).iter().zip(&q).map(|(g, q)| g + q).collect();
        let toward = (0..n).fold(0, |s, i| if grad[i] < grad[s] { i } else { s });
        // An active `toward` means the gap is rounding noise on the face.
        if active[toward] || dot(&w, &grad) - grad[toward] <= GAP_TOL {
            break;
        }
        active[toward] = true;
    }
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// One corrective step of [`simplex_qp`]: moves `w` toward the minimiser of
/// `wᵀMw + 2qᵀw` on the affine hull of the active face (a KKT system), as far
/// as `w` stays non-negative, and deactivates the tasks that reach 0. Returns
/// whether `w` got all the way there.
fn correct(m: &Matrix, q: &[f64], w: &mut [f64], active: &mut [bool]) -> bool {
    let idx: Vec<usize> = (0..m.n).filter(|&i| active[i]).collect();
    let k = idx.len();
    // M_AA v + ν1 = −q_A, 1ᵀv = 1.
    let kkt = Matrix::from_fn(k + 1, |i, j| match (i < k, j < k) {
        (true, true) => m[(idx[i], idx[j])],
        (false, false) => 0.0,
        _ => 1.0,
    });
    let rhs: Vec<f64> = idx.iter().map(|&i| -q[i]).chain([1.0]).collect();
    let target = solve_linear(kkt, rhs);
    // The step toward the target, cut where the first weight reaches 0.
    let blocking: Vec<f64> = idx
        .iter()
        .zip(&target)
        .map(|(&i, &v)| match (v <= 0.0, w[i] > 0.0) {
            (true, true) => w[i] / (w[i] - v),
            (true, false) => 0.0,
            (false, _) => f64::INFINITY,
        })
        .collect();
    let theta = blocking.iter().copied().fold(1.0, f64::min);
    let mut arrived = true;
    for (a, &i) in idx.iter().enumerate() {
        if blocking[a] <= theta {
            w[i] = 0.0;
            active[i] = false;
            arrived = false;
        } else {
            w[i] += theta * (target[a] - w[i]);
        }
    }
    arrived
}

/// Minimises `xᵀMx + 2qᵀx` over `x ≥ 0` for a symmetric positive
/// semi-definite `M`: the dual of projecting onto a cone (UPGrad, DualProj).
///
/// Lawson and Hanson's active-set method (1974): the free set starts empty;
/// the variable with the most negative gradient joins it, the free variables
/// move toward the unconstrained minimiser on their face (a linear system),
/// and those that would turn negative on the way leave it. Each pass ends
/// with the optimality conditions met to rounding error: `x ≥ 0`, the
/// gradient `Mx + q` zero on the free set and non-negative elsewhere.
pub(super) fn nonnegative_qp(m: &Matrix, q: &[f64]) -> Vec<f64> {
    let n = m.n;
    let scale = (0..n)
        .map(|i| m[(i, i)].abs() + q[i].abs())
        .fold(0.0, f64::max);
    let mut x = vec![0.0; n];
    if scale == 0.0 {
        return x;
    }
    let tol = n as f64 * 16.0 * f64::EPSILON * scale;
    let mut free = vec![false; n];
    // Each pass frees one variable; one can only be freed again after others
    // left, so a few passes per variable always suffice.
    for _ in 0..4 * n + 4 {
        let grad: Vec<f64> = m.mul_vec(&x).iter().zip(q).map(|(g, q)| g + q).collect();
        let Some(enter) = (0..n)
            .filter(|&i| !free[i] && grad[i] < -tol)
            .min_by(|&a, &b| grad[a].total_cmp(&grad[b]))
        else {
            break;
        };
        free[enter] = true;
        for _ in 0..=n {
            let idx: Vec<usize> = (0..n).filter(|&i| free[i]).collect();
            let target = solve_linear(m.sub(&idx), idx.iter().map(|&i| -q[i]).collect());
            if target.iter().all(|&z| z > 0.0) {
                for (&i, z) in idx.iter().zip(target) {
                    x[i] = z;
                }
                break;
            }
            // Move toward the target as far as every free variable stays ≥ 0.
            let theta = idx
                .iter()
                .zip(&target)
                .filter(|(_, &z)| z <= 0.0)
                .map(|(&i, &z)| x[i] / (x[i] - z))
                .fold(1.0, f64::min);
            for (&i, &z) in idx.iter().zip(&target) {
                x[i] += theta * (z - x[i]);
                if x[i] <= 0.0 || (z <= 0.0 && x[i] / (x[i] - z) <= theta) {
                    x[i] = 0.0;
                    free[i] = false;
                }
            }
        }
    }
    x
}

/// The Euclidean projection of `y` onto the probability simplex (Held, Wolfe
/// and Crowder 1974; the sort-based form of Duchi et al. 2008): subtract the
/// threshold that makes the positive parts sum to 1, clamp at 0.
pub(super) fn simplex_projection(y: &[f64]) -> Vec<f64> {
    let mut sorted = y.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut total = 0.0;
    let mut threshold = (y.iter().sum::<f64>() - 1.0) / y.len() as f64;
    for (i, &v) in sorted.iter().enumerate().take(y.len().saturating_sub(1)) {
        total += v;
        let candidate = (total - 1.0) / (i + 1) as f64;
        if candidate > sorted[i + 1] {
            threshold = candidate;
            break;
        }
    }
    y.iter().map(|v| (v - threshold).max(0.0)).collect()
}

/// Sweeps of the Jacobi eigenvalue method; it converges quadratically, and
/// T×T Gramians need well under ten.
const MAX_SWEEPS: usize = 64;

/// The eigendecomposition of a symmetric `M`: eigenvalues in descending
/// order, and the matching orthonormal eigenvectors as the columns of the
/// returned matrix (`M = V diag(λ) Vᵀ`).
///
/// Cyclic Jacobi rotations: slower than tridiagonal QR for large n but
/// accurate to rounding relative to `‖M‖` and simple, for n up to a few dozen.
pub(super) fn symmetric_eigen(m: &Matrix) -> (Vec<f64>, Matrix) {
    let n = m.n;
    let mut a = m.clone();
    let mut v = Matrix::from_fn(n, |i, j| if i == j { 1.0 } else { 0.0 });
    let norm = a.a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[(i, j)].powi(2))
            .sum();
        if off.sqrt() <= f64::EPSILON * norm {
            break;
        }
        for p in 0..n {
            for r in p + 1..n {
                if a[(p, r)] == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][r] (Golub & Van Loan, 8.5.2).
                let tau = (a[(r, r)] - a[(p, p)]) / (2.0 * a[(p, r)]);
                let t = if tau == 0.0 {
                    1.0
                } else {
                    tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akr) = (a[(k, p)], a[(k, r)]);
                    a[(k, p)] = c * akp - s * akr;
                    a[(k, r)] = s * akp + c * akr;
                }
                for k in 0..n {
                    let (apk, ark) = (a[(p, k)], a[(r, k)]);
                    a[(p, k)] = c * apk - s * ark;
                    a[(r, k)] = s * apk + c * ark;
                }
                for k in 0..n {
                    let (vkp, vkr) = (v[(k, p)], v[(k, r)]);
                    v[(k, p)] = c * vkp - s * vkr;
                    v[(k, r)] = s * vkp + c * vkr;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[(j, j)].total_cmp(&a[(i, i)]));
    let values = order.iter().map(|&i| a[(i, i)]).collect();
    let vectors = Matrix::from_fn(n, |i, j| v[(i, order[j])]);
    (values, vectors)
}

/// The Moore-Penrose pseudo-inverse of a symmetric positive semi-definite
/// `M`, dropping eigenvalues at or below `cutoff` times the largest (as
/// `torch.linalg.pinv` drops singular values; for `M = AAᵀ` a relative
/// cutoff `r` on `A`'s singular values is `r²` on `M`'s eigenvalues).
pub(super) fn psd_pinv(m: &Matrix, cutoff: f64) -> Matrix {
    let (values, vectors) = symmetric_eigen(m);
    let largest = values.first().copied().unwrap_or(0.0);
    let kept: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, &l)| l > cutoff * largest && l > 0.0)
        .map(|(k, &l)| (k, 1.0 / l))
        .collect();
    Matrix::from_fn(m.n, |i, j| {
        kept.iter()
            .map(|&(k, inv)| vectors[(i, k)] * inv * vectors[(j, k)])
            .sum()
    })
}

/// How often the CAGrad bracket may be halved looking for its lower end.
const MAX_HALVINGS: usize = 200;

/// Bisection steps on CAGrad's scalar; each halves the bracket's log-width.
const MAX_BISECTIONS: usize = 200;

/// Solves CAGrad's dual problem (Liu et al., NeurIPS 2021, eq. 5 with the
/// official code's objective): the point `w` of the simplex minimising
/// `F(w) = wᵀb + k·sqrt(wᵀMw)`, with `b = M·1/T` (so `wᵀb = g_wᵀg_0`) and
/// `k = c‖g_0‖ > 0`.
///
/// `F` is not smooth, so rather than attacking it directly this uses its
/// structure: at the optimum `w*`, `∇F = b + λ*·Mw*` with `λ* = k/‖g_w*‖`,
/// which is also the gradient (up to the factor `2λ*`) of the QP
/// `wᵀMw + 2μ·bᵀw` with `μ = 1/λ*`. So `w* = w(μ*)`, where `w(μ)` is the
/// [`simplex_qp`] solution and `μ*` solves the scalar equation
/// `ψ(μ) = ‖g_w(μ)‖/μ = k`. `ψ` is continuous, exceeds `k` at
/// `μ = ‖g_MGDA‖/k` (every `g_w` is at least as long as MGDA's min-norm
/// point) and is at most `k` at `μ = max_i‖g_i‖/k`, so bisection on `log μ`
/// finds a root.
///
/// Returns `None` when no root exists: then the optimum is `g_w = 0`, and
/// CAGrad's correction `k·g_w/‖g_w‖` is undefined. That needs 0 in the hull
/// of the gradients (a Pareto-stationary point) and no point `x` of the hull
/// with `g_0ᵀx < −k‖x‖`, always the case for `c ≥ 1`.
pub(super) fn cagrad_dual(m: &Matrix, b: &[f64], k: f64) -> Option<Vec<f64>> {
    let n = m.n;
    let solve = |mu: f64, start: Option<Vec<f64>>| {
        let q: Vec<f64> = b.iter().map(|b| mu * b).collect();
        let w = simplex_qp(m, &q, start);
        let ratio = m.quad(&w).max(0.0).sqrt() / mu;
        (w, ratio)
    };
    let min_norm = m.quad(&simplex_qp(m, &vec![0.0; n], None)).max(0.0).sqrt();
    let longest = (0..n)
        .map(|i| m[(i, i)].max(0.0).sqrt())
        .fold(0.0, f64::max);
    let mut hi = longest / k;
    let mut lo = if min_norm > 0.0 {
        min_norm / k
    } else {
        hi / 2.0
    };
    let (mut w, mut ratio) = solve(lo, None);
    let mut halvings = 0;
    while ratio < k {
        if halvings == MAX_HALVINGS {
            return None;
        }
        lo /= 2.0;
        (w, ratio) = solve(lo, Some(w));
        halvings += 1;
    }
    // Invariant: ψ(lo) ≥ k ≥ ψ(hi), and w = w(lo).
    for _ in 0..MAX_BISECTIONS {
        if hi / lo - 1.0 <= 4.0 * f64::EPSILON {
            break;
        }
        let mid = (lo * hi).sqrt();
        let (w_mid, ratio) = solve(mid, Some(w.clone()));
        if ratio >= k {
            (lo, w) = (mid, w_mid);
        } else {
            hi = mid;
        }
    }
    Some(w)
}

/// The smallest relative ridge of the bargaining systems: each diagonal
/// entry `M_ii` becomes `(1 + r)·M_ii`. It keeps the problem solvable when
/// the gradients are Pareto-stationary (0 in their convex hull), where
/// `Mα = 1/α` has no positive solution, and changes the solution elsewhere by
/// a relative 1e-12 or so, whatever the tasks' scales.
const RIDGE: f64 = 1e-12;

/// Newton stops once the squared Newton decrement is below this.
const NEWTON_TOL: f64 = 1e-24;

/// Solves the bargaining condition `Mx = x^(−p)`, `x > 0`, for a positive
/// semi-definite `M` with a positive diagonal: Nash-MTL's `Mα = 1/α` (Navon
/// et al., ICML 2022, eq. 4 in Gramian form) at `p = 1`, FairGrad's
/// α-fairness condition (Ban & Ji, ICML 2024) at `p = 1/α`.
///
/// `Mx − x^(−p)` is the gradient of `f(x) = ½xᵀMx − Σ φ(x_i)` with
/// `φ = log` at `p = 1` and `φ(x) = x^(1−p)/(1−p)` otherwise, strictly convex
/// on `x > 0` for every `p > 0`. Damped Newton (step `1/(1 + λ)` while the
/// Newton decrement `λ` is above ¼, full steps after) converges
/// quadratically near the solution; at `p = 1`, where `f` is
/// self-concordant, that step always stays positive and decreases `f`, and
/// for other `p` it is halved until it does. Nash-MTL's official code
/// instead linearises the concave part and calls a conic solver `optim_niter`
/// times, FairGrad's runs SciPy's `least_squares`; `max_iter` bounds the
/// Newton steps. The start (the previous solution, a warm start as in the
/// official code, or uniform weights) is first rescaled to the best point on
/// its ray, `γ^(1+p) = Σ x_i^(1−p) / xᵀMx`.
///
/// Each `M_ii` is multiplied by `1 + ridge`, `ridge ≥` [`RIDGE`]. Entries
/// rounded to a relative `ε` of `sqrt(M_ii M_jj)` can leave a singular `M`
/// indefinite by at most `n·ε` in that diagonal scaling (Gershgorin), so
/// `ridge = n·ε` covers an f32 Gramian's rounding while a task with a tiny
/// gradient keeps its own equation (a ridge uniform across tasks would
/// swamp it).
pub(super) fn bargaining(
    m: &Matrix,
    start: &[f64],
    max_iter: usize,
    ridge: f64,
    p: f64,
) -> Vec<f64> {
    let n = m.n;
    let mut a = m.clone();
    for i in 0..n {
        a[(i, i)] *= 1.0 + ridge.max(RIDGE);
    }
    let potential = |x: f64| {
        if p == 1.0 {
            x.ln()
        } else {
            x.powf(1.0 - p) / (1.0 - p)
        }
    };
    let objective = |x: &[f64]| 0.5 * a.quad(x) - x.iter().map(|&v| potential(v)).sum::<f64>();
    let ray: f64 = start.iter().map(|x| x.powf(1.0 - p)).sum();
    let gamma = (ray / a.quad(start)).powf(1.0 / (1.0 + p));
    let mut x: Vec<f64> = start.iter().map(|v| gamma * v).collect();
    for _ in 0..max_iter {
        let residual: Vec<f64> = a
            .mul_vec(&x)
            .iter()
            .zip(&x)
            .map(|(ma, v)| ma - v.powf(-p))
            .collect();
        let mut hessian = a.clone();
        for (i, v) in x.iter().enumerate() {
            hessian[(i, i)] += p * v.powf(-p - 1.0);
        }
        let step = solve_linear(hessian, residual.iter().map(|r| -r).collect());
        let decrement_sq = -dot(&residual, &step);
        // NaN (a breakdown, never seen) stops as well as convergence does.
        if decrement_sq.is_nan() || decrement_sq <= NEWTON_TOL {
            break;
        }
        let mut t = if decrement_sq < 1.0 / 16.0 {
            1.0
        } else {
            1.0 / (1.0 + decrement_sq.sqrt())
        };
        let before = objective(&x);
        let moved = |t: f64| -> Vec<f64> { x.iter().zip(&step).map(|(v, s)| v + t * s).collect() };
        let mut next = moved(t);
        while p != 1.0 && (next.iter().any(|&v| v <= 0.0) || objective(&next) > before) {
            t *= 0.5;
            if t < 1e-12 {
                return x;
            }
            next = moved(t);
        }
        x = next;
    }
    x
}

/// [`bargaining`] on the rows `rows` of a Gramian whose entries carry a
/// relative rounding `rounding`, as Nash-MTL and FairGrad pose it: the
/// submatrix divided by its Frobenius norm `s` (returned with the solution),
/// so that the tolerances are scale-free. Solutions for `M` are those for
/// `M/s` times `s^(−1/(1+p))`.
pub(super) fn normalised_bargaining(
    gram: &Matrix,
    rows: &[usize],
    start: &[f64],
    max_iter: usize,
    rounding: f64,
    p: f64,
) -> (Vec<f64>, f64) {
    let sub = gram.sub(rows);
    let n = rows.len();
    let frobenius = (0..n * n)
        .map(|k| sub[(k / n, k % n)].powi(2))
        .sum::<f64>()
        .sqrt();
    let normalised = Matrix::from_fn(n, |i, j| sub[(i, j)] / frobenius);
    let ridge = n as f64 * rounding;
    (
        bargaining(&normalised, start, max_iter, ridge, p),
        frobenius,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient::testing::{degenerate, gram_of, instances, max_abs_diff};
    use taskweave_plugin_api::rng::SplitMix;

    /// A uniform random point of the simplex (Dirichlet(1, ..., 1)).
    fn random_simplex(rng: &mut SplitMix, n: usize) -> Vec<f64> {
        let e: Vec<f64> = (0..n).map(|_| -rng.uniform().ln()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|x| x / total).collect()
    }

    fn scale_of(m: &Matrix) -> f64 {
        (0..m.n()).map(|i| m[(i, i)]).fold(0.0, f64::max)
    }

    /// Checks the KKT conditions of minimising a convex function with
    /// gradient `grad` at `w` over the simplex: components equal (to `tol`)
    /// on the support, not smaller off it.
    fn assert_simplex_kkt(w: &[f64], grad: &[f64], tol: f64, what: &str) {
        assert!(
            (w.iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "{what}: weights {w:?} not on the simplex"
        );
        assert!(
            w.iter().all(|&x| x >= 0.0),
            "{what}: negative weight in {w:?}"
        );
        let value = dot(w, grad);
        for (i, (&wi, &gi)) in w.iter().zip(grad).enumerate() {
            assert!(
                gi >= value - tol,
                "{what}: component {i}: {gi} < {value} (w = {w:?}, grad = {grad:?})"
            );
            if wi > 1e-9 {
                assert!(
                    gi <= value + tol,
                    "{what}: support component {i}: {gi} > {value} (w = {w:?}, grad = {grad:?})"
                );
            }
        }
    }

    #[test]
    fn solve_linear_solves_regular_systems() {
        let mut rng = SplitMix::at(1, 0);
        for n in [1, 2, 3, 5, 8] {
            let entries: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
            let a = Matrix::from_fn(n, |i, j| entries[i * n + j]);
            let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let b = a.mul_vec(&x);
            let solved = solve_linear(a.clone(), b);
            assert!(
                max_abs_diff(&solved, &x) < 1e-9,
                "n = {n}: {solved:?} vs {x:?}"
            );
        }
    }

    #[test]
    fn solve_linear_finds_a_solution_of_consistent_singular_systems() {
        // Two identical columns and rows: a line of solutions.
        let a = Matrix::from_fn(3, |i, j| {
            [[2.0, 2.0, 1.0], [2.0, 2.0, 1.0], [1.0, 1.0, 3.0]][i][j]
        });
        let b = vec![5.0, 5.0, 7.0];
        let x = solve_linear(a.clone(), b.clone());
        assert!(x.iter().all(|v| v.is_finite()));
        assert!(max_abs_diff(&a.mul_vec(&x), &b) < 1e-12, "{x:?}");
    }

    #[test]
    fn min_norm_meets_the_kkt_conditions() {
        for (name, grads) in instances().into_iter().chain(degenerate()) {
            let m = gram_of(&grads);
            let n = m.n();
            let w = simplex_qp(&m, &vec![0.0; n], None);
            assert_simplex_kkt(&w, &m.mul_vec(&w), 1e-9 * scale_of(&m), &name);
        }
    }

    #[test]
    fn min_norm_matches_the_two_task_closed_form() {
        for (name, grads) in instances().into_iter().filter(|(_, g)| g.len() == 2) {
            let m = gram_of(&grads);
            let (a, b, c) = (m[(0, 0)], m[(0, 1)], m[(1, 1)]);
            let w0 = ((c - b) / (a + c - 2.0 * b)).clamp(0.0, 1.0);
            let w = simplex_qp(&m, &[0.0, 0.0], Some(vec![0.5, 0.5]));
            assert!((w[0] - w0).abs() < 1e-9, "{name}: {w:?} vs {w0}");
        }
    }

    #[test]
    fn min_norm_with_a_zero_gradient_is_that_vertex() {
        let grads = vec![vec![1.0, 2.0], vec![0.0, 0.0], vec![-3.0, 1.0]];
        let w = simplex_qp(&gram_of(&grads), &[0.0; 3], None);
        assert_eq!(w, vec![0.0, 1.0, 0.0]);
    }

    /// CAGrad's dual objective and its gradient at `w`.
    fn cagrad_objective(m: &Matrix, b: &[f64], k: f64, w: &[f64]) -> (f64, Vec<f64>) {
        let norm = m.quad(w).sqrt();
        let grad = b
            .iter()
            .zip(m.mul_vec(w))
            .map(|(b, mw)| b + k * mw / norm)
            .collect();
        (dot(w, b) + k * norm, grad)
    }

    #[test]
    fn cagrad_dual_is_optimal() {
        let mut rng = SplitMix::at(2, 0);
        let regular = instances().into_iter().map(|(n, g)| (n, g, true));
        let degenerate = degenerate().into_iter().map(|(n, g)| (n, g, false));
        for (name, grads, regular) in regular.chain(degenerate) {
            let m = gram_of(&grads);
            let n = m.n();
            let b: Vec<f64> = m.mul_vec(&vec![1.0 / n as f64; n]);
            let g0 = (dot(&b, &vec![1.0 / n as f64; n])).sqrt();
            let scale = scale_of(&m);
            for c in [0.1, 0.4, 0.9] {
                let (k, what) = (c * g0, format!("{name}, c = {c}"));
                if k == 0.0 {
                    continue;
                }
                let Some(w) = cagrad_dual(&m, &b, k) else {
                    // Then g_w = 0 must be optimal: F ≥ F(0) = 0 everywhere,
                    // and 0 must be in the hull.
                    assert!(!regular, "{what}: no solution");
                    let min_norm = m.quad(&simplex_qp(&m, &vec![0.0; n], None));
                    assert!(min_norm <= 1e-12 * scale, "{what}: {min_norm}");
                    for _ in 0..500 {
                        let (value, _) = cagrad_objective(&m, &b, k, &random_simplex(&mut rng, n));
                        assert!(value >= -1e-12 * scale, "{what}: {value} < 0");
                    }
                    continue;
                };
                let (best, grad) = cagrad_objective(&m, &b, k, &w);
                assert_simplex_kkt(&w, &grad, 1e-8 * scale, &what);
                for _ in 0..500 {
                    let other = random_simplex(&mut rng, n);
                    // Points near the optimum probe it more sharply than uniform draws.
                    let near: Vec<f64> = w
                        .iter()
                        .zip(&other)
                        .map(|(a, o)| 0.99 * a + 0.01 * o)
                        .collect();
                    for point in [other, near] {
                        let (value, _) = cagrad_objective(&m, &b, k, &point);
                        assert!(
                            value >= best - 1e-12 * scale,
                            "{what}: {point:?} gives {value} < {best}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cagrad_dual_reports_an_optimum_at_zero() {
        // Opposite gradients: 0 is in the hull, and with c ≥ 1 the optimum is g_w = 0.
        let m = gram_of(&[vec![1.0, 0.5], vec![-1.0, -0.5]]);
        let b = m.mul_vec(&[0.5, 0.5]);
        assert_eq!(cagrad_dual(&m, &b, 2.0), None);
    }

    #[test]
    fn nash_bargaining_solves_m_alpha_equals_one_over_alpha() {
        for (name, grads) in instances() {
            let m = gram_of(&grads);
            let frobenius = (0..m.n())
                .flat_map(|i| (0..m.n()).map(move |j| (i, j)))
                .map(|ij| m[ij] * m[ij]);
            let norm = frobenius.sum::<f64>().sqrt();
            let m = Matrix::from_fn(m.n(), |i, j| m[(i, j)] / norm);
            let alpha = bargaining(&m, &vec![1.0; m.n()], 100, RIDGE, 1.0);
            assert!(alpha.iter().all(|&a| a > 0.0), "{name}: {alpha:?}");
            let inverse: Vec<f64> = alpha.iter().map(|a| 1.0 / a).collect();
            let residual: Vec<f64> = m
                .mul_vec(&alpha)
                .iter()
                .zip(&inverse)
                .map(|(a, b)| a - b)
                .collect();
            let relative = dot(&residual, &residual).sqrt() / dot(&inverse, &inverse).sqrt();
            assert!(
                relative < 1e-6,
                "{name}: relative residual {relative} (alpha = {alpha:?})"
            );
        }
    }

    #[test]
    fn nash_bargaining_of_one_task_is_one_over_the_norm() {
        let alpha = bargaining(&gram_of(&[vec![3.0, 4.0]]), &[1.0], 20, RIDGE, 1.0);
        assert!((alpha[0] - 0.2).abs() < 1e-12, "{alpha:?}");
    }

    #[test]
    fn nonnegative_qp_meets_the_kkt_conditions() {
        let mut rng = SplitMix::at(5, 0);
        for (what, grads) in instances().into_iter().chain(degenerate()) {
            let m = gram_of(&grads);
            let n = m.n();
            // q in the range of M (as q = Mu in the projections), so that
            // the problem is bounded below even where M is singular.
            let u: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let q = m.mul_vec(&u);
            let x = nonnegative_qp(&m, &q);
            let grad: Vec<f64> = m.mul_vec(&x).iter().zip(&q).map(|(g, q)| g + q).collect();
            let tol = 1e-9 * (scale_of(&m) + q.iter().fold(0.0, |a: f64, b| a.max(b.abs())));
            for i in 0..n {
                assert!(x[i] >= 0.0, "{what}: x = {x:?}");
                assert!(grad[i] >= -tol, "{what}: gradient {i} = {} < 0", grad[i]);
                if x[i] > 0.0 {
                    assert!(
                        grad[i].abs() <= tol,
                        "{what}: free {i} has gradient {}",
                        grad[i]
                    );
                }
            }
        }
        // No constraint binds: the unconstrained minimiser.
        let m = Matrix::from_fn(2, |i, j| [[2.0, 1.0], [1.0, 2.0]][i][j]);
        let x = nonnegative_qp(&m, &[-3.0, -3.0]);
        assert!(max_abs_diff(&x, &[1.0, 1.0]) < 1e-12, "{x:?}");
        assert_eq!(nonnegative_qp(&m, &[1.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn symmetric_eigen_reconstructs_the_matrix() {
        for (what, grads) in instances().into_iter().chain(degenerate()) {
            let m = gram_of(&grads);
            let n = m.n();
            let (values, v) = symmetric_eigen(&m);
            assert!(
                values.windows(2).all(|w| w[0] >= w[1]),
                "{what}: {values:?}"
            );
            let tol = 1e-12 * scale_of(&m) * n as f64;
            for i in 0..n {
                for j in 0..n {
                    let back: f64 = (0..n).map(|k| v[(i, k)] * values[k] * v[(j, k)]).sum();
                    assert!((back - m[(i, j)]).abs() <= tol, "{what} ({i}, {j})");
                    let gram: f64 = (0..n).map(|k| v[(k, i)] * v[(k, j)]).sum();
                    let identity = if i == j { 1.0 } else { 0.0 };
                    assert!((gram - identity).abs() < 1e-12, "{what}: VᵀV ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn psd_pinv_meets_the_penrose_conditions() {
        for (what, grads) in instances().into_iter().chain(degenerate()) {
            let m = gram_of(&grads);
            let n = m.n();
            let p = psd_pinv(&m, 1e-12);
            let product = |a: &Matrix, b: &Matrix| {
                Matrix::from_fn(n, |i, j| (0..n).map(|k| a[(i, k)] * b[(k, j)]).sum())
            };
            let mpm = product(&product(&m, &p), &m);
            let tol = 1e-8 * scale_of(&m) * n as f64;
            for i in 0..n {
                for j in 0..n {
                    assert!((mpm[(i, j)] - m[(i, j)]).abs() <= tol, "{what} ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn bargaining_solves_every_power() {
        for (what, grads) in instances().into_iter().step_by(3) {
            let m = gram_of(&grads);
            let n = m.n();
            // Frobenius-normalised, as the methods call it.
            let frobenius = (0..n * n)
                .map(|k| m[(k / n, k % n)].powi(2))
                .sum::<f64>()
                .sqrt();
            let m = Matrix::from_fn(n, |i, j| m[(i, j)] / frobenius);
            for p in [0.25, 0.5, 1.0, 2.0] {
                let x = bargaining(&m, &vec![1.0 / n as f64; n], 200, RIDGE, p);
                let mx = m.mul_vec(&x);
                for i in 0..n {
                    let target = x[i].powf(-p);
                    assert!(x[i] > 0.0, "{what} p={p}: {x:?}");
                    assert!(
                        (mx[i] + RIDGE * m[(i, i)] * x[i] - target).abs() <= 1e-7 * target,
                        "{what} p={p}: row {i}: {} vs {target}",
                        mx[i]
                    );
                }
            }
        }
    }

    #[test]
    fn simplex_projection_is_the_nearest_simplex_point() {
        let mut rng = SplitMix::at(8, 0);
        for n in [1, 2, 3, 7] {
            for _ in 0..50 {
                let y: Vec<f64> = (0..n).map(|_| 2.0 * rng.normal()).collect();
                let x = simplex_projection(&y);
                assert!((x.iter().sum::<f64>() - 1.0).abs() < 1e-12 && x.iter().all(|&v| v >= 0.0));
                // Optimality: y − x is constant on the support and no larger off it.
                let gap: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
                let on = (0..n).find(|&i| x[i] > 0.0).unwrap();
                for i in 0..n {
                    if x[i] > 0.0 {
                        assert!((gap[i] - gap[on]).abs() < 1e-12, "{y:?}");
                    } else {
                        assert!(y[i] <= gap[on] + 1e-12, "{y:?}");
                    }
                }
            }
        }
    }
}
