//! Dependency-light PNG line charts for training curves and 2-D trajectories.
//!
//! Text uses the public-domain 8x8 bitmap glyphs of `font8x8`, so rendering needs
//! no system fonts; PNG encoding uses the `png` crate. Output is deterministic:
//! the same panels always give the same bytes.

use font8x8::{UnicodeFonts, BASIC_FONTS, LATIN_FONTS};

/// One named line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Name shown in the panel's legend.
    pub label: String,
    /// `(x, y)` points joined in order; a non-finite point (or `y <= 0` on a
    /// log axis) is skipped and breaks the line.
    pub points: Vec<(f64, f64)>,
}

/// One chart: axes, ticks, a legend, any number of series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panel {
    /// Text drawn centred above the plot.
    pub title: String,
    /// Text drawn under the x axis.
    pub x_label: String,
    /// Text drawn upwards beside the y axis.
    pub y_label: String,
    /// Lines to draw; series `i` gets palette colour `i % 8`.
    pub series: Vec<Series>,
    /// Map y by `log10`, with ticks at powers of ten.
    pub log_y: bool,
}

/// Renders panels in a grid with `columns` columns (rows as needed) and returns the PNG file bytes.
///
/// Each panel is 480x320 px. `columns` is clamped to `1..=panels.len()` so a
/// generous value never adds empty columns; with no panels the result is one
/// blank panel-sized image.
pub fn render_png(panels: &[Panel], columns: usize) -> Vec<u8> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let mut canvas = Canvas::new(columns * PANEL_W as usize, rows * PANEL_H as usize);
    for (i, panel) in panels.iter().enumerate() {
        let ox = (i % columns) as i64 * PANEL_W;
        let oy = (i / columns) as i64 * PANEL_H;
        draw_panel(&mut canvas, panel, ox, oy);
    }
    canvas.encode()
}

const PANEL_W: i64 = 480;
const PANEL_H: i64 = 320;
/// Glyph cell size of `font8x8`.
const CH: i64 = 8;
/// Axis ranges are clamped here so spans and tick arithmetic stay finite.
const LIMIT: f64 = 1e300;
/// Log axes stay within these decades for the same reason.
const LOG_LIMIT: f64 = 300.0;
/// Longest y tick label that still gets its full width of margin.
const MAX_YTICK_CHARS: usize = 12;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const TITLE: Rgb = [20, 20, 20];
const TEXT: Rgb = [60, 60, 60];
const AXIS: Rgb = [128, 128, 128];
const GRID: Rgb = [232, 232, 232];
const LEGEND_BORDER: Rgb = [180, 180, 180];
/// Tableau-like colours, distinguishable and distinct from every UI colour
/// above, so a pixel of a palette colour can only come from a series.
const PALETTE: [Rgb; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// Inclusive pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn inset(self, d: i64) -> Rect {
        Rect {
            x0: self.x0 + d,
            y0: self.y0 + d,
            x1: self.x1 - d,
            y1: self.y1 - d,
        }
    }

    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// RGB8 pixel buffer; every write is clipped so drawing never panics.
