//! The pipeline commands: `validate`, `run`, `resume` and `baselines`.

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::run::{self, Summary};
use taskweave::{Pipeline, Run};

use super::runtime;
use crate::args::PipelineArgs;
use crate::output::Failure;

fn report(summary: &Summary, out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(out, "{}", run::table(summary))?;
    writeln!(out, "run directory: {}", summary.dir.display())?;
    Ok(())
}

fn pipeline(args: &PipelineArgs) -> Result<Pipeline, Failure> {
    Ok(Pipeline::from_file(
        &runtime(&args.plugins),
        &args.pipeline,
        &args.sets,
    )?)
}

pub fn validate(args: &PipelineArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let pipeline = pipeline(args)?;
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
    let pipeline = pipeline(args)?;
    if print_config {
        write!(out, "{}", pipeline.resolved_toml())?;
        return Ok(());
    }
    report(&Run::start(pipeline, overwrite)?.train(quiet)?, out)
}

pub fn resume(
    run_dir: &Path,
    plugins: &[PathBuf],
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    report(&Run::open(&runtime(plugins), run_dir)?.train(quiet)?, out)
}

pub fn baselines(args: &PipelineArgs, quiet: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let path = run::baselines(&pipeline(args)?, quiet)?;
    writeln!(out, "single-task baselines stored in {}", path.display())?;
    Ok(())
}
