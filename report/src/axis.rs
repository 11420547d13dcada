//! Axis ranges, tick positions and tick labels.
//!
//! plotters' own ranged coordinates pick their ticks themselves (not
//! whole decades on a short log axis) and assume finite, non-empty ranges;
//! this module turns any data into a usable axis first.

/// Axis ranges are clamped here so spans and tick arithmetic stay finite.
const LIMIT: f64 = 1e300;
/// Log axes stay within these decades for the same reason.
const LOG_LIMIT: f64 = 300.0;
/// At most this many intervals between ticks, so at most 6 ticks.
const MAX_INTERVALS: i64 = 5;
/// Share of the tick range added beyond each end of an axis fitted to the
/// data, so points on the outermost ticks clear the frame.
const PAD: f64 = 0.02;

/// A resolved axis in axis space: the value itself on a linear axis, its
/// `log10` on a log axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// The low end of the shown range.
    pub lo: f64,
    /// The high end of the shown range.
    pub hi: f64,
    /// Tick positions, inside `lo..=hi`.
    pub ticks: Vec<f64>,
    /// Distance between ticks; decides how many decimals labels get.
    pub step: f64,
    /// Whether axis space is `log10` of the data.
    pub log: bool,
}

impl Axis {
    /// The axis for data spanning `data` (`None`: no data), or for the fixed
    /// range `fixed` when that is usable.
    pub fn new(data: Option<(f64, f64)>, fixed: Option<(f64, f64)>, log: bool) -> Axis {
        match (log, valid_range(fixed, log)) {
            (true, Some(range)) => log_axis(range, false),
            (true, None) => log_axis(data.unwrap_or((1.0, 10.0)), true),
            (false, Some((lo, hi))) => linear_axis(lo, hi, false),
            (false, None) => {
                let (lo, hi) = data.unwrap_or((0.0, 1.0));
                linear_axis(lo, hi, true)
            }
        }
    }

    /// Where data value `v` falls, as a fraction of the axis (0 at `lo`, 1
    /// at `hi`).
    pub fn frac(&self, v: f64) -> f64 {
        self.place(if self.log { v.log10() } else { v })
    }

    /// Where `a`, in axis space, falls as a fraction of the axis.
    pub fn place(&self, a: f64) -> f64 {
        // Halving first keeps differences of huge values finite.
        let f = (a / 2.0 - self.lo / 2.0) / (self.hi / 2.0 - self.lo / 2.0);
        if f.is_nan() {
            0.0
        } else {
            // Only absurdly distant values land far outside; bounding them
            // keeps pixel arithmetic finite.
            f.clamp(-1e6, 1e6)
        }
    }

    /// The data value at fraction `f` of the axis (the inverse of [`Axis::frac`]).
    pub fn value_at(&self, f: f64) -> f64 {
        let a = self.lo + f * (self.hi - self.lo);
        if self.log {
            10f64.powf(a)
        } else {
            a
        }
    }

    /// The label of tick `t`.
    pub fn label(&self, t: f64) -> String {
        if self.log {
            let e = t.round() as i64;
            let v = pow10(e);
            // Decades past f64's range (on a 1e-300..1e300 axis).
            if v.is_normal() {
                fmt_tick(v, v)
            } else {
                format!("1e{e}")
            }
        } else {
            fmt_tick(t, self.step)
        }
    }
}

