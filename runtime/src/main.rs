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
#[command(name = "taskweave", version, about = "Run multi-task learning pipelines with method plugins")]
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

fn plugins_list(dirs: Vec<PathBuf>, json: bool) -> Result<(), Error> {
    let dirs = if dirs.is_empty() && Path::new("plugins").is_dir() { vec![PathBuf::from("plugins")] } else { dirs };
    let runtime = runtime(&dirs);
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
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    let _ = writeln!(out, "plugin ABI {} (tch {}, libtorch {})\n", compat.abi, compat.tch, compat.libtorch);
    let width = registry.entries().map(|e| e.manifest.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "{:width$}  {:12}  {:8}  SOURCE", "NAME", "ROLE", "VERSION");
    for e in registry.entries() {
        let m = &e.manifest;
        let _ = writeln!(out, "{:width$}  {:12}  {:8}  {}", m.name, m.role.name(), m.version, e.origin);
    }
    for (name, origins) in registry.conflicts() {
        let list: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(out, "{name:width$}  unusable: provided by {}", list.join(" and "));
    }
    if !registry.problems().is_empty() {
        let _ = writeln!(out, "\nnot loaded:");
        for p in registry.problems() {
            let _ = writeln!(out, "  {}: {}", p.path.display(), p.reason);
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Plugins { command: PluginsCommand::List { dirs, json } } => plugins_list(dirs, json),
        Command::Validate(args) => {
            let pipeline = runtime(&args.plugins).pipeline_from_file(&args.pipeline, &args.sets)?;
            println!("{}: ok (run `{}`)", args.pipeline.display(), pipeline.name());
            Ok(())
        }
        Command::Run { pipeline: args, print_config, overwrite } => {
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
