//! Drawing a laid-out panel with plotters elements.

use std::collections::{HashMap, VecDeque};

use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, DrawingAreaErrorKind};
use plotters::element::{Circle, PathElement, Polygon, Rectangle, Text};
use plotters::prelude::DrawingBackend;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontTransform, RGBColor, ShapeStyle, TextStyle};

use crate::heatmap;
use crate::layout::{
    clip, drawable_heatmap, fit, font, glyph_offsets, inside, legend_box_width, legend_entries,
    right_legend_text_w, text_width, Geometry, Pixel, Rect, Swatch, GUIDE, LABEL_SIZE, LEGEND_PAD,
    LEGEND_ROW, LEGEND_SIZE, LEGEND_SWATCH, MAX_YTICK_W, PALETTE, RIGHT_LEGEND_GAP, TICK_GAP,
    TICK_LEN, TICK_SIZE, TITLE_SIZE,
};
use crate::{HeatMap, LegendPosition, Marker, MarkerShape, Panel};

pub(crate) const WHITE: RGBColor = RGBColor(255, 255, 255);
pub(crate) const BLACK: RGBColor = RGBColor(0, 0, 0);
pub(crate) const TITLE: RGBColor = RGBColor(20, 20, 20);
pub(crate) const TEXT: RGBColor = RGBColor(60, 60, 60);
pub(crate) const AXIS: RGBColor = RGBColor(128, 128, 128);
pub(crate) const GRID: RGBColor = RGBColor(232, 232, 232);
pub(crate) const LEGEND_BORDER: RGBColor = RGBColor(180, 180, 180);
/// Outline of series, crosses and light discs over a heat map.
pub(crate) const HALO: RGBColor = RGBColor(24, 24, 24);

// Half-widths of strokes: a stroke is `2·half + 1` pixels wide.
pub(crate) const SERIES_HALF: i32 = 1;
pub(crate) const HALO_HALF: i32 = 2;
pub(crate) const GUIDE_HALF: i32 = 2;

/// How fine the output is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Pixels: heat maps per pixel; lines as one quad per segment with
    /// round joints (plotters' own wide lines truncate their corners, which
    /// makes them thin or lopsided at some slopes, and wide polylines get
    /// spikes and holes at sharp turns).
    Raster,
    /// SVG: heat maps in 4-px cells to keep the file small; lines as one
    /// polyline each, which the viewer strokes.
    Vector,
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// plotters elements drawn onto the whole image, in pixels.
pub(crate) struct Painter<'a, DB: DrawingBackend> {
    pub root: &'a DrawingArea<DB, Shift>,
    pub detail: Detail,
}

