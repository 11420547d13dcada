//! A run: one pipeline trained into its directory `out_dir/<name>/`, which this
//! process holds (locked) for as long as the [`Run`] lives.
//!
//! [`Run::start`] begins a new run from step 0; [`Run::open`] takes an existing
//! run directory, with the pipeline it was started with, at its newest
//! checkpoint. [`Run::train`] trains either to the end, so
//! `Run::open(&runtime, dir)?.train(quiet)` is how a killed run resumes.

mod baselines;
mod dir;
mod fit;
mod select;
mod summary;

use std::path::{Path, PathBuf};

pub use baselines::baselines;
pub use summary::{table, Summary};

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::runtime::Runtime;
use crate::train::checkpoint;
use crate::train::flatness::Flatness;
use crate::train::Trainer;
use dir::RunDir;
use fit::RunContext;

/// A pipeline and its run directory, held by this process.
pub struct Run {
    pipeline: Pipeline,
    dir: RunDir,
    /// Whether training continues from the newest checkpoint.
    existing: bool,
}

impl Run {
    /// Starts a new run of `pipeline` in [`Pipeline::run_dir`]. A directory
    /// that already holds a run is refused unless `overwrite` (which empties
    /// it), and one that holds anything else in any case, so that nothing is
    /// lost by accident.
    pub fn start(pipeline: Pipeline, overwrite: bool) -> Result<Run> {
        let dir = RunDir::create(&pipeline.run_dir(), overwrite)?;
        Ok(Run {
            pipeline,
            dir,
            existing: false,
        })
    }

    /// Opens the run in `dir` (written by [`Run::train`]) with the pipeline it
    /// was started with: its resolved config, relative paths resolving where
    /// the original pipeline file was. Temporary files a killed process left
    /// there are removed.
    pub fn open(runtime: &Runtime, dir: &Path) -> Result<Run> {
        let held = RunDir::open(dir)?;
        let config_path = dir.join("config.toml");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::Input(format!(
                "{} is not a run directory (cannot read config.toml: {})",
                dir.display(),
                taskweave_plugin_api::io_reason(&e)
            ))
        })?;
        let info: serde_json::Value = std::fs::read_to_string(dir.join(dir::MARKER))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let pipeline_dir = info["pipeline_dir"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_path_buf());
        let pipeline = Pipeline::from_run(runtime, &config_path, text, pipeline_dir)?;
        Ok(Run {
            pipeline,
            dir: held,
            existing: true,
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Trains to the pipeline's last step: from step 0 for a new run, from the
    /// newest good checkpoint for an opened one.
    pub fn train(&self, quiet: bool) -> Result<Summary> {
        let data = self.pipeline.load_data()?;
        let ctx = RunContext::new(&self.pipeline, quiet)?;
        fit::train(&ctx, data, &self.dir, self.existing)
    }

    /// How much the newest checkpoint's loss on `split` rises when its shared
    /// parameters move in `samples` random directions of relative size
    /// `radius` (see [`Flatness`]).
    pub fn flatness(&self, split: &str, radius: f64, samples: usize) -> Result<Flatness> {
        if !(radius.is_finite() && radius > 0.0) {
            return Err(Error::Input(format!(
                "the perturbation radius must be a positive number, got {radius}"
            )));
        }
        if samples == 0 {
            return Err(Error::Input(
                "flatness needs at least one sample (random direction)".into(),
            ));
        }
        let data = self.pipeline.load_data()?;
        let ctx = RunContext::new(&self.pipeline, true)?;
        let mut trainer = Trainer::new(ctx.config, data, ctx.registry, ctx.host, ctx.device)?;
        let (_, ckpt) = checkpoint::latest(&self.dir.checkpoints())?
            .ok_or_else(|| Error::Input(format!("{} has no checkpoint", self.dir().display())))?;
        trainer.restore(ckpt)?;
        let config = self.pipeline.config();
        trainer.flatness(
            split,
            radius,
            samples,
            config.run.seed,
            config.eval.batch as usize,
        )
    }
}
