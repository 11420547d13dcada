//! Rendering tests: decoded pixels checked against the layout.

use plotters::style::RGBColor;

use crate::draw::{luma, AXIS, BLACK, GRID, HALO, LEGEND_BORDER, WHITE};
use crate::heatmap::colour;
use crate::layout::{
    legend_entries, Geometry, Rect, Swatch, GUIDE, LEGEND_PAD, LEGEND_SWATCH, PALETTE,
    RIGHT_LEGEND_GAP,
};
use crate::*;

/// A decoded RGB8 image.
struct Image {
    w: i32,
    h: i32,
    rgb: Vec<u8>,
}

impl Image {
    fn decode(bytes: &[u8]) -> Image {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().expect("a PNG header");
        let mut rgb = vec![0; reader.output_buffer_size().expect("a known size")];
        let info = reader.next_frame(&mut rgb).expect("a PNG frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        rgb.truncate(info.buffer_size());
        Image {
            w: info.width as i32,
            h: info.height as i32,
            rgb,
        }
    }

    fn size(&self) -> (i32, i32) {
        (self.w, self.h)
    }

    fn at(&self, (x, y): (i32, i32)) -> RGBColor {
        assert!(x >= 0 && y >= 0 && x < self.w && y < self.h, "({x}, {y})");
        let i = (y * self.w + x) as usize * 3;
        RGBColor(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }

    /// Pixels of colour `c` inside `r`.
    fn count(&self, r: Rect, c: RGBColor) -> usize {
        self.pixels()
            .filter(|&p| r.contains(p) && self.at(p) == c)
            .count()
    }

    fn pixels(&self) -> impl Iterator<Item = (i32, i32)> {
        let w = self.w;
        (0..self.w * self.h).map(move |i| (i % w, i / w))
    }
}

fn png(panels: &[Panel]) -> Image {
    Image::decode(&render_png(panels, 1))
}

/// The layout of a lone default-size panel.
fn geometry(p: &Panel) -> Geometry {
    Geometry::new(p, (0, 0), (480, 320))
}

/// The pixel of data point `(x, y)`.
fn px(g: &Geometry, p: (f64, f64)) -> (i32, i32) {
    g.pixel(g.unit(p).expect("a drawable point"))
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
    let four: Vec<Panel> = (0..4).map(|_| panel(vec![series("a", ramp(10))])).collect();
    let size = |panels: &[Panel], columns| Image::decode(&render_png(panels, columns)).size();
    assert_eq!(size(&four[..1], 1), (480, 320));
    assert_eq!(size(&four, 2), (960, 640));
    assert_eq!(size(&four[..3], 2), (960, 640));
    assert_eq!(size(&four[..3], 0), (480, 960), "columns = 0 acts as 1");
    assert_eq!(
        size(&four[..2], 10),
        (960, 320),
        "columns capped at panel count"
    );
    let sized = render_png_sized(&four[..3], 2, (300, 250));
    assert_eq!(Image::decode(&sized).size(), (600, 500));
    let tiny = render_png_sized(&four[..1], 1, (1, 1));
    assert_eq!(Image::decode(&tiny).size(), (160, 160), "sizes are clamped");
}

#[test]
fn series_colour_only_in_its_panel() {
    let k = 3;
    let mut lines: Vec<Series> = (0..k)
        .map(|i| series(&format!("s{i}"), vec![(0.0, i as f64), (10.0, i as f64)]))
        .collect();
    lines.push(series("diag", vec![(0.0, 0.0), (10.0, 10.0)]));
    let panels = [panel(lines), panel(vec![])];
    let img = Image::decode(&render_png(&panels, 2));
    let color = PALETTE[k];

    let g0 = geometry(&panels[0]);
    let in_plot = img.count(g0.plot, color);
    // The legend swatch alone is 40 px; a diagonal across the plot is far more.
    assert!(in_plot > 400, "only {in_plot} pixels of palette colour {k}");
    assert_eq!(img.at(px(&g0, (5.0, 5.0))), color, "diagonal passes (5, 5)");

    let g1 = Geometry::new(&panels[1], (480, 0), (480, 320));
    for c in PALETTE {
        assert_eq!(img.count(g1.panel, c), 0, "empty panel has {c:?}");
    }
    // The empty panel still draws its frame.
    assert!(img.count(g1.plot.grow(1), AXIS) > 1000);
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
    let img = png(std::slice::from_ref(&p));
    let g = geometry(&p);
    let at = |x: f64| img.at(px(&g, (x, 0.0)));
    assert_eq!(at(0.5), PALETTE[0]);
    assert_eq!(at(3.5), PALETTE[0]);
    assert_ne!(at(2.0), PALETTE[0], "gap where the NaN point was");
    // Infinite points do not stretch the axes.
    assert_eq!((g.x.ticks[0], *g.x.ticks.last().unwrap()), (0.0, 4.0));
}

#[test]
fn log_y_skips_non_positive() {
    let pts = vec![(0.0, 1.0), (1.0, 0.0), (2.0, -5.0), (3.0, 1e-3), (4.0, 1e2)];
    let mut p = panel(vec![series("a", pts)]);
    p.log_y = true;
    p.legend = LegendPosition::Hidden;
    let img = png(std::slice::from_ref(&p));
    let g = geometry(&p);
    assert!(g.y.log);
    assert!(g.y.ticks.iter().all(|t| t.fract() == 0.0), "decade ticks");
    assert!(g.y.lo <= -3.0 && g.y.hi >= 2.0);
    let labels: Vec<String> = g.y.ticks.iter().map(|&t| g.y.label(t)).collect();
    assert!(labels.contains(&"1e-3".to_string()), "{labels:?}");
    assert!(labels.contains(&"100".to_string()), "{labels:?}");
    // The line from 1e-3 to 100, and the lone point at (0, 1).
    assert_eq!(img.at(px(&g, (3.5, 10f64.powf(-0.5)))), PALETTE[0]);
    assert_eq!(img.at(px(&g, (0.0, 1.0))), PALETTE[0]);
    assert_ne!(img.at(px(&g, (0.5, 1.0))), PALETTE[0], "no line to y = 0");

    // Nothing positive at all still renders.
    let mut q = panel(vec![series("neg", vec![(0.0, -1.0), (1.0, 0.0)])]);
    q.log_y = true;
    assert_eq!(png(&[q]).size(), (480, 320));
}

/// Panels that have nothing sensible to show.
fn degenerate_panels() -> Vec<Panel> {
    let mut cases = vec![
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
            title: "é ünïcödé → 日本語 and a very long title that cannot possibly fit in one panel"
                .into(),
            x_label: "x".repeat(500),
            y_label: "y".repeat(500),
            series: (0..40)
                .map(|i| series(&"l".repeat(i * 3), ramp(i)))
                .collect(),
            markers: vec![Marker {
                radius: i64::MAX,
                ..Marker::new((1.0, 1.0))
            }],
            ..Panel::default()
        },
        Panel {
            x_range: Some((1e-300, 2e-300)),
            y_range: Some((-1e300, 1e300)),
            ..panel(vec![series("fixed", vec![(0.0, 0.0), (1e300, 1.0)])])
        },
    ];
    let right: Vec<Panel> = cases
        .iter()
        .map(|p| Panel {
            legend: LegendPosition::Right,
            ..p.clone()
        })
        .collect();
    cases.extend(right);
    cases
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let blank = png(&[]);
    assert_eq!(blank.size(), (480, 320));
    assert!(blank.rgb.iter().all(|&b| b == 255), "no panels: blank");

    for p in degenerate_panels() {
        for log_y in [false, true] {
            let p = Panel { log_y, ..p.clone() };
            let one = std::slice::from_ref(&p);
            assert_eq!(png(one).size(), (480, 320), "{p:?}");
            assert!(render_svg(one, 1).ends_with("</svg>\n"));
        }
    }
    // A lone point is still visible.
    let p = Panel {
        legend: LegendPosition::Hidden,
        ..panel(vec![series("one", vec![(3.0, 4.0)])])
    };
    let img = png(std::slice::from_ref(&p));
    assert!(img.count(geometry(&p).plot, PALETTE[0]) >= 9);
}

#[test]
fn rendering_is_deterministic() {
    let mut panels = vec![
        panel(vec![
            series("a", ramp(100)),
            series("b", vec![(0.0, 5.0), (99.0, 1.0)]),
        ]),
        panel(vec![series("c", ramp(7))]),
        ramp_heatmap(4),
    ];
    panels[2].markers = vec![Marker::new((3.0, 3.0))];
    let a = render_png(&panels, 2);
    assert_eq!(a, render_png(&panels, 2));
    assert_eq!(render_svg(&panels, 2), render_svg(&panels, 2));
    let mut other = panels.clone();
    other[1].series[0].points.push((8.0, 0.0));
    assert_ne!(a, render_png(&other, 2));
}

#[test]
fn text_is_drawn_with_the_embedded_font() {
    let p = panel(vec![series("a", ramp(10))]);
    // A blank title takes the same room as a real one.
    let blank = Panel {
        title: " ".into(),
        ..p.clone()
    };
    let band = Rect {
        x0: 0,
        y0: 0,
        x1: 479,
        y1: geometry(&p).plot.y0 - 2,
    };
    assert_eq!(geometry(&blank).plot, geometry(&p).plot);
    let inked = |p: &Panel| {
        let img = png(std::slice::from_ref(p));
        img.pixels()
            .filter(|&q| band.contains(q) && img.at(q) != WHITE)
            .count()
    };
    assert!(inked(&p) > 40, "the title is drawn");
    assert_eq!(inked(&blank), 0);
}

/// A heat map whose value is `x` over [0, 10]², on fixed axes, no legend.
fn ramp_heatmap(contours: usize) -> Panel {
    let n = 11;
    Panel {
        heatmap: Some(HeatMap {
            x_range: (0.0, 10.0),
            y_range: (0.0, 10.0),
            cols: n,
            values: (0..n * n).map(|k| (k % n) as f64).collect(),
            contours,
            label: "value".into(),
            ..HeatMap::default()
        }),
        x_range: Some((0.0, 10.0)),
        y_range: Some((0.0, 10.0)),
        legend: LegendPosition::Hidden,
        ..panel(vec![])
    }
}

/// Whether `a` and `b` differ by at most 1 in each channel (a value and
/// the same value recomputed may round differently).
fn close(a: RGBColor, b: RGBColor) -> bool {
    a.0.abs_diff(b.0) <= 1 && a.1.abs_diff(b.1) <= 1 && a.2.abs_diff(b.2) <= 1
}

#[test]
fn heatmap_colour_follows_the_value() {
    let p = ramp_heatmap(0);
    let img = png(std::slice::from_ref(&p));
    let g = geometry(&p);
    let y = px(&g, (0.0, 5.0)).1;
    let at = |x: f64| img.at((px(&g, (x, 5.0)).0, y));
    // The ends of the colour map at the ends of the range, exactly.
    assert_eq!(at(0.0), colour(0.0));
    assert_eq!(at(10.0), colour(1.0));
    // Lightness rises strictly with the value along the row.
    let row: Vec<f64> = (0..=20).map(|i| luma(at(f64::from(i) / 2.0))).collect();
    for w in row.windows(2) {
        assert!(w[1] > w[0], "{row:?}");
    }
    // Every pixel has the colour of the value there; so a column has one
    // colour, and there is no grid.
    let r = g.plot;
    for q in img.pixels().filter(|&q| r.contains(q)) {
        let want = colour(g.data_at(q).0 / 10.0);
        assert!(
            close(img.at(q), want),
            "at {q:?}: {:?}, not {want:?}",
            img.at(q)
        );
    }
    assert_eq!(img.count(r, GRID), 0);
    assert_eq!(
        img.at((r.x0 + 10, r.y0 - 2)),
        WHITE,
        "nothing above the frame"
    );
    // Explicit limits clamp: everything at or above 5 is yellow.
    let mut q = p.clone();
    q.heatmap.as_mut().unwrap().limits = Some((0.0, 5.0));
    let img = png(std::slice::from_ref(&q));
    assert_eq!(at(0.0), colour(0.0), "same layout");
    let clamped = |x: f64| img.at((px(&g, (x, 5.0)).0, y));
    assert_eq!(clamped(6.0), colour(1.0));
    assert_eq!(clamped(9.0), colour(1.0));
    let x = px(&g, (2.5, 5.0)).0;
    assert!(close(img.at((x, y)), colour(g.data_at((x, y)).0 / 5.0)));
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
    let img = png(std::slice::from_ref(&p));
    let g = geometry(&p);
    let at = |x: f64, y: f64| img.at(px(&g, (x, y)));
    assert_eq!(at(9.0, 9.0), WHITE);
    assert_eq!(at(10.0, 10.0), WHITE);
    assert_ne!(at(9.0, 5.0), WHITE);
    assert_ne!(at(5.0, 9.0), WHITE);

    // Three contour levels (2.5, 5, 7.5) cross a row three times: there
    // the colour is not the heat map's.
    let p = ramp_heatmap(3);
    let img = png(std::slice::from_ref(&p));
    let y = px(&g, (0.0, 5.0)).1;
    let xs: Vec<i32> = (g.plot.x0..=g.plot.x1)
        .filter(|&x| !close(img.at((x, y)), colour(g.data_at((x, y)).0 / 10.0)))
        .collect();
    assert_eq!(xs.len(), 3, "contour pixels at {xs:?}");
    for (x, level) in xs.iter().zip([2.5, 5.0, 7.5]) {
        assert!((x - px(&g, (level, 5.0)).0).abs() <= 1, "{x} vs {level}");
    }
}

#[test]
fn markers_and_guides_land_where_mapped() {
    let mut p = panel(vec![series("a", vec![(0.0, 0.0), (10.0, 10.0)])]);
    p.legend = LegendPosition::Hidden;
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
    let img = png(std::slice::from_ref(&p));
    let g = geometry(&p);
    let (bx, by) = px(&g, (2.0, 7.0));
    assert_eq!(img.at((bx, by)), BLACK);
    assert_eq!(img.at((bx + 4, by)), BLACK, "radius 4");
    assert_ne!(img.at((bx + 6, by)), BLACK);
    let (cx, cy) = px(&g, (8.0, 3.0));
    assert_eq!(img.at((cx, cy)), PALETTE[1]);
    assert_eq!(img.at((cx, cy + 4)), HALO, "a dark ring round a light disc");
    let (xx, xy) = px(&g, (5.0, 1.0));
    assert_eq!(img.at((xx, xy)), PALETTE[2]);
    assert_eq!(img.at((xx + 3, xy + 3)), PALETTE[2], "on the diagonal");
    assert_ne!(img.at((xx + 3, xy)), PALETTE[2], "not a disc");
    let around = Rect {
        x0: xx - 6,
        y0: xy - 6,
        x1: xx + 6,
        y1: xy + 6,
    };
    assert!(img.count(around, HALO) > 10, "a dark outline");
    // The guide: 5 px wide, grey, under the series.
    let (gx, gy) = px(&g, (5.0, 9.0));
    for d in -2..=2 {
        assert_eq!(img.at((gx, gy + d)), GUIDE);
    }
    assert_eq!(img.at((gx, gy + 4)), WHITE);
    let (sx, sy) = px(&g, (9.0, 9.0));
    assert_eq!(img.at((sx, sy)), PALETTE[0], "the series crosses over it");

    // Markers and guides widen the axes like series points.
    let mut q = panel(vec![]);
    q.markers = vec![Marker::new((-3.0, 40.0))];
    q.guides = vec![series("g", vec![(0.0, 0.0), (1.0, 1.0)])];
    let gq = geometry(&q);
    assert!(gq.x.lo <= -3.0 && gq.y.hi >= 40.0);
    // A marker outside fixed ranges is not drawn.
    q.x_range = Some((0.0, 1.0));
    assert_eq!(png(&[q]).count(gq.panel, BLACK), 0);
}

#[test]
fn fixed_ranges_clip_and_legend_can_move_right() {
    let mut p = panel(vec![series(
        "far",
        vec![(-50.0, 0.0), (50.0, 0.0), (0.0, 30.0), (-5.0, 5.0)],
    )]);
    p.x_range = Some((-11.0, 11.0));
    p.y_range = Some((-11.0, 11.0));
    let g = geometry(&p);
    assert_eq!((g.x.lo, g.x.hi, g.y.lo, g.y.hi), (-11.0, 11.0, -11.0, 11.0));
    let img = png(std::slice::from_ref(&p));
    // Segments are clipped to the plot (the legend swatch is inside it too).
    let stray = img
        .pixels()
        .filter(|&q| !g.plot.contains(q) && img.at(q) == PALETTE[0])
        .count();
    assert_eq!(stray, 0);
    assert_eq!(img.at(px(&g, (0.0, 0.0))), PALETTE[0]);
    // (0, 30)-(-5, 5) enters at (-3.8, 11); clamping (0, 30) to (0, 11)
    // would draw a line through (-2.5, 8) instead.
    assert_eq!(img.at(px(&g, (-4.4, 8.0))), PALETTE[0], "clipped");
    assert_ne!(img.at(px(&g, (-2.5, 8.0))), PALETTE[0], "not clamped");

    let mut inside = panel(vec![series("a", ramp(10)), series("b", ramp(5))]);
    inside.guides = vec![series("guide", ramp(3))];
    let mut right = inside.clone();
    right.legend = LegendPosition::Right;
    let (gi, gr) = (geometry(&inside), geometry(&right));
    assert!(
        gr.plot.x1 < gi.plot.x1 - 60,
        "{:?} vs {:?}",
        gr.plot,
        gi.plot
    );
    let img = png(std::slice::from_ref(&right));
    let beside = Rect {
        x0: gr.plot.x1 + 2,
        y0: 0,
        x1: 479,
        y1: 319,
    };
    // Swatches are bars 2 (series) and 6 (guide) px tall; text, being
    // grey, can only be counted out by place.
    let swatches = Rect {
        x0: gr.plot.x1 + 1 + RIGHT_LEGEND_GAP + LEGEND_PAD,
        x1: gr.plot.x1 + RIGHT_LEGEND_GAP + LEGEND_PAD + LEGEND_SWATCH,
        ..beside
    };
    assert_eq!(
        img.count(beside, PALETTE[1]),
        40,
        "swatch of b beside the plot"
    );
    assert_eq!(img.count(swatches, GUIDE), 120, "guide swatch");
    assert!(img.count(beside, LEGEND_BORDER) > 100);
    assert!(png(std::slice::from_ref(&inside)).count(gi.plot, LEGEND_BORDER) > 100);
    // Without the guide, whose anti-aliased edges are greys too.
    let hidden = Panel {
        legend: LegendPosition::Hidden,
        guides: vec![],
        ..inside
    };
    assert_eq!(png(&[hidden]).count(gi.plot, LEGEND_BORDER), 0);
}

#[test]
fn inside_legend_takes_the_least_crowded_corner() {
    // Legend border pixels in each quarter of the plot, clockwise from the
    // top right.
    let quarters = |p: &Panel| {
        let img = png(std::slice::from_ref(p));
        let r = geometry(p).plot;
        let (mx, my) = ((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2);
        [
            Rect {
                x0: mx,
                y1: my,
                ..r
            },
            Rect {
                x1: mx,
                y1: my,
                ..r
            },
            Rect {
                x0: mx,
                y0: my,
                ..r
            },
            Rect {
                x1: mx,
                y0: my,
                ..r
            },
        ]
        .map(|q| img.count(q, LEGEND_BORDER) > 0)
    };
    // A line along the top and a point at the bottom left leave the
    // bottom right free.
    let p = panel(vec![
        series("top", vec![(0.0, 9.0), (10.0, 9.0)]),
        series("dot", vec![(0.0, 0.0)]),
    ]);
    assert_eq!(quarters(&p), [false, false, true, false]);
    // A marker there sends it to the bottom left.
    let mut marked = p.clone();
    marked.markers = vec![Marker::new((9.5, 0.5))];
    assert_eq!(quarters(&marked), [false, false, false, true]);
    // On a tie it stays top right.
    let empty = panel(vec![series("none", vec![])]);
    assert_eq!(quarters(&empty), [true, false, false, false]);
}

#[test]
fn sized_panels_and_heatmap_legend() {
    let p = ramp_heatmap(2);
    assert_eq!(
        legend_entries(&p),
        vec![(Swatch::Gradient, "value 0..10".to_string())]
    );
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
            y_range: (-1.0, 1.0),
            contours: 1000,
            ..HeatMap::default()
        },
    ] {
        let mut p = panel(vec![series("s", ramp(3))]);
        p.heatmap = Some(h);
        for log_y in [false, true] {
            p.log_y = log_y;
            let one = std::slice::from_ref(&p);
            assert_eq!(png(one).size(), (480, 320));
            assert!(render_svg(one, 1).ends_with("</svg>\n"));
        }
    }
}