impl<DB: DrawingBackend> Painter<'_, DB> {
    /// A 1-px line (anti-aliased when slanted).
    fn line(&self, a: Pixel, b: Pixel, color: RGBColor) -> DrawResult<DB> {
        // Left to right: plotters' bitmap drops both end pixels of a
        // horizontal line drawn right to left.
        let ends = if a <= b { [a, b] } else { [b, a] };
        self.root.draw(&PathElement::new(ends, color))
    }

    pub(crate) fn fill(&self, r: Rect, color: RGBColor) -> DrawResult<DB> {
        // plotters' filled rectangles leave out their far corner.
        let corners = [(r.x0, r.y0), (r.x1 + 1, r.y1 + 1)];
        self.root.draw(&Rectangle::new(corners, color.filled()))
    }

    pub(crate) fn outline(&self, r: Rect, color: RGBColor) -> DrawResult<DB> {
        let corners = [(r.x0, r.y0), (r.x1, r.y1)];
        self.root
            .draw(&Rectangle::new(corners, ShapeStyle::from(color)))
    }

    /// A filled disc `2·radius + 1` pixels across.
    fn disc(&self, c: Pixel, radius: i32, color: RGBColor) -> DrawResult<DB> {
        let radius = u32::try_from(radius).unwrap_or(0);
        self.root.draw(&Circle::new(c, radius, color.filled()))
    }

    /// Strokes pixel polylines `lines`, `2·half + 1` pixels wide; a
    /// one-pixel polyline becomes a dot a little wider than a wide line.
    fn stroke(&self, lines: &[Vec<Pixel>], color: RGBColor, half: i32) -> DrawResult<DB> {
        for line in lines {
            if let [p] = line[..] {
                // A hairline's dot is its one pixel.
                self.disc(p, if half == 0 { 0 } else { half + 1 }, color)?;
                continue;
            }
            match self.detail {
                Detail::Raster if half == 0 => {
                    for w in line.windows(2) {
                        self.line(w[0], w[1], color)?;
                    }
                }
                Detail::Vector => {
                    let width = u32::try_from(2 * half + 1).unwrap_or(1);
                    let style = ShapeStyle::from(color).stroke_width(width);
                    self.root.draw(&PathElement::new(line.clone(), style))?;
                }
                Detail::Raster => {
                    for w in line.windows(2) {
                        self.root
                            .draw(&Polygon::new(quad(w[0], w[1], half), color))?;
                    }
                    for &p in &line[1..line.len() - 1] {
                        self.disc(p, half, color)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `text` in `size` and `color`, anchored at `pos` by `anchor`, read
    /// bottom to top when `up`.
    pub(crate) fn text(
        &self,
        text: &str,
        pos: Pixel,
        anchor: (HPos, VPos),
        (size, color): (i32, RGBColor),
        up: bool,
    ) -> DrawResult<DB> {
        let font = if up {
            font(size).transform(FontTransform::Rotate270)
        } else {
            font(size)
        };
        let style = |h: HPos| {
            TextStyle::from(font.clone())
                .color(&color)
                .pos(Pos::new(h, anchor.1))
        };
        if self.detail == Detail::Vector {
            // The SVG viewer lays the text out.
            return self
                .root
                .draw(&Text::new(text.to_string(), pos, style(anchor.0)));
        }
        // Glyph by glyph, each where its side bearing puts it. plotters'
        // rasteriser also draws glyphs about a quarter of the size above
        // (before rotation) where the anchor asks, hence the nudge.
        let nudge = (f64::from(size) * 0.23).round() as i32;
        let (glyphs, width) = glyph_offsets(text, size);
        let start = match anchor.0 {
            HPos::Left => 0,
            HPos::Center => -width / 2,
            HPos::Right => -width,
        };
        let style = style(HPos::Left);
        for (c, dx) in glyphs {
            let at = if up {
                (pos.0 + nudge, pos.1 - start - dx)
            } else {
                (pos.0 + start + dx, pos.1 + nudge)
            };
            self.root
                .draw(&Text::new(c.to_string(), at, style.clone()))?;
        }
        Ok(())
    }
}

/// The quad of a segment from `a` to `b`, about `2·half + 1` pixels wide,
/// corners rounded to the nearest pixel so it is as wide on both sides.
fn quad(a: Pixel, b: Pixel, half: i32) -> Vec<Pixel> {
    let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
    // A little over `half`, so that after rounding a wider stroke (a halo)
    // stays wider at every slope.
    let scale = (f64::from(half) + 0.4) / dx.hypot(dy);
    let (nx, ny) = ((-dy * scale).round() as i32, (dx * scale).round() as i32);
    vec![
        (a.0 + nx, a.1 + ny),
        (b.0 + nx, b.1 + ny),
        (b.0 - nx, b.1 - ny),
        (a.0 - nx, a.1 - ny),
    ]
}

/// Draws `panel` laid out by `g`.
pub(crate) fn panel<DB: DrawingBackend>(
    p: &Painter<'_, DB>,
    panel: &Panel,
    g: &Geometry,
) -> DrawResult<DB> {
    let heatmap = drawable_heatmap(panel);
    match heatmap {
        Some(h) => draw_heatmap(p, g, h)?,
        // A heat map has contours instead of a grid.
        None => draw_grid(p, g)?,
    }
    for s in &panel.guides {
        p.stroke(&g.polylines(&s.points), GUIDE, GUIDE_HALF)?;
    }
    let series: Vec<Vec<Vec<Pixel>>> = panel
        .series
        .iter()
        .map(|s| g.polylines(&s.points))
        .collect();
    for (i, lines) in series.iter().enumerate() {
        if heatmap.is_some() {
            p.stroke(lines, HALO, HALO_HALF)?;
        }
        p.stroke(lines, PALETTE[i % PALETTE.len()], SERIES_HALF)?;
    }
    p.outline(g.plot.grow(1), AXIS)?;
    for m in &panel.markers {
        draw_marker(p, g, m)?;
    }
    draw_ticks(p, g)?;
    if panel.legend != LegendPosition::Hidden {
        draw_legend(p, g, panel, &series)?;
    }
    draw_labels(p, g, panel)
}

fn draw_grid<DB: DrawingBackend>(p: &Painter<'_, DB>, g: &Geometry) -> DrawResult<DB> {
    let r = g.plot;
    for &t in &g.x.ticks {
        let x = g.tick_x(t);
        p.line((x, r.y0), (x, r.y1), GRID)?;
    }
    for &t in &g.y.ticks {
        let y = g.tick_y(t);
        p.line((r.x0, y), (r.x1, y), GRID)?;
    }
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    p: &Painter<'_, DB>,
    g: &Geometry,
    h: &HeatMap,
) -> DrawResult<DB> {
    let (Some(rows), Some((lo, hi))) = (heatmap::rows(h), heatmap::limits(h)) else {
        return Ok(());
    };
    let r = g.plot;
    let cell = match p.detail {
        Detail::Raster => 1,
        Detail::Vector => 4,
    };
    // A cell takes the colour at its centre (its only pixel when cells are
    // pixels, so the axis ends get the grid's end values exactly).
    let centre = |v: i32, end: i32| (v + cell / 2).min(end);
    let colour_at = |x: i32, y: i32| {
        let (dx, dy) = g.data_at((centre(x, r.x1), centre(y, r.y1)));
        let v = heatmap::value_at(h, rows, dx, dy);
        v.is_finite().then(|| heatmap::colour((v - lo) / (hi - lo)))
    };
    for y in (r.y0..=r.y1).step_by(cell as usize) {
        let y1 = (y + cell - 1).min(r.y1);
        // A run of one colour is one rectangle.
        let mut run: Option<(i32, RGBColor)> = None;
        for x in (r.x0..=r.x1).step_by(cell as usize) {
            let c = colour_at(x, y);
            if let Some((x0, rc)) = run.filter(|&(_, rc)| c != Some(rc)) {
                p.fill(
                    Rect {
                        x0,
                        y0: y,
                        x1: x - 1,
                        y1,
                    },
                    rc,
                )?;
                run = None;
            }
            if let (None, Some(c)) = (run, c) {
                run = Some((x, c));
            }
        }
        if let Some((x0, rc)) = run {
            p.fill(
                Rect {
                    x0,
                    y0: y,
                    x1: r.x1,
                    y1,
                },
                rc,
            )?;
        }
    }
    for f in heatmap::levels(h) {
        let segments: Vec<(Pixel, Pixel)> = heatmap::contour(h, rows, lo + f * (hi - lo))
            .into_iter()
            .filter_map(|(a, b)| clip(g.unit(a)?, g.unit(b)?))
            .map(|c| (g.pixel(c.a), g.pixel(c.b)))
            .collect();
        // The level's own colour, contrasted, stands out wherever it runs.
        let color = heatmap::contrast(heatmap::colour(f));
        p.stroke(&chain(&segments), color, 0)?;
    }
    Ok(())
}

/// Joins pixel segments that share ends into polylines (marching squares
/// gives a contour cell by cell; one polyline each keeps SVG small).
fn chain(segments: &[(Pixel, Pixel)]) -> Vec<Vec<Pixel>> {
    let mut at: HashMap<Pixel, Vec<usize>> = HashMap::new();
    for (i, &(a, b)) in segments.iter().enumerate() {
        at.entry(a).or_default().push(i);
        at.entry(b).or_default().push(i);
    }
    let mut used = vec![false; segments.len()];
    let mut out = Vec::new();
    for (i, &(a, b)) in segments.iter().enumerate() {
        if std::mem::replace(&mut used[i], true) {
            continue;
        }
        let mut line = VecDeque::from([a]);
        if b != a {
            line.push_back(b);
        }
        // Grow the back, then the front, while an unused segment continues it.
        for back in [true, false] {
            loop {
                let end = if back { line.back() } else { line.front() };
                let end = *end.expect("a line has a point");
                let Some(&j) = at[&end].iter().find(|&&j| !used[j]) else {
                    break;
                };
                used[j] = true;
                let (a, b) = segments[j];
                let next = if a == end { b } else { a };
                if next != end {
                    if back {
                        line.push_back(next);
                    } else {
                        line.push_front(next);
                    }
                }
            }
        }
        out.push(Vec::from(line));
    }
    out
}

fn draw_marker<DB: DrawingBackend>(
    p: &Painter<'_, DB>,
    g: &Geometry,
    m: &Marker,
) -> DrawResult<DB> {
    // A marker whose centre is outside the plot is not drawn; one inside is
    // drawn whole.
    let Some(u) = g.unit(m.at).filter(|&u| inside(u)) else {
        return Ok(());
    };
    let c = g.pixel(u);
    let r = m.radius.clamp(1, 20) as i32;
    let fill = m.color.map_or(BLACK, |i| PALETTE[i % PALETTE.len()]);
    match m.shape {
        MarkerShape::Disc => {
            let ring = if luma(fill) < 128.0 { WHITE } else { HALO };
            p.disc(c, r + 1, ring)?;
            p.disc(c, r, fill)
        }
        MarkerShape::Cross => {
            let outline = if fill == BLACK { WHITE } else { HALO };
            let (x, y) = c;
            let arms = |r: i32| {
                [
                    vec![(x - r, y - r), (x + r, y + r)],
                    vec![(x - r, y + r), (x + r, y - r)],
                ]
            };
            // The outline reaches a pixel further to cap the arms' ends.
            p.stroke(&arms(r + 1), outline, 2)?;
            p.stroke(&arms(r), fill, 1)
        }
    }
}

pub(crate) fn luma(c: RGBColor) -> f64 {
    0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2)
}

fn draw_ticks<DB: DrawingBackend>(p: &Painter<'_, DB>, g: &Geometry) -> DrawResult<DB> {
    let (r, area) = (g.plot, g.panel);
    // X labels are centred on their tick, kept inside the panel, and
    // skipped where they would run into the previous one.
    let mut last_end = i32::MIN;
    for &t in &g.x.ticks {
        let x = g.tick_x(t);
        p.line((x, r.y1 + 2), (x, r.y1 + 1 + TICK_LEN), AXIS)?;
        let text = g.x.label(t);
        let w = text_width(&text, TICK_SIZE);
        let left = (x - w / 2).min(area.x1 - 2 - w).max(area.x0 + 2);
        if left > last_end + 6 {
            let top = r.y1 + 1 + TICK_LEN + TICK_GAP;
            let anchor = (HPos::Left, VPos::Top);
            p.text(&text, (left, top), anchor, (TICK_SIZE, TEXT), false)?;
            last_end = left + w;
        }
    }
    for &t in &g.y.ticks {
        let y = g.tick_y(t);
        p.line((r.x0 - 2, y), (r.x0 - 1 - TICK_LEN, y), AXIS)?;
        let text = fit(&g.y.label(t), TICK_SIZE, MAX_YTICK_W);
        let y = y.clamp(area.y0 + TICK_SIZE / 2, area.y1 - TICK_SIZE / 2);
        let right = r.x0 - 1 - TICK_LEN - TICK_GAP;
        let anchor = (HPos::Right, VPos::Center);
        p.text(&text, (right, y), anchor, (TICK_SIZE, TEXT), false)?;
    }
    Ok(())
}

fn draw_labels<DB: DrawingBackend>(
    p: &Painter<'_, DB>,
    g: &Geometry,
    panel: &Panel,
) -> DrawResult<DB> {
    let (r, area) = (g.plot, g.panel);
    let top = (HPos::Center, VPos::Top);
    let title = fit(&panel.title, TITLE_SIZE, area.width() - 16);
    let centre = (area.x0 + area.x1) / 2;
    p.text(
        &title,
        (centre, area.y0 + 6),
        top,
        (TITLE_SIZE, TITLE),
        false,
    )?;

    let x_label = fit(&panel.x_label, LABEL_SIZE, area.width() - 8);
    let w = text_width(&x_label, LABEL_SIZE);
    let left = ((r.x0 + r.x1) / 2 - w / 2)
        .min(area.x1 - 2 - w)
        .max(area.x0 + 2);
    let y = r.y1 + 1 + TICK_LEN + TICK_GAP + TICK_SIZE + 5;
    let anchor = (HPos::Left, VPos::Top);
    p.text(&x_label, (left, y), anchor, (LABEL_SIZE, TEXT), false)?;

    let y_label = fit(&panel.y_label, LABEL_SIZE, r.height());
    let at = (area.x0 + 6, (r.y0 + r.y1) / 2);
    p.text(&y_label, at, top, (LABEL_SIZE, TEXT), true)
}

fn draw_legend<DB: DrawingBackend>(
    p: &Painter<'_, DB>,
    g: &Geometry,
    panel: &Panel,
    series: &[Vec<Vec<Pixel>>],
) -> DrawResult<DB> {
    let entries = legend_entries(panel);
    if entries.is_empty() {
        return Ok(());
    }
    let (r, area) = (g.plot, g.panel);
    let right = panel.legend == LegendPosition::Right;
    let (max_text_w, avail_h) = if right {
        (right_legend_text_w(area.width()), area.y1 - r.y0 - 6)
    } else {
        (r.width() - 12 - legend_box_width(0), r.height() - 12)
    };
    // Rows that do not fit are summed up as "+N more".
    let fit_rows = ((avail_h - 6) / LEGEND_ROW).max(1) as usize;
    let shown = if entries.len() > fit_rows {
        fit_rows - 1
    } else {
        entries.len()
    };
    let mut lines: Vec<String> = entries[..shown]
        .iter()
        .map(|(_, text)| fit(text, LEGEND_SIZE, max_text_w))
        .collect();
    if shown < entries.len() {
        let more = format!("+{} more", entries.len() - shown);
        lines.push(fit(&more, LEGEND_SIZE, max_text_w));
    }
    let text_w = lines
        .iter()
        .map(|l| text_width(l, LEGEND_SIZE))
        .max()
        .unwrap_or(0);
    let (w, h) = (
        legend_box_width(text_w),
        lines.len() as i32 * LEGEND_ROW + 6,
    );
    let at = |x0: i32, y0: i32| Rect {
        x0,
        y0,
        x1: x0 + w - 1,
        y1: y0 + h - 1,
    };
    let boxed = if right {
        at(r.x1 + 1 + RIGHT_LEGEND_GAP, r.y0)
    } else {
        let corners = [
            at(r.x1 - 6 - w + 1, r.y0 + 6),
            at(r.x0 + 6, r.y0 + 6),
            at(r.x1 - 6 - w + 1, r.y1 - 6 - h + 1),
            at(r.x0 + 6, r.y1 - 6 - h + 1),
        ];
        least_crowded(&corners, g, panel, series)
    };
    p.fill(boxed, WHITE)?;
    p.outline(boxed, LEGEND_BORDER)?;
    for (i, line) in lines.iter().enumerate() {
        let mid = boxed.y0 + 3 + i as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        let x0 = boxed.x0 + LEGEND_PAD;
        let bar = |half: i32| Rect {
            x0,
            y0: mid - half,
            x1: x0 + LEGEND_SWATCH - 1,
            y1: mid + half - 1,
        };
        match entries.get(i).filter(|_| i < shown).map(|e| e.0) {
            Some(Swatch::Line(c)) => p.fill(bar(1), c)?,
            Some(Swatch::Bar(c)) => p.fill(bar(3), c)?,
            Some(Swatch::Gradient) => {
                for k in 0..LEGEND_SWATCH {
                    let c = heatmap::colour(f64::from(k) / f64::from(LEGEND_SWATCH - 1));
                    p.fill(
                        Rect {
                            x0: x0 + k,
                            x1: x0 + k,
                            ..bar(4)
                        },
                        c,
                    )?;
                }
            }
            None => {}
        }
        let text_x = x0 + LEGEND_SWATCH + LEGEND_PAD;
        let anchor = (HPos::Left, VPos::Center);
        p.text(line, (text_x, mid), anchor, (LEGEND_SIZE, TEXT), false)?;
    }
    Ok(())
}

/// The candidate hiding the fewest series points, markers counting
/// heavily; the first such (top right) on ties.
fn least_crowded(
    candidates: &[Rect],
    g: &Geometry,
    panel: &Panel,
    series: &[Vec<Vec<Pixel>>],
) -> Rect {
    let markers: Vec<Pixel> = panel
        .markers
        .iter()
        .filter_map(|m| g.unit(m.at))
        .map(|u| g.pixel(u))
        .collect();
    let covered = |r: &Rect| {
        let near = r.grow(8);
        let points: usize = series
            .iter()
            .flatten()
            .map(|line| samples(line).filter(|&q| r.contains(q)).count())
            .sum();
        points + 1000 * markers.iter().filter(|&&m| near.contains(m)).count()
    };
    let mut best = (candidates[0], covered(&candidates[0]));
    for r in &candidates[1..] {
        let n = covered(r);
        if n < best.1 {
            best = (*r, n);
        }
    }
    best.0
}

/// Points about every 2 pixels along a pixel polyline.
fn samples(line: &[Pixel]) -> impl Iterator<Item = Pixel> + '_ {
    let single = (line.len() == 1).then(|| line[0]);
    line.windows(2)
        .flat_map(|w| {
            let (a, b) = (w[0], w[1]);
            let n = (a.0 - b.0).abs().max((a.1 - b.1).abs()) / 2 + 1;
            (0..=n).map(move |k| {
                let at = |u: i32, v: i32| u + (v - u) * k / n;
                (at(a.0, b.0), at(a.1, b.1))
            })
        })
        .chain(single)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_segments_given_in_any_order_and_direction() {
        let segments = [
            ((2, 0), (3, 1)),
            ((1, 0), (0, 0)),
            ((7, 7), (8, 8)),
            ((1, 0), (2, 0)),
        ];
        let mut lines = chain(&segments);
        for line in &mut lines {
            if line[0] > line[line.len() - 1] {
                line.reverse();
            }
        }
        lines.sort();
        assert_eq!(
            lines,
            vec![vec![(0, 0), (1, 0), (2, 0), (3, 1)], vec![(7, 7), (8, 8)]]
        );
    }

    #[test]
    fn quads_are_as_wide_on_both_sides() {
        assert_eq!(
            quad((0, 0), (10, 0), 1),
            vec![(0, 1), (10, 1), (10, -1), (0, -1)]
        );
        // Truncating would give (0, 0) on one side for this slope.
        assert_eq!(
            quad((0, 0), (10, 3), 1),
            vec![(0, 1), (10, 4), (10, 2), (0, -1)]
        );
        assert_eq!(
            quad((0, 0), (0, 5), 2),
            vec![(-2, 0), (-2, 5), (2, 5), (2, 0)]
        );
        // A halo is wider than its line at every slope, on each side.
        for (dx, dy) in (0..40).flat_map(|dx| (0..40).map(move |dy| (dx, dy))) {
            if (dx, dy) == (0, 0) {
                continue;
            }
            let (nx, ny) = (-f64::from(dy), f64::from(dx));
            let across = |half| {
                let q = quad((0, 0), (dx, dy), half);
                (f64::from(q[0].0) * nx + f64::from(q[0].1) * ny) / nx.hypot(ny)
            };
            assert!(across(2) > across(1) + 0.5, "({dx}, {dy})");
            assert!(across(1) > 0.9, "({dx}, {dy})");
        }
    }
}
