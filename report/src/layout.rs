//! Where everything in a panel goes, and how data maps to pixels.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::CoordTranslate;
use plotters::style::{FontDesc, IntoFont, RGBColor};

use crate::axis::{fmt_tick, Axis};
use crate::heatmap;
use crate::{font_data, HeatMap, LegendPosition, Panel, FONT_FAMILY};

/// Series colours (Tableau 10's first eight): distinct from each other and
/// from the greys of text, frame and guides.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
/// Guide curves: a mid grey, visible on both ends of the colour map.
pub(crate) const GUIDE: RGBColor = RGBColor(150, 150, 150);

// Font sizes in pixels.
pub(crate) const TITLE_SIZE: i32 = 15;
pub(crate) const LABEL_SIZE: i32 = 13;
pub(crate) const TICK_SIZE: i32 = 12;
pub(crate) const LEGEND_SIZE: i32 = 12;
/// Tick marks stick out of the frame this far.
pub(crate) const TICK_LEN: i32 = 5;
/// Gap between a tick mark and its label.
pub(crate) const TICK_GAP: i32 = 3;
/// Widest y tick label; longer ones are cut.
pub(crate) const MAX_YTICK_W: i32 = 72;
pub(crate) const LEGEND_ROW: i32 = 16;
pub(crate) const LEGEND_SWATCH: i32 = 20;
pub(crate) const LEGEND_PAD: i32 = 6;
/// Widest legend text beside the plot; longer labels are cut.
const RIGHT_LEGEND_TEXT_W: i32 = 170;
/// Gap between the plot and a legend beside it.
pub(crate) const RIGHT_LEGEND_GAP: i32 = 10;
/// Smallest plot, in pixels each way, whatever the labels and legend take.
const MIN_PLOT: i32 = 40;

/// A point: data coordinates, or fractions of the axes.
pub(crate) type Point = (f64, f64);
/// A pixel of the image.
pub(crate) type Pixel = (i32, i32);

/// Inclusive pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    pub fn contains(&self, (x, y): Pixel) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }

    pub fn grow(self, d: i32) -> Rect {
        Rect {
            x0: self.x0 - d,
            y0: self.y0 - d,
            x1: self.x1 + d,
            y1: self.y1 + d,
        }
    }

    pub fn width(&self) -> i32 {
        self.x1 - self.x0 + 1
    }

    pub fn height(&self) -> i32 {
        self.y1 - self.y0 + 1
    }
}

pub(crate) fn font(size: i32) -> FontDesc<'static> {
    (FONT_FAMILY, f64::from(size)).into_font()
}

/// Where the ink of each visible character of `s` in `size` starts, in
/// whole pixels from the start of the text, and the text's width.
pub(crate) fn glyph_offsets(s: &str, size: i32) -> (Vec<(char, i32)>, i32) {
    static FACE: OnceLock<FontRef<'static>> = OnceLock::new();
    let face = FACE.get_or_init(|| {
        FontRef::try_from_slice(font_data()).expect("the embedded DejaVu Sans is a valid font")
    });
    let scaled = face.as_scaled(size as f32);
    let (mut pen, mut prev) = (0f32, None);
    let mut glyphs = Vec::new();
    for c in s.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        if !c.is_whitespace() {
            let ink = pen.round() + scaled.h_side_bearing(id).floor();
            glyphs.push((c, ink as i32));
        }
        pen += scaled.h_advance(id);
        prev = Some(id);
    }
    (glyphs, pen.ceil() as i32)
}

/// Width in pixels of `s` drawn in `size`.
pub(crate) fn text_width(s: &str, size: i32) -> i32 {
    glyph_offsets(s, size).1
}

