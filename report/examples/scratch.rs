use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
fn main() {
    assert!(plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        dejavu::sans::regular()
    )
    .is_ok());
    let (w, h) = (600u32, 400u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        // noisy line width 2 as one path
        let mut pts = vec![];
        let mut s = 1u64;
        for i in 0..300 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((s >> 33) % 40) as i32 - 20;
            pts.push((10 + i as i32 * 580 / 300, 100 + n + (i as i32 / 10)));
        }
        root.draw(&PathElement::new(
            pts.clone(),
            ShapeStyle::from(&BLUE).stroke_width(2),
        ))
        .unwrap();
        // same per segment
        for w2 in pts.windows(2) {
            root.draw(&PathElement::new(
                vec![(w2[0].0, w2[0].1 + 80), (w2[1].0, w2[1].1 + 80)],
                ShapeStyle::from(&RED).stroke_width(2),
            ))
            .unwrap();
        }
        // guide width 5
        let g: Vec<(i32, i32)> = (0..50)
            .map(|i| (20 + i * 10, 300 - ((i as f64 / 8.0).sin() * 40.0) as i32))
            .collect();
        root.draw(&PathElement::new(
            g,
            ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(5),
        ))
        .unwrap();
        for (i, (hp, vp)) in [
            (HPos::Left, VPos::Top),
            (HPos::Center, VPos::Center),
            (HPos::Right, VPos::Bottom),
        ]
        .into_iter()
        .enumerate()
        {
            let x = 100 + 200 * i as i32;
            root.draw(&PathElement::new(
                vec![(x - 30, 360), (x + 30, 360)],
                &GREEN,
            ))
            .unwrap();
            root.draw(&PathElement::new(vec![(x, 340), (x, 380)], &GREEN))
                .unwrap();
            let st = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(hp, vp));
            root.draw(&Text::new("Hxg 0.25", (x, 360), st)).unwrap();
        }
        let st = TextStyle::from(
            ("sans-serif", 14)
                .into_font()
                .transform(FontTransform::Rotate270),
        )
        .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&PathElement::new(vec![(570, 200), (590, 200)], &GREEN))
            .unwrap();
        root.draw(&Text::new("rotated Hxg", (580, 200), st))
            .unwrap();
        root.draw(&Circle::new(
            (50, 230),
            4,
            ShapeStyle::from(&BLACK).filled(),
        ))
        .unwrap();
    }
    let f = std::fs::File::create("/tmp/report-examples/scratch.png").unwrap();
    let mut enc = png::Encoder::new(f, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&buf).unwrap();
}
