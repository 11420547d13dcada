//! Image grids: small pictures magnified by whole pixels, each under its
//! title.
//!
//! The magnified pixels are written straight into the RGB buffer (exact
//! nearest-neighbour copies, no resampling through plotters' bitmap
//! blending); frames, notes and titles are then drawn over it through
//! plotters like the charts' own.

use plotters::backend::BitMapBackend;
use plotters::drawing::IntoDrawingArea;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::RGBColor;

use crate::draw::{Detail, Painter, TEXT, TITLE};
use crate::layout::{fit, text_width, Rect};
use crate::{encode_png, register_font, Picture};

/// Title font size in pixels.
pub(crate) const CELL_TITLE_SIZE: i32 = 12;
/// Height of the band above each picture area that holds its title.
pub(crate) const TITLE_BAND: i32 = CELL_TITLE_SIZE + 6;
/// Blank border around the whole grid.
pub(crate) const MARGIN: i32 = 8;
/// Blank space between neighbouring cells, each way.
pub(crate) const GAP: i32 = 10;
/// Smallest picture area (width, height): room for a title and the note of
/// a bad picture even when every picture is tiny.
pub(crate) const MIN_AREA: (i32, i32) = (64, 32);
/// The scale is lowered (never below 1) so that no magnified picture is
/// wider or taller than this.
pub(crate) const MAX_MAGNIFIED: usize = 4096;
/// Pictures wider or taller than this are drawn as bad pictures.
pub(crate) const MAX_PICTURE_SIDE: usize = 16384;
/// A pixel with a NaN in any channel.
pub(crate) const NAN_COLOUR: RGBColor = RGBColor(255, 0, 255);
/// The 1-px frame just outside each picture and around each bad cell.
pub(crate) const FRAME: RGBColor = RGBColor(200, 200, 200);
/// The background of a bad picture's cell.
pub(crate) const BAD_FILL: RGBColor = RGBColor(242, 242, 242);
/// The note drawn in a bad picture's cell.
pub(crate) const BAD_NOTE: &str = "bad picture";
const NOTE_SIZE: i32 = 11;
const WHITE: u8 = 255;

/// Whether `p` can be drawn: 1 or 3 channels, at least one pixel, at most
/// [`MAX_PICTURE_SIDE`] each way, and exactly `width·height·channels` values.
pub(crate) fn drawable(p: &Picture) -> bool {
    let sides =
        (1..=MAX_PICTURE_SIDE).contains(&p.width) && (1..=MAX_PICTURE_SIDE).contains(&p.height);
    sides
        && matches!(p.channels, 1 | 3)
        && p.width
            .checked_mul(p.height)
            .and_then(|n| n.checked_mul(p.channels))
            == Some(p.values.len())
}

/// The 8-bit level of a value: `round(255·v)` after clamping to [0, 1].
pub(crate) fn level(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The colour of pixel `(x, y)` of a drawable picture.
pub(crate) fn pixel_colour(p: &Picture, x: usize, y: usize) -> RGBColor {
    let i = (y * p.width + x) * p.channels;
    let v = &p.values[i..i + p.channels];
    if v.iter().any(|v| v.is_nan()) {
        NAN_COLOUR
    } else if let [g] = *v {
        let g = level(g);
        RGBColor(g, g, g)
    } else {
        RGBColor(level(v[0]), level(v[1]), level(v[2]))
    }
}

/// Where the cells of a grid go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub columns: usize,
    pub rows: usize,
    /// The magnification actually used.
    pub scale: usize,
    /// Size of every cell's picture area, in pixels.
    pub area: (i32, i32),
}

impl Layout {
    pub fn new(pictures: &[Picture], columns: usize, scale: usize) -> Layout {
        let good = || pictures.iter().filter(|p| drawable(p));
        let largest = good().map(|p| p.width.max(p.height)).max().unwrap_or(1);
        let scale = scale.clamp(1, (MAX_MAGNIFIED / largest).max(1));
        // Drawable pictures are at most 16384 px a side and the scale keeps
        // them within 4096 unless they already are larger, so these fit.
        let side = |f: fn(&Picture) -> usize, min: i32| {
            good().map(|p| (f(p) * scale) as i32).fold(min, i32::max)
        };
        let columns = columns.clamp(1, pictures.len().max(1));
        Layout {
            columns,
            rows: pictures.len().div_ceil(columns).max(1),
            scale,
            area: (
                side(|p| p.width, MIN_AREA.0),
                side(|p| p.height, MIN_AREA.1),
            ),
        }
    }