/// Whether every tag in `xml` is closed in order; returns the root's name.
fn balanced(xml: &str) -> Option<String> {
    let mut open: Vec<String> = Vec::new();
    let mut root = None;
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let tag = &rest[start + 1..end];
        let name = |t: &str| t.split_whitespace().next().unwrap_or("").to_string();
        if let Some(closing) = tag.strip_prefix('/') {
            if open.pop()? != name(closing) {
                return None;
            }
        } else if !tag.ends_with('/') {
            root.get_or_insert_with(|| name(tag));
            open.push(name(tag));
        }
        rest = &rest[end + 1..];
    }
    open.is_empty().then_some(root?)
}

#[test]
fn svg_is_well_formed_and_contains_the_title() {
    let mut p = panel(vec![series("a", ramp(10))]);
    p.title = "a <b> & c".into();
    let svg = render_svg(&[p.clone(), ramp_heatmap(3)], 2);
    assert!(
        svg.starts_with("<svg width=\"960\" height=\"320\""),
        "{}",
        &svg[..80]
    );
    assert_eq!(balanced(&svg), Some("svg".into()));
    assert!(
        svg.contains(">\na &lt;b&gt; &amp; c\n</text>"),
        "the title, escaped"
    );
    assert!(svg.contains("<polyline"), "series are lines");
    // The heat map is drawn in cells, not pixels.
    let rects = svg.matches("<rect").count();
    assert!(rects < 480 * 320 / 16, "{rects} rects");
    assert_eq!(balanced("<svg><g></svg>"), None, "the checker can fail");
}

