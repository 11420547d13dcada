//! Charts of taskweave runs: training curves, 2-D trajectories over a heat
//! map, drawn with [plotters] into PNG bytes or an SVG string; and image
//! grids (generated samples, inputs, per-pixel predictions) as PNG bytes.
//!
//! # Design
//!
//! The data model is plain data: a figure is a slice of [`Panel`]s laid out
//! in a grid. A panel holds [`Series`] (lines), optional [`HeatMap`]
//! background with contour lines, grey guide curves and [`Marker`]s. Three
//! functions draw it: [`render_png`], [`render_png_sized`] and [`render_svg`].
//!
//! An image grid is a slice of [`Picture`]s (grey or RGB values in [0, 1]),
//! drawn by [`render_image_grid`]: each picture magnified by a whole number
//! of pixels per value (nearest neighbour, so pixels stay crisp) in a cell
//! of its own, under its title, in a given number of columns.
//!
//! Rendering goes through plotters' drawing areas, elements (paths,
//! polygons, circles, rectangles, text), coordinate mapping
//! ([`Cartesian2d`] over the unit square of each plot) and its two
//! backends: [`BitMapBackend`] into an RGB buffer that the `png` crate
//! encodes (plotters' own encoder would bring in the `image` crate), and
//! [`SVGBackend`]. plotters' `ChartBuilder` is not used: it clamps points
//! outside the axes onto the frame instead of clipping lines, picks its own
//! ticks (no whole decades on a short log axis), and lays the chart out
//! where tests cannot see it. So this crate lays out each panel itself
//! (axes, ticks and labels, the legend) and clips lines to the plot before
//! handing them to plotters. Three plotters 0.3.7 flaws in the bitmap path
//! are worked around where they are met: wide lines are drawn as quads of
//! their own (plotters truncates the corners, so lines thin out or lean at
//! some slopes), text is placed glyph by glyph (plotters drops each glyph's
//! side bearing), and hairlines are drawn left to right (plotters drops the
//! ends of a horizontal line drawn right to left).
//!
//! Image grids write the magnified pictures straight into the RGB buffer,
//! each value an exact block of pixels, and draw frames and titles over it
//! through plotters like the charts' text.
//!
//! Text needs no system fonts: plotters is built without default features
//! and with `ab_glyph`, and the crate registers DejaVu Sans (from the
//! `dejavu` crate, which compiles the font file in) as plotters'
//! `sans-serif` family. Output is deterministic: the same panels (or
//! pictures) always give the same bytes.
//!
//! # Font license
//!
//! DejaVu Sans is © Bitstream, Inc. (Bitstream Vera) with glyphs © Tavmjong
//! Bah (Arev) and DejaVu's changes in the public domain, under the
//! Bitstream Vera and Arev font licenses: permissive, allowing embedding
//! and redistribution as long as the notice travels with the font. The
//! notice is `DejaVu-LICENSE` beside this crate's `Cargo.toml` (a copy of
//! the `LICENSE` the `dejavu` crate ships beside the font file); ship it
//! with binaries that render charts.
//!
//! # Decisions
//!
//! Where the hand-written renderer this replaces did something finer, or
//! something plotters does not do, the simpler thing is done:
//! - Contours are lines traced by marching squares on the grid, each level
//!   in one colour that stands out on the colour map at that level, not a
//!   per-pixel band edge.
//! - The colour map is plotters' viridis; colours are no longer nudged to
//!   stay apart from the series palette (tests find pixels by position).
//! - Lines are 3 px wide and anti-aliased at their edges; a line's middle
//!   has its exact palette colour. A lone point is a 5-px dot.
//! - An axis fitted to the data reaches the ticks just beyond it plus 2%,
//!   so points on the outermost ticks clear the frame; a fixed range maps
//!   exactly onto the plot. Ticks use the smallest 1/2/5·10^k step that
//!   gives at most 6.
//! - Text too long for its place is cut by its width in pixels, ending in
//!   "…".
//! - The least crowded corner for an inside legend is judged from the
//!   series' pixel paths and the markers, not by reading back pixels.
//! - A marker whose centre lies outside the plot is not drawn; one inside
//!   is drawn whole, even across the frame.
//! - In SVG, heat maps are drawn in 4-px cells to keep the file small, and
//!   the viewer sets the text, a little smaller than in PNG (plotters
//!   writes the font size divided by 1.24).
//!
//! # Example
//!
//! ```
//! use taskweave_report::{render_png, render_svg, Panel, Series};
//!
//! let loss = Panel {
//!     title: "training loss".into(),
//!     x_label: "step".into(),
//!     y_label: "loss".into(),
//!     series: vec![Series {
//!         label: "task a".into(),
//!         points: (1..100).map(|i| (i as f64, 1.0 / i as f64)).collect(),
//!     }],
//!     log_y: true,
//!     ..Panel::default()
//! };
//! let png = render_png(&[loss.clone()], 1);
//! assert_eq!(&png[1..4], b"PNG");
//! assert!(render_svg(&[loss], 1).contains("training loss"));
//! ```
//!
//! An image grid of two 28×28 grey pictures, four screen pixels per value:
//!
//! ```
//! use taskweave_report::{render_image_grid, Picture};
//!
//! let sample = |title: &str, shade: f32| Picture {
//!     title: title.into(),
//!     width: 28,
//!     height: 28,
//!     channels: 1,
//!     values: vec![shade; 28 * 28],
//! };
//! let png = render_image_grid(&[sample("step 0", 0.2), sample("step 100", 0.8)], 2, 4);
//! assert_eq!(&png[1..4], b"PNG");
//! ```
//!
//! [`Cartesian2d`]: plotters::coord::cartesian::Cartesian2d
//! [`BitMapBackend`]: plotters::backend::BitMapBackend
//! [`SVGBackend`]: plotters::backend::SVGBackend
#![deny(missing_docs)]

