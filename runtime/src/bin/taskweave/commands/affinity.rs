//! `taskweave affinity`: task affinity scores between the timesteps of a
//! trained diffusion run, as the signal `tas` of `cost = "gradient"`.

use std::io::Write;

use serde_json::json;
use taskweave::train::checkpoint::{self, Checkpoint};
use taskweave::{Error, Result, Run};
use taskweave_report::{render_png, HeatMap, LegendPosition, Panel};
use tch::{Kind, Tensor};

use super::{check_outs, check_png, Env};
use crate::args::AffinityArgs;
use crate::output::Failure;

pub fn run(env: &Env, args: &AffinityArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut outs = vec![("--out", args.out.as_path())];
    outs.extend(args.png.as_deref().map(|png| ("--png", png)));
    check_outs(&outs, &[&args.run_dir])?;
    if let Some(png) = &args.png {
        check_png("--png", png)?;
    }
    let run = Run::open_to_read(&env.runtime(&args.plugins), &args.run_dir)?;
    let affinity = run.timestep_affinity(args.timesteps, args.rows)?;
    let diffusion = run
        .pipeline()
        .config()
        .diffusion
        .clone()
        .unwrap_or_default();
    let n = affinity.timesteps.len();
    checkpoint::write(
        &args.out,
        &Checkpoint {
            tensors: vec![
                ("tas".into(), affinity.full.shallow_clone()),
                ("tas_grid".into(), affinity.scores.shallow_clone()),
                ("timesteps".into(), Tensor::from_slice(&affinity.timesteps)),
            ],
            // What `diffusion.signals` checks against the pipeline that reads them.
            meta: json!({"run": run.dir(), "rows": affinity.rows,
                         "schedule": diffusion.schedule, "steps": diffusion.steps}),
        },
    )?;
    if let Some(png) = &args.png {
        std::fs::write(png, heat_map(&affinity.timesteps, &affinity.scores)?)
            .map_err(|e| Error::io(png, e))?;
    }
    writeln!(
        out,
        "wrote {} (scores of {n} timesteps on {} training rows, expanded to all {})",
        args.out.display(),
        affinity.rows,
        affinity.full.size()[0]
    )?;
    Ok(())
}

/// The scores as a heat map over (timestep, timestep).
fn heat_map(timesteps: &[i64], scores: &Tensor) -> Result<Vec<u8>> {
    let values = Vec::<f64>::try_from(scores.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
    let (first, last) = (timesteps[0] as f64, timesteps[timesteps.len() - 1] as f64);
    let panel = Panel {
        title: "task affinity (gradient cosine) between timesteps".into(),
        x_label: "timestep".into(),
        y_label: "timestep".into(),
        heatmap: Some(HeatMap {
            x_range: (first, last),
            y_range: (first, last),
            cols: timesteps.len(),
            values,
            limits: Some((-1.0, 1.0)),
            contours: 0,
            label: "cosine".into(),
        }),
        x_range: Some((first, last)),
        y_range: Some((first, last)),
        legend: LegendPosition::Right,
        ..Panel::default()
    };
    Ok(render_png(&[panel], 1))
}