// Image grids.

mod image_grid {
    use super::Image;
    use crate::grid::{
        Layout, BAD_FILL, FRAME, GAP, MARGIN, MAX_MAGNIFIED, MIN_AREA, NAN_COLOUR, TITLE_BAND,
    };
    use crate::layout::Rect;
    use crate::{render_image_grid, Picture};
    use plotters::style::RGBColor;

    const WHITE: RGBColor = RGBColor(255, 255, 255);

    fn grey(title: &str, (w, h): (usize, usize), f: impl Fn(usize, usize) -> f32) -> Picture {
        Picture {
            title: title.into(),
            width: w,
            height: h,
            channels: 1,
            values: (0..w * h).map(|k| f(k % w, k / w)).collect(),
        }
    }

    fn rgb(title: &str, (w, h): (usize, usize), f: impl Fn(usize, usize) -> [f32; 3]) -> Picture {
        Picture {
            title: title.into(),
            width: w,
            height: h,
            channels: 3,
            values: (0..w * h).flat_map(|k| f(k % w, k / w)).collect(),
        }
    }

    fn flat(title: &str, side: usize, v: f32) -> Picture {
        grey(title, (side, side), |_, _| v)
    }

    fn grid(pictures: &[Picture], columns: usize, scale: usize) -> Image {
        Image::decode(&render_image_grid(pictures, columns, scale))
    }

