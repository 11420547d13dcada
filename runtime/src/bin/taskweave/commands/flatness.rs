//! `taskweave flatness`: how much a trained run's loss rises under random
//! perturbations of its shared parameters.

use std::io::Write;

use serde::Serialize;
use taskweave::Run;

use super::{write_json, Env};
use crate::args::FlatnessArgs;
use crate::output::{Failure, Table};

#[derive(Serialize)]
struct FlatnessView<'a> {
    radius: f64,
    samples: usize,
    split: &'a str,
    tasks: &'a [String],
    base: &'a [f64],
    perturbed: &'a [f64],
    mean_increase: f64,
}

pub fn run(env: &Env, args: &FlatnessArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let f = Run::open_to_read(&env.runtime(&args.plugins), &args.run_dir)?.flatness(
        &args.split,
        args.radius,
        args.samples,
    )?;
    if args.json {
        let view = FlatnessView {
            radius: f.radius,
            samples: f.samples,
            split: &args.split,
            tasks: &f.tasks,
            base: &f.base,
            perturbed: &f.perturbed,
            mean_increase: f.mean_increase(),
        };
        return write_json(out, &view);
    }
    writeln!(
        out,
        "{} loss under random perturbations of relative size {} ({} samples)",
        args.split, f.radius, f.samples
    )?;
    let mut table = Table::new(&["task", ">trained", ">perturbed", ">increase"]);
    for ((t, b), p) in f.tasks.iter().zip(&f.base).zip(&f.perturbed) {
        table.row(vec![
            t.clone(),
            format!("{b:.5}"),
            format!("{p:.5}"),
            format!("{:.5}", p - b),
        ]);
    }
    table.write(out)?;
    writeln!(out, "mean increase: {:.5}", f.mean_increase())?;
    Ok(())
}
