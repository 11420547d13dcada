//! Writes three example figures, to look at after changing the renderer.
//!
//! Run with `cargo run -p taskweave-report --example figures [DIR]`; the
//! figures go to DIR, the charts as PNG and SVG and the image grid as PNG,
//! by default /tmp/report-examples.

use std::path::PathBuf;

use taskweave_report::{
    render_image_grid, render_png, render_png_sized, render_svg, HeatMap, LegendPosition, Marker,
    MarkerShape, Panel, Picture, Series,
};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/report-examples".into()),
    );
    std::fs::create_dir_all(&dir)?;

    // 1. Training curves as a run draws them: a log-y loss panel and one
    //    panel per validation metric, two columns.
    let curves = training_curves();
    std::fs::write(dir.join("curves.png"), render_png(&curves, 2))?;
    std::fs::write(dir.join("curves.svg"), render_svg(&curves, 2))?;

    // 2. A CAGrad-toy-like figure: the mean loss as a heat map with
    //    contours, the Pareto set as a guide, and descent trajectories from
    //    fixed starts, three 600x440 panels per row.
    let toy = toy_panels();
    std::fs::write(dir.join("toy.png"), render_png_sized(&toy, 3, (600, 440)))?;
    std::fs::write(dir.join("toy.svg"), render_svg(&toy, 3))?;

    // 3. An image grid as a sampler would show it: eight 28x28 grey
    //    digit-like samples and four 32x32 RGB gradients, four columns,
    //    four pixels per value.
    let pictures = image_grid_pictures();
    std::fs::write(
        dir.join("image-grid.png"),
        render_image_grid(&pictures, 4, 4),
    )?;
    println!(
        "wrote curves and toy, as PNG and SVG, and image-grid.png to {}",
        dir.display()
    );
    Ok(())
}

/// A deterministic wiggle in [-1, 1], standing in for minibatch noise.
fn noise(i: usize, seed: usize) -> f64 {
    let x = ((i * 7919 + seed * 104_729) % 10_007) as f64 / 10_007.0;
    (x * std::f64::consts::TAU).sin() * (x * 40.0).cos()
}

fn training_curves() -> Vec<Panel> {
    let tasks = ["segmentation", "depth", "normals"];
    let steps: Vec<f64> = (0..=100).map(|i| f64::from(i) * 50.0).collect();
    let curve = |task: usize, f: &dyn Fn(f64) -> f64| Series {
        label: tasks[task].into(),
        points: steps
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, f(s) * (1.0 + 0.08 * noise(i, task))))
            .collect(),
    };
    let loss = Panel {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: (0..3)
            .map(|t| {
                curve(t, &|s| {
                    (2.0 + t as f64) * (-s / (900.0 + 400.0 * t as f64)).exp() + 0.02
                })
            })
            .collect(),
        log_y: true,
        ..Panel::default()
    };
    let metric = |name: &str, f: &dyn Fn(usize, f64) -> f64| Panel {
        title: format!("validation {name}"),
        x_label: "step".into(),
        y_label: name.into(),
        series: (0..3).map(|t| curve(t, &|s| f(t, s))).collect(),
        ..Panel::default()
    };
    vec![
        loss,
        metric("accuracy", &|t, s| {
            0.95 - 0.6 * (-s / (700.0 + 300.0 * t as f64)).exp()
        }),
        metric("mean error", &|t, s| {
            12.0 + 30.0 * (-s / (1200.0 - 200.0 * t as f64)).exp()
        }),
    ]
}

/// The two objectives of the CAGrad toy at `(x1, x2)`.
fn toy(x1: f64, x2: f64) -> (f64, f64) {
    let t = (-x2).tanh();
    let l1 = (0.5 * (-x1 - 7.0) - t).abs().max(5e-6).ln() + 6.0;
    let l2 = (0.5 * (-x1 + 3.0) + t + 2.0).abs().max(5e-6).ln() + 6.0;
    let c1 = (x2 * 0.5).tanh().max(0.0);
    let c2 = (-x2 * 0.5).tanh().max(0.0);
    let q1 = ((-x1 + 7.0).powi(2) + 0.1 * (-x2 - 8.0).powi(2)) / 10.0 - 20.0;
    let q2 = ((-x1 - 7.0).powi(2) + 0.1 * (-x2 - 8.0).powi(2)) / 10.0 - 20.0;
    (l1 * c1 + q1 * c2, l2 * c1 + q2 * c2)
}

/// Gradient descent on `w·f1 + (1 − w)·f2` by central differences.
fn descend(start: (f64, f64), w: f64, steps: usize) -> Vec<(f64, f64)> {
    let f = |x: f64, y: f64| {
        let (a, b) = toy(x, y);
        w * a + (1.0 - w) * b
    };
    let mut p = start;
    let mut out = vec![p];
    for _ in 0..steps {
        let h = 1e-4;
        let gx = (f(p.0 + h, p.1) - f(p.0 - h, p.1)) / (2.0 * h);
        let gy = (f(p.0, p.1 + h) - f(p.0, p.1 - h)) / (2.0 * h);
        let norm = gx.hypot(gy).max(1.0);
        p = (p.0 - 0.2 * gx / norm, p.1 - 0.2 * gy / norm);
        out.push(p);
    }
    out
}

