//! A run: one pipeline trained into its directory `out_dir/<name>/`, which this
//! process holds (locked) for as long as the [`Run`] lives.
//!
//! [`Run::start`] begins a new run from step 0; [`Run::open`] takes an existing
//! run directory, with the pipeline it was started with, at its newest
//! checkpoint. [`Run::train`] trains either to the end, so
//! `Run::open(&runtime, dir)?.train(quiet)` is how a killed run resumes.

mod baselines;
mod dir;
mod edits;
mod fd;
mod fit;
pub mod interrupt;
mod select;
mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

pub use baselines::baselines;
pub use fd::Frechet;
pub use summary::{table, Summary};

use crate::diffusion::quality::{mmd2, sliced_wasserstein, BANDWIDTHS};
use crate::diffusion::sampler::SampleRequest;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::runtime::Runtime;
use crate::train::flatness::Flatness;
use crate::train::Trainer;
use dir::RunDir;
use fit::RunContext;

/// Samples of a diffusion run and their quality against the test split's
/// clean samples.
pub struct Samples {
    /// The samples, in the data's shape `[count, ...]`, on the CPU.
    pub samples: tch::Tensor,
    /// Sliced Wasserstein-2 distance to the test samples (128 directions).
    pub sliced_wasserstein: f64,
    /// Unbiased MMD² to the test samples, kernel of bandwidths [`BANDWIDTHS`].
    pub mmd2: f64,
    /// The test samples they were compared with.
    pub truth: tch::Tensor,
    /// FD-FMNIST, for runs on `fashion-mnist` data.
    pub frechet: Option<Frechet>,
}

/// Task affinity scores between a diffusion model's timesteps.
pub struct Affinity {
    /// The timesteps scored, ascending.
    pub timesteps: Vec<i64>,
    /// Their cosine similarities `[n, n]`, float64.
    pub scores: tch::Tensor,
    /// The scores of all T timesteps `[T, T]`, each taking its nearest
    /// scored timestep's: what `cost = "gradient"` reads as the signal `tas`.
    pub full: tch::Tensor,
    /// The training samples the gradients were taken on: the rows asked
    /// for, or every training sample where there are fewer.
    pub rows: usize,
}

/// A pipeline and its run directory, held by this process.
pub struct Run {
    pipeline: Pipeline,
    dir: RunDir,
    /// Whether training continues from the newest checkpoint: an opened
    /// run, or one this value has trained before.
    existing: AtomicBool,
    /// Whether a thread is training it now.
    training: AtomicBool,
    /// Set by a [`StopHandle`]; cleared when training stops for it.
    stop: Arc<AtomicBool>,
    /// Opened with [`Run::open_to_read`]: it may not be trained.
    read_only: bool,
    /// The one task of the data the run trains (a single-task baseline's).
    task: Option<usize>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("dir", &self.dir())
            .finish_non_exhaustive()
    }
}

/// Asks a [`Run`]'s training to stop after the step in progress and
/// checkpoint it, as Ctrl-C does in the CLI: from another thread (a user
/// interface, a server's request handler), with no signal. [`Run::train`]
/// then returns [`Error::Interrupted`] with `signal: None`, and called again
/// continues the run. A stop asked while nothing trains stops the next call
/// after its first step. Like the signals, it acts on a run in one process
/// only (under `mpirun` the ranks would have to agree on the step).
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks for the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Warns about every plugin method of the run whose library changed since it
/// started (`started` and `now` from
/// [`Registry::plugins_named`](crate::registry::Registry::plugins_named)): the
/// resumed steps may then differ from an uninterrupted run's.
fn warn_changed_plugins(dir: &Path, started: &Value, now: &Value) {
    let Some(started) = started.as_object() else {
        return;
    };
    for (name, was) in started {
        let is = &now[name];
        let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
        let changed = match (was["version"] != is["version"], was["hash"] != is["hash"]) {
            _ if is.is_null() => "a built-in".to_string(),
            (true, _) => format!(
                "version {} (was {})",
                text(&is["version"]),
                text(&was["version"])
            ),
            (false, true) => format!(
                "a rebuilt {} (the same version {})",
                text(&is["file"]),
                text(&is["version"])
            ),
            (false, false) => continue,
        };
        tracing::warn!(
            "{}: method `{name}` is now {changed}: what the run computes from here may differ from \
             what it would have computed with the plugin it started with",
            dir.display()
        );
    }
}

