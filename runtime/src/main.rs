//! `taskweave`: the command line over the embedding API.
//!
//! Exit codes: 0 success, 1 failure during a run, 2 bad input (pipeline, data,
//! files, arguments). A panic is a bug: it is reported as one and exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use taskweave::logging::{self, Format};
use taskweave::{Config, Error, Runtime};

#[derive(Parser)]
#[command(
    name = "taskweave",
    version,
    about = "Run multi-task learning pipelines with method plugins"
)]
struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    /// Only warnings and errors; no progress bar.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List plugins and methods.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
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
    Flatness {
        /// The run directory.
        run_dir: PathBuf,
        /// Perturbation size relative to the norm of the shared parameters.
        #[arg(long, default_value_t = 0.05)]
        radius: f64,
        /// Number of random directions.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Split whose loss is measured.
        #[arg(long, default_value = "train", value_parser = ["train", "val", "test"])]
        split: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Extra plugin directories.
        #[arg(long = "plugins", value_name = "DIR")]
        plugins: Vec<PathBuf>,
    },
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
enum ToyCommand {
    /// The CAGrad paper's two-objective toy: each weighting's trajectories from the
    /// standard start points, drawn on the loss landscape into a PNG.
    Cagrad {
        /// A weighting (repeatable; a name or a table like '{kind="cagrad", c=0.5}').
        /// Default: ew, mgda, pcgrad, cagrad (c = 0.5, as the paper), imtl-g, nash-mtl, uw, dwa, and rlw when loaded.
        #[arg(long = "weighting", value_name = "METHOD")]
        weightings: Vec<String>,
        /// Adam steps per trajectory.
        #[arg(long, default_value_t = 100_000)]
        steps: u64,
        /// Adam's learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Scale of the first objective (1 in CAGrad's toy, 0.1 in Nash-MTL's and FAMO's).
        #[arg(long, default_value_t = 1.0)]
        f1_scale: f64,
        /// Output PNG.
        #[arg(long, default_value = "cagrad-toy.png")]
        out: PathBuf,
        /// Extra plugin directory (repeatable; default: ./plugins when it exists).
        #[arg(long = "plugins", value_name = "DIR")]
        plugins: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CallCommand {
    /// Run a weighting once: reads `grads` [T, P] (and `losses` [T]), writes `update` [P] and `weights` [T].
    Weighting {
        /// The weighting (`taskweave plugins list` shows them).
        name: String,
        /// Safetensors file holding `grads`.
        #[arg(long)]
        grads: PathBuf,
        /// Safetensors file holding `losses` (default: 1 for every task).
        #[arg(long)]
        losses: Option<PathBuf>,
        /// Override a config value of the weighting: key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Seed of the weighting's randomness.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The step number the weighting sees.
        #[arg(long, default_value_t = 0)]
        step: u64,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Extra plugin directory (repeatable; default: ./plugins when it exists).
        #[arg(long = "plugins", value_name = "DIR")]
        plugins: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Every method (built-in and from plugins) and every file that failed to load.
    List {
        /// Plugin directory (repeatable; default: ./plugins when it exists).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct PipelineArgs {
    /// The pipeline TOML file.
    pipeline: PathBuf,
    /// Override a value: dotted.key=value (repeatable; values are TOML, bare words are strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Extra plugin directory (repeatable).
    #[arg(long = "plugins", value_name = "DIR")]
    plugins: Vec<PathBuf>,
}

/// Plugin directories from TASKWEAVE_PLUGIN_PATH (colon-separated) and flags.
fn runtime(extra: &[PathBuf]) -> Runtime {
    let mut config = Config::new();
    if let Some(path) = std::env::var_os("TASKWEAVE_PLUGIN_PATH") {
        for dir in std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()) {
            config.plugin_dir(dir);
        }
    }
    for dir in extra {
        config.plugin_dir(dir);
    }
    Runtime::new(&config)
}

/// `dirs`, or `./plugins` when none are given and it exists (commands that
/// take no pipeline have no `[plugins]` table to name their directories).
fn dirs_or_default(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if dirs.is_empty() && Path::new("plugins").is_dir() {
        vec![PathBuf::from("plugins")]
    } else {
        dirs
    }
}

fn plugins_list(dirs: Vec<PathBuf>, json: bool) -> Result<(), Error> {
    let runtime = runtime(&dirs_or_default(dirs));
    let registry = runtime.registry();
    let compat = taskweave_plugin_api::module::Compat::current();
    let mut out = std::io::stdout().lock();
    if json {
        let methods: Vec<_> = registry
            .entries()
            .map(|e| {
                serde_json::json!({
                    "name": e.manifest.name.as_str(), "role": e.manifest.role.name(),
                    "version": e.manifest.version.as_str(), "description": e.manifest.description.as_str(),
                    "source": e.origin.to_string(),
                })
            })
            .collect();
        let problems: Vec<_> = registry
            .problems()
            .iter()
            .map(|p| serde_json::json!({"path": p.path.display().to_string(), "reason": p.reason}))
            .collect();
        let conflicts: Vec<_> = registry
            .conflicts()
            .map(|(name, origins)| {
                serde_json::json!({"name": name, "sources": origins.iter().map(|o| o.to_string()).collect::<Vec<_>>()})
            })
            .collect();
        let doc = serde_json::json!({
            "plugin_abi": compat.abi, "tch": compat.tch, "libtorch": compat.libtorch,
            "methods": methods, "problems": problems, "conflicts": conflicts,
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        return Ok(());
    }
    let _ = writeln!(
        out,
        "plugin ABI {} (tch {}, libtorch {})\n",
        compat.abi, compat.tch, compat.libtorch
    );
    let width = registry
        .entries()
        .map(|e| e.manifest.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:12}  {:8}  SOURCE",
        "NAME", "ROLE", "VERSION"
    );
    for e in registry.entries() {
        let m = &e.manifest;
        let _ = writeln!(
            out,
            "{:width$}  {:12}  {:8}  {}",
            m.name,
            m.role.name(),
            m.version,
            e.origin
        );
    }
    for (name, origins) in registry.conflicts() {
        let list: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            out,
            "{name:width$}  unusable: provided by {}",
            list.join(" and ")
        );
    }
    if !registry.problems().is_empty() {
        let _ = writeln!(out, "\nnot loaded:");
        for p in registry.problems() {
            let _ = writeln!(out, "  {}: {}", p.path.display(), p.reason);
        }
    }
    Ok(())
}

/// A `--weighting` value: a bare name, or an inline TOML table.
fn toy_table(text: &str) -> Result<serde_json::Value, Error> {
    if !text.trim_start().starts_with('{') {
        return Ok(serde_json::json!({ "kind": text.trim() }));
    }
    let source = format!("w = {text}");
    let doc: toml_edit::DocumentMut = source
        .parse()
        .map_err(|e| Error::Input(format!("--weighting {text}: not a TOML table: {e}")))?;
    let mut table = serde_json::Map::new();
    for (k, v) in doc["w"]
        .as_inline_table()
        .into_iter()
        .flat_map(|t| t.iter())
    {
        let value = match v {
            toml_edit::Value::String(s) => serde_json::json!(s.value()),
            toml_edit::Value::Integer(i) => serde_json::json!(i.value()),
            toml_edit::Value::Float(f) => serde_json::json!(f.value()),
            toml_edit::Value::Boolean(b) => serde_json::json!(b.value()),
            other => {
                return Err(Error::Input(format!(
                    "--weighting {text}: unsupported value {other}"
                )))
            }
        };
        table.insert(k.to_string(), value);
    }
    Ok(serde_json::Value::Object(table))
}

/// `taskweave gpu-info`: what CUDA looks like from here. Never fails: a machine
/// without a GPU gets a clear "not available" with the reason.
fn gpu_info(json: bool) {
    let compat = taskweave_plugin_api::module::Compat::current();
    let nvrtc = taskweave_kernels::compile::nvrtc_version()
        .map(|(a, b)| format!("{a}.{b}"))
        .map_err(|e| e.to_string());
    let devices: Result<Vec<taskweave_kernels::CudaInfo>, String> =
        match taskweave::device::cuda_unavailable() {
            Some(why) => Err(why),
            None => (0..taskweave_kernels::device_count().unwrap_or(0))
                .map(taskweave_kernels::cuda_info)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string()),
        };
    if json {
        let devices_json = match &devices {
            Ok(list) => serde_json::json!(list
                .iter()
                .map(|d| serde_json::json!({
                    "ordinal": d.ordinal, "name": d.name,
                    "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                    "multiprocessors": d.sm_count, "total_memory": d.total_memory, "free_memory": d.free_memory,
                    "driver_cuda_version": format!("{}.{}", d.driver_version.0, d.driver_version.1),
                    "kernel_stream": format!("{:?}", d.stream),
                }))
                .collect::<Vec<_>>()),
            Err(_) => serde_json::json!([]),
        };
        let doc = serde_json::json!({
            "libtorch": compat.libtorch, "tch": compat.tch,
            "cuda": devices.as_ref().err().map_or(serde_json::json!("available"), |why| serde_json::json!(format!("not available: {why}"))),
            "libtorch_cuda_loaded": devices.is_ok(),
            "nvrtc": match &nvrtc { Ok(v) => serde_json::json!(v), Err(e) => serde_json::json!(format!("not found: {e}")) },
            "devices": devices_json,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    println!("libtorch {} (tch {})", compat.libtorch, compat.tch);
    match &nvrtc {
        Ok(v) => println!("NVRTC {v} (kernels compile at first use)"),
        Err(e) => println!("NVRTC not found: {e}"),
    }
    match devices {
        Err(why) => println!(
            "CUDA not available: {why}
runs with device = \"auto\" use the CPU"
        ),
        Ok(list) => {
            println!("libtorch_cuda loaded; {} CUDA device(s)", list.len());
            for d in list {
                let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
                println!(
                    "  cuda:{}  {}  compute {}.{}  {} SMs  {:.1} GiB total, {:.1} GiB free  driver CUDA {}.{}  kernels on {:?}",
                    d.ordinal, d.name, d.compute_capability.0, d.compute_capability.1, d.sm_count,
                    gib(d.total_memory), gib(d.free_memory), d.driver_version.0, d.driver_version.1, d.stream
                );
            }
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Plugins {
            command: PluginsCommand::List { dirs, json },
        } => plugins_list(dirs, json),
        Command::Validate(args) => {
            let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
            println!(
                "{}: ok (run `{}`)",
                args.pipeline.display(),
                pipeline.name()
            );
            Ok(())
        }
        Command::Run {
            pipeline: args,
            print_config,
            overwrite,
        } => {
            let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
            if print_config {
                print!("{}", pipeline.resolved_toml());
                return Ok(());
            }
            let summary = pipeline.train(overwrite, cli.quiet)?;
            println!("{}", taskweave::train::run::table(&summary));
            println!("run directory: {}", summary.dir.display());
            Ok(())
        }
        Command::Resume { run_dir, plugins } => {
            let summary = runtime(&plugins).resume(&run_dir, cli.quiet)?;
            println!("{}", taskweave::train::run::table(&summary));
            println!("run directory: {}", summary.dir.display());
            Ok(())
        }
        Command::Call {
            command:
                CallCommand::Weighting {
                    name,
                    grads,
                    losses,
                    sets,
                    seed,
                    step,
                    out,
                    plugins,
                },
        } => {
            let call = taskweave::call::WeightingCall {
                name: &name,
                sets: &sets,
                grads: &grads,
                losses: losses.as_deref(),
                seed,
                step,
                out: &out,
            };
            taskweave::call::weighting(&runtime(&dirs_or_default(plugins)), &call)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Flatness {
            run_dir,
            radius,
            samples,
            split,
            json,
            plugins,
        } => {
            let f = runtime(&plugins)
                .open_run(&run_dir)?
                .flatness(&run_dir, &split, radius, samples)?;
            if json {
                let doc = serde_json::json!({"radius": f.radius, "samples": f.samples, "split": split,
                    "tasks": f.tasks, "base": f.base, "perturbed": f.perturbed, "mean_increase": f.mean_increase()});
                println!("{doc}");
            } else {
                println!(
                    "{split} loss under random perturbations of relative size {} ({} samples)",
                    f.radius, f.samples
                );
                let width = f.tasks.iter().map(String::len).max().unwrap_or(4).max(4);
                println!(
                    "{:width$}  {:>12}  {:>12}  {:>12}",
                    "task", "trained", "perturbed", "increase"
                );
                for ((t, b), p) in f.tasks.iter().zip(&f.base).zip(&f.perturbed) {
                    println!("{t:width$}  {b:>12.5}  {p:>12.5}  {:>12.5}", p - b);
                }
                println!("mean increase: {:.5}", f.mean_increase());
            }
            Ok(())
        }
        Command::Toy {
            command:
                ToyCommand::Cagrad {
                    weightings,
                    steps,
                    lr,
                    f1_scale,
                    out,
                    plugins,
                },
        } => {
            let runtime = runtime(&dirs_or_default(plugins));
            let tables: Vec<serde_json::Value> = if weightings.is_empty() {
                let mut names = vec!["ew", "mgda", "pcgrad", "imtl-g", "nash-mtl", "uw", "dwa"];
                if runtime
                    .registry()
                    .entries()
                    .any(|e| e.manifest.name.as_str() == "rlw")
                {
                    names.push("rlw");
                }
                let mut tables: Vec<serde_json::Value> = names
                    .iter()
                    .map(|n| serde_json::json!({"kind": n}))
                    .collect();
                tables.insert(
                    3,
                    serde_json::json!({"kind": "cagrad", "c": 0.5, "rescale": 2}),
                );
                tables
            } else {
                weightings
                    .iter()
                    .map(|w| toy_table(w))
                    .collect::<Result<_, _>>()?
            };
            let options = taskweave::toy::ToyOptions {
                steps,
                lr,
                f1_scale,
                ..Default::default()
            };
            let trajectories = taskweave::toy::cagrad_toy(&runtime, &tables, &options)?;
            std::fs::write(&out, taskweave::toy::draw(&trajectories)).map_err(|e| Error::Io {
                path: out.clone(),
                source: e,
            })?;
            for t in &trajectories {
                println!(
                    "{:32} from ({:5.1}, {:5.1}) to ({:6.2}, {:6.2})  f1 {:8.4}  f2 {:8.4}",
                    t.weighting,
                    t.start.0,
                    t.start.1,
                    t.points.last().map_or(f64::NAN, |p| p.0),
                    t.points.last().map_or(f64::NAN, |p| p.1),
                    t.final_losses.0,
                    t.final_losses.1
                );
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::GpuInfo { json } => {
            gpu_info(json);
            Ok(())
        }
        Command::Baselines(args) => {
            let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
            let path = pipeline.baselines(cli.quiet)?;
            println!("single-task baselines stored in {}", path.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error (a bug in taskweave, please report it): {info}");
    }));
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Human => Format::Human,
        LogFormat::Json => Format::Json,
    };
    logging::init(format, if cli.quiet { "warn" } else { "info" });
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            let text = err.to_string();
            if text.starts_with("error:") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(err.exit_code() as u8)
        }
        Err(_) => ExitCode::from(1),
    }
}