/// `r` when it can be an axis: finite, `lo < hi`, and positive on a log axis.
pub(crate) fn valid_range(r: Option<(f64, f64)>, log: bool) -> Option<(f64, f64)> {
    r.filter(|&(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi && (!log || lo > 0.0))
}

/// A linear axis over `lo..hi` with 1/2/5·10^k ticks. `fitted`: the axis
/// grows to the ticks just outside the data and is padded; otherwise it
/// spans exactly `lo..hi` with the ticks that fall inside.
fn linear_axis(lo: f64, hi: f64, fitted: bool) -> Axis {
    let (mut lo, mut hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    // Below this span labels would need absurd precision, so the data is
    // shown flat and centred instead (a fixed range that narrow too).
    let min_span = (lo.abs().max(hi.abs()) * 1e-9).max(1e-290);
    let fitted = if hi - lo < min_span {
        let mid = lo / 2.0 + hi / 2.0;
        let half = if mid == 0.0 {
            1.0
        } else {
            (mid.abs() * 0.1).max(min_span)
        };
        (lo, hi) = (mid - half, mid + half);
        true
    } else {
        fitted
    };
    let span = hi - lo;
    let e = span.log10().floor() as i64;
    // The smallest step that needs at most MAX_INTERVALS; the search
    // always ends by 10^(e+1), which spans the data in at most 2.
    let found = (e - 1..=e + 1)
        .flat_map(|exp| [1.0, 2.0, 5.0].map(|m| m * pow10(exp)))
        .filter(|s| s.is_finite() && *s > 0.0)
        .find_map(|step| {
            let (k0, k1) = if fitted {
                ((lo / step).floor(), (hi / step).ceil())
            } else {
                ((lo / step).ceil(), (hi / step).floor())
            };
            (((k1 - k0) as i64) <= MAX_INTERVALS).then_some((step, k0, k1))
        });
    let Some((step, k0, k1)) = found else {
        return Axis {
            lo,
            hi,
            ticks: vec![lo, hi],
            step: span,
            log: false,
        };
    };
    let ticks: Vec<f64> = (0..=(k1 - k0) as i64)
        .map(|i| (k0 + i as f64) * step)
        .collect();
    if fitted {
        let pad = PAD * (k1 - k0) * step;
        Axis {
            lo: k0 * step - pad,
            hi: k1 * step + pad,
            ticks,
            step,
            log: false,
        }
    } else {
        Axis {
            lo,
            hi,
            ticks,
            step,
            log: false,
        }
    }
}

/// A log axis over positive `lo..hi`, widened to whole decades, with ticks
/// at powers of ten (every 1, 2, 5, 10, ... decades, at most 6 ticks);
/// padded like a fitted linear axis when `fitted`.
fn log_axis((lo, hi): (f64, f64), fitted: bool) -> Axis {
    let mut e0 = lo.log10().floor().clamp(-LOG_LIMIT, LOG_LIMIT) as i64;
    let mut e1 = hi.log10().ceil().clamp(-LOG_LIMIT, LOG_LIMIT) as i64;
    if e1 <= e0 {
        // A single power of ten: centre it in two decades.
        e0 -= 1;
        e1 = e0 + 2;
    }
    let ceil_div = |a: i64, b: i64| -(-a).div_euclid(b);
    let stride = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
        .into_iter()
        .find(|&s| ceil_div(e1, s) - e0.div_euclid(s) <= MAX_INTERVALS)
        .unwrap_or(1000);
    let (k0, k1) = (e0.div_euclid(stride), ceil_div(e1, stride));
    let (lo, hi) = ((k0 * stride) as f64, (k1 * stride) as f64);
    let pad = if fitted { PAD * (hi - lo) } else { 0.0 };
    Axis {
        lo: lo - pad,
        hi: hi + pad,
        ticks: (k0..=k1).map(|k| (k * stride) as f64).collect(),
        step: stride as f64,
        log: true,
    }
}

/// `10^e`, parsed so it is the correctly rounded value (`powi` can be off by
/// an ulp, which shows up as ragged ticks and labels).
pub(crate) fn pow10(e: i64) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// Compact tick label: "0", "0.25", "2.5k", "12k", "3M", "1e-3", "1.5e15".
///
/// |v| in [0.01, 1000) prints as a plain decimal, [1e3, 1e15) with a
/// k/M/G/T suffix, anything else in scientific form. Decimals come from the
/// tick step so neighbouring labels differ without trailing noise.
pub(crate) fn fmt_tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return "?".to_string();
    }
    let step = step.abs();
    let a = v.abs();
    if a == 0.0 || a < step * 1e-6 {
        return "0".to_string();
    }
    let step_exp = if step > 0.0 && step.is_finite() {
        step.log10().floor() as i64
    } else {
        a.log10().floor() as i64
    };
    if !(1e-2..1e15).contains(&a) {
        let mut e = a.log10().floor() as i64;
        loop {
            let decimals = (e - step_exp).clamp(0, 9) as usize;
            let s = format!("{:.*}", decimals, v / pow10(e));
            // Rounding may carry into a new digit ("10.0"): renormalise.
            if s.trim_start_matches('-').starts_with("10") {
                e += 1;
                continue;
            }
            return format!("{}e{}", trim_zeros(&s), e);
        }
    } else if a >= 1000.0 {
        const SUFFIX: [char; 4] = ['k', 'M', 'G', 'T'];
        let mut n = ((a.log10() / 3.0).floor() as i64).clamp(1, 4);
        loop {
            let decimals = (3 * n - step_exp).clamp(0, 9) as usize;
            let s = format!("{:.*}", decimals, v / pow10(3 * n));
            // "1000k" reads better as "1M".
            let carried = s.trim_start_matches('-').split('.').next().map(str::len) == Some(4);
            if carried && n < 4 {
                n += 1;
                continue;
            }
            return format!("{}{}", trim_zeros(&s), SUFFIX[(n - 1) as usize]);
        }
    } else {
        let decimals = (-step_exp).clamp(0, 12) as usize;
        trim_zeros(&format!("{:.*}", decimals, v))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_linear_axes_have_few_nice_ticks_around_the_data() {
        for (lo, hi) in [
            (0.0, 1.0),
            (0.0, 1.3),
            (0.1, 2.6),
            (-3.7, 12.2),
            (1e-7, 3e-7),
            (0.0, 12000.0),
            (1e200, 3e200),
            (999.0, 1001.0),
            (-1e300, 1e300),
        ] {
            let ax = Axis::new(Some((lo, hi)), None, false);
            let n = ax.ticks.len();
            assert!((3..=6).contains(&n), "{lo}..{hi}: {n} ticks");
            assert!(ax.lo < lo && ax.hi > hi, "{lo}..{hi}: {ax:?} is padded");
            assert!(ax.ticks[0] <= lo && ax.ticks[n - 1] >= hi, "{ax:?}");
            let mant = ax.step / pow10(ax.step.log10().floor() as i64);
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mant - m).abs() < 1e-9),
                "{lo}..{hi}: step {}",
                ax.step
            );
            let labels: Vec<String> = ax.ticks.iter().map(|&t| ax.label(t)).collect();
            for w in labels.windows(2) {
                assert_ne!(w[0], w[1], "{lo}..{hi}: duplicate labels {labels:?}");
            }
        }
        let flat = Axis::new(Some((2.0, 2.0)), None, false);
        assert!(flat.lo < 2.0 && flat.hi > 2.0, "flat range is widened");
        let none = Axis::new(None, None, false);
        assert!(none.lo < 0.0 && none.hi > 1.0);
    }

    #[test]
    fn fixed_ranges_are_kept_exactly_and_bad_ones_ignored() {
        let ax = Axis::new(Some((-50.0, 30.0)), Some((-11.0, 11.0)), false);
        assert_eq!((ax.lo, ax.hi), (-11.0, 11.0));
        assert_eq!(ax.ticks, vec![-10.0, -5.0, 0.0, 5.0, 10.0]);
        for bad in [
            (3.0, 3.0),
            (4.0, 1.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
        ] {
            let ax = Axis::new(Some((-50.0, 30.0)), Some(bad), false);
            assert!(ax.lo < -50.0 && ax.hi > 30.0, "{bad:?} ignored: {ax:?}");
        }
        // On a log axis a fixed range must be positive, and grows to decades.
        let ax = Axis::new(Some((1.0, 10.0)), Some((0.02, 30.0)), true);
        assert_eq!((ax.lo, ax.hi), (-2.0, 2.0));
        let ax = Axis::new(Some((1.0, 10.0)), Some((-1.0, 30.0)), true);
        assert!(ax.lo < 0.0 && ax.hi > 1.0, "{ax:?}");
    }

    #[test]
    fn log_axes_tick_whole_decades() {
        for (lo, hi) in [(1e-3, 100.0), (0.5, 0.7), (1.0, 1.0), (1e-300, 1e300)] {
            let ax = Axis::new(Some((lo, hi)), None, true);
            assert!(ax.ticks.len() <= 6 && ax.ticks.len() >= 2, "{ax:?}");
            assert!(ax.ticks.iter().all(|t| t.fract() == 0.0), "{ax:?}");
            assert!(ax.lo < lo.log10() && ax.hi > hi.log10(), "{ax:?}");
            let labels: Vec<String> = ax.ticks.iter().map(|&t| ax.label(t)).collect();
            let powers_of_ten = labels.iter().all(|l| {
                l.trim_start_matches("0.")
                    .trim_start_matches('0')
                    .starts_with('1')
            });
            assert!(powers_of_ten, "{labels:?}");
        }
        let ax = Axis::new(Some((1e-3, 100.0)), None, true);
        let labels: Vec<String> = ax.ticks.iter().map(|&t| ax.label(t)).collect();
        assert_eq!(labels, ["1e-3", "0.01", "0.1", "1", "10", "100"]);
        assert!((ax.frac(1.0) - (0.0 - ax.lo) / (ax.hi - ax.lo)).abs() < 1e-12);
        assert!((ax.value_at(ax.frac(42.0)) - 42.0).abs() < 1e-9);
    }

    #[test]
    fn tick_label_format() {
        assert_eq!(fmt_tick(0.0, 0.5), "0");
        assert_eq!(fmt_tick(0.5, 0.5), "0.5");
        assert_eq!(fmt_tick(0.25, 0.05), "0.25");
        assert_eq!(fmt_tick(-2.0, 1.0), "-2");
        assert_eq!(fmt_tick(1e-3, 1e-3), "1e-3");
        assert_eq!(fmt_tick(1.5e-3, 5e-4), "1.5e-3");
        assert_eq!(fmt_tick(9.96e-3, 1e-3), "1e-2", "rounding carries");
        assert_eq!(fmt_tick(2500.0, 500.0), "2.5k");
        assert_eq!(fmt_tick(12000.0, 2000.0), "12k");
        assert_eq!(fmt_tick(999_999.0, 1.0), "999.999k");
        assert_eq!(fmt_tick(999_999.0, 1000.0), "1M", "1000k carries");
        assert_eq!(fmt_tick(3e6, 1e6), "3M");
        assert_eq!(fmt_tick(2e15, 1e15), "2e15");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(1e-17, 0.1), "0", "float noise near zero");
        assert_eq!(fmt_tick(f64::NAN, 1.0), "?");
    }
}
