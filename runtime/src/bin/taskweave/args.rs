//! The command line, parsed by clap: every command and flag, documented where
//! `taskweave --help` shows it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "taskweave",
    version,
    about = "Run multi-task learning pipelines with method plugins"
)]
pub struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "human", global = true)]
    pub log_format: LogFormat,
    /// Only warnings and errors; no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Load plugins even from files or directories other users could have
    /// written (refused by default: a plugin runs with your rights).
    #[arg(long, global = true)]
    pub allow_insecure_plugins: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// List, write and build plugins.
    #[command(visible_alias = "plugins")]
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Check a pipeline against every method's schema, without running it.
    Validate(PipelineArgs),
    /// Train a pipeline into out_dir/<run name>/.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the fully resolved config (defaults filled in) and exit.
        #[arg(long)]
        print_config: bool,
        /// Replace an existing run directory of the same name.
        #[arg(long)]
        overwrite: bool,
    },
    /// Causal language models on byte-level text.
    Lm {
        #[command(subcommand)]
        command: LmCommand,
    },
    /// Continue a decoding pipeline's prompt: each next byte from the fused
    /// distribution of its models, written as it is drawn.
    Decode(DecodeArgs),
    /// Score a decoding pipeline's fusion on its held-out text, per corpus:
    /// exact perplexity and bits per byte by teacher forcing, next-byte accuracy.
    EvalLm {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also draw, per corpus, the share of bytes each expert steered at
        /// each coefficient α, into this PNG.
        #[arg(long, value_name = "FILE.png")]
        plot: Option<PathBuf>,
    },
    /// Continue a run from its newest checkpoint.
    Resume {
        /// The run directory (out_dir/<run name>).
        run_dir: PathBuf,
        /// Extra plugin directories.
        #[arg(long = "plugins", value_name = "DIR")]
        plugins: Vec<PathBuf>,
    },
    /// Train the single-task baselines that Δm compares a pipeline against.
    Baselines(PipelineArgs),
    /// Loss increase of a trained run under random perturbations of its shared parameters.
    Flatness(FlatnessArgs),
    /// Draw the first examples of a pipeline's data with their labels into a PNG.
    Preview(PreviewArgs),
    /// How many rows of a pipeline's split label each task, and the
    /// correlation of every pair of scalar tasks' labels.
    Stats(StatsArgs),
    /// Draw samples from a trained diffusion run, with their distance to the test samples.
    Sample(SampleArgs),
    /// Task affinity scores (TAS) between a trained diffusion run's timesteps, for `cost = "gradient"`.
    Affinity(AffinityArgs),
    /// Optimisation toys: trajectories of weightings on a two-objective problem.
    Toy {
        #[command(subcommand)]
        command: ToyCommand,
    },
    /// Show the CUDA devices, driver, memory, NVRTC and libtorch_cuda as taskweave sees them.
    GpuInfo {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Call one method on tensors from files.
    Call {
        #[command(subcommand)]
        command: CallCommand,
    },
}

#[derive(Subcommand)]
pub enum LmCommand {
    /// Train a pipeline that is one causal language model (`[data] kind =
    /// "text"`, backbone `transformer-lm`, `model.head.shared = true`) into
    /// out_dir/<run name>/: per-corpus perplexity and bits per byte in
    /// metrics.jsonl, checkpoints in safetensors. `[train] init` fine-tunes
    /// another run's model (an expert on one corpus).
    Train {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Replace an existing run directory of the same name.
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Subcommand)]
pub enum ToyCommand {
    /// The CAGrad paper's two-objective toy: each weighting's trajectories from the
    /// standard start points, drawn on the loss landscape into a PNG.
    Cagrad(CagradArgs),
}

