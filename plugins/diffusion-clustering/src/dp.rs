//! The exact optimum of "k contiguous intervals minimising the sum of
//! interval costs" (Go et al. 2023) by dynamic programming over a cost matrix
//! filled in O(1) per interval: O(T²) to fill, O(k·T²) to solve.
//!
//! Indices here are 0-based (timestep t is index t − 1). An interval's centre
//! is c = ⌊(l + r)/2⌋, the spec's ⌊(l' + r')/2⌋ on 1-based timesteps shifted
//! by one.
//!
//! Ties: among partitions of equal cost, each interval, from the last one
//! backwards, starts as early as it can (the smallest start that reaches the
//! minimum). Costs are compared exactly (f64), so "equal" means bit-equal sums.

/// Sums over the intervals of one schedule signal, in O(1) per interval.
pub enum Costs {
    /// Σ_(t∈I) |v_t − v_c| for values `v` monotone in t (timesteps, SNR,
    /// log-SNR): prefix sums split the sum at the centre.
    Values {
        /// Values made non-decreasing (negated when the signal decreases).
        values: Vec<f64>,
        /// `prefix[i]` = Σ_(t<i) values[t].
        prefix: Vec<f64>,
    },
    /// −Σ_(t∈I) A(c, t) for a task-affinity matrix `A` `[T, T]` (TAS): the DP
    /// fills every interval's cost in O(1) by growing the intervals around
    /// each centre one step at a time.
    Affinity {
        /// `A`, row-major.
        matrix: Vec<f64>,
        /// T.
        n: usize,
    },
}

/// Why a signal cannot be clustered: the message and, where it applies, the
/// index of the offending value (or the memory more timesteps than fit need).
#[derive(Debug, PartialEq)]
pub struct BadSignal(pub String);