    /// Pixels of `img` inside `r` that are not white.
    fn ink(img: &Image, r: Rect) -> usize {
        img.pixels()
            .filter(|&p| r.contains(p) && img.at(p) != WHITE)
            .count()
    }

    /// Checks that every `scale`×`scale` block of picture `i` of `pictures`
    /// in `img` is exactly `expect(x, y)`, and that the frame around it is
    /// there.
    fn assert_blocks(
        img: &Image,
        pictures: &[Picture],
        (columns, i, scale): (usize, usize, usize),
        expect: impl Fn(usize, usize) -> RGBColor,
    ) {
        let p = &pictures[i];
        let at = Layout::new(pictures, columns, scale).picture(i, p);
        let s = scale as i32;
        assert_eq!(
            (at.width(), at.height()),
            (p.width as i32 * s, p.height as i32 * s)
        );
        for (x, y) in (0..p.height).flat_map(|y| (0..p.width).map(move |x| (x, y))) {
            let (bx, by) = (at.x0 + x as i32 * s, at.y0 + y as i32 * s);
            for (dx, dy) in (0..s).flat_map(|dy| (0..s).map(move |dx| (dx, dy))) {
                let q = (bx + dx, by + dy);
                assert_eq!(img.at(q), expect(x, y), "value ({x}, {y}) at pixel {q:?}");
            }
        }
        for q in [
            (at.x0 - 1, at.y0),
            (at.x1 + 1, at.y1),
            (at.x0, at.y0 - 1),
            (at.x1, at.y1 + 1),
        ] {
            assert_eq!(img.at(q), FRAME, "frame at {q:?}");
        }
    }

