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

/// One chart: axes, ticks, a legend, any number of series, and optionally a
/// heat map background, reference curves and point markers.
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
    /// A colour-mapped grid drawn under everything else.
    pub heatmap: Option<HeatMap>,
    /// Reference curves (a Pareto set, a bound) drawn wide in grey under the
    /// series and listed in the legend after them.
    pub guides: Vec<Series>,
    /// Point markers drawn over the series.
    pub markers: Vec<Marker>,
    /// Fixed x axis range `(lo, hi)`; `None` (or an empty or non-finite range)
    /// fits the data. Anything outside is clipped.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y axis range, as [`Panel::x_range`]; on a log axis it is widened
    /// to whole decades.
    pub y_range: Option<(f64, f64)>,
    /// Where the legend goes.
    pub legend: LegendPosition,
}

/// Where a panel's legend goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LegendPosition {
    /// Inside the plot, in the corner hiding the fewest series pixels and markers.
    #[default]
    Inside,
    /// Right of the plot, which narrows to make room.
    Right,
    /// No legend.
    Hidden,
}

/// Values on a regular grid, drawn as a colour map (viridis: dark violet for
/// the lowest values through blue and green to yellow for the highest) with
/// optional contour lines.
///
/// Node `(i, j)` (column `i`, row `j`) sits at
/// `x = x_range.0 + i·(x_range.1 − x_range.0)/(cols − 1)` and likewise for `y`
/// with `rows = values.len() / cols`; pixels between nodes are interpolated
/// bilinearly. A grid with fewer than 2 columns or rows, or an empty or
/// non-finite range, draws nothing. Non-finite cells are left blank.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeatMap {
    /// Data x of the first and the last column.
    pub x_range: (f64, f64),
    /// Data y of the first and the last row.
    pub y_range: (f64, f64),
    /// Nodes per row.
    pub cols: usize,
    /// Row-major values, `rows · cols` of them, row 0 at `y_range.0`.
    pub values: Vec<f64>,
    /// Values mapped to the two ends of the colour map (clamped beyond);
    /// `None`: the finite minimum and maximum.
    pub limits: Option<(f64, f64)>,
    /// Number of contour lines, at evenly spaced levels strictly between the limits.
    pub contours: usize,
    /// Legend text (followed by the limits); empty: no legend entry.
    pub label: String,
}

/// How a [`Marker`] is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MarkerShape {
    /// A filled disc with a contrasting 1-px ring.
    #[default]
    Disc,
    /// An X with a dark outline.
    Cross,
}

/// A point marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where, in data coordinates; a non-finite point is not drawn.
    pub at: (f64, f64),
    /// The shape.
    pub shape: MarkerShape,
    /// Palette colour index (the colour of series `i`), or `None` for black.
    pub color: Option<usize>,
    /// Radius in pixels, clamped to `1..=20`.
    pub radius: i64,
}

impl Marker {
    /// A black disc of radius 4 at `at`.
    pub fn new(at: (f64, f64)) -> Marker {
        Marker {
            at,
            shape: MarkerShape::Disc,
            color: None,
            radius: 4,
        }
    }
}

/// Renders panels in a grid with `columns` columns (rows as needed) and returns the PNG file bytes.
///
/// Each panel is 480x320 px. `columns` is clamped to `1..=panels.len()` so a
/// generous value never adds empty columns; with no panels the result is one
/// blank panel-sized image.
pub fn render_png(panels: &[Panel], columns: usize) -> Vec<u8> {
    render_png_sized(
        panels,
        columns,
        (DEFAULT_SIZE.w as u32, DEFAULT_SIZE.h as u32),
    )
}

/// [`render_png`] with panels of `size` = (width, height) pixels, each
/// clamped to `160..=4000`.
pub fn render_png_sized(panels: &[Panel], columns: usize, size: (u32, u32)) -> Vec<u8> {
    let size = Size {
        w: i64::from(size.0).clamp(160, 4000),
        h: i64::from(size.1).clamp(160, 4000),
    };
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let mut canvas = Canvas::new(columns * size.w as usize, rows * size.h as usize);
    for (i, panel) in panels.iter().enumerate() {
        let ox = (i % columns) as i64 * size.w;
        let oy = (i / columns) as i64 * size.h;
        draw_panel(&mut canvas, panel, ox, oy, size);
    }
    canvas.encode()
}

const PANEL_W: i64 = 480;
const PANEL_H: i64 = 320;

/// One panel's size in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Size {
    w: i64,
    h: i64,
}