#[derive(Subcommand)]
pub enum CallCommand {
    /// Run a weighting once: reads `grads` [T, P] (and `losses` [T]), writes `update` [P] and `weights` [T].
    Weighting(WeightingArgs),
    /// Run a grouping once over `--tasks` tasks and the signals of `--signals`;
    /// writes `groups` [T], `intervals` [k, 2] (1-based inclusive, when every
    /// group is one contiguous run) and the method's scores (such as `cost`).
    Grouping(GroupingArgs),
    /// Run a logit fusion once: reads `large` [B, V], `small` [B, V] and
    /// `experts` [T, B, V] logits, writes `log_probs` [B, V], `expert` [B]
    /// (i64) and `alpha` [B] (the active expert's coefficient per row).
    Fusion(FusionArgs),
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Every method (built-in and from plugins) and every file that failed to load.
    List {
        /// Plugin directory (repeatable; default: ./plugins when it exists).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One method's keys: type, default and what each does (from its schema).
    Show {
        /// The method's name, as pipelines write it (`kind = "NAME"`).
        name: String,
        /// Plugin directory (repeatable; default: ./plugins when it exists).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Machine-readable output: the manifest and the JSON schema.
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin crate: a working method of the role, its config, a
    /// test, and the settings to build it against this runtime's libtorch.
    New(NewArgs),
    /// Build a plugin crate against this runtime's libtorch and install its
    /// .so into a plugin directory.
    Build(BuildArgs),
}

/// `taskweave plugin new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The method's name, as pipelines will write it (`kind = "NAME"`).
    pub name: String,
    /// The method's role.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Where to write the crate (default: ./NAME; must not exist yet).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The taskweave-plugin-api crate to depend on (default: the one this
    /// taskweave was built from).
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,
}

/// A method role, as `plugin new` takes it.
#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Combines per-task losses or gradients.
    Weighting,
    /// The whole training step.
    Strategy,
    /// Modules between the backbone and the heads.
    Architecture,
    /// One decoding step's distribution from several models.
    Fusion,
    /// A partition of many tasks into a few groups.
    Grouping,
}

/// `taskweave plugin build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The plugin crate (its directory).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The plugin directory to install the .so into (created if missing).
    #[arg(long, default_value = "plugins")]
    pub into: PathBuf,
    /// Cargo's target directory (default: the crate's own `target/`).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Replace a file of the same name in --into that holds other methods or
    /// another version (a rebuild of the same method and version replaces it anyway).
    #[arg(long)]
    pub replace: bool,
}

#[derive(clap::Args)]
pub struct PipelineArgs {
    /// The pipeline TOML file.
    pub pipeline: PathBuf,
    /// Override a value: dotted.key=value (repeatable; values are TOML, bare words are strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Extra plugin directory (repeatable).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave decode`.
#[derive(clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// After the text: a JSON line with the bytes drawn, per byte the
    /// active expert and its coefficient, and the seconds spent (in all, in
    /// the large model, in the fusion), on standard error.
    #[arg(long)]
    pub steering: bool,
}