struct Canvas {
    w: usize,
    h: usize,
    buf: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            buf: vec![255; w * h * 3],
        }
    }

    fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return None;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        Some([self.buf[i], self.buf[i + 1], self.buf[i + 2]])
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb, clip: &Rect) {
        if !clip.contains(x, y) || x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        self.buf[i..i + 3].copy_from_slice(&c);
    }

    fn fill(&mut self, r: Rect, c: Rgb, clip: &Rect) {
        for y in r.y0..=r.y1 {
            for x in r.x0..=r.x1 {
                self.set(x, y, c, clip);
            }
        }
    }

    fn outline(&mut self, r: Rect, c: Rgb, clip: &Rect) {
        for x in r.x0..=r.x1 {
            self.set(x, r.y0, c, clip);
            self.set(x, r.y1, c, clip);
        }
        for y in r.y0..=r.y1 {
            self.set(r.x0, y, c, clip);
            self.set(r.x1, y, c, clip);
        }
    }

    /// 2-px Bresenham line: the extra pixel sits across the major axis so
    /// the stroke stays 2 px wide at any slope, with exact palette colours.
    fn line(&mut self, (mut x, mut y): (i64, i64), (x1, y1): (i64, i64), c: Rgb, clip: &Rect) {
        let dx = (x1 - x).abs();
        let dy = -(y1 - y).abs();
        let sx = if x < x1 { 1 } else { -1 };
        let sy = if y < y1 { 1 } else { -1 };
        let x_major = dx >= -dy;
        let mut err = dx + dy;
        loop {
            self.set(x, y, c, clip);
            if x_major {
                self.set(x, y + 1, c, clip);
            } else {
                self.set(x + 1, y, c, clip);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Left-to-right text with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, clip: &Rect) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.set(x + i as i64 * CH + col, y + row as i64, c, clip);
                    }
                }
            }
        }
    }

    /// Text rotated 90 degrees counter-clockwise, read bottom to top, whose
    /// first glyph's bottom-left corner is at `(x, y_bottom)`.
    fn text_up(&mut self, x: i64, y_bottom: i64, s: &str, c: Rgb, clip: &Rect) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.set(x + row as i64, y_bottom - i as i64 * CH - col, c, clip);
                    }
                }
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let w = u32::try_from(self.w).expect("image width fits in u32");
        let h = u32::try_from(self.h).expect("image height fits in u32");
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .expect("writing a PNG header into a Vec cannot fail");
        writer
            .write_image_data(&self.buf)
            .expect("buffer length matches the declared RGB8 size");
        writer
            .finish()
            .expect("finishing a PNG into a Vec cannot fail");
        out
    }
}

fn glyph(c: char) -> [u8; 8] {
    BASIC_FONTS
        .get(c)
        .or_else(|| LATIN_FONTS.get(c))
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Cuts `s` to at most `max` chars, marking the cut with "..".
fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max < 3 {
        return s.chars().take(max).collect();
    }
    let mut t: String = s.chars().take(max - 2).collect();
    t.push_str("..");
    t
}

fn text_px(s: &str) -> i64 {
    s.chars().count() as i64 * CH
}

/// `10^e`, parsed so it is the correctly rounded value (`powi` can be off by
/// an ulp, which would show up as ragged tick positions).
fn pow10(e: i64) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// A resolved axis: `lo..hi` in axis space (decades when `log`), tick
/// positions in the same space, and the step used to format their labels.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
    log: bool,
}

impl Axis {
    /// Position of data value `v` as a fraction of the axis (0 = lo, 1 = hi).
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo) / (self.hi - self.lo)
        } else {
            // Halving first keeps differences of huge values finite.
            (v / 2.0 - self.lo / 2.0) / (self.hi / 2.0 - self.lo / 2.0)
        };
        // Only values beyond LIMIT can land far outside; bound them so pixel
        // arithmetic stays finite.
        if f.is_nan() {
            0.0
        } else {
            f.clamp(-1e6, 1e6)
        }
    }

    fn frac_tick(&self, t: f64) -> f64 {
        (t - self.lo) / (self.hi - self.lo)
    }

    fn label(&self, t: f64) -> String {
        if self.log {
            let e = t.round() as i64;
            if e.abs() <= LOG_LIMIT as i64 {
                let v = pow10(e);
                fmt_tick(v, v)
            } else {
                format!("1e{e}")
            }
        } else {
            fmt_tick(t, self.step)
        }
    }
}