mod axis;
mod draw;
mod grid;
mod heatmap;
mod layout;
#[cfg(test)]
mod tests;

use std::sync::Once;

use plotters::backend::{BitMapBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, DrawingAreaErrorKind, IntoDrawingArea};
use plotters::prelude::DrawingBackend;
use plotters::style::FontStyle;

use draw::{Detail, Painter};
use layout::Geometry;

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
    /// Inside the plot, in the corner hiding the fewest series points and markers.
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
    /// Number of contour lines (at most 100), at evenly spaced levels
    /// strictly between the limits.
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
    /// An X with a contrasting outline.
    Cross,
}

/// A point marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where, in data coordinates; a non-finite point, or one outside the
    /// plot, is not drawn.
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

/// A small image for [`render_image_grid`]: grey or RGB values on a grid of
/// pixels, with a title.
///
/// The picture is drawable when `channels` is 1 or 3, `width` and `height`
/// are between 1 and 16384, and `values` holds exactly
/// `width · height · channels` values; anything else is drawn as a bad
/// picture (see [`render_image_grid`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Picture {
    /// Text drawn centred above the picture, cut to the cell's width and
    /// ended with "…" when longer.
    pub title: String,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Values per pixel: 1 (grey) or 3 (red, green, blue).
    pub channels: usize,
    /// Row-major, channel-last values: channel `c` of pixel `(x, y)`, with
    /// `y` counted down from the top row, is
    /// `values[(y * width + x) * channels + c]`.
    ///
    /// A value `v` is drawn as the 8-bit level `round(255 · v)` after
    /// clamping to [0, 1] (±∞ clamp too). A NaN in any channel makes its
    /// whole pixel magenta (255, 0, 255), a colour no grey picture has, so
    /// missing values stand out.
    pub values: Vec<f32>,
}

/// Renders `pictures` as an image grid and returns the PNG file bytes.
///
/// Pictures go left to right in `columns` columns, rows as needed; every
/// cell has the same size: a title band (the picture's title in the
/// embedded font, 12 px, cut with "…" to the cell's width) above a picture
/// area as large as the largest magnified picture, at least 64×32 px.
/// Each picture value becomes a `scale`×`scale` block of one colour
/// (nearest neighbour: a 28×28 picture at scale 4 is 112×112 crisp pixels),
/// at the top of its area and centred across it, and framed by a 1-px
/// light grey line just outside it. Cells are 10 px apart, with an 8-px white margin around the grid.
///
/// - `columns` and `scale` of 0 act as 1; `columns` is capped at the
///   number of pictures, so a generous value never adds empty columns.
/// - `scale` is lowered (never below 1) so that no magnified picture is
///   wider or taller than 4096 px.
/// - A bad picture (see [`Picture`]: wrong number of values, channels
///   other than 1 or 3, no pixels, more than 16384 px a side) does not
///   panic: its cell keeps its title and shows an empty light grey area
///   with a "bad picture" note.
/// - No pictures: a blank white image of one empty cell's size.
///
/// The image is one RGB buffer in memory, so its memory use grows with
/// the number of pictures and their magnified size. Output is
/// deterministic.
pub fn render_image_grid(pictures: &[Picture], columns: usize, scale: usize) -> Vec<u8> {
    grid::render(pictures, columns, scale)
}