/// `taskweave preview`.
#[derive(clap::Args)]
pub struct PreviewArgs {
    /// The pipeline TOML file, or a run directory: its data, with the
    /// predictions of its model (selected checkpoint) beside each target.
    pub pipeline: PathBuf,
    /// Override a value: dotted.key=value (repeatable; values are TOML, bare words are strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Number of examples (one row each; at most 256).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Split the examples come from.
    #[arg(long, default_value = "train", value_parser = ["train", "val", "test"])]
    pub split: String,
    /// Output PNG file.
    #[arg(long)]
    pub out: PathBuf,
    /// Extra plugin directory (repeatable).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave stats`.
#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The split whose labels are read.
    #[arg(long, default_value = "train", value_parser = ["train", "val", "test"])]
    pub split: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `taskweave flatness`.
#[derive(clap::Args)]
pub struct FlatnessArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Perturbation size relative to the norm of the shared parameters.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub radius: f64,
    /// Number of random directions.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Split whose loss is measured.
    #[arg(long, default_value = "train", value_parser = ["train", "val", "test"])]
    pub split: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Extra plugin directories.
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave sample`.
#[derive(clap::Args)]
pub struct SampleArgs {
    /// The run directory of a diffusion pipeline.
    pub run_dir: PathBuf,
    /// Number of samples.
    #[arg(long = "n", default_value_t = 2000)]
    pub count: usize,
    /// Where the samples go (safetensors: `samples`).
    #[arg(long)]
    pub out: PathBuf,
    /// The sampler.
    #[arg(long, value_enum, default_value = "ancestral")]
    pub sampler: taskweave::diffusion::sampler::Sampler,
    /// DDIM's number of timesteps (default 50, or all of a shorter schedule; only with --sampler ddim).
    #[arg(long)]
    pub ddim_steps: Option<usize>,
    /// Seed of the sampler's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep each step's predicted clean sample in [−1, 1] (the pixel range of image data kinds).
    #[arg(long)]
    pub clip: bool,
    /// Also draw the samples into a PNG: 2-D points beside the test samples, or a grid of images.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Extra plugin directories.
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave affinity`.
#[derive(clap::Args)]
pub struct AffinityArgs {
    /// The run directory of a diffusion pipeline.
    pub run_dir: PathBuf,
    /// Number of timesteps scored, evenly spaced over 1..=T (the rest take their nearest one's scores).
    #[arg(long, default_value_t = 100)]
    pub timesteps: usize,
    /// Training samples the gradients are taken on.
    #[arg(long, default_value_t = 256)]
    pub rows: usize,
    /// Where the scores go (safetensors: `tas` [T, T], `tas_grid` [n, n], `timesteps` [n]).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw the scored timesteps' scores as a heat map PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Extra plugin directories.
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave toy cagrad`.
#[derive(clap::Args)]
pub struct CagradArgs {
    /// A weighting (repeatable; a name or a table like '{kind="cagrad", c=0.5}').
    /// Default: ew, mgda, pcgrad, cagrad (c = 0.5, as the paper), imtl-g, nash-mtl, uw, dwa, and rlw when loaded.
    #[arg(long = "weighting", value_name = "METHOD")]
    pub weightings: Vec<String>,
    /// Adam steps per trajectory.
    #[arg(long, default_value_t = 100_000)]
    pub steps: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Scale of the first objective (1 in CAGrad's toy, 0.1 in Nash-MTL's and FAMO's).
    #[arg(long, default_value_t = 1.0)]
    pub f1_scale: f64,
    /// Output PNG.
    #[arg(long, default_value = "cagrad-toy.png")]
    pub out: PathBuf,
    /// Extra plugin directory (repeatable; default: ./plugins when it exists).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave call weighting`.
#[derive(clap::Args)]
pub struct WeightingArgs {
    /// The weighting (`taskweave plugins list` shows them).
    pub name: String,
    /// Safetensors file holding `grads`.
    #[arg(long)]
    pub grads: PathBuf,
    /// Safetensors file holding `losses` (default: 1 for every task).
    #[arg(long)]
    pub losses: Option<PathBuf>,
    /// Override a config value of the weighting: key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Seed of the weighting's randomness.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The step number the weighting sees.
    #[arg(long, default_value_t = 0)]
    pub step: u64,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Extra plugin directory (repeatable; default: ./plugins when it exists).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave call fusion`.
#[derive(clap::Args)]
pub struct FusionArgs {
    /// The fusion (`taskweave plugins list` shows them).
    pub name: String,
    /// Safetensors file holding `large`, `small` and `experts`.
    #[arg(long)]
    pub logits: PathBuf,
    /// Override a config value of the fusion: key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Extra plugin directory (repeatable; default: ./plugins when it exists).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

/// `taskweave call grouping`.
#[derive(clap::Args)]
pub struct GroupingArgs {
    /// The grouping (`taskweave plugins list` shows them).
    pub name: String,
    /// Number of tasks to partition.
    #[arg(long)]
    pub tasks: usize,
    /// Safetensors file of named signals (for example `snr` [T], `tas` [T, T]).
    #[arg(long)]
    pub signals: Option<PathBuf>,
    /// Adds the signal `snr` [T] of this diffusion noise schedule over
    /// `--tasks` timesteps (linear: DDPM's; cosine: improved DDPM's).
    #[arg(long, value_enum)]
    pub schedule: Option<taskweave::noise::NoiseSchedule>,
    /// Also draws the signal `snr` over the timesteps, one colour per group,
    /// into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Override a config value of the grouping: key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Extra plugin directory (repeatable; default: ./plugins when it exists).
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}
