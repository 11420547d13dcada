//! One file per command. Each writes its results to `out` (standard output)
//! and returns; logs and errors go to standard error through `main`.

mod call;
mod flatness;
mod gpu_info;
mod plugins;
mod toy;
mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::{Config, Runtime};

use crate::args::{CallCommand, Cli, Command, PluginsCommand, ToyCommand};
use crate::output::Failure;

/// Runs the command `cli` names.
pub fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Plugins {
            command: PluginsCommand::List { dirs, json },
        } => plugins::list(dirs, json, out),
        Command::Validate(args) => train::validate(&args, out),
        Command::Run {
            pipeline,
            print_config,
            overwrite,
        } => train::run(&pipeline, print_config, overwrite, quiet, out),
        Command::Resume { run_dir, plugins } => train::resume(&run_dir, &plugins, quiet, out),
        Command::Baselines(args) => train::baselines(&args, quiet, out),
        Command::Flatness(args) => flatness::run(&args, out),
        Command::Toy {
            command: ToyCommand::Cagrad(args),
        } => toy::cagrad(&args, out),
        Command::GpuInfo { json } => gpu_info::show(json, out),
        Command::Call {
            command: CallCommand::Weighting(args),
        } => call::weighting(&args, out),
    }
}

/// A runtime over the plugin directories of TASKWEAVE_PLUGIN_PATH
/// (colon-separated) and `extra`.
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

/// Writes `value` as pretty JSON and a newline.
fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), Failure> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