/// `s`, cut and ended with "…" so it is at most `max_w` pixels wide.
pub(crate) fn fit(s: &str, size: i32, max_w: i32) -> String {
    if text_width(s, size) <= max_w {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    let cut = |n: usize| chars[..n].iter().collect::<String>() + "…";
    // The longest prefix that fits, by bisection on its length.
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if text_width(&cut(mid), size) <= max_w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 && text_width("…", size) > max_w {
        String::new()
    } else {
        cut(lo)
    }
}

/// Where everything in one panel goes, and how data maps to pixels.
pub(crate) struct Geometry {
    /// The whole panel, in image pixels.
    pub panel: Rect,
    /// The data area; the frame is drawn one pixel outside it.
    pub plot: Rect,
    pub x: Axis,
    pub y: Axis,
    log_y: bool,
    /// Maps the unit square (fractions of the axes) onto `plot`.
    coord: Cartesian2d<RangedCoordf64, RangedCoordf64>,
}

impl Geometry {
    /// The layout of `panel` drawn at `origin` with `size` = (width, height).
    pub fn new(panel: &Panel, origin: (i32, i32), size: (i32, i32)) -> Geometry {
        let (mut xr, mut yr) = (None::<Point>, None::<Point>);
        let mut extend = |(x, y): Point| {
            if drawable((x, y), panel.log_y) {
                for (r, v) in [(&mut xr, x), (&mut yr, y)] {
                    *r = Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
                }
            }
        };
        for s in panel.series.iter().chain(&panel.guides) {
            s.points.iter().copied().for_each(&mut extend);
        }
        panel.markers.iter().for_each(|m| extend(m.at));
        if let Some(h) = drawable_heatmap(panel) {
            extend((h.x_range.0, h.y_range.0));
            extend((h.x_range.1, h.y_range.1));
        }
        let x = Axis::new(xr, panel.x_range, false);
        let y = Axis::new(yr, panel.y_range, panel.log_y);

        let (ox, oy) = origin;
        let (w, h) = size;
        let ytick_w = y
            .ticks
            .iter()
            .map(|&t| text_width(&fit(&y.label(t), TICK_SIZE, MAX_YTICK_W), TICK_SIZE))
            .max()
            .unwrap_or(0);
        let y_label_w = if panel.y_label.is_empty() {
            0
        } else {
            LABEL_SIZE + 6
        };
        let x_label_h = if panel.x_label.is_empty() {
            0
        } else {
            LABEL_SIZE + 5
        };
        let top = if panel.title.is_empty() {
            10
        } else {
            6 + TITLE_SIZE + 8
        };
        let legend = match panel.legend {
            LegendPosition::Right => {
                right_legend_width(panel, w).map_or(0, |lw| lw + RIGHT_LEGEND_GAP)
            }
            _ => 0,
        };
        let x0 = ox + 6 + y_label_w + ytick_w + TICK_GAP + TICK_LEN + 1;
        let y0 = oy + top;
        let below = 1 + TICK_LEN + TICK_GAP + TICK_SIZE + x_label_h + 6;
        let plot = Rect {
            x0,
            y0,
            x1: (ox + w - 1 - 14 - legend).max(x0 + MIN_PLOT),
            y1: (oy + h - 1 - below).max(y0 + MIN_PLOT),
        };
        Geometry {
            panel: Rect {
                x0: ox,
                y0: oy,
                x1: ox + w - 1,
                y1: oy + h - 1,
            },
            plot,
            x,
            y,
            log_y: panel.log_y,
            coord: Cartesian2d::new(0.0..1.0, 0.0..1.0, (plot.x0..plot.x1, plot.y1..plot.y0)),
        }
    }

    /// Data point `p` as fractions of the axes, if it can be drawn at all.
    pub fn unit(&self, p: Point) -> Option<Point> {
        drawable(p, self.log_y).then(|| (self.x.frac(p.0), self.y.frac(p.1)))
    }

    /// The pixel of fractions `u` of the axes.
    pub fn pixel(&self, u: Point) -> Pixel {
        self.coord.translate(&u)
    }

    /// The pixel column of x tick `t` (in axis space).
    pub fn tick_x(&self, t: f64) -> i32 {
        self.pixel((self.x.place(t), 0.0)).0
    }

    /// The pixel row of y tick `t` (in axis space).
    pub fn tick_y(&self, t: f64) -> i32 {
        self.pixel((0.0, self.y.place(t))).1
    }

    /// Data coordinates at pixel `(x, y)` of the plot.
    pub fn data_at(&self, (x, y): Pixel) -> Point {
        let p = self.plot;
        let fx = f64::from(x - p.x0) / f64::from((p.x1 - p.x0).max(1));
        let fy = f64::from(p.y1 - y) / f64::from((p.y1 - p.y0).max(1));
        (self.x.value_at(fx), self.y.value_at(fy))
    }

    /// Pixel polylines of `points`, clipped to the plot; a point that cannot
    /// be drawn breaks the line. A lone point (or a line that maps to one
    /// pixel) is a one-pixel polyline.
    pub fn polylines(&self, points: &[Point]) -> Vec<Vec<Pixel>> {
        let mut out: Vec<Vec<Pixel>> = Vec::new();
        for run in points
            .split(|&p| self.unit(p).is_none())
            .filter(|r| !r.is_empty())
        {
            let units: Vec<Point> = run.iter().filter_map(|&p| self.unit(p)).collect();
            if let [u] = units[..] {
                if inside(u) {
                    out.push(vec![self.pixel(u)]);
                }
                continue;
            }
            let mut line: Vec<Pixel> = Vec::new();
            for w in units.windows(2) {
                let Some(c) = clip(w[0], w[1]) else {
                    continue;
                };
                if c.cut_a && !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                }
                for p in [self.pixel(c.a), self.pixel(c.b)] {
                    if line.last() != Some(&p) {
                        line.push(p);
                    }
                }
                if c.cut_b {
                    out.push(std::mem::take(&mut line));
                }
            }
            if !line.is_empty() {
                out.push(line);
            }
        }
        out
    }
}

fn drawable(p: Point, log_y: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0)
}

/// Whether fractions `u` of the axes are inside the plot.
pub(crate) fn inside(u: Point) -> bool {
    (0.0..=1.0).contains(&u.0) && (0.0..=1.0).contains(&u.1)
}