impl Costs {
    /// Costs of `values`, which must be finite and monotone (either way).
    pub fn values(name: &str, values: &[f64]) -> Result<Costs, BadSignal> {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(BadSignal(format!(
                "`{name}` is {} at index {i} (timestep {}); every value must be finite",
                values[i],
                i + 1
            )));
        }
        let rising = values.windows(2).position(|w| w[1] > w[0]);
        let falling = values.windows(2).position(|w| w[1] < w[0]);
        let values: Vec<f64> = match (rising, falling) {
            (Some(a), Some(b)) => {
                let i = a.max(b) + 1;
                return Err(BadSignal(format!(
                    "`{name}` is not monotone in t: it turns at index {i} (timestep {}); interval costs need a schedule's monotone signal",
                    i + 1
                )));
            }
            (None, Some(_)) => values.iter().map(|v| -v).collect(),
            _ => values.to_vec(),
        };
        let mut prefix = Vec::with_capacity(values.len() + 1);
        prefix.push(0.0);
        for v in &values {
            prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
        }
        Ok(Costs::Values { values, prefix })
    }

    /// Costs of the affinity matrix `matrix` (row-major, `n`×`n`), which must
    /// be finite and symmetric.
    pub fn affinity(name: &str, matrix: Vec<f64>, n: usize) -> Result<Costs, BadSignal> {
        if matrix.len() != n * n {
            return Err(BadSignal(format!(
                "`{name}` has {} values; it must be [{n}, {n}]",
                matrix.len()
            )));
        }
        if let Some(i) = matrix.iter().position(|v| !v.is_finite()) {
            return Err(BadSignal(format!(
                "`{name}` is {} at [{}, {}]; every value must be finite",
                matrix[i],
                i / n,
                i % n
            )));
        }
        // Tile by tile, so that the transposed reads stay in cache.
        const TILE: usize = 64;
        for a0 in (0..n).step_by(TILE) {
            for b0 in (0..=a0).step_by(TILE) {
                for a in a0..(a0 + TILE).min(n) {
                    for b in b0..(b0 + TILE).min(a) {
                        let (x, y) = (matrix[a * n + b], matrix[b * n + a]);
                        if (x - y).abs() > 1e-6 * x.abs().max(y.abs()).max(1.0) {
                            return Err(BadSignal(format!(
                                "`{name}` is not symmetric: [{a}, {b}] = {x} but [{b}, {a}] = {y}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(Costs::Affinity { matrix, n })
    }

    /// The number of timesteps.
    pub fn len(&self) -> usize {
        match self {
            Costs::Values { values, .. } => values.len(),
            Costs::Affinity { n, .. } => *n,
        }
    }

    /// True when there is no timestep.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cost of the interval `l..=r` (O(1) for values; O(r − l) for an
    /// affinity, whose costs [`solve`] fills by centre instead).
    pub fn interval(&self, l: usize, r: usize) -> f64 {
        let c = (l + r) / 2;
        match self {
            Costs::Values { values, prefix } => {
                let v = values[c];
                let below = (c - l) as f64 * v - (prefix[c] - prefix[l]);
                let above = (prefix[r + 1] - prefix[c + 1]) - (r - c) as f64 * v;
                below + above
            }
            // O(r − l): for checks; the DP's matrix is filled in O(1) each.
            Costs::Affinity { matrix, n } => -matrix[c * n + l..=c * n + r].iter().sum::<f64>(),
        }
    }
}

/// Every interval's cost, packed by its end: interval `s..=i` at
/// `i·(i + 1)/2 + s`, so the DP's inner loop reads one contiguous run.
fn matrix(costs: &Costs) -> Result<Vec<f64>, BadSignal> {
    let n = costs.len();
    let mut cost = filled(n * (n + 1) / 2, 0.0, n)?;
    let at = |s: usize, i: usize| i * (i + 1) / 2 + s;
    match costs {
        Costs::Values { .. } => {
            for i in 0..n {
                for s in 0..=i {
                    cost[at(s, i)] = costs.interval(s, i);
                }
            }
        }
        // By centre: the intervals around c grow one step at each end, so
        // their sums accumulate along row c of A, read in order (per-row
        // prefix sums would be read a column at a time, a cache miss each).
        Costs::Affinity { matrix, .. } => {
            for (c, row) in matrix.chunks_exact(n).enumerate() {
                let value = |t: usize| row[t];
                // Odd lengths: c−d..=c+d; even: c−d..=c+d+1 (centre ⌊(l + r)/2⌋ = c).
                let mut odd = -value(c);
                let mut even = if c + 1 < n { odd - value(c + 1) } else { 0.0 };
                for d in 0..=c {
                    if d > 0 {
                        odd -= value(c - d) + if c + d < n { value(c + d) } else { 0.0 };
                        if c + d + 1 < n {
                            even -= value(c - d) + value(c + d + 1);
                        }
                    }
                    if c + d < n {
                        cost[at(c - d, c + d)] = odd;
                    }
                    if c + d + 1 < n {
                        cost[at(c - d, c + d + 1)] = even;
                    }
                }
            }
        }
    }
    Ok(cost)
}

/// `len` copies of `value`, or an error naming the `n` timesteps whose costs
/// do not fit in memory (an allocation failure would abort the process).
fn filled<T: Clone>(len: usize, value: T, n: usize) -> Result<Vec<T>, BadSignal> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        let gb = (len as f64) * std::mem::size_of::<T>() as f64 / 1e9;
        BadSignal(format!(
            "interval clustering of {n} timesteps needs {gb:.1} GB (a cost per interval, \
             n·(n + 1)/2 of them), more than this machine can allocate: cluster fewer timesteps"
        ))
    })?;
    out.resize(len, value);
    Ok(out)
}

/// The least of `values` and the first index holding it; written as lane
/// minima over chunks so that it compiles to vector minimums.
fn first_min(values: &[f64]) -> (f64, usize) {
    let mut lanes = [f64::INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v < *lane { v } else { *lane };
        }
    }
    let least = lanes
        .iter()
        .chain(tail)
        .fold(f64::INFINITY, |m, &v| if v < m { v } else { m });
    (least, values.iter().position(|&v| v == least).unwrap_or(0))
}

/// The optimal partition of `0..T` into `k` contiguous intervals (1 ≤ k ≤ T):
/// each interval as (first, last) index, in order, and the total cost.
pub fn solve(costs: &Costs, k: usize) -> Result<(Vec<(usize, usize)>, f64), BadSignal> {
    let n = costs.len();
    assert!(1 <= k && k <= n, "1 ≤ k ≤ T is checked by the caller");
    let cost = matrix(costs)?;
    let row = |i: usize| &cost[i * (i + 1) / 2..(i + 1) * (i + 2) / 2];
    // best[i]: the least cost of 0..=i in j + 1 intervals; start[j][i]: where
    // the last of them starts.
    let mut best: Vec<f64> = (0..n).map(|i| row(i)[0]).collect();
    let mut next = vec![f64::INFINITY; n];
    let mut totals = vec![0.0; n];
    let mut start = filled(k, Vec::new(), n)?;
    for starts in &mut start {
        *starts = filled(n, 0usize, n)?;
    }
    for (j, starts) in start.iter_mut().enumerate().skip(1) {
        for i in j..n {
            // The last interval is s..=i with s ≥ j: every earlier one non-empty.
            let candidates = &mut totals[..=i - j];
            for ((total, &before), &interval) in
                candidates.iter_mut().zip(&best[j - 1..i]).zip(&row(i)[j..])
            {
                *total = before + interval;
            }
            let (value, offset) = first_min(candidates);
            next[i] = value;
            starts[i] = j + offset;
        }
        std::mem::swap(&mut best, &mut next);
    }
    let mut intervals = Vec::with_capacity(k);
    let mut end = n - 1;
    for j in (0..k).rev() {
        let s = start[j][end];
        intervals.push((s, end));
        end = s.wrapping_sub(1);
    }
    intervals.reverse();
    Ok((intervals, best[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every partition of 0..n into k intervals, by its k − 1 cut points.
    fn brute_force(costs: &Costs, k: usize) -> f64 {
        let n = costs.len();
        let direct = |l: usize, r: usize| -> f64 {
            // The definition, summed term by term.
            let c = (l + r) / 2;
            (l..=r)
                .map(|t| match costs {
                    Costs::Values { values, .. } => (values[t] - values[c]).abs(),
                    Costs::Affinity { matrix, n } => -matrix[c * n + t],
                })
                .sum()
        };
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << (n - 1)) {
            if mask.count_ones() as usize != k - 1 {
                continue;
            }
            let (mut total, mut l) = (0.0, 0);
            for cut in 0..n - 1 {
                if mask & (1 << cut) != 0 {
                    total += direct(l, cut);
                    l = cut + 1;
                }
            }
            total += direct(l, n - 1);
            best = best.min(total);
        }
        best
    }

    /// ᾱ_t of DDPM's linear (β from 1e-4 to 0.02) and the improved-DDPM
    /// cosine schedules over `n` steps, as SNR = ᾱ / (1 − ᾱ).
    pub fn snr(n: usize, cosine: bool) -> Vec<f64> {
        let mut alpha_bar = 1.0;
        (1..=n)
            .map(|t| {
                let a = if cosine {
                    let f = |t: f64| {
                        ((t / n as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                            .cos()
                            .powi(2)
                    };
                    (f(t as f64) / f(0.0)).min(0.9999)
                } else {
                    let beta = 1e-4 + (0.02 - 1e-4) * (t - 1) as f64 / (n - 1).max(1) as f64;
                    alpha_bar *= 1.0 - beta;
                    alpha_bar
                };
                a / (1.0 - a).max(1e-12)
            })
            .collect()
    }

    fn check(costs: &Costs) {
        for k in 1..=costs.len() {
            let (intervals, cost) = solve(costs, k).unwrap();
            let expected = brute_force(costs, k);
            let scale = expected.abs().max(1.0);
            assert!(
                (cost - expected).abs() <= 1e-9 * scale,
                "k = {k}: {cost} vs {expected}"
            );
            // The intervals tile 0..T, and their cost is the cost reported.
            assert_eq!(intervals.len(), k);
            assert_eq!(intervals[0].0, 0);
            assert_eq!(intervals[k - 1].1, costs.len() - 1);
            assert!(intervals
                .windows(2)
                .all(|w| w[1].0 == w[0].1 + 1 && w[0].0 <= w[0].1));
            let sum: f64 = intervals.iter().map(|&(l, r)| costs.interval(l, r)).sum();
            assert!((sum - cost).abs() <= 1e-9 * scale);
        }
    }

    #[test]
    fn the_optimum_equals_brute_force_for_every_cost_schedule_and_k() {
        for n in [1, 2, 5, 12] {
            let steps: Vec<f64> = (1..=n).map(|t| t as f64).collect();
            check(&Costs::values("timestep", &steps).unwrap());
            for cosine in [false, true] {
                let snr = snr(n, cosine);
                check(&Costs::values("snr", &snr).unwrap());
                let log: Vec<f64> = snr.iter().map(|s| s.ln()).collect();
                check(&Costs::values("log-snr", &log).unwrap());
            }
            // A symmetric affinity with a seeded pattern.
            let tas: Vec<f64> = (0..n * n)
                .map(|i| {
                    let (a, b) = ((i / n) as f64, (i % n) as f64);
                    (0.3 * (a + b)).sin() * (0.7 * (a - b).abs()).cos()
                })
                .collect();
            check(&Costs::affinity("tas", tas, n).unwrap());
        }
    }

    #[test]
    fn the_packed_matrix_holds_every_interval_s_cost() {
        let n = 9;
        let tas: Vec<f64> = (0..n * n)
            .map(|i| ((i / n) as f64 * 0.3 + (i % n) as f64 * 0.3).cos())
            .collect();
        let costs = Costs::affinity("tas", tas, n).unwrap();
        let m = matrix(&costs).unwrap();
        for i in 0..n {
            for s in 0..=i {
                let (a, b) = (m[i * (i + 1) / 2 + s], costs.interval(s, i));
                assert!((a - b).abs() < 1e-12, "{s}..={i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn degenerate_inputs_have_the_documented_answers() {
        let flat = Costs::values("snr", &[2.0; 6]).unwrap();
        // Every partition costs 0: ties put each interval's start earliest,
        // from the last backwards, so the first intervals are single steps.
        assert_eq!(solve(&flat, 3), Ok((vec![(0, 0), (1, 1), (2, 5)], 0.0)));
        let steps = Costs::values("timestep", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            solve(&steps, 1),
            Ok((vec![(0, 3)], 4.0)),
            "|1−2| + 0 + 1 + 2"
        );
        assert_eq!(solve(&steps, 4).unwrap().1, 0.0);
        let e = Costs::values("snr", &[3.0, f64::NAN, 1.0]).err().unwrap();
        assert_eq!(
            e.0,
            "`snr` is NaN at index 1 (timestep 2); every value must be finite"
        );
        let e = Costs::values("snr", &[3.0, 2.0, 2.5]).err().unwrap();
        assert!(
            e.0.starts_with("`snr` is not monotone in t: it turns at index 2"),
            "{}",
            e.0
        );
        let e = Costs::affinity("tas", vec![1.0, 0.5, 0.4, 1.0], 2)
            .err()
            .unwrap();
        assert_eq!(e.0, "`tas` is not symmetric: [1, 0] = 0.4 but [0, 1] = 0.5");
    }
}
