//! Heat-map sampling, its colours, and contour lines by marching squares.

use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use plotters::style::RGBColor;

use crate::axis::valid_range;
use crate::HeatMap;

/// At most this many contour levels are drawn.
const MAX_CONTOURS: usize = 100;

/// A segment between two points in data coordinates.
pub(crate) type Segment = ((f64, f64), (f64, f64));

/// The grid's row count, when it is drawable at all.
pub(crate) fn rows(h: &HeatMap) -> Option<usize> {
    let rows = h.values.len().checked_div(h.cols)?;
    let ok = h.cols >= 2
        && rows >= 2
        && valid_range(Some(h.x_range), false).is_some()
        && valid_range(Some(h.y_range), false).is_some();
    ok.then_some(rows)
}

/// The colour limits of `h`: its own, or the finite minimum and maximum
/// (`None` if no value is finite). A flat range is widened so it maps to
/// the middle colour.
pub(crate) fn limits(h: &HeatMap) -> Option<(f64, f64)> {
    let (lo, hi) = match h.limits.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
        Some((lo, hi)) => (lo.min(hi), lo.max(hi)),
        None => h
            .values
            .iter()
            .filter(|v| v.is_finite())
            .fold(None, |r, &v| match r {
                None => Some((v, v)),
                Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
            })?,
    };
    if hi - lo > 0.0 && (hi - lo).is_finite() {
        Some((lo, hi))
    } else {
        let half = (lo.abs() * 0.1).max(1.0);
        Some((lo - half, lo + half))
    }
}

/// The value of `h` at data `(x, y)`: bilinear between finite nodes, the
/// nearest node where a neighbour is not finite, NaN outside the grid.
pub(crate) fn value_at(h: &HeatMap, rows: usize, x: f64, y: f64) -> f64 {
    let grid = |v: f64, (lo, hi): (f64, f64), n: usize| {
        let u = (v - lo) / (hi - lo) * (n - 1) as f64;
        // A little slack at the edges keeps the last pixel filled.
        let tol = 1e-9 * n as f64;
        (u >= -tol && u <= (n - 1) as f64 + tol).then(|| u.clamp(0.0, (n - 1) as f64))
    };
    let (Some(u), Some(v)) = (grid(x, h.x_range, h.cols), grid(y, h.y_range, rows)) else {
        return f64::NAN;
    };
    let i = (u.floor() as usize).min(h.cols - 2);
    let j = (v.floor() as usize).min(rows - 2);
    let (fu, fv) = (u - i as f64, v - j as f64);
    let at = |i: usize, j: usize| h.values[j * h.cols + i];
    let corners = [at(i, j), at(i + 1, j), at(i, j + 1), at(i + 1, j + 1)];
    if corners.iter().all(|v| v.is_finite()) {
        let bottom = corners[0] + fu * (corners[1] - corners[0]);
        let top = corners[2] + fu * (corners[3] - corners[2]);
        bottom + fv * (top - bottom)
    } else {
        at(i + usize::from(fu >= 0.5), j + usize::from(fv >= 0.5))
    }
}

/// The colour-map colour at `t` in `[0, 1]` (clamped; NaN gives the low end).
pub(crate) fn colour(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    ViridisRGB.get_color(t)
}

/// A colour that stands out on `c`: `c` blended 45% toward white on dark
/// colours, toward black on light ones.
pub(crate) fn contrast(c: RGBColor) -> RGBColor {
    let luma = 0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2);
    let target = if luma < 128.0 { 255.0 } else { 0.0 };
    let mix = |v: u8| (f64::from(v) + 0.45 * (target - f64::from(v))).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// Contour levels as fractions of the limits: `k / (n + 1)` for `k = 1..=n`.
pub(crate) fn levels(h: &HeatMap) -> impl Iterator<Item = f64> {
    let n = h.contours.min(MAX_CONTOURS);
    (1..=n).map(move |k| k as f64 / (n + 1) as f64)
}