    #[test]
    fn image_grid_size_follows_columns_rows_and_scale() {
        let six: Vec<Picture> = (0..6).map(|i| flat("t", 28, i as f32 / 5.0)).collect();
        let size = |pictures: &[Picture], columns, scale| grid(pictures, columns, scale).size();
        // 8-px margins, 10-px gaps, an 18-px title band over 112-px pictures.
        assert_eq!(size(&six, 4, 4), (494, 286));
        assert_eq!(size(&six, 3, 4), (372, 286));
        assert_eq!(size(&six, 10, 4), (738, 146), "columns capped at the count");
        assert_eq!(size(&six, 0, 4), (128, 846), "columns = 0 acts as 1");
        // At scale 1 the area is its minimum, 64x32.
        assert_eq!(size(&six, 4, 1), (302, 126));
        assert_eq!(size(&six, 4, 0), (302, 126), "scale = 0 acts as 1");
        for columns in 1..=7 {
            for scale in 1..=5 {
                let rows = 6usize.div_ceil(columns.min(6)) as i32;
                let cols = columns.min(6) as i32;
                let side = 28 * scale as i32;
                let w = 2 * MARGIN + cols * side.max(MIN_AREA.0) + (cols - 1) * GAP;
                let h = 2 * MARGIN + rows * (TITLE_BAND + side.max(MIN_AREA.1)) + (rows - 1) * GAP;
                assert_eq!(size(&six, columns, scale), (w, h), "{columns} x{scale}");
            }
        }
        // Cells take the largest picture's size: 32x32 RGB beside 28x28 grey.
        let mixed = [
            flat("grey", 28, 0.5),
            rgb("rgb", (32, 32), |_, _| [0.1, 0.2, 0.3]),
        ];
        assert_eq!(size(&mixed, 2, 3), (16 + 2 * 96 + 10, 16 + 18 + 96));
        // A huge scale is lowered so the picture stays within 4096 px.
        let wide = grey("wide", (1000, 1), |x, _| x as f32 / 999.0);
        let layout = Layout::new(std::slice::from_ref(&wide), 1, usize::MAX);
        assert_eq!(layout.scale, MAX_MAGNIFIED / 1000);
        assert_eq!(size(&[wide], 1, usize::MAX), (4016, 16 + 18 + 32));
    }