    /// The image's (width, height).
    pub fn image_size(&self) -> (u32, u32) {
        let along = |n: usize, each: i32, band: i32| {
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            let pitch = u64::from((each + band + GAP).unsigned_abs());
            let total = n
                .saturating_mul(pitch)
                .saturating_sub(u64::from(GAP.unsigned_abs()))
                .saturating_add(2 * u64::from(MARGIN.unsigned_abs()));
            u32::try_from(total).unwrap_or(u32::MAX)
        };
        (
            along(self.columns, self.area.0, 0),
            along(self.rows, self.area.1, TITLE_BAND),
        )
    }

    /// Cell `i`: its title band and picture area.
    pub fn cell(&self, i: usize) -> Rect {
        let (col, row) = ((i % self.columns) as i32, (i / self.columns) as i32);
        let x0 = MARGIN + col * (self.area.0 + GAP);
        let y0 = MARGIN + row * (TITLE_BAND + self.area.1 + GAP);
        Rect {
            x0,
            y0,
            x1: x0 + self.area.0 - 1,
            y1: y0 + TITLE_BAND + self.area.1 - 1,
        }
    }

    /// The picture area of cell `i`.
    pub fn area(&self, i: usize) -> Rect {
        let c = self.cell(i);
        Rect {
            y0: c.y0 + TITLE_BAND,
            ..c
        }
    }

    /// Where drawable picture `p` goes when it is picture `i`: at the top of
    /// its area, just under the title, and centred across it (the largest
    /// pictures fill it).
    pub fn picture(&self, i: usize, p: &Picture) -> Rect {
        let a = self.area(i);
        let (w, h) = (
            (p.width * self.scale) as i32,
            (p.height * self.scale) as i32,
        );
        let (x0, y0) = (a.x0 + (a.width() - w) / 2, a.y0);
        Rect {
            x0,
            y0,
            x1: x0 + w - 1,
            y1: y0 + h - 1,
        }
    }
}

/// Renders `pictures` in a grid; see [`crate::render_image_grid`].
pub(crate) fn render(pictures: &[Picture], columns: usize, scale: usize) -> Vec<u8> {
    let layout = Layout::new(pictures, columns, scale);
    let (w, h) = layout.image_size();
    let mut rgb = vec![WHITE; w as usize * h as usize * 3];
    for (i, p) in pictures.iter().enumerate().filter(|(_, p)| drawable(p)) {
        copy_magnified(&mut rgb, w as usize, p, layout.picture(i, p), layout.scale);
    }
    register_font();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let painter = Painter {
            root: &root,
            detail: Detail::Raster,
        };
        for (i, p) in pictures.iter().enumerate() {
            decorate(&painter, &layout, i, p)
                .expect("drawing into a buffer of the image's size cannot fail");
        }
        root.present()
            .expect("presenting a buffer-backed drawing cannot fail");
    }
    encode_png(&rgb, w, h)
}

/// Writes each pixel of `p` as a `scale`×`scale` block at `at` into the RGB
/// buffer `rgb`, `width` pixels a row.
fn copy_magnified(rgb: &mut [u8], width: usize, p: &Picture, at: Rect, scale: usize) {
    let (x0, y0) = (at.x0 as usize, at.y0 as usize);
    for y in 0..p.height {
        for x in 0..p.width {
            let RGBColor(r, g, b) = pixel_colour(p, x, y);
            for row in y0 + y * scale..y0 + (y + 1) * scale {
                let start = (row * width + x0 + x * scale) * 3;
                for px in rgb[start..start + scale * 3].chunks_exact_mut(3) {
                    px.copy_from_slice(&[r, g, b]);
                }
            }
        }
    }
}

/// Draws picture `i`'s frame (or its bad-picture cell) and its title.
fn decorate<DB: plotters::prelude::DrawingBackend>(
    painter: &Painter<'_, DB>,
    layout: &Layout,
    i: usize,
    p: &Picture,
) -> Result<(), plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>> {
    let area = layout.area(i);
    if drawable(p) {
        painter.outline(layout.picture(i, p).grow(1), FRAME)?;
    } else {
        painter.fill(area, BAD_FILL)?;
        painter.outline(area, FRAME)?;
        let note = fit(BAD_NOTE, NOTE_SIZE, area.width() - 4);
        let left = area.x0 + (area.width() - text_width(&note, NOTE_SIZE)) / 2;
        let mid = (area.y0 + area.y1) / 2;
        let anchor = (HPos::Left, VPos::Center);
        painter.text(&note, (left, mid), anchor, (NOTE_SIZE, TEXT), false)?;
    }
    let title = fit(&p.title, CELL_TITLE_SIZE, area.width());
    let left = area.x0 + (area.width() - text_width(&title, CELL_TITLE_SIZE)) / 2;
    let top = layout.cell(i).y0;
    let anchor = (HPos::Left, VPos::Top);
    painter.text(&title, (left, top), anchor, (CELL_TITLE_SIZE, TITLE), false)
}