const DEFAULT_SIZE: Size = Size {
    w: PANEL_W,
    h: PANEL_H,
};
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
/// Guide curves: a mid grey, visible on both ends of the colour map.
const GUIDE: Rgb = [150, 150, 150];
/// Outline of series, crosses and light discs over a heat map.
const HALO: Rgb = [24, 24, 24];
const BLACK: Rgb = [0, 0, 0];
/// Viridis (matplotlib's default colour map) at 0, 1/8, ..., 1; linear
/// interpolation between these keeps lightness monotonic.
const VIRIDIS: [Rgb; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 82, 139],
    [44, 113, 142],
    [33, 145, 140],
    [40, 174, 128],
    [94, 201, 98],
    [173, 220, 48],
    [253, 231, 37],
];
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
    fn line(&mut self, a: (i64, i64), b: (i64, i64), c: Rgb, clip: &Rect) {
        let x_major = (b.0 - a.0).abs() >= (b.1 - a.1).abs();
        bresenham(a, b, |x, y| {
            self.set(x, y, c, clip);
            if x_major {
                self.set(x, y + 1, c, clip);
            } else {
                self.set(x + 1, y, c, clip);
            }
        });
    }

    /// A line `2r + 1` px wide (squares stamped along the Bresenham path).
    fn thick_line(&mut self, a: (i64, i64), b: (i64, i64), r: i64, c: Rgb, clip: &Rect) {
        bresenham(a, b, |x, y| {
            let sq = Rect {
                x0: x - r,
                y0: y - r,
                x1: x + r,
                y1: y + r,
            };
            self.fill(sq, c, clip);
        });
    }

    /// A filled disc of radius `r` centred on `(x, y)`.
    fn disc(&mut self, x: i64, y: i64, r: i64, c: Rgb, clip: &Rect) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r + r / 2 {
                    self.set(x + dx, y + dy, c, clip);
                }
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