/// The contour of `h` at `level`, as segments in data coordinates (marching
/// squares; cells with a non-finite corner have none).
pub(crate) fn contour(h: &HeatMap, rows: usize, level: f64) -> Vec<Segment> {
    let dx = (h.x_range.1 - h.x_range.0) / (h.cols - 1) as f64;
    let dy = (h.y_range.1 - h.y_range.0) / (rows - 1) as f64;
    let node = |i: usize, j: usize| (h.x_range.0 + i as f64 * dx, h.y_range.0 + j as f64 * dy);
    let mut out = Vec::new();
    for j in 0..rows - 1 {
        for i in 0..h.cols - 1 {
            // Corners counter-clockwise from bottom-left; edge k joins
            // corner k to corner k + 1 (bottom, right, top, left).
            let at = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
            let v = at.map(|(i, j)| h.values[j * h.cols + i]);
            if v.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let above = v.map(|v| v > level);
            let cross = |k: usize| {
                let l = (k + 1) % 4;
                // From the lower node of the edge, so the two cells that
                // share an edge compute the very same point.
                let (k, l) = if (at[k].1, at[k].0) < (at[l].1, at[l].0) {
                    (k, l)
                } else {
                    (l, k)
                };
                (above[k] != above[l]).then(|| {
                    let t = (level - v[k]) / (v[l] - v[k]);
                    let (a, b) = (node(at[k].0, at[k].1), node(at[l].0, at[l].1));
                    (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
                })
            };
            let edges = [cross(0), cross(1), cross(2), cross(3)];
            match edges {
                [Some(b), Some(r), Some(t), Some(l)] => {
                    // A saddle: the centre decides which corners connect.
                    // If it is on the side of corners 0 and 2, the lines
                    // cut off corners 1 and 3, else corners 0 and 2.
                    let centre = v.iter().sum::<f64>() / 4.0 > level;
                    if centre == above[0] {
                        out.extend([(b, r), (t, l)]);
                    } else {
                        out.extend([(l, b), (r, t)]);
                    }
                }
                _ => {
                    let mut found = edges.into_iter().flatten();
                    if let (Some(a), Some(b)) = (found.next(), found.next()) {
                        out.push((a, b));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(cols: usize, values: Vec<f64>) -> HeatMap {
        HeatMap {
            x_range: (0.0, (cols - 1) as f64),
            y_range: (0.0, (values.len() / cols - 1) as f64),
            cols,
            values,
            ..HeatMap::default()
        }
    }

    #[test]
    fn bilinear_inside_nearest_beside_nan_and_nan_outside() {
        let h = grid(2, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(value_at(&h, 2, 0.5, 0.5), 1.5);
        assert_eq!(value_at(&h, 2, 1.0, 1.0), 3.0);
        assert!(value_at(&h, 2, 1.5, 0.5).is_nan());
        let h = grid(2, vec![0.0, 1.0, 2.0, f64::NAN]);
        assert_eq!(value_at(&h, 2, 0.2, 0.7), 2.0);
        assert!(value_at(&h, 2, 0.9, 0.9).is_nan());
    }

    #[test]
    fn contours_follow_the_level() {
        // A cone around the centre: each level is a closed loop whose
        // points all lie at that value.
        let n = 21;
        let values = (0..n * n)
            .map(|k| {
                let (x, y) = ((k % n) as f64 - 10.0, (k / n) as f64 - 10.0);
                (x * x + y * y).sqrt()
            })
            .collect();
        let h = grid(n, values);
        for level in [2.5, 5.0, 7.5] {
            let segs = contour(&h, n, level);
            assert!(segs.len() > 8, "{level}: {} segments", segs.len());
            for (a, b) in segs {
                for p in [a, b] {
                    let r = ((p.0 - 10.0).powi(2) + (p.1 - 10.0).powi(2)).sqrt();
                    assert!((r - level).abs() < 0.1, "{p:?} at radius {r}");
                }
            }
        }
        // A saddle cell gives two segments that do not cross.
        let saddle = grid(2, vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(contour(&saddle, 2, 0.4).len(), 2);
        assert_eq!(contour(&saddle, 2, 2.0), vec![]);
        let nan = grid(2, vec![1.0, 0.0, f64::NAN, 1.0]);
        assert_eq!(contour(&nan, 2, 0.5), vec![]);
    }
}