fn toy_panels() -> Vec<Panel> {
    let (lo, hi) = (-11.0, 11.0);
    let n = 241;
    let step = (hi - lo) / (n - 1) as f64;
    let values = (0..n * n)
        .map(|k| {
            let (a, b) = toy(lo + (k % n) as f64 * step, lo + (k / n) as f64 * step);
            (a + b) / 2.0
        })
        .collect();
    let heatmap = HeatMap {
        x_range: (lo, hi),
        y_range: (lo, hi),
        cols: n,
        values,
        limits: None,
        contours: 12,
        label: "(f1+f2)/2".into(),
    };
    let pareto = Series {
        label: "Pareto set".into(),
        points: (0..=200)
            .map(|i| (-7.0 + 14.0 * f64::from(i) / 200.0, -8.0))
            .collect(),
    };
    let starts = [(-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0), (10.0, -8.0)];
    [
        ("mean", 0.5, 150),
        ("favour f1", 0.8, 150),
        ("stopped early", 0.5, 40),
    ]
    .into_iter()
    .map(|(name, w, steps)| {
        let runs: Vec<Vec<(f64, f64)>> = starts.iter().map(|&s| descend(s, w, steps)).collect();
        let mut markers: Vec<Marker> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| Marker {
                at: *r.last().expect("a run has its start"),
                shape: if steps < 100 {
                    MarkerShape::Cross
                } else {
                    MarkerShape::Disc
                },
                color: Some(i),
                radius: 3,
            })
            .collect();
        markers.extend(starts.iter().map(|&s| Marker::new(s)));
        Panel {
            title: name.into(),
            x_label: "x1".into(),
            y_label: "x2".into(),
            series: runs
                .into_iter()
                .zip(starts)
                .map(|(points, s)| Series {
                    label: format!("from ({}, {})", s.0, s.1),
                    points,
                })
                .collect(),
            heatmap: Some(heatmap.clone()),
            guides: vec![pareto.clone()],
            markers,
            x_range: Some((lo, hi)),
            y_range: Some((lo, hi)),
            legend: LegendPosition::Right,
            ..Panel::default()
        }
    })
    .collect()
}

/// Distance from `p` to the segment `a`-`b`.
fn to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

/// A 28x28 grey picture of digit `d` (0 to 9) in soft, slanted
/// seven-segment strokes, white on black like MNIST.
fn digit(d: usize) -> Picture {
    // Segments a (top), b (top right), c (bottom right), d (bottom),
    // e (bottom left), f (top left), g (middle).
    const ENDS: [((f32, f32), (f32, f32)); 7] = [
        ((9.0, 5.0), (18.0, 5.0)),
        ((18.0, 5.0), (18.0, 14.0)),
        ((18.0, 14.0), (18.0, 23.0)),
        ((9.0, 23.0), (18.0, 23.0)),
        ((9.0, 14.0), (9.0, 23.0)),
        ((9.0, 5.0), (9.0, 14.0)),
        ((9.0, 14.0), (18.0, 14.0)),
    ];
    const LIT: [&str; 10] = [
        "abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg",
    ];
    let lit: Vec<_> = LIT[d % 10]
        .bytes()
        .map(|s| ENDS[usize::from(s - b'a')])
        .collect();
    let values = (0..28 * 28)
        .map(|k| {
            let (x, y) = ((k % 28) as f32, (k / 28) as f32);
            // Slant to the right going up; a little noise in the ink.
            let p = (x - (14.0 - y) * 0.18, y);
            let dist = lit
                .iter()
                .map(|&(a, b)| to_segment(p, a, b))
                .fold(f32::INFINITY, f32::min);
            let ink = (2.2 - dist).clamp(0.0, 1.0);
            ink * (0.85 + 0.15 * noise(k, d) as f32)
        })
        .collect();
    Picture {
        title: format!("sample {d}: digit {d}"),
        width: 28,
        height: 28,
        channels: 1,
        values,
    }
}

/// A 32x32 RGB gradient: red across, green down, blue fixed by `k`.
fn gradient(k: usize) -> Picture {
    let blue = k as f32 / 3.0;
    let values = (0..32 * 32)
        .flat_map(|i| {
            let (x, y) = ((i % 32) as f32 / 31.0, (i / 32) as f32 / 31.0);
            [x, y, blue]
        })
        .collect();
    Picture {
        title: format!("gradient, blue = {blue:.2}"),
        width: 32,
        height: 32,
        channels: 3,
        values,
    }
}

fn image_grid_pictures() -> Vec<Picture> {
    let mut pictures: Vec<Picture> = (0..8).map(digit).collect();
    pictures[7].title = "a title far too long for its cell".into();
    pictures.extend((0..4).map(gradient));
    pictures
}
