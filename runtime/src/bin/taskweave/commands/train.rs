//! The pipeline commands: `validate`, `run`, `resume` and `baselines`.

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::Summary;

use super::runtime;
use crate::args::PipelineArgs;
use crate::output::Failure;

fn report(summary: &Summary, out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(out, "{}", taskweave::train::run::table(summary))?;
    writeln!(out, "run directory: {}", summary.dir.display())?;
    Ok(())
}

pub fn validate(args: &PipelineArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
    writeln!(
        out,
        "{}: ok (run `{}`)",
        args.pipeline.display(),
        pipeline.name()
    )?;
    Ok(())
}

pub fn run(
    args: &PipelineArgs,
    print_config: bool,
    overwrite: bool,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
    if print_config {
        write!(out, "{}", pipeline.resolved_toml())?;
        return Ok(());
    }
    report(&pipeline.train(overwrite, quiet)?, out)
}

pub fn resume(
    run_dir: &Path,
    plugins: &[PathBuf],
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    report(&runtime(plugins).resume(run_dir, quiet)?, out)
}

pub fn baselines(args: &PipelineArgs, quiet: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
    let path = pipeline.baselines(quiet)?;
    writeln!(out, "single-task baselines stored in {}", path.display())?;
    Ok(())
}
