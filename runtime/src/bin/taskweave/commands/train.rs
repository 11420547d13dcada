//! The pipeline commands: `validate`, `run`, `resume` and `baselines`.

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::run::{self, Summary};
use taskweave::{Pipeline, Run};

use super::Env;
use crate::args::PipelineArgs;
use crate::output::Failure;

fn report(summary: &Summary, out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(out, "{}", run::table(summary))?;
    writeln!(out, "run directory: {}", summary.dir.display())?;
    Ok(())
}

fn pipeline(env: &Env, args: &PipelineArgs) -> Result<Pipeline, Failure> {
    Ok(Pipeline::from_file(
        &env.runtime(&args.plugins),
        &args.pipeline,
        &args.sets,
    )?)
}

pub fn validate(env: &Env, args: &PipelineArgs, out: &mut dyn Write) -> Result<(), Failure> {
    // A decoding pipeline is checked as `decode` and `eval-lm` read it.
    if taskweave::lm::is_decoding_pipeline(&args.pipeline) {
        taskweave::lm::DecodePipeline::from_file(
            &env.runtime(&args.plugins),
            &args.pipeline,
            &args.sets,
        )?;
        writeln!(
            out,
            "{}: ok (a decoding pipeline, for `taskweave decode` and `eval-lm`)",
            args.pipeline.display()
        )?;
        return Ok(());
    }
    let pipeline = pipeline(env, args)?;
    writeln!(
        out,
        "{}: ok (run `{}`)",
        args.pipeline.display(),
        pipeline.name()
    )?;
    Ok(())
}

pub fn run(
    env: &Env,
    args: &PipelineArgs,
    print_config: bool,
    overwrite: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let pipeline = pipeline(env, args)?;
    if print_config {
        write!(out, "{}", pipeline.resolved_toml())?;
        return Ok(());
    }
    report(&Run::start(pipeline, overwrite)?.train(env.quiet)?, out)
}

/// `lm train`: `run` for a pipeline that is one language model.
pub fn lm(
    env: &Env,
    args: &PipelineArgs,
    overwrite: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let pipeline = pipeline(env, args)?;
    pipeline.check_language_model()?;
    report(&Run::start(pipeline, overwrite)?.train(env.quiet)?, out)
}

pub fn resume(
    env: &Env,
    run_dir: &Path,
    plugins: &[PathBuf],
    out: &mut dyn Write,
) -> Result<(), Failure> {
    report(
        &Run::open(&env.runtime(plugins), run_dir)?.train(env.quiet)?,
        out,
    )
}

pub fn baselines(env: &Env, args: &PipelineArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let path = run::baselines(&pipeline(env, args)?, env.quiet)?;
    writeln!(out, "single-task baselines stored in {}", path.display())?;
    Ok(())
}