/// Linear axis over `range` (data min, max) with 4-6 ticks at 1/2/5 x 10^k.
fn linear_axis(range: Option<(f64, f64)>) -> Axis {
    let (lo, hi) = range.unwrap_or((0.0, 1.0));
    let (mut lo, mut hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let mag = lo.abs().max(hi.abs());
    // Below this relative span tick labels would need absurd precision, so the
    // data is shown as flat and centred instead.
    let min_span = (mag * 1e-9).max(1e-290);
    if hi - lo < min_span {
        let mid = lo / 2.0 + hi / 2.0;
        let half = if mid == 0.0 {
            1.0
        } else {
            (mid.abs() * 0.1).max(min_span)
        };
        lo = mid - half;
        hi = mid + half;
    }
    let span = hi - lo;
    let e = span.log10().floor() as i64;
    // (waste, count, step, k0, k1): prefer 4-6 ticks with the least range
    // beyond the data, ties going to fewer ticks.
    let mut best: Option<(f64, i64, f64, f64, f64)> = None;
    let mut fallback: Option<(f64, f64, f64)> = None;
    for exp in (e - 2)..=(e + 1) {
        for m in [1.0, 2.0, 5.0] {
            let step = m * pow10(exp);
            if !(step.is_finite() && step > 0.0) {
                continue;
            }
            let k0 = (lo / step).floor();
            let k1 = (hi / step).ceil();
            let count = (k1 - k0) as i64 + 1;
            if fallback.is_none() && count <= 6 {
                fallback = Some((step, k0, k1));
            }
            if (4..=6).contains(&count) {
                let waste = (k1 - k0) * step / span;
                let better = match best {
                    None => true,
                    Some((bw, bc, ..)) => waste < bw - 1e-12 || (waste <= bw + 1e-12 && count < bc),
                };
                if better {
                    best = Some((waste, count, step, k0, k1));
                }
            }
        }
    }
    let chosen = best.map(|(_, _, s, k0, k1)| (s, k0, k1)).or(fallback);
    match chosen {
        Some((step, k0, k1)) => {
            let ticks: Vec<f64> = (0..=(k1 - k0) as i64)
                .map(|i| (k0 + i as f64) * step)
                .collect();
            Axis {
                lo: k0 * step,
                hi: k1 * step,
                ticks,
                step,
                log: false,
            }
        }
        None => Axis {
            lo,
            hi,
            ticks: vec![lo, hi],
            step: span,
            log: false,
        },
    }
}

/// Log axis over positive `range`, ticks at powers of ten (every 1, 2, 5,
/// 10, ... decades so there are at most 6).
fn log_axis(range: Option<(f64, f64)>) -> Axis {
    let (lo, hi) = range.unwrap_or((1.0, 10.0));
    let mut e0 = lo.log10().floor().clamp(-LOG_LIMIT, LOG_LIMIT) as i64;
    let mut e1 = hi.log10().ceil().clamp(-LOG_LIMIT, LOG_LIMIT) as i64;
    if e1 <= e0 {
        // A single power of ten: centre it in two decades.
        e0 -= 1;
        e1 = e0 + 2;
    }
    let mut stride = 1;
    for s in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] {
        stride = s;
        if ceil_div(e1, s) - e0.div_euclid(s) < 6 {
            break;
        }
    }
    let k0 = e0.div_euclid(stride);
    let k1 = ceil_div(e1, stride);
    Axis {
        lo: (k0 * stride) as f64,
        hi: (k1 * stride) as f64,
        ticks: (k0..=k1).map(|k| (k * stride) as f64).collect(),
        step: stride as f64,
        log: true,
    }
}