    #[test]
    fn image_grid_grey_pixels_have_their_value() {
        let values = [
            0.0,
            0.2,
            0.5,
            1.0,
            -3.0,
            7.0,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::INFINITY,
            0.999,
        ];
        let pictures = [
            flat("first", 4, 0.0),
            grey("levels", (5, 2), |x, y| values[y * 5 + x]),
        ];
        // The second cell: 8 + 64 + 10 across; its 15-px picture centred in
        // the 64-px area, under the 18-px title band.
        let layout = Layout::new(&pictures, 2, 3);
        let expected = Rect {
            x0: 82 + (64 - 15) / 2,
            y0: 26,
            x1: 82 + (64 - 15) / 2 + 14,
            y1: 26 + 5,
        };
        assert_eq!(layout.picture(1, &pictures[1]), expected);
        let img = grid(&pictures, 2, 3);
        let g = |v: u8| RGBColor(v, v, v);
        let levels = [
            g(0),
            g(51),
            g(128),
            g(255),
            g(0),
            g(255),
            NAN_COLOUR,
            g(0),
            g(255),
            g(255),
        ];
        assert_blocks(&img, &pictures, (2, 1, 3), |x, y| levels[y * 5 + x]);
        assert_eq!(img.at((expected.x0 + 4, expected.y0 + 1)), g(51));
    }