/// The part of a segment inside the unit square.
pub(crate) struct Clipped {
    pub a: Point,
    pub b: Point,
    /// Whether `a` was moved onto the border.
    pub cut_a: bool,
    /// Whether `b` was moved onto the border.
    pub cut_b: bool,
}

/// The part of segment `a`-`b` inside the unit square (Liang-Barsky).
pub(crate) fn clip(a: Point, b: Point) -> Option<Clipped> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0), (dx, 1.0 - a.0), (-dy, a.1), (dy, 1.0 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    (t0 <= t1).then(|| Clipped {
        a: at(t0),
        b: at(t1),
        cut_a: t0 > 0.0,
        cut_b: t1 < 1.0,
    })
}

/// The panel's heat map, if it can be drawn.
pub(crate) fn drawable_heatmap(panel: &Panel) -> Option<&HeatMap> {
    panel
        .heatmap
        .as_ref()
        .filter(|h| heatmap::rows(h).is_some())
}

/// What a legend row's swatch shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Swatch {
    /// A series line of this colour.
    Line(RGBColor),
    /// A wide bar of this colour (guides).
    Bar(RGBColor),
    /// The colour map, low to high.
    Gradient,
}

/// Legend rows of `panel`: series, guides, the heat map.
pub(crate) fn legend_entries(panel: &Panel) -> Vec<(Swatch, String)> {
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
    if let Some(h) = drawable_heatmap(panel).filter(|h| !h.label.is_empty()) {
        if let Some((lo, hi)) = heatmap::limits(h) {
            let step = Axis::new(Some((lo, hi)), None, false).step / 10.0;
            let text = format!("{} {}..{}", h.label, fmt_tick(lo, step), fmt_tick(hi, step));
            entries.push((Swatch::Gradient, text));
        }
    }
    entries
}

/// Widest legend text beside the plot of a panel `panel_w` pixels wide.
pub(crate) fn right_legend_text_w(panel_w: i32) -> i32 {
    RIGHT_LEGEND_TEXT_W.min(panel_w / 3)
}

/// Width of a legend beside the plot (`None` when there is nothing to list).
fn right_legend_width(panel: &Panel, panel_w: i32) -> Option<i32> {
    let max_w = right_legend_text_w(panel_w);
    legend_entries(panel)
        .iter()
        .map(|(_, l)| text_width(&fit(l, LEGEND_SIZE, max_w), LEGEND_SIZE))
        .max()
        .map(legend_box_width)
}

/// Width of a legend box whose widest text is `text_w` pixels.
pub(crate) fn legend_box_width(text_w: i32) -> i32 {
    LEGEND_PAD + LEGEND_SWATCH + LEGEND_PAD + text_w + LEGEND_PAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    #[test]
    fn fit_cuts_long_text_to_the_width() {
        assert_eq!(fit("short", 12, 200), "short");
        let long = "a label far too long for forty pixels";
        let cut = fit(long, 12, 40);
        assert!(cut.ends_with('…') && cut.len() < long.len(), "{cut}");
        assert!(text_width(&cut, 12) <= 40);
        assert!(text_width(&fit(long, 12, 41), 12) > text_width(&cut, 12) - 8);
        assert_eq!(fit(long, 12, 0), "");
    }

    #[test]
    fn glyphs_advance_and_spaces_take_room_but_no_glyph() {
        let (glyphs, width) = glyph_offsets("m m", 15);
        assert_eq!(glyphs.len(), 2);
        let (m, w_m) = glyph_offsets("m", 15);
        assert!(glyphs[1].1 > glyphs[0].1 + w_m, "{glyphs:?}");
        assert_eq!(glyphs[0], m[0]);
        assert!(width > 2 * w_m);
    }

    #[test]
    fn polylines_break_at_bad_points_and_are_clipped() {
        let panel = Panel {
            series: vec![Series::default()],
            x_range: Some((0.0, 10.0)),
            y_range: Some((0.0, 10.0)),
            ..Panel::default()
        };
        let g = Geometry::new(&panel, (0, 0), (480, 320));
        let px = |x: f64, y: f64| g.pixel(g.unit((x, y)).expect("drawable"));
        let pts = [
            (1.0, 1.0),
            (2.0, 2.0),
            (f64::NAN, 0.0),
            (3.0, 3.0),
            (20.0, 3.0),
            (4.0, 4.0),
            (f64::INFINITY, 0.0),
            (5.0, 5.0),
            (f64::NAN, 0.0),
            (50.0, 5.0),
        ];
        let lines = g.polylines(&pts);
        let exit = (10.0, 3.0);
        let back = (10.0, 3.0 + 10.0 / 16.0);
        assert_eq!(
            lines,
            vec![
                vec![px(1.0, 1.0), px(2.0, 2.0)],
                vec![px(3.0, 3.0), px(exit.0, exit.1)],
                vec![px(back.0, back.1), px(4.0, 4.0)],
                vec![px(5.0, 5.0)],
            ]
        );
    }
}