impl Run {
    /// Starts a new run of `pipeline` in [`Pipeline::run_dir`]. A directory
    /// that already holds a run is refused unless `overwrite` (which empties
    /// it), and one that holds anything else in any case, so that nothing is
    /// lost by accident.
    pub fn start(pipeline: Pipeline, overwrite: bool) -> Result<Run> {
        let dir = match crate::dist::world().is_root() {
            true => RunDir::create(&pipeline.run_dir(), overwrite)?,
            false => RunDir::follow(&pipeline.run_dir()),
        };
        Ok(Run {
            pipeline,
            dir,
            existing: AtomicBool::new(false),
            training: AtomicBool::new(false),
            stop: Arc::default(),
            read_only: false,
            task: None,
        })
    }

    /// Opens the run in `dir` (written by [`Run::train`]) with the pipeline it
    /// was started with: its resolved config, relative paths resolving where
    /// the original pipeline file was. Temporary files a killed process left
    /// there are removed.
    pub fn open(runtime: &Runtime, dir: &Path) -> Result<Run> {
        Run::opened(runtime, dir, false)
    }

    /// [`Run::open`] to read what the run trained ([`Run::sample`],
    /// [`Run::flatness`], a language model to decode with), not to train it:
    /// nothing in `dir` is written, so a run directory this process may only
    /// read opens, and several readers may hold it at once (not while a
    /// process trains there). [`Run::train`] on it is an error.
    pub fn open_to_read(runtime: &Runtime, dir: &Path) -> Result<Run> {
        Run::opened(runtime, dir, true)
    }