/// Ceiling division for signed values (`i64::div_ceil` is not stable).
fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// Compact tick label: "0", "0.25", "2.5k", "12k", "3M", "1e-3", "1.5e15".
///
/// Rule: |v| in [0.01, 1000) prints as a plain decimal; [1e3, 1e15) with a
/// k/M/G/T suffix; anything else in scientific form. Decimals come from the
/// tick step so neighbouring labels differ without trailing noise.
fn fmt_tick(v: f64, step: f64) -> String {
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
        for _ in 0..2 {
            let decimals = (e - step_exp).clamp(0, 9) as usize;
            let s = format!("{:.*}", decimals, v / pow10(e));
            // Rounding may carry into a new digit ("10.0"): renormalise once.
            if s.trim_start_matches('-').starts_with("10") {
                e += 1;
                continue;
            }
            return format!("{}e{}", trim_zeros(&s), e);
        }
        format!("{}e{}", trim_zeros(&format!("{:.0}", v / pow10(e))), e)
    } else if a >= 1000.0 {
        const SUFFIX: [char; 4] = ['k', 'M', 'G', 'T'];
        let mut n = ((a.log10() / 3.0).floor() as i64).clamp(1, 4);
        loop {
            let decimals = (3 * n - step_exp).clamp(0, 9) as usize;
            let s = format!("{:.*}", decimals, v / pow10(3 * n));
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

/// Where everything in one panel goes, and how data maps to pixels.
struct Geometry {
    /// The whole panel; all drawing for it is clipped here.
    panel: Rect,
    /// The grey axes box.
    frame: Rect,
    /// Where axis ends map; inset from the frame so extreme data stays visible.
    data: Rect,
    x: Axis,
    y: Axis,
}

impl Geometry {
    fn px(&self, x: f64) -> f64 {
        self.data.x0 as f64 + self.x.frac(x) * (self.data.x1 - self.data.x0) as f64
    }

    fn py(&self, y: f64) -> f64 {
        self.data.y1 as f64 - self.y.frac(y) * (self.data.y1 - self.data.y0) as f64
    }

    fn tick_px(&self, t: f64) -> i64 {
        (self.data.x0 as f64 + self.x.frac_tick(t) * (self.data.x1 - self.data.x0) as f64).round()
            as i64
    }

    fn tick_py(&self, t: f64) -> i64 {
        (self.data.y1 as f64 - self.y.frac_tick(t) * (self.data.y1 - self.data.y0) as f64).round()
            as i64
    }
}

fn drawable(p: (f64, f64), log_y: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0)
}

fn extend(r: Option<(f64, f64)>, v: f64) -> Option<(f64, f64)> {
    Some(match r {
        None => (v, v),
        Some((lo, hi)) => (lo.min(v), hi.max(v)),
    })
}

fn geometry(panel: &Panel, ox: i64, oy: i64) -> Geometry {
    let (mut xr, mut yr) = (None, None);
    for s in &panel.series {
        for &p in &s.points {
            if drawable(p, panel.log_y) {
                xr = extend(xr, p.0);
                yr = extend(yr, p.1);
            }
        }
    }
    let x = linear_axis(xr);
    let y = if panel.log_y {
        log_axis(yr)
    } else {
        linear_axis(yr)
    };
    let ylw = y
        .ticks
        .iter()
        .map(|&t| y.label(t).chars().count().min(MAX_YTICK_CHARS))
        .max()
        .unwrap_or(1) as i64
        * CH;
    let frame = Rect {
        x0: ox + 16 + ylw + 6,
        y0: oy + 22,
        x1: ox + PANEL_W - 14,
        y1: oy + PANEL_H - 34,
    };
    Geometry {
        panel: Rect {
            x0: ox,
            y0: oy,
            x1: ox + PANEL_W - 1,
            y1: oy + PANEL_H - 1,
        },
        frame,
        data: frame.inset(4),
        x,
        y,
    }
}

/// Liang-Barsky clip of segment `a-b` to `r`; `None` when fully outside.
fn clip_segment(a: (f64, f64), b: (f64, f64), r: &Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    let checks = [
        (-dx, a.0 - r.x0 as f64),
        (dx, r.x1 as f64 - a.0),
        (-dy, a.1 - r.y0 as f64),
        (dy, r.y1 as f64 - a.1),
    ];
    for (p, q) in checks {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    Some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

fn round_pt(p: (f64, f64)) -> (i64, i64) {
    (p.0.round() as i64, p.1.round() as i64)
}

fn draw_series(c: &mut Canvas, g: &Geometry, s: &Series, color: Rgb, log_y: bool) {
    let inner = g.frame.inset(1);
    // Runs of consecutive drawable points; a skipped point ends a run.
    let mut run: Vec<(f64, f64)> = Vec::new();
    let flush = |c: &mut Canvas, run: &mut Vec<(f64, f64)>| {
        if run.len() == 1 {
            // A lone point has no segment, so mark it with a 3x3 dot.
            let (x, y) = round_pt(run[0]);
            let dot = Rect {
                x0: x - 1,
                y0: y - 1,
                x1: x + 1,
                y1: y + 1,
            };
            c.fill(dot, color, &inner);
        }
        for w in run.windows(2) {
            if let Some((a, b)) = clip_segment(w[0], w[1], &inner) {
                c.line(round_pt(a), round_pt(b), color, &inner);
            }
        }
        run.clear();
    };
    for &p in &s.points {
        if drawable(p, log_y) {
            run.push((g.px(p.0), g.py(p.1)));
        } else {
            flush(c, &mut run);
        }
    }
    flush(c, &mut run);
}

fn draw_legend(c: &mut Canvas, g: &Geometry, series: &[Series]) {
    if series.is_empty() {
        return;
    }
    const ROW: i64 = 11;
    const SWATCH: i64 = 16;
    let avail_w = g.frame.x1 - g.frame.x0 - 12;
    let avail_h = g.frame.y1 - g.frame.y0 - 12;
    let max_chars = ((avail_w - SWATCH - 12) / CH).clamp(1, 24) as usize;
    let fit_rows = ((avail_h - 5) / ROW).max(1) as usize;
    let (shown, more) = if series.len() > fit_rows {
        (fit_rows - 1, series.len() - (fit_rows - 1))
    } else {
        (series.len(), 0)
    };
    let mut lines: Vec<String> = series[..shown]
        .iter()
        .map(|s| fit(&s.label, max_chars))
        .collect();
    if more > 0 {
        lines.push(fit(&format!("+{more} more"), max_chars));
    }
    let text_w = lines.iter().map(|l| text_px(l)).max().unwrap_or(0);
    let w = 4 + SWATCH + 4 + text_w + 4;
    let h = lines.len() as i64 * ROW + 5;
    let f = g.frame;
    let at = |x0: i64, y0: i64| Rect {
        x0,
        y0,
        x1: x0 + w - 1,
        y1: y0 + h - 1,
    };
    let candidates = [
        at(f.x1 - 6 - w + 1, f.y0 + 6),
        at(f.x0 + 6, f.y0 + 6),
        at(f.x1 - 6 - w + 1, f.y1 - 6 - h + 1),
        at(f.x0 + 6, f.y1 - 6 - h + 1),
    ];
    // Put the legend in the corner hiding the fewest series pixels; strict `<`
    // keeps the choice deterministic and top-right by default.
    let covered = |r: &Rect| {
        let mut n = 0usize;
        for y in r.y0..=r.y1 {
            for x in r.x0..=r.x1 {
                if c.get(x, y).is_some_and(|p| PALETTE.contains(&p)) {
                    n += 1;
                }
            }
        }
        n
    };
    let mut best = candidates[0];
    let mut best_n = covered(&best);
    for r in &candidates[1..] {
        let n = covered(r);
        if n < best_n {
            best = *r;
            best_n = n;
        }
    }
    let clip = g.panel;
    c.fill(best, WHITE, &clip);
    c.outline(best, LEGEND_BORDER, &clip);
    for (i, line) in lines.iter().enumerate() {
        let top = best.y0 + 3 + i as i64 * ROW;
        if i < shown {
            let color = PALETTE[i % PALETTE.len()];
            let sw = Rect {
                x0: best.x0 + 4,
                y0: top + 3,
                x1: best.x0 + 3 + SWATCH,
                y1: top + 4,
            };
            c.fill(sw, color, &clip);
        }
        c.text(best.x0 + 8 + SWATCH, top, line, TEXT, &clip);
    }
}

fn draw_panel(c: &mut Canvas, panel: &Panel, ox: i64, oy: i64) {
    let g = geometry(panel, ox, oy);
    let clip = g.panel;
    let f = g.frame;
    let inner = f.inset(1);

    // Grid first so series draw over it.
    let x_ticks: Vec<(i64, f64)> = g.x.ticks.iter().map(|&t| (g.tick_px(t), t)).collect();
    let y_ticks: Vec<(i64, f64)> = g.y.ticks.iter().map(|&t| (g.tick_py(t), t)).collect();
    for &(x, _) in &x_ticks {
        for y in inner.y0..=inner.y1 {
            c.set(x, y, GRID, &inner);
        }
    }
    for &(y, _) in &y_ticks {
        for x in inner.x0..=inner.x1 {
            c.set(x, y, GRID, &inner);
        }
    }

    for (i, s) in panel.series.iter().enumerate() {
        draw_series(c, &g, s, PALETTE[i % PALETTE.len()], panel.log_y);
    }

    c.outline(f, AXIS, &clip);

    // X ticks: labels centred, kept inside the panel, skipped if they would
    // collide with the previous one.
    let mut last_end = i64::MIN;
    for &(x, t) in &x_ticks {
        for d in 1..=4 {
            c.set(x, f.y1 + d, AXIS, &clip);
        }
        let label = g.x.label(t);
        let w = text_px(&label);
        // min/max rather than clamp: clamp panics if a label were wider than the panel.
        let lx = (x - w / 2).min(clip.x1 - 1 - w).max(clip.x0 + 2);
        if lx > last_end + 6 {
            c.text(lx, f.y1 + 7, &label, TEXT, &clip);
            last_end = lx + w;
        }
    }
    for &(y, t) in &y_ticks {
        for d in 1..=4 {
            c.set(f.x0 - d, y, AXIS, &clip);
        }
        let label = fit(&g.y.label(t), MAX_YTICK_CHARS);
        let ly = (y - 4).clamp(clip.y0, clip.y1 - CH);
        c.text(f.x0 - 6 - text_px(&label), ly, &label, TEXT, &clip);
    }

    draw_legend(c, &g, &panel.series);

    let title = fit(&panel.title, ((PANEL_W - 16) / CH) as usize);
    let tx = ox + (PANEL_W - text_px(&title)) / 2;
    // Drawn twice, 1 px apart, as a cheap bold.
    c.text(tx, oy + 7, &title, TITLE, &clip);
    c.text(tx + 1, oy + 7, &title, TITLE, &clip);

    let xl = fit(&panel.x_label, ((PANEL_W - 8) / CH) as usize);
    let cx = (f.x0 + f.x1) / 2;
    let xlx = (cx - text_px(&xl) / 2)
        .min(clip.x1 - text_px(&xl))
        .max(clip.x0 + 2);
    c.text(xlx, oy + PANEL_H - 13, &xl, TEXT, &clip);

    let yl = fit(&panel.y_label, ((f.y1 - f.y0) / CH).max(1) as usize);
    let cy = (f.y0 + f.y1) / 2;
    c.text_up(ox + 4, cy + text_px(&yl) / 2, &yl, TEXT, &clip);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes PNG bytes into (width, height, RGB8 pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().expect("valid PNG header");
        let size = reader.output_buffer_size().expect("buffer size known");
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf).expect("valid PNG frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(img: &(u32, u32, Vec<u8>), x: i64, y: i64) -> Rgb {
        let i = (y as usize * img.0 as usize + x as usize) * 3;
        [img.2[i], img.2[i + 1], img.2[i + 2]]
    }

    fn count(img: &(u32, u32, Vec<u8>), r: Rect, color: Rgb) -> usize {
        let mut n = 0;
        for y in r.y0..=r.y1 {
            for x in r.x0..=r.x1 {
                if pixel(img, x, y) == color {
                    n += 1;
                }
            }
        }
        n
    }

    fn series(label: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.to_string(),
            points,
        }
    }

    fn panel(series: Vec<Series>) -> Panel {
        Panel {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "value".into(),
            series,
            log_y: false,
        }
    }

    fn ramp(n: usize) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64, (i as f64).sqrt())).collect()
    }

    #[test]
    fn image_size_follows_grid() {
        let one = decode(&render_png(&[panel(vec![series("a", ramp(10))])], 1));
        assert_eq!((one.0, one.1), (480, 320));
        let four: Vec<Panel> = (0..4).map(|_| panel(vec![series("a", ramp(10))])).collect();
        let grid = decode(&render_png(&four, 2));
        assert_eq!((grid.0, grid.1), (960, 640));
        let three = decode(&render_png(&four[..3], 2));
        assert_eq!((three.0, three.1), (960, 640));
        let row = decode(&render_png(&four[..3], 0));
        assert_eq!((row.0, row.1), (480, 960), "columns = 0 acts as 1");
        let wide = decode(&render_png(&four[..2], 10));
        assert_eq!(
            (wide.0, wide.1),
            (960, 320),
            "columns capped at panel count"
        );
    }

    #[test]
    fn series_colour_only_in_its_panel() {
        let k = 3;
        let mut lines: Vec<Series> = (0..k)
            .map(|i| series(&format!("s{i}"), vec![(0.0, i as f64), (10.0, i as f64)]))
            .collect();
        lines.push(series("diag", vec![(0.0, 0.0), (10.0, 10.0)]));
        let panels = [panel(lines), panel(vec![])];
        let img = decode(&render_png(&panels, 2));
        let color = PALETTE[k];

        let g0 = geometry(&panels[0], 0, 0);
        let in_area = count(&img, g0.frame, color);
        // The legend swatch alone is 32 px; a diagonal across the plot is far more.
        assert!(in_area > 200, "only {in_area} pixels of palette colour {k}");
        let (mx, my) = round_pt((g0.px(5.0), g0.py(5.0)));
        assert_eq!(pixel(&img, mx, my), color, "diagonal passes through (5, 5)");

        let g1 = geometry(&panels[1], 480, 0);
        for c in PALETTE {
            assert_eq!(count(&img, g1.panel, c), 0, "empty panel has series colour");
        }
        // The empty panel still draws its axes box.
        assert!(count(&img, g1.frame, AXIS) > 1000);
    }

    #[test]
    fn nan_breaks_the_line() {
        let pts = vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (2.0, f64::NAN),
            (3.0, 0.0),
            (4.0, 0.0),
            (5.0, f64::INFINITY),
            (f64::NEG_INFINITY, 1.0),
        ];
        let p = panel(vec![series("a", pts)]);
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        let y = g.py(0.0).round() as i64;
        let at = |x: f64| pixel(&img, g.px(x).round() as i64, y);
        assert_eq!(at(0.5), PALETTE[0]);
        assert_eq!(at(3.5), PALETTE[0]);
        assert_ne!(at(2.0), PALETTE[0], "gap where the NaN point was");
        // Infinite x/y points did not stretch the axes.
        assert_eq!((g.x.lo, g.x.hi), (0.0, 4.0));
    }

    #[test]
    fn log_y_skips_non_positive() {
        let pts = vec![(0.0, 1.0), (1.0, 0.0), (2.0, -5.0), (3.0, 1e-3), (4.0, 1e2)];
        let mut p = panel(vec![series("a", pts)]);
        p.log_y = true;
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        assert!(g.y.log);
        assert!(
            g.y.ticks.iter().all(|t| t.fract() == 0.0),
            "ticks at powers of ten"
        );
        assert!(g.y.lo <= -3.0 && g.y.hi >= 2.0);
        assert!(count(&img, g.frame, PALETTE[0]) > 50);
        let labels: Vec<String> = g.y.ticks.iter().map(|&t| g.y.label(t)).collect();
        assert!(labels.contains(&"1e-3".to_string()), "{labels:?}");
        assert!(labels.contains(&"100".to_string()), "{labels:?}");

        // Nothing positive at all still renders.
        let mut q = panel(vec![series("neg", vec![(0.0, -1.0), (1.0, 0.0)])]);
        q.log_y = true;
        let img = decode(&render_png(&[q], 1));
        assert_eq!((img.0, img.1), (480, 320));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let blank = decode(&render_png(&[], 3));
        assert_eq!((blank.0, blank.1), (480, 320));
        assert!(
            blank.2.iter().all(|&b| b == 255),
            "no panels gives a blank image"
        );

        let cases = vec![
            panel(vec![]),
            panel(vec![series("empty", vec![])]),
            panel(vec![series("one", vec![(3.0, 4.0)])]),
            panel(vec![series(
                "flat",
                vec![(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)],
            )]),
            panel(vec![series("zeros", vec![(0.0, 0.0), (0.0, 0.0)])]),
            panel(vec![series(
                "huge",
                vec![(0.0, 1e308), (1.0, -1e308), (f64::MAX, f64::MIN)],
            )]),
            panel(vec![series("tiny", vec![(0.0, 1e-320), (1e-300, 5e-324)])]),
            panel(vec![series("near", vec![(0.0, 1.0), (1.0, 1.0 + 1e-15)])]),
            panel(vec![series("all-nan", vec![(f64::NAN, f64::NAN)])]),
            Panel {
                title:
                    "é ünïcödé → 日本語 and a very long title that cannot possibly fit in one panel"
                        .into(),
                x_label: "x".repeat(500),
                y_label: "y".repeat(500),
                series: (0..40)
                    .map(|i| series(&"l".repeat(i * 3), ramp(i)))
                    .collect(),
                log_y: false,
            },
        ];
        for p in &cases {
            let img = decode(&render_png(std::slice::from_ref(p), 1));
            assert_eq!((img.0, img.1), (480, 320));
            let mut lp = p.clone();
            lp.log_y = true;
            let img = decode(&render_png(&[lp], 1));
            assert_eq!((img.0, img.1), (480, 320));
        }
        // A lone point is still visible.
        let p = &cases[2];
        let img = decode(&render_png(std::slice::from_ref(p), 1));
        let g = geometry(p, 0, 0);
        assert!(count(&img, g.frame, PALETTE[0]) >= 9 + 32);
    }

    #[test]
    fn rendering_is_deterministic() {
        let panels = vec![
            panel(vec![
                series("a", ramp(100)),
                series("b", vec![(0.0, 5.0), (99.0, 1.0)]),
            ]),
            panel(vec![series("c", ramp(7))]),
        ];
        let a = render_png(&panels, 2);
        let b = render_png(&panels, 2);
        assert_eq!(a, b);
        let mut other = panels.clone();
        other[1].series[0].points.push((8.0, 0.0));
        assert_ne!(a, render_png(&other, 2));
    }

    #[test]
    fn nice_linear_ticks() {
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
            let ax = linear_axis(Some((lo, hi)));
            let n = ax.ticks.len();
            assert!((3..=6).contains(&n), "{lo}..{hi}: {n} ticks");
            assert!(
                ax.lo <= lo && ax.hi >= hi,
                "{lo}..{hi}: axis {}..{}",
                ax.lo,
                ax.hi
            );
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
        let flat = linear_axis(Some((2.0, 2.0)));
        assert!(flat.lo < 2.0 && flat.hi > 2.0, "flat range is padded");
    }

    #[test]
    fn tick_label_format() {
        assert_eq!(fmt_tick(0.0, 0.5), "0");
        assert_eq!(fmt_tick(0.5, 0.5), "0.5");
        assert_eq!(fmt_tick(0.25, 0.05), "0.25");
        assert_eq!(fmt_tick(-2.0, 1.0), "-2");
        assert_eq!(fmt_tick(1e-3, 1e-3), "1e-3");
        assert_eq!(fmt_tick(1.5e-3, 5e-4), "1.5e-3");
        assert_eq!(fmt_tick(2500.0, 500.0), "2.5k");
        assert_eq!(fmt_tick(12000.0, 2000.0), "12k");
        assert_eq!(fmt_tick(3e6, 1e6), "3M");
        assert_eq!(fmt_tick(2e15, 1e15), "2e15");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(1e-17, 0.1), "0", "float noise near zero");
    }
}
