//! `taskweave sample`: samples of a trained diffusion run, their distance to
//! the test split's samples, and optionally a picture of them.

use std::io::Write;

use serde::Serialize;
use serde_json::json;
use taskweave::diffusion::sampler::Sampler;
use taskweave::train::checkpoint::{self, Checkpoint};
use taskweave::{Error, Result, Run};
use taskweave_report::{render_image_grid, render_png, LegendPosition, Marker, Panel, Picture};
use tch::{Kind, Tensor};

use super::{check_outs, check_png, write_json, Env};
use crate::args::SampleArgs;
use crate::output::Failure;

#[derive(Serialize)]
struct SampleView {
    samples: usize,
    reference: usize,
    sliced_wasserstein: f64,
    mmd2: f64,
    /// FD-FMNIST of the samples and of as many real training items.
    #[serde(skip_serializing_if = "Option::is_none")]
    fd_fmnist: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fd_fmnist_real: Option<f64>,
}

pub fn run(env: &Env, args: &SampleArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut outs = vec![("--out", args.out.as_path())];
    outs.extend(args.png.as_deref().map(|png| ("--png", png)));
    check_outs(&outs, &[&args.run_dir])?;
    if let Some(png) = &args.png {
        check_png("--png", png)?;
    }
    // Ancestral sampling takes every timestep: a DDIM step count would be ignored.
    if args.sampler == Sampler::Ancestral && args.ddim_steps.is_some() {
        return Err(Error::Input(
            "--ddim-steps sets the DDIM sampler's steps: add --sampler ddim (ancestral sampling takes every timestep)"
                .into(),
        )
        .into());
    }
    let run = Run::open_to_read(&env.runtime(&args.plugins), &args.run_dir)?;
    // 50 by default, or every timestep of a shorter schedule.
    let diffusion = run.pipeline().config().diffusion.as_ref();
    let ddim_steps = args
        .ddim_steps
        .unwrap_or_else(|| diffusion.map_or(50, |d| (d.steps as usize).min(50)));
    let request = taskweave::diffusion::sampler::SampleRequest {
        count: args.count,
        sampler: args.sampler,
        ddim_steps,
        seed: args.seed,
        clip: args.clip,
    };
    let drawn = run.sample(&request)?;
    checkpoint::write(
        &args.out,
        &Checkpoint {
            tensors: vec![("samples".into(), drawn.samples.shallow_clone())],
            meta: json!({
                "run": run.dir(),
                "sampler": format!("{:?}", args.sampler).to_lowercase(),
                "ddim_steps": (args.sampler == Sampler::Ddim).then_some(ddim_steps),
                "seed": args.seed,
                "clip": args.clip,
            }),
        },
    )?;
    if let Some(png) = &args.png {
        let bytes = match drawn.samples.size().as_slice() {
            [_, 1 | 3, _, _] => grid(&drawn.samples)?,
            _ => scatter(&drawn.samples, &drawn.truth)?,
        };
        std::fs::write(png, bytes).map_err(|e| Error::io(png, e))?;
    }
    let view = SampleView {
        samples: args.count,
        reference: drawn.truth.size()[0] as usize,
        sliced_wasserstein: drawn.sliced_wasserstein,
        mmd2: drawn.mmd2,
        fd_fmnist: drawn.frechet.as_ref().map(|f| f.samples),
        fd_fmnist_real: drawn.frechet.as_ref().map(|f| f.real),
    };
    if args.json {
        return write_json(out, &view);
    }
    writeln!(
        out,
        "wrote {} ({} samples); against {} test samples: sliced Wasserstein-2 {:.4}, MMD² {:.5}",
        args.out.display(),
        view.samples,
        view.reference,
        view.sliced_wasserstein,
        view.mmd2
    )?;
    if let Some(f) = &drawn.frechet {
        writeln!(
            out,
            "FD-FMNIST {:.3} (real training items against the same test items: {:.3})",
            f.samples, f.real
        )?;
    }
    Ok(())
}

/// The first 64 image samples `[N, C, H, W]` (values in [−1, 1]) in a grid
/// of 8 columns, each magnified 3×.
fn grid(samples: &Tensor) -> Result<Vec<u8>> {
    let count = samples.size()[0].min(64);
    let pictures = (0..count)
        .map(|i| {
            let x = samples.f_get(i)?;
            let (c, h, w) = x.size3()?;
            let values = Vec::<f32>::try_from(
                x.f_add_scalar(1.0)?
                    .f_mul_scalar(0.5)?
                    .f_permute([1, 2, 0])?
                    .f_contiguous()?
                    .f_reshape([-1])?,
            )?;
            Ok(Picture {
                title: String::new(),
                width: w as usize,
                height: h as usize,
                channels: c as usize,
                values,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(render_image_grid(&pictures, 8, 3))
}

/// 2-D samples beside the test samples, on the same axes.
fn scatter(samples: &Tensor, truth: &Tensor) -> Result<Vec<u8>> {
    let points = |t: &Tensor| -> Result<Vec<(f64, f64)>> {
        if t.dim() != 2 || t.size()[1] != 2 {
            return Err(Error::Input(format!(
                "--png draws 2-D points or images, but the samples are {:?}",
                t.size()
            )));
        }
        let values = Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
        Ok(values.chunks(2).map(|p| (p[0], p[1])).collect())
    };
    let (drawn, true_points) = (points(samples)?, points(truth)?);
    // The test samples' extent, with a margin, for both panels.
    let extent = |pick: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = true_points
            .iter()
            .map(pick)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let margin = 0.1 * (hi - lo).max(1e-6);
        (lo - margin, hi + margin)
    };
    let (x_range, y_range) = (extent(|p| p.0), extent(|p| p.1));
    let panel = |title: &str, points: &[(f64, f64)], color: usize| Panel {
        title: title.into(),
        markers: points
            .iter()
            .map(|&at| Marker {
                color: Some(color),
                radius: 1,
                ..Marker::new(at)
            })
            .collect(),
        x_range: Some(x_range),
        y_range: Some(y_range),
        legend: LegendPosition::Hidden,
        ..Panel::default()
    };
    Ok(render_png(
        &[
            panel(&format!("{} samples", drawn.len()), &drawn, 0),
            panel(
                &format!("{} test samples", true_points.len()),
                &true_points,
                1,
            ),
        ],
        2,
    ))
}