    #[test]
    fn image_grid_rgb_pixels_have_their_value() {
        let colours = [
            [0.2, 0.6, 1.0],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [-1.0, 0.5, 2.0],
            [0.3, f32::NAN, 0.3],
        ];
        let pictures = [rgb("colours", (3, 2), |x, y| colours[y * 3 + x])];
        let img = grid(&pictures, 1, 4);
        let expect = [
            RGBColor(51, 153, 255),
            RGBColor(255, 0, 0),
            RGBColor(0, 255, 0),
            RGBColor(0, 0, 255),
            RGBColor(0, 128, 255),
            NAN_COLOUR,
        ];
        assert_blocks(&img, &pictures, (1, 0, 4), |x, y| expect[y * 3 + x]);
        // The picture is 12 px wide, centred in the 64-px area.
        assert_eq!(img.at((8 + 26, 26)), expect[0]);
        assert_eq!(img.at((8 + 26 + 11, 26 + 7)), expect[5]);
    }

    #[test]
    fn image_grid_magnifies_by_whole_pixels() {
        // Every value differs from its neighbours, so a block that spilled
        // into the next one, or was resampled, would show.
        let value = |x: usize, y: usize| ((x * 7 + y * 13) % 31) as f32 / 30.0;
        let level = |v: f32| (v * 255.0).round() as u8;
        let pictures = [
            grey("grey", (7, 5), value),
            rgb("rgb", (6, 6), |x, y| {
                [value(x, y), value(y, x), 1.0 - value(x, y)]
            }),
            flat("flat", 3, 0.5),
        ];
        for scale in [1, 2, 5, 9] {
            let img = grid(&pictures, 2, scale);
            assert_blocks(&img, &pictures, (2, 0, scale), |x, y| {
                let g = level(value(x, y));
                RGBColor(g, g, g)
            });
            assert_blocks(&img, &pictures, (2, 1, scale), |x, y| {
                let (a, b) = (value(x, y), value(y, x));
                RGBColor(level(a), level(b), level(1.0 - a))
            });
            assert_blocks(&img, &pictures, (2, 2, scale), |_, _| {
                RGBColor(128, 128, 128)
            });
        }
    }

    #[test]
    fn image_grid_titles_stay_above_their_pictures() {
        let pictures = [
            flat("gjpqy descenders", 20, 0.0),
            flat(
                "a title much too long to fit in a cell this narrow",
                20,
                0.0,
            ),
            flat(" ", 20, 0.0),
            flat("", 20, 0.0),
        ];
        let img = grid(&pictures, 4, 3);
        let layout = Layout::new(&pictures, 4, 3);
        // The title band, less the 3 rows just above a picture's frame,
        // which stay blank so titles are clearly apart from their picture.
        let band = |i: usize| {
            let c = layout.cell(i);
            Rect {
                y1: c.y0 + TITLE_BAND - 5,
                ..c
            }
        };
        // Titles ink their band, blank ones do not, and nothing else in the
        // image but pictures and their frames is inked.
        assert!(ink(&img, band(0)) > 60, "the title is drawn");
        assert!(ink(&img, band(1)) > 100, "the cut title is drawn");
        assert_eq!(ink(&img, band(2)) + ink(&img, band(3)), 0);
        let framed: Vec<Rect> = (0..4)
            .map(|i| layout.picture(i, &pictures[i]).grow(1))
            .collect();
        let stray = img
            .pixels()
            .filter(|&q| img.at(q) != WHITE)
            .filter(|&q| !framed.iter().any(|r| r.contains(q)))
            .find(|&q| !(0..4).any(|i| band(i).contains(q)));
        assert_eq!(stray, None, "ink outside the title bands and pictures");
        // The long title was cut to its cell: its band's ink reaches neither
        // neighbour's.
        let inked_columns = |i: usize| {
            let b = band(i);
            (b.x0..=b.x1)
                .filter(|&x| (b.y0..=b.y1).any(|y| img.at((x, y)) != WHITE))
                .collect::<Vec<_>>()
        };
        let long = inked_columns(1);
        assert!(long.len() > 30, "{long:?}");
        assert!(*long.last().unwrap() - long[0] >= 50, "{long:?}");
    }