    fn opened(runtime: &Runtime, dir: &Path, read_only: bool) -> Result<Run> {
        let world = crate::dist::world();
        let held = match world.is_root() {
            true if read_only => RunDir::open_to_read(dir)?,
            true => RunDir::open(dir)?,
            // Rank 0 says what is wrong with a directory it cannot open; a
            // directory only this rank cannot see is another mistake.
            false if !dir.join(dir::MARKER).is_file() => {
                return Err(Error::Input(format!(
                    "{}: rank {} sees no run there (no {}); where rank 0 sees one, every rank \
                     must see the run directory, on a file system they all share",
                    dir.display(),
                    world.rank(),
                    dir::MARKER
                )))
            }
            false => RunDir::follow(dir),
        };
        let config_path = dir.join("config.toml");
        // The marker is there (it is written first): the run was stopped
        // before it wrote its config, so it has nothing to resume from.
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::Input(format!(
                "{} cannot resume: its config.toml cannot be read ({}); start the run again \
                 with `taskweave run PIPELINE --overwrite`",
                dir.display(),
                taskweave_plugin_api::io_reason(&e)
            ))
        })?;
        // run.json names where the pipeline file was: relative paths in the
        // config (plugin dirs, data, train.init) start there.
        let marker = dir.join(dir::MARKER);
        let info: serde_json::Value = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let pipeline_dir = match info["pipeline_dir"].as_str() {
            Some(path) => PathBuf::from(path),
            None => {
                tracing::warn!(
                    "{} is missing or damaged: relative paths of the run's config (plugin dirs, \
                     data) start at the run directory instead of the pipeline's; pass --plugins \
                     DIR if its plugins are not found",
                    marker.display()
                );
                dir.to_path_buf()
            }
        };
        if let Some(started) = info["version"].as_str() {
            if started != env!("CARGO_PKG_VERSION") {
                tracing::warn!(
                    "{} was started by taskweave {started}; this is {}: what it computes from here \
                     may differ from what the older version would have",
                    dir.display(),
                    env!("CARGO_PKG_VERSION")
                );
            }
        }
        // The runtime's plugin directories when the run started (`--plugins`).
        let recorded: Vec<PathBuf> = info["plugin_dirs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(PathBuf::from))
            .collect();
        let runtime = runtime.with_plugin_dirs(&recorded);
        let pipeline = Pipeline::from_run(&runtime, &config_path, text, pipeline_dir)?;
        let now = serde_json::to_value(pipeline.config())
            .map_err(|e| Error::Run(format!("the run's config as JSON: {e}")))?;
        // Runs from before run.json recorded the config are not checked.
        if info["config"].is_object() {
            edits::check(&info["config"], &now).map_err(|e| pipeline.locate(e))?;
        }
        if world.is_root() {
            let plugins = pipeline.registry().plugins_named(&now);
            warn_changed_plugins(dir, &info["plugins"], &plugins);
        }
        Ok(Run {
            pipeline,
            dir: held,
            existing: AtomicBool::new(true),
            training: AtomicBool::new(false),
            stop: Arc::default(),
            read_only,
            task: info["task"].as_u64().map(|t| t as usize),
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

    /// A handle that stops this run's training from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Trains to the pipeline's last step: from step 0 for a new run, from the
    /// newest good checkpoint for an opened one, or for a run this value
    /// trained before (a second call continues, as `resume` would). One
    /// thread at a time: a call while another trains the run is an error.
    pub fn train(&self, quiet: bool) -> Result<Summary> {
        if self.read_only {
            return Err(Error::Input(format!(
                "{} was opened to read (Run::open_to_read): open it with Run::open to train it",
                self.dir().display()
            )));
        }
        if self.training.swap(true, Ordering::SeqCst) {
            return Err(Error::Input(format!(
                "{} is being trained already (by another thread of this process)",
                self.dir().display()
            )));
        }
        let trained = || {
            let data = self.load_data()?;
            let ctx = RunContext {
                task: self.task,
                stop: Some(&self.stop),
                ..RunContext::new(&self.pipeline, quiet)?
            };
            fit::train(&ctx, data, &self.dir, self.existing.load(Ordering::SeqCst))
        };
        let result = trained().map_err(|e| self.pipeline.locate(e));
        // Once the directory holds the run, training it again continues it.
        if self.dir().join(dir::MARKER).is_file() {
            self.existing.store(true, Ordering::SeqCst);
        }
        self.training.store(false, Ordering::SeqCst);
        result
    }

    /// The pipeline's data, restricted to the one task a single-task
    /// baseline's run trained.
    pub(crate) fn load_data(&self) -> Result<crate::data::Dataset> {
        let data = self.pipeline.load_data()?;
        match self.task {
            Some(t) if t < data.tasks.len() => Ok(data.only_task(t)),
            Some(t) => Err(Error::Input(format!(
                "{} trained task {t} of its data, which now has {} tasks",
                self.dir().display(),
                data.tasks.len()
            ))),
            None => Ok(data),
        }
    }

    /// Draws samples from the run's diffusion model at its selected
    /// checkpoint (the best-validation one, else the newest), and measures
    /// them against the test split's clean samples (for `fashion-mnist`
    /// data also by FD-FMNIST, training its classifier the first time).
    pub fn sample(&self, request: &SampleRequest) -> Result<Samples> {
        let input = &self.diffusion()?.input;
        let data = self.load_data()?;
        let clean = |split: &crate::data::Split| {
            split
                .input(input)
                .map(tch::Tensor::shallow_clone)
                .ok_or_else(|| Error::Input(format!("the data have no input `{input}`")))
        };
        let (truth, train) = (clean(&data.test)?, clean(&data.train)?);
        if request.clip {
            let reach = truth.f_abs()?.f_max()?.f_double_value(&[])?;
            if reach > 1.0 + 1e-6 {
                tracing::warn!(
                    "--clip keeps each predicted clean sample in [−1, 1], the pixel range of image \
                     data, but these data reach {reach:.3}: the samples cannot; leave --clip out"
                );
            }
        }
        if request.count == 1 {
            return Err(Error::Input(
                "--n 1: the sample measures compare sets of at least 2 samples; draw 2 or more"
                    .into(),
            ));
        }
        // MMD² holds kernel matrices of n × n float64 (about three at once):
        // refused before sampling, not an out-of-memory kill after.
        let test_rows = truth.size()[0] as usize;
        let n = request.count.max(test_rows) as u128;
        let needed = 3 * 8 * n * n;
        if let Some(free) = crate::device::free_memory(tch::Device::Cpu) {
            if needed > free as u128 {
                let fix = match request.count >= test_rows {
                    true => format!("draw fewer than --n {}", request.count),
                    false => format!("the test split's {test_rows} samples are the larger set: give the data a smaller test split"),
                };
                return Err(Error::Input(format!(
                    "measuring the samples (MMD² over {n} × {n} pairs) needs about {} of memory, \
                     and {} is free: {fix}",
                    crate::device::human_bytes(needed),
                    crate::device::human_bytes(free as u128)
                )));
            }
        }
        let mut classifier = fd::classifier(&self.pipeline)?;
        let samples = self
            .trained(data)?
            .sample(request)?
            .f_to_device(tch::Device::Cpu)?;
        let flat = |t: &tch::Tensor| t.f_reshape([t.size()[0], -1]);
        let (a, b) = (flat(&samples)?, flat(&truth)?);
        let frechet = classifier
            .as_mut()
            .map(|c| Frechet::measure(c, &samples, &train, &truth))
            .transpose()?;
        Ok(Samples {
            sliced_wasserstein: sliced_wasserstein(&a, &b, 128, request.seed)?,
            mmd2: mmd2(&a, &b, &BANDWIDTHS)?,
            samples,
            truth,
            frechet,
        })
    }

    /// The first `rows` examples of split `split`, the run's tasks, and its
    /// model's outputs for them at its selected checkpoint.
    pub fn predictions(
        &self,
        split: &str,
        rows: usize,
    ) -> Result<(crate::data::Split, Vec<crate::data::Task>, Vec<tch::Tensor>)> {
        let mut trainer = self.trained(self.load_data()?)?;
        let (examples, outputs) = trainer.predict(split, rows)?;
        Ok((examples, trainer.data().tasks.clone(), outputs))
    }

    /// Task affinity scores between the timesteps of the run's diffusion
    /// model at its selected checkpoint (see
    /// [`Trainer::timestep_affinity`]): on `count` timesteps evenly spaced
    /// over 1..=T, with `rows` training samples.
    pub fn timestep_affinity(&self, count: usize, rows: usize) -> Result<Affinity> {
        let steps = self.diffusion()?.steps as usize;
        if count < 2 {
            return Err(Error::Input(format!(
                "--timesteps {count}: task affinity compares at least 2 timesteps"
            )));
        }
        if rows == 0 {
            return Err(Error::Input(
                "--rows 0: task affinity needs at least 1 training sample".into(),
            ));
        }
        let timesteps = crate::diffusion::timestep_grid(steps, count);
        let mut trainer = self.trained(self.load_data()?)?;
        let (scores, rows) = trainer.timestep_affinity(&timesteps, rows, 1 << 30)?;
        let full = crate::diffusion::affinity::expand(&timesteps, &scores, steps)?;
        Ok(Affinity {
            timesteps,
            scores,
            full,
            rows,
        })
    }

    /// The pipeline's `[diffusion]` section, or the error saying the run
    /// has none.
    fn diffusion(&self) -> Result<&crate::sections::DiffusionConfig> {
        self.pipeline.config().diffusion.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "{} is not a diffusion run (its pipeline has no [diffusion] section)",
                self.dir().display()
            ))
        })
    }

    /// A trainer over `data` with the model of the run's selected checkpoint
    /// (the best-validation one, else the newest).
    pub(crate) fn trained(&self, data: crate::data::Dataset) -> Result<Trainer> {
        let mut trainer = RunContext::new(&self.pipeline, true)?.trainer(data)?;
        let ckpt = fit::selected_checkpoint(self.dir())?
            .ok_or_else(|| Error::Input(format!("{} has no checkpoint", self.dir().display())))?;
        trainer.load_model(&ckpt)?;
        Ok(trainer)
    }

    /// How much the loss on `split` of the run's selected checkpoint (the
    /// parameters its summary reports: best validation, else the newest)
    /// rises when its shared parameters move in `samples` random directions
    /// of relative size `radius` (see [`Flatness`]).
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
        let mut trainer = self.trained(self.load_data()?)?;
        let config = self.pipeline.config();
        let flatness = trainer.flatness(
            split,
            radius,
            samples,
            config.run.seed,
            config.eval.batch as usize,
        )?;
        let task = |t: usize| &flatness.tasks[t];
        if let Some(t) = flatness.base.iter().position(|l| !l.is_finite()) {
            return Err(Error::Run(format!(
                "the run's own parameters give task `{}` a loss of {}: there is no flatness to measure",
                task(t),
                flatness.base[t]
            )));
        }
        if let Some(t) = flatness.perturbed.iter().position(|l| !l.is_finite()) {
            return Err(Error::Input(format!(
                "the perturbed loss of task `{}` is not finite at --radius {radius:e}: a flatness \
                 number would mean nothing; lower --radius (perturbations of relative size 0.01-0.1 \
                 are usual)",
                task(t)
            )));
        }
        Ok(flatness)
    }
}