/// Visits every pixel of the Bresenham path from `a` to `b`, ends included.
fn bresenham(a: (i64, i64), b: (i64, i64), mut visit: impl FnMut(i64, i64)) {
    let (mut x, mut y) = a;
    let (x1, y1) = b;
    let dx = (x1 - x).abs();
    let dy = -(y1 - y).abs();
    let sx = if x < x1 { 1 } else { -1 };
    let sy = if y < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    loop {
        visit(x, y);
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

/// Colour-map colour of `t` in `[0, 1]` (clamped; NaN gives the low end).
/// Never exactly a palette colour, so palette pixels still come only from series.
fn viridis(t: f64) -> Rgb {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (a[k] as f64 + f * (b[k] as f64 - a[k] as f64)).round() as u8;
    }
    if PALETTE.contains(&c) {
        c[2] ^= 1;
    }
    c
}

/// A colour that stands out on `c`: `c` blended 45% toward white on dark
/// colours, toward black on light ones.
fn contrast(c: Rgb) -> Rgb {
    let luma = 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
    let target = if luma < 128.0 { 255.0 } else { 0.0 };
    let mut out = [0u8; 3];
    for k in 0..3 {
        out[k] = (c[k] as f64 + 0.45 * (target - c[k] as f64)).round() as u8;
    }
    if PALETTE.contains(&out) {
        out[2] ^= 1;
    }
    out
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

    /// The data value at fraction `f` of the axis (the inverse of [`Axis::frac`]).
    fn at(&self, f: f64) -> f64 {
        let v = self.lo + f * (self.hi - self.lo);
        if self.log {
            10f64.powf(v)
        } else {
            v
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

/// Linear axis spanning exactly `lo..hi` (finite, `lo < hi`), ticks at the
/// smallest 1/2/5 x 10^k step that gives at most 6 inside.
fn fixed_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let span = hi - lo;
    if !(span.is_finite() && span > (lo.abs().max(hi.abs()) * 1e-9).max(1e-290)) {
        return linear_axis(Some((lo, hi)));
    }
    let e = span.log10().floor() as i64;
    for exp in (e - 2)..=(e + 1) {
        for m in [1.0, 2.0, 5.0] {
            let step = m * pow10(exp);
            if !(step.is_finite() && step > 0.0) {
                continue;
            }
            let k0 = (lo / step).ceil();
            let k1 = (hi / step).floor();
            let count = k1 - k0 + 1.0;
            if (1.0..=6.0).contains(&count) {
                let ticks = (0..count as i64).map(|i| (k0 + i as f64) * step).collect();
                return Axis {
                    lo,
                    hi,
                    ticks,
                    step,
                    log: false,
                };
            }
        }
    }
    Axis {
        lo,
        hi,
        ticks: vec![lo, hi],
        step: span,
        log: false,
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

/// A usable fixed range: finite with `lo < hi` (and `lo > 0` on a log axis).
fn valid_range(r: Option<(f64, f64)>, log: bool) -> Option<(f64, f64)> {
    r.filter(|&(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi && (!log || lo > 0.0))
}

/// The grid's row count, when it is drawable at all.
fn heatmap_rows(h: &HeatMap) -> Option<usize> {
    let rows = h.values.len().checked_div(h.cols)?;
    let ok = h.cols >= 2
        && rows >= 2
        && valid_range(Some(h.x_range), false).is_some()
        && valid_range(Some(h.y_range), false).is_some();
    ok.then_some(rows)
}

#[cfg(test)]
fn geometry(panel: &Panel, ox: i64, oy: i64) -> Geometry {
    geometry_sized(panel, ox, oy, DEFAULT_SIZE)
}

fn geometry_sized(panel: &Panel, ox: i64, oy: i64, size: Size) -> Geometry {
    let (mut xr, mut yr) = (None, None);
    for s in panel.series.iter().chain(&panel.guides) {
        for &p in &s.points {
            if drawable(p, panel.log_y) {
                xr = extend(xr, p.0);
                yr = extend(yr, p.1);
            }
        }
    }
    for m in &panel.markers {
        if drawable(m.at, panel.log_y) {
            xr = extend(xr, m.at.0);
            yr = extend(yr, m.at.1);
        }
    }
    if let Some(h) = panel.heatmap.as_ref().filter(|h| heatmap_rows(h).is_some()) {
        for (x, y) in [(h.x_range.0, h.y_range.0), (h.x_range.1, h.y_range.1)] {
            if drawable((x, y), panel.log_y) {
                xr = extend(xr, x);
                yr = extend(yr, y);
            }
        }
    }
    let x = match valid_range(panel.x_range, false) {
        Some((lo, hi)) => fixed_axis(lo, hi),
        None => linear_axis(xr),
    };
    let y = match (panel.log_y, valid_range(panel.y_range, panel.log_y)) {
        (true, fixed) => log_axis(fixed.or(yr)),
        (false, Some((lo, hi))) => fixed_axis(lo, hi),
        (false, None) => linear_axis(yr),
    };
    let ylw = y
        .ticks
        .iter()
        .map(|&t| y.label(t).chars().count().min(MAX_YTICK_CHARS))
        .max()
        .unwrap_or(1) as i64
        * CH;
    let reserve = match panel.legend {
        LegendPosition::Right => right_legend_width(panel) + 8,
        _ => 0,
    };
    let x0 = ox + 16 + ylw + 6;
    let frame = Rect {
        x0,
        y0: oy + 22,
        // A legend on the right never squeezes the plot below 40 px.
        x1: (ox + size.w - 14 - reserve).max(x0 + 40),
        y1: oy + size.h - 34,
    };
    Geometry {
        panel: Rect {
            x0: ox,
            y0: oy,
            x1: ox + size.w - 1,
            y1: oy + size.h - 1,
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

/// How a series is stroked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stroke {
    /// The 2-px line in the series colour.
    Plain,
    /// The 2-px line over a 1-px dark outline (for series over a heat map).
    Halo,
    /// A `2r + 1` px wide line (guides).
    Wide(i64),
}

/// Runs of consecutive drawable points of `s` in pixel space; a skipped
/// point ends a run.
fn pixel_runs(g: &Geometry, s: &Series, log_y: bool) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for &p in &s.points {
        if drawable(p, log_y) {
            if let Some(run) = runs.last_mut() {
                run.push((g.px(p.0), g.py(p.1)));
            }
        } else if runs.last().is_some_and(|r| !r.is_empty()) {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

fn draw_series(c: &mut Canvas, g: &Geometry, s: &Series, color: Rgb, log_y: bool, stroke: Stroke) {
    let inner = g.frame.inset(1);
    let runs = pixel_runs(g, s, log_y);
    let dot = |x: i64, y: i64, r: i64| Rect {
        x0: x - r,
        y0: y - r,
        x1: x + r,
        y1: y + r,
    };
    // The outline goes first for every run, so it never covers a line.
    if stroke == Stroke::Halo {
        for run in &runs {
            if run.len() == 1 {
                let (x, y) = round_pt(run[0]);
                c.fill(dot(x, y, 2), HALO, &inner);
            }
            for w in run.windows(2) {
                if let Some((a, b)) = clip_segment(w[0], w[1], &inner) {
                    let (a, b) = (round_pt(a), round_pt(b));
                    c.thick_line(a, b, 1, HALO, &inner);
                    c.thick_line((a.0 + 1, a.1 + 1), (b.0 + 1, b.1 + 1), 1, HALO, &inner);
                }
            }
        }
    }
    for run in &runs {
        if run.len() == 1 {
            // A lone point has no segment, so mark it with a 3x3 dot.
            let (x, y) = round_pt(run[0]);
            let r = if let Stroke::Wide(r) = stroke {
                r.max(1)
            } else {
                1
            };
            c.fill(dot(x, y, r), color, &inner);
        }
        for w in run.windows(2) {
            if let Some((a, b)) = clip_segment(w[0], w[1], &inner) {
                match stroke {
                    Stroke::Wide(r) => c.thick_line(round_pt(a), round_pt(b), r, color, &inner),
                    _ => c.line(round_pt(a), round_pt(b), color, &inner),
                }
            }
        }
    }
}

/// The colour limits of `h`: its own, or the finite min and max (`None` if
/// no value is finite). A flat range is widened so it maps to mid-colour.
fn heatmap_limits(h: &HeatMap) -> Option<(f64, f64)> {
    let (lo, hi) = match h.limits.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
        Some((lo, hi)) => (lo.min(hi), lo.max(hi)),
        None => h
            .values
            .iter()
            .filter(|v| v.is_finite())
            .fold(None, |r, &v| extend(r, v))?,
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
fn heatmap_value(h: &HeatMap, rows: usize, x: f64, y: f64) -> f64 {
    let grid = |v: f64, (lo, hi): (f64, f64), n: usize| {
        let u = (v - lo) / (hi - lo) * (n - 1) as f64;
        // Half a pixel's worth of slack at the edges keeps them filled.
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
        let ni = i + usize::from(fu >= 0.5);
        let nj = j + usize::from(fv >= 0.5);
        at(ni, nj)
    }
}

fn draw_heatmap(c: &mut Canvas, g: &Geometry, h: &HeatMap) {
    let Some(rows) = heatmap_rows(h) else { return };
    let Some((lo, hi)) = heatmap_limits(h) else {
        return;
    };
    let inner = g.frame.inset(1);
    let (w, ht) = (
        (inner.x1 - inner.x0 + 1) as usize,
        (inner.y1 - inner.y0 + 1) as usize,
    );
    let dx = (g.data.x1 - g.data.x0).max(1) as f64;
    let dy = (g.data.y1 - g.data.y0).max(1) as f64;
    let mut vals = vec![f64::NAN; w * ht];
    for (r, py) in (inner.y0..=inner.y1).enumerate() {
        let y = g.y.at((g.data.y1 - py) as f64 / dy);
        for (k, px) in (inner.x0..=inner.x1).enumerate() {
            let x = g.x.at((px - g.data.x0) as f64 / dx);
            vals[r * w + k] = heatmap_value(h, rows, x, y);
        }
    }
    let t = |v: f64| (v - lo) / (hi - lo);
    // Contour band of a value: levels at k/(n+1) of the range, k = 1..=n.
    let n = h.contours.min(100);
    let band = |v: f64| (t(v) * (n + 1) as f64).floor().clamp(0.0, n as f64) as i64;
    for r in 0..ht {
        for k in 0..w {
            let v = vals[r * w + k];
            if !v.is_finite() {
                continue;
            }
            let mut color = viridis(t(v));
            if n > 0 {
                let b = band(v);
                let differs = |o: f64| o.is_finite() && band(o) != b;
                let right = (k + 1 < w).then(|| vals[r * w + k + 1]);
                let below = (r + 1 < ht).then(|| vals[(r + 1) * w + k]);
                if right.is_some_and(differs) || below.is_some_and(differs) {
                    color = contrast(color);
                }
            }
            c.set(inner.x0 + k as i64, inner.y0 + r as i64, color, &inner);
        }
    }
}

fn draw_marker(c: &mut Canvas, g: &Geometry, m: &Marker, log_y: bool) {
    if !drawable(m.at, log_y) {
        return;
    }
    let inner = g.frame.inset(1);
    let (x, y) = round_pt((g.px(m.at.0), g.py(m.at.1)));
    let r = m.radius.clamp(1, 20);
    let fill = m.color.map_or(BLACK, |i| PALETTE[i % PALETTE.len()]);
    match m.shape {
        MarkerShape::Disc => {
            let ring = if contrast(fill)[0] > fill[0] {
                WHITE
            } else {
                HALO
            };
            c.disc(x, y, r + 1, ring, &inner);
            c.disc(x, y, r, fill, &inner);
        }
        MarkerShape::Cross => {
            for (a, b) in [
                ((x - r, y - r), (x + r, y + r)),
                ((x - r, y + r), (x + r, y - r)),
            ] {
                c.thick_line(a, b, 2, if fill == BLACK { WHITE } else { HALO }, &inner);
            }
            for (a, b) in [
                ((x - r, y - r), (x + r, y + r)),
                ((x - r, y + r), (x + r, y - r)),
            ] {
                c.thick_line(a, b, 1, fill, &inner);
            }
        }
    }
}

/// What a legend row's swatch shows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Swatch {
    /// A 2-px line of this colour.
    Line(Rgb),
    /// A 5-px bar of this colour (guides).
    Bar(Rgb),
    /// The colour map, low to high.
    Gradient,
}

/// Legend rows of `panel`: series, guides, the heat map.
fn legend_entries(panel: &Panel) -> Vec<(Swatch, String)> {
    let mut entries: Vec<(Swatch, String)> = panel
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (Swatch::Line(PALETTE[i % PALETTE.len()]), s.label.clone()))
        .collect();
    entries.extend(
        panel
            .guides
            .iter()
            .map(|s| (Swatch::Bar(GUIDE), s.label.clone())),
    );
    if let Some(h) = panel.heatmap.as_ref().filter(|h| !h.label.is_empty()) {
        if let (Some(_), Some((lo, hi))) = (heatmap_rows(h), heatmap_limits(h)) {
            let step = linear_axis(Some((lo, hi))).step / 10.0;
            let text = format!("{} {}..{}", h.label, fmt_tick(lo, step), fmt_tick(hi, step));
            entries.push((Swatch::Gradient, text));
        }
    }
    entries
}

const LEGEND_ROW: i64 = 11;
const LEGEND_SWATCH: i64 = 16;
const LEGEND_CHARS: usize = 24;

/// Width of a legend beside the plot (0 when there is nothing to list).
fn right_legend_width(panel: &Panel) -> i64 {
    let entries = legend_entries(panel);
    let text_w = entries
        .iter()
        .map(|(_, l)| text_px(&fit(l, LEGEND_CHARS)))
        .max();
    text_w.map_or(0, |t| 4 + LEGEND_SWATCH + 4 + t + 4)
}

fn draw_legend(c: &mut Canvas, g: &Geometry, panel: &Panel) {
    if panel.legend == LegendPosition::Hidden {
        return;
    }
    let entries = legend_entries(panel);
    if entries.is_empty() {
        return;
    }
    let right = panel.legend == LegendPosition::Right;
    const ROW: i64 = LEGEND_ROW;
    const SWATCH: i64 = LEGEND_SWATCH;
    let avail_w = g.frame.x1 - g.frame.x0 - 12;
    let avail_h = g.frame.y1 - g.frame.y0 - 12;
    let max_chars = if right {
        LEGEND_CHARS
    } else {
        ((avail_w - SWATCH - 12) / CH).clamp(1, LEGEND_CHARS as i64) as usize
    };
    let fit_rows = ((avail_h - 5) / ROW).max(1) as usize;
    let (shown, more) = if entries.len() > fit_rows {
        (fit_rows - 1, entries.len() - (fit_rows - 1))
    } else {
        (entries.len(), 0)
    };
    let mut lines: Vec<String> = entries[..shown]
        .iter()
        .map(|(_, label)| fit(label, max_chars))
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
    // Put the legend in the corner hiding the fewest series pixels (and
    // markers, counted heavily); strict `<` keeps the choice deterministic
    // and top-right by default.
    let marker_px: Vec<(i64, i64)> = panel
        .markers
        .iter()
        .filter(|m| drawable(m.at, panel.log_y))
        .map(|m| round_pt((g.px(m.at.0), g.py(m.at.1))))
        .collect();
    let covered = |r: &Rect| {
        let mut n = 0usize;
        for y in r.y0..=r.y1 {
            for x in r.x0..=r.x1 {
                if c.get(x, y).is_some_and(|p| PALETTE.contains(&p)) {
                    n += 1;
                }
            }
        }
        n + 1000
            * marker_px
                .iter()
                .filter(|&&(x, y)| r.inset(-6).contains(x, y))
                .count()
    };
    let mut best = candidates[0];
    if right {
        best = at(f.x1 + 8, f.y0);
    } else {
        let mut best_n = covered(&best);
        for r in &candidates[1..] {
            let n = covered(r);
            if n < best_n {
                best = *r;
                best_n = n;
            }
        }
    }
    let clip = g.panel;
    c.fill(best, WHITE, &clip);
    c.outline(best, LEGEND_BORDER, &clip);
    for (i, line) in lines.iter().enumerate() {
        let top = best.y0 + 3 + i as i64 * ROW;
        if i < shown {
            let sw = |y0: i64, y1: i64| Rect {
                x0: best.x0 + 4,
                y0: top + y0,
                x1: best.x0 + 3 + SWATCH,
                y1: top + y1,
            };
            match entries[i].0 {
                Swatch::Line(color) => c.fill(sw(3, 4), color, &clip),
                Swatch::Bar(color) => c.fill(sw(1, 6), color, &clip),
                Swatch::Gradient => {
                    for k in 0..SWATCH {
                        let col = Rect {
                            x0: best.x0 + 4 + k,
                            y0: top + 1,
                            x1: best.x0 + 4 + k,
                            y1: top + 6,
                        };
                        c.fill(col, viridis(k as f64 / (SWATCH - 1) as f64), &clip);
                    }
                }
            }
        }
        c.text(best.x0 + 8 + SWATCH, top, line, TEXT, &clip);
    }
}

fn draw_panel(c: &mut Canvas, panel: &Panel, ox: i64, oy: i64, size: Size) {
    let g = geometry_sized(panel, ox, oy, size);
    let clip = g.panel;
    let f = g.frame;
    let inner = f.inset(1);

    let x_ticks: Vec<(i64, f64)> = g.x.ticks.iter().map(|&t| (g.tick_px(t), t)).collect();
    let y_ticks: Vec<(i64, f64)> = g.y.ticks.iter().map(|&t| (g.tick_py(t), t)).collect();
    let heatmap = panel.heatmap.as_ref().filter(|h| heatmap_rows(h).is_some());
    if let Some(h) = heatmap {
        draw_heatmap(c, &g, h);
    } else {
        // Grid first so series draw over it (a heat map has contours instead).
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
    }

    for s in &panel.guides {
        draw_series(c, &g, s, GUIDE, panel.log_y, Stroke::Wide(2));
    }
    let stroke = if heatmap.is_some() {
        Stroke::Halo
    } else {
        Stroke::Plain
    };
    for (i, s) in panel.series.iter().enumerate() {
        draw_series(c, &g, s, PALETTE[i % PALETTE.len()], panel.log_y, stroke);
    }
    for m in &panel.markers {
        draw_marker(c, &g, m, panel.log_y);
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

    draw_legend(c, &g, panel);

    let title = fit(&panel.title, ((size.w - 16) / CH) as usize);
    let tx = ox + (size.w - text_px(&title)) / 2;
    // Drawn twice, 1 px apart, as a cheap bold.
    c.text(tx, oy + 7, &title, TITLE, &clip);
    c.text(tx + 1, oy + 7, &title, TITLE, &clip);

    let xl = fit(&panel.x_label, ((size.w - 8) / CH) as usize);
    let cx = (f.x0 + f.x1) / 2;
    let xlx = (cx - text_px(&xl) / 2)
        .min(clip.x1 - text_px(&xl))
        .max(clip.x0 + 2);
    c.text(xlx, oy + size.h - 13, &xl, TEXT, &clip);

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
            ..Panel::default()
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
                ..Panel::default()
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

    /// A heat map whose value is `x` over [0, 10]², on fixed axes.
    fn ramp_heatmap(contours: usize) -> Panel {
        let n = 11;
        let values = (0..n * n).map(|k| (k % n) as f64).collect();
        Panel {
            heatmap: Some(HeatMap {
                x_range: (0.0, 10.0),
                y_range: (0.0, 10.0),
                cols: n,
                values,
                contours,
                label: "value".into(),
                ..HeatMap::default()
            }),
            x_range: Some((0.0, 10.0)),
            y_range: Some((0.0, 10.0)),
            ..panel(vec![])
        }
    }

    fn luma(c: Rgb) -> f64 {
        0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64
    }

    #[test]
    fn heatmap_colour_follows_the_value() {
        let p = ramp_heatmap(0);
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        let y = g.py(5.0).round() as i64;
        let at = |x: f64| pixel(&img, g.px(x).round() as i64, y);
        // The ends of the colour map at the ends of the range, exactly.
        assert_eq!(at(0.0), viridis(0.0));
        assert_eq!(at(10.0), viridis(1.0));
        assert_eq!(at(5.0), viridis(0.5));
        // Lightness rises strictly with the value along the row.
        let row: Vec<f64> = (0..=20).map(|i| luma(at(i as f64 / 2.0))).collect();
        for w in row.windows(2) {
            assert!(w[1] > w[0], "{row:?}");
        }
        // The same value gives the same colour up the column; no grid lines.
        let x = g.px(2.5).round() as i64;
        let col: Vec<Rgb> = (g.data.y0..=g.data.y1).map(|y| pixel(&img, x, y)).collect();
        assert!(col.iter().all(|c| *c == viridis(0.25)), "{col:?}");
        // Outside the grid's range (the axes' 3-px inset) stays blank.
        assert_eq!(pixel(&img, x, g.data.y0 - 2), WHITE);
        assert!(count(&img, g.frame.inset(1), GRID) == 0);
        // The colour map never produces a palette colour (nor do contours).
        for i in 0..=4096 {
            let c = viridis(i as f64 / 4096.0);
            assert!(!PALETTE.contains(&c) && !PALETTE.contains(&contrast(c)));
        }
        // Explicit limits clamp: everything at or above 5 is yellow.
        let mut q = p.clone();
        q.heatmap.as_mut().unwrap().limits = Some((0.0, 5.0));
        let img = decode(&render_png(std::slice::from_ref(&q), 1));
        assert_eq!(pixel(&img, g.px(5.0).round() as i64, y), viridis(1.0));
        assert_eq!(pixel(&img, g.px(9.0).round() as i64, y), viridis(1.0));
        assert_eq!(pixel(&img, g.px(2.5).round() as i64, y), viridis(0.5));
    }

    #[test]
    fn heatmap_nan_cells_are_blank_and_contours_cross_levels() {
        let mut p = ramp_heatmap(0);
        // Nodes with x >= 8 and y >= 8 are NaN.
        let h = p.heatmap.as_mut().unwrap();
        for j in 8..11 {
            for i in 8..11 {
                h.values[j * 11 + i] = f64::NAN;
            }
        }
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        let at = |x: f64, y: f64| pixel(&img, g.px(x).round() as i64, g.py(y).round() as i64);
        assert_eq!(at(9.0, 9.0), WHITE);
        assert_eq!(at(10.0, 10.0), WHITE);
        assert_ne!(at(9.0, 5.0), WHITE);
        assert_ne!(at(5.0, 9.0), WHITE);

        // Three contour levels (2.5, 5, 7.5) cross a row three times.
        let p = ramp_heatmap(3);
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        let y = g.py(5.0).round() as i64;
        let xs: Vec<i64> = (g.data.x0..=g.data.x1)
            .filter(|&x| {
                let c = pixel(&img, x, y);
                VIRIDIS_SAMPLES.with(|v| !v.contains(&c))
            })
            .collect();
        assert_eq!(xs.len(), 3, "contour pixels at {xs:?}");
        for (x, level) in xs.iter().zip([2.5, 5.0, 7.5]) {
            assert!((*x as f64 - g.px(level)).abs() <= 1.0, "{x} vs {level}");
        }
    }

    thread_local! {
        /// Every colour the colour map can produce.
        static VIRIDIS_SAMPLES: Vec<Rgb> = (0..=100_000).map(|i| viridis(i as f64 / 100_000.0)).collect();
    }

    #[test]
    fn markers_and_guides_land_where_mapped() {
        let mut p = panel(vec![series("a", vec![(0.0, 0.0), (10.0, 10.0)])]);
        p.markers = vec![
            Marker::new((2.0, 7.0)),
            Marker {
                at: (8.0, 3.0),
                shape: MarkerShape::Disc,
                color: Some(1),
                radius: 3,
            },
            Marker {
                at: (5.0, 1.0),
                shape: MarkerShape::Cross,
                color: Some(2),
                radius: 4,
            },
            Marker::new((f64::NAN, 1.0)),
        ];
        p.guides = vec![series("bound", vec![(0.0, 9.0), (10.0, 9.0)])];
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let g = geometry(&p, 0, 0);
        let at = |x: f64, y: f64| round_pt((g.px(x), g.py(y)));
        let (bx, by) = at(2.0, 7.0);
        assert_eq!(pixel(&img, bx, by), BLACK);
        assert_eq!(pixel(&img, bx + 3, by), BLACK);
        assert_eq!(pixel(&img, bx + 5, by), WHITE, "ring");
        let (cx, cy) = at(8.0, 3.0);
        assert_eq!(pixel(&img, cx, cy), PALETTE[1]);
        assert_eq!(pixel(&img, cx, cy + 4), HALO, "ring");
        let (xx, xy) = at(5.0, 1.0);
        assert_eq!(pixel(&img, xx, xy), PALETTE[2]);
        assert_eq!(pixel(&img, xx + 3, xy + 3), PALETTE[2], "on the diagonal");
        assert_ne!(pixel(&img, xx + 3, xy), PALETTE[2], "not a disc");
        // The guide: 5 px wide, grey, under the series.
        let (gx, gy) = at(5.0, 9.0);
        for d in -2..=2 {
            assert_eq!(pixel(&img, gx, gy + d), GUIDE);
        }
        assert_eq!(pixel(&img, gx, gy + 4), WHITE);
        // Markers and guides widen the axes like series points.
        let mut q = panel(vec![]);
        q.markers = vec![Marker::new((-3.0, 40.0))];
        q.guides = vec![series("g", vec![(0.0, 0.0), (1.0, 1.0)])];
        let gq = geometry(&q, 0, 0);
        assert!(gq.x.lo <= -3.0 && gq.y.hi >= 40.0);
    }

    #[test]
    fn fixed_ranges_clip_and_legend_can_move_right() {
        let mut p = panel(vec![series(
            "far",
            vec![(-50.0, 0.0), (50.0, 0.0), (0.0, 30.0)],
        )]);
        p.x_range = Some((-11.0, 11.0));
        p.y_range = Some((-11.0, 11.0));
        let g = geometry(&p, 0, 0);
        assert_eq!((g.x.lo, g.x.hi, g.y.lo, g.y.hi), (-11.0, 11.0, -11.0, 11.0));
        assert_eq!(g.x.ticks, vec![-10.0, -5.0, 0.0, 5.0, 10.0]);
        let img = decode(&render_png(std::slice::from_ref(&p), 1));
        let outside = |x: i64, y: i64| !g.frame.inset(1).contains(x, y);
        let mut stray = 0;
        for y in 0..img.1 as i64 {
            for x in 0..img.0 as i64 {
                if outside(x, y) && pixel(&img, x, y) == PALETTE[0] {
                    stray += 1;
                }
            }
        }
        // Segments are clipped to the plot (the legend swatch is inside it too).
        assert_eq!(stray, 0);
        // A bad fixed range is ignored.
        p.x_range = Some((3.0, 3.0));
        assert!(geometry(&p, 0, 0).x.lo <= -50.0);

        let mut inside = panel(vec![series("a", ramp(10)), series("b", ramp(5))]);
        inside.guides = vec![series("guide", ramp(3))];
        let mut right = inside.clone();
        right.legend = LegendPosition::Right;
        let (gi, gr) = (geometry(&inside, 0, 0), geometry(&right, 0, 0));
        assert!(
            gr.frame.x1 < gi.frame.x1 - 60,
            "{:?} vs {:?}",
            gr.frame,
            gi.frame
        );
        let img = decode(&render_png(std::slice::from_ref(&right), 1));
        let beside = Rect {
            x0: gr.frame.x1 + 1,
            y0: 0,
            x1: 479,
            y1: 319,
        };
        assert_eq!(
            count(&img, beside, PALETTE[1]),
            32,
            "swatch of b beside the plot"
        );
        assert!(count(&img, beside, GUIDE) >= 16 * 6, "guide swatch");
        assert!(count(&img, beside, LEGEND_BORDER) > 100);
        let mut hidden = inside.clone();
        hidden.legend = LegendPosition::Hidden;
        let img = decode(&render_png(std::slice::from_ref(&hidden), 1));
        assert_eq!(count(&img, gi.panel, LEGEND_BORDER), 0);
    }

    #[test]
    fn sized_panels_and_heatmap_legend() {
        let p = ramp_heatmap(2);
        let img = decode(&render_png_sized(&[p.clone(), p.clone(), p], 2, (300, 250)));
        assert_eq!((img.0, img.1), (600, 500));
        let tiny = decode(&render_png_sized(&[ramp_heatmap(0)], 1, (1, 1)));
        assert_eq!((tiny.0, tiny.1), (160, 160));
        let entries = legend_entries(&ramp_heatmap(0));
        assert_eq!(entries, vec![(Swatch::Gradient, "value 0..10".to_string())]);
        // Degenerate grids draw nothing and do not panic.
        for h in [
            HeatMap::default(),
            HeatMap {
                cols: 1,
                values: vec![1.0; 4],
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                ..HeatMap::default()
            },
            HeatMap {
                cols: 2,
                values: vec![f64::NAN; 4],
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                contours: 5,
                label: "nan".into(),
                ..HeatMap::default()
            },
            HeatMap {
                cols: 2,
                values: vec![3.0; 5],
                x_range: (0.0, f64::INFINITY),
                y_range: (0.0, 1.0),
                ..HeatMap::default()
            },
            HeatMap {
                cols: 2,
                values: vec![3.0; 4],
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                contours: 1000,
                ..HeatMap::default()
            },
        ] {
            let mut p = panel(vec![series("s", ramp(3))]);
            p.heatmap = Some(h);
            p.log_y = true;
            let img = decode(&render_png(std::slice::from_ref(&p), 1));
            assert_eq!((img.0, img.1), (480, 320));
        }
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