    #[test]
    fn image_grid_bad_pictures_and_degenerate_arguments_do_not_panic() {
        let good = flat("good", 20, 1.0);
        let bad = [
            Picture {
                values: vec![0.5; 399],
                ..flat("short", 20, 0.5)
            },
            Picture {
                values: vec![0.5; 401],
                ..flat("long", 20, 0.5)
            },
            Picture {
                channels: 3,
                ..flat("grey values, 3 channels", 20, 0.5)
            },
            Picture {
                channels: 0,
                values: vec![],
                ..flat("no channels", 20, 0.5)
            },
            Picture {
                channels: 2,
                values: vec![0.5; 800],
                ..flat("two channels", 20, 0.5)
            },
            Picture {
                channels: 4,
                values: vec![0.5; 1600],
                ..flat("four channels", 20, 0.5)
            },
            flat("empty", 0, 0.5),
            grey("no rows", (5, 0), |_, _| 0.5),
            Picture {
                width: usize::MAX,
                height: 2,
                ..flat("overflow", 2, 0.5)
            },
            grey("too wide", (20_000, 1), |_, _| 0.5),
        ];
        for b in &bad {
            let pictures = [good.clone(), b.clone()];
            let img = grid(&pictures, 2, 2);
            // The cells are sized by the good picture alone.
            assert_eq!(img.size(), (16 + 64 * 2 + 10, 16 + 18 + 40), "{}", b.title);
            assert_blocks(&img, &pictures, (2, 0, 2), |_, _| WHITE);
            let layout = Layout::new(&pictures, 2, 2);
            let area = layout.area(1);
            let inside = Rect {
                x0: area.x0 + 1,
                y0: area.y0 + 1,
                x1: area.x1 - 1,
                y1: area.y1 - 1,
            };
            assert_eq!(img.at((area.x0, area.y0)), FRAME, "{}", b.title);
            // A light grey area with a darker note in it, and the title above.
            let fill = img.count(inside, BAD_FILL);
            let dark = img
                .pixels()
                .filter(|&q| inside.contains(q) && super::luma(img.at(q)) < 128.0)
                .count();
            assert!(fill > 62 * 38 / 2, "{}: {fill} fill pixels", b.title);
            assert!(dark > 20, "{}: {dark} note pixels", b.title);
            let c = layout.cell(1);
            let band = Rect {
                y1: c.y0 + TITLE_BAND - 2,
                ..c
            };
            assert!(ink(&img, band) > 20, "{}: title", b.title);
        }
        // Only bad pictures: cells of the smallest area.
        assert_eq!(
            grid(&bad, 5, 4).size(),
            (16 + 5 * 64 + 40, 16 + 2 * 50 + 10)
        );

        // No pictures: one blank cell, whatever the arguments.
        for (columns, scale) in [(0, 0), (1, 1), (3, 7), (usize::MAX, usize::MAX)] {
            let img = grid(&[], columns, scale);
            assert_eq!(img.size(), (16 + 64, 16 + 18 + 32));
            assert!(img.rgb.iter().all(|&b| b == 255), "no pictures: blank");
        }
        // Zero columns and scale act as 1.
        let two = [flat("a", 3, 0.25), flat("b", 3, 0.75)];
        assert_eq!(render_image_grid(&two, 0, 0), render_image_grid(&two, 1, 1));
    }

    #[test]
    fn image_grid_is_deterministic() {
        let pictures = [
            grey("digits", (28, 28), |x, y| ((x * y) % 17) as f32 / 16.0),
            rgb("gradient", (32, 32), |x, y| {
                [x as f32 / 31.0, y as f32 / 31.0, 0.5]
            }),
            flat("flat", 10, 0.5),
        ];
        let a = render_image_grid(&pictures, 2, 3);
        assert_eq!(a, render_image_grid(&pictures, 2, 3));
        let mut other = pictures.clone();
        other[2].values[55] = 0.6;
        assert_ne!(a, render_image_grid(&other, 2, 3));
    }
}