/// Default panel size in pixels.
const PANEL_SIZE: (u32, u32) = (480, 320);
/// Panel sizes are clamped to this range each way.
const PANEL_MIN: u32 = 160;
const PANEL_MAX: u32 = 4000;
/// The font family every text is drawn in; also what SVG output names.
const FONT_FAMILY: &str = "sans-serif";

/// Renders panels in a grid with `columns` columns (rows as needed) and
/// returns the PNG file bytes.
///
/// Each panel is 480x320 px. `columns` is clamped to `1..=panels.len()` so a
/// generous value never adds empty columns; with no panels the result is one
/// blank panel-sized image.
pub fn render_png(panels: &[Panel], columns: usize) -> Vec<u8> {
    render_png_sized(panels, columns, PANEL_SIZE)
}

/// [`render_png`] with panels of `size` = (width, height) pixels, each
/// clamped to `160..=4000`.
pub fn render_png_sized(panels: &[Panel], columns: usize, size: (u32, u32)) -> Vec<u8> {
    let grid = Grid::new(panels.len(), columns, size);
    let (w, h) = grid.image_size();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        grid.draw(&root, panels, Detail::Raster)
            .expect("drawing into a buffer of the image's size cannot fail");
    }
    encode_png(&rgb, w, h)
}

/// Renders panels like [`render_png`] (480x320 px each) as an SVG document.
pub fn render_svg(panels: &[Panel], columns: usize) -> String {
    let grid = Grid::new(panels.len(), columns, PANEL_SIZE);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, grid.image_size()).into_drawing_area();
        grid.draw(&root, panels, Detail::Vector)
            .expect("drawing into a String cannot fail");
    }
    svg
}

/// How panels are laid out in the image.
struct Grid {
    columns: usize,
    rows: usize,
    panel: (u32, u32),
}

impl Grid {
    fn new(panels: usize, columns: usize, size: (u32, u32)) -> Grid {
        let columns = columns.clamp(1, panels.max(1));
        Grid {
            columns,
            rows: panels.div_ceil(columns).max(1),
            panel: (
                size.0.clamp(PANEL_MIN, PANEL_MAX),
                size.1.clamp(PANEL_MIN, PANEL_MAX),
            ),
        }
    }

    fn image_size(&self) -> (u32, u32) {
        let dim =
            |n: usize, each: u32| u32::try_from(n).map_or(u32::MAX, |n| n.saturating_mul(each));
        (
            dim(self.columns, self.panel.0),
            dim(self.rows, self.panel.1),
        )
    }

    /// Where panel `i` goes and how it is laid out.
    fn geometry(&self, panel: &Panel, i: usize) -> Geometry {
        // Panel sizes are at most 4000, so these fit.
        let (w, h) = (self.panel.0 as i32, self.panel.1 as i32);
        let origin = ((i % self.columns) as i32 * w, (i / self.columns) as i32 * h);
        Geometry::new(panel, origin, (w, h))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        panels: &[Panel],
        detail: Detail,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        register_font();
        root.fill(&draw::WHITE)?;
        let painter = Painter { root, detail };
        for (i, p) in panels.iter().enumerate() {
            draw::panel(&painter, p, &self.geometry(p, i))?;
        }
        root.present()
    }
}

/// Makes the embedded font plotters' `sans-serif` family, once per process.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let ok =
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, font_data()).is_ok();
        assert!(ok, "the embedded DejaVu Sans is a valid font");
    });
}

/// The embedded font file: DejaVu Sans.
fn font_data() -> &'static [u8] {
    dejavu::sans::regular()
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc
        .write_header()
        .expect("writing a PNG header into a Vec cannot fail");
    writer
        .write_image_data(rgb)
        .expect("the buffer holds exactly the declared RGB8 image");
    writer
        .finish()
        .expect("finishing a PNG into a Vec cannot fail");
    out
}
