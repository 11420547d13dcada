//! The exact optimum of "k contiguous intervals minimising the sum of
//! interval costs" (METHODS.md §6) by dynamic programming over a cost matrix
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
    /// −Σ_(t∈I) A(c, t) for a task-affinity matrix `A` `[T, T]` (TAS).
    Affinity {
        /// `rows[c][i]` = Σ_(t<i) A(c, t): T rows of T + 1.
        rows: Vec<Vec<f64>>,
    },
}

/// Why a signal cannot be clustered: the message and, where it applies, the
/// index of the offending value.
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
    pub fn affinity(name: &str, matrix: &[f64], n: usize) -> Result<Costs, BadSignal> {
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
        for a in 0..n {
            for b in 0..a {
                let (x, y) = (matrix[a * n + b], matrix[b * n + a]);
                if (x - y).abs() > 1e-6 * x.abs().max(y.abs()).max(1.0) {
                    return Err(BadSignal(format!(
                        "`{name}` is not symmetric: [{a}, {b}] = {x} but [{b}, {a}] = {y}"
                    )));
                }
            }
        }
        let rows = (0..n)
            .map(|c| {
                let mut row = Vec::with_capacity(n + 1);
                row.push(0.0);
                for t in 0..n {
                    row.push(row[t] + matrix[c * n + t]);
                }
                row
            })
            .collect();
        Ok(Costs::Affinity { rows })
    }

    /// The number of timesteps.
    pub fn len(&self) -> usize {
        match self {
            Costs::Values { values, .. } => values.len(),
            Costs::Affinity { rows } => rows.len(),
        }
    }

    /// True when there is no timestep.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cost of the interval `l..=r`.
    pub fn interval(&self, l: usize, r: usize) -> f64 {
        let c = (l + r) / 2;
        match self {
            Costs::Values { values, prefix } => {
                let v = values[c];
                let below = (c - l) as f64 * v - (prefix[c] - prefix[l]);
                let above = (prefix[r + 1] - prefix[c + 1]) - (r - c) as f64 * v;
                below + above
            }
            Costs::Affinity { rows } => -(rows[c][r + 1] - rows[c][l]),
        }
    }
}

/// The optimal partition of `0..T` into `k` contiguous intervals (1 ≤ k ≤ T):
/// each interval as (first, last) index, in order, and the total cost.
pub fn solve(costs: &Costs, k: usize) -> (Vec<(usize, usize)>, f64) {
    let n = costs.len();
    assert!(1 <= k && k <= n, "1 ≤ k ≤ T is checked by the caller");
    // cost[i][s] for s ≤ i: the interval s..=i, stored by its end so the
    // inner loop reads one contiguous row.
    let cost: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..=i).map(|s| costs.interval(s, i)).collect())
        .collect();
    // best[i]: the least cost of 0..=i in j + 1 intervals; start[j][i]: where
    // the last of them starts.
    let mut best: Vec<f64> = (0..n).map(|i| cost[i][0]).collect();
    let mut start = vec![vec![0usize; n]; k];
    for j in 1..k {
        let mut next = vec![f64::INFINITY; n];
        for i in j..n {
            // The last interval is s..=i with s ≥ j: every earlier one non-empty.
            let row = &cost[i];
            let (mut value, mut at) = (f64::INFINITY, j);
            for s in j..=i {
                let total = best[s - 1] + row[s];
                if total < value {
                    (value, at) = (total, s);
                }
            }
            next[i] = value;
            start[j][i] = at;
        }
        best = next;
    }
    let mut intervals = Vec::with_capacity(k);
    let mut end = n - 1;
    for j in (0..k).rev() {
        let s = start[j][end];
        intervals.push((s, end));
        end = s.wrapping_sub(1);
    }
    intervals.reverse();
    (intervals, best[n - 1])
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
                    Costs::Affinity { rows } => -(rows[c][t + 1] - rows[c][t]),
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
            let (intervals, cost) = solve(costs, k);
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
            check(&Costs::affinity("tas", &tas, n).unwrap());
        }
    }

    #[test]
    fn degenerate_inputs_have_the_documented_answers() {
        let flat = Costs::values("snr", &[2.0; 6]).unwrap();
        // Every partition costs 0: ties put each interval's start earliest,
        // from the last backwards, so the first intervals are single steps.
        assert_eq!(solve(&flat, 3), (vec![(0, 0), (1, 1), (2, 5)], 0.0));
        let steps = Costs::values("timestep", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(solve(&steps, 1), (vec![(0, 3)], 4.0), "|1−2| + 0 + 1 + 2");
        assert_eq!(solve(&steps, 4).1, 0.0);
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
        let e = Costs::affinity("tas", &[1.0, 0.5, 0.4, 1.0], 2)
            .err()
            .unwrap();
        assert_eq!(e.0, "`tas` is not symmetric: [1, 0] = 0.4 but [0, 1] = 0.5");
    }
}
