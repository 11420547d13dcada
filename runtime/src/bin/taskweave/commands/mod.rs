//! One file per command. Each writes its results to `out` (standard output)
//! and returns; logs and errors go to standard error through `main`.

mod affinity;
mod authoring;
mod call;
mod flatness;
mod gpu_info;
mod lm;
mod plugins;
mod preview;
mod sample;
mod stats;
mod toy;
mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::{Config, Error, Runtime};

use crate::args::{CallCommand, Cli, Command, LmCommand, PluginCommand, ToyCommand};
use crate::output::Failure;

/// What every command may need from the global flags.
pub struct Env {
    /// `-q`: warnings only, no progress bar.
    pub quiet: bool,
    /// `--allow-insecure-plugins`.
    pub allow_insecure_plugins: bool,
}

impl Env {
    /// A runtime over the plugin directories of TASKWEAVE_PLUGIN_PATH
    /// (colon-separated) and `extra`.
    fn runtime(&self, extra: &[PathBuf]) -> Runtime {
        let path = std::env::var_os("TASKWEAVE_PLUGIN_PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty());
        self.runtime_over(dirs.chain(extra.iter().cloned()))
    }

    /// A runtime over `dirs` alone (and the built-ins), without TASKWEAVE_PLUGIN_PATH.
    fn runtime_without_path(&self, dirs: &[PathBuf]) -> Runtime {
        self.runtime_over(dirs.iter().cloned())
    }

    fn runtime_over(&self, dirs: impl Iterator<Item = PathBuf>) -> Runtime {
        let mut config = Config::new();
        config.allow_insecure_plugins(self.allow_insecure_plugins);
        for dir in dirs {
            config.plugin_dir(dir);
        }
        Runtime::new(&config)
    }
}

/// Runs the command `cli` names.
pub fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let env = Env {
        quiet: cli.quiet,
        allow_insecure_plugins: cli.allow_insecure_plugins,
    };
    let world = taskweave::dist::world();
    if world.is_parallel() {
        return match cli.command {
            Command::Run { .. } | Command::Lm { .. } | Command::Resume { .. } => {
                // Rank 0 reports; the other ranks' copies of the report go nowhere.
                let out: &mut dyn Write = match world.is_root() {
                    true => out,
                    false => &mut std::io::sink(),
                };
                run_command(cli.command, &env, out)
            }
            _ => Err(Error::Input(format!(
                "this process is one of {} MPI ranks: only `run`, `resume` and `lm train` train \
                 data-parallel; run other commands without mpirun",
                world.size()
            ))
            .into()),
        };
    }
    // The commands that train checkpoint on Ctrl-C; every other keeps its default.
    if matches!(
        cli.command,
        Command::Run { .. }
            | Command::Resume { .. }
            | Command::Baselines(_)
            | Command::Lm {
                command: LmCommand::Train { .. }
            }
    ) {
        taskweave::run::interrupt::install();
    }
    run_command(cli.command, &env, out)
}

fn run_command(command: Command, env: &Env, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        Command::Plugin { command } => match command {
            PluginCommand::List { dirs, json } => plugins::list(env, dirs, json, out),
            PluginCommand::Show { name, dirs, json } => plugins::show(env, &name, dirs, json, out),
            PluginCommand::New(args) => authoring::new(env, &args, out),
            PluginCommand::Build(args) => authoring::build(env, &args, out),
        },
        Command::Validate(args) => train::validate(env, &args, out),
        Command::Run {
            pipeline,
            print_config,
            overwrite,
        } => train::run(env, &pipeline, print_config, overwrite, out),
        Command::Lm {
            command:
                LmCommand::Train {
                    pipeline,
                    overwrite,
                },
        } => train::lm(env, &pipeline, overwrite, out),
        Command::Decode(args) => lm::decode(env, &args, out),
        Command::EvalLm {
            pipeline,
            json,
            plot,
        } => lm::eval(env, &pipeline, json, plot.as_deref(), out),
        Command::Resume { run_dir, plugins } => train::resume(env, &run_dir, &plugins, out),
        Command::Baselines(args) => train::baselines(env, &args, out),
        Command::Flatness(args) => flatness::run(env, &args, out),
        Command::Preview(args) => preview::run(env, &args, out),
        Command::Stats(args) => stats::run(env, &args, out),
        Command::Sample(args) => sample::run(env, &args, out),
        Command::Affinity(args) => affinity::run(env, &args, out),
        Command::Toy {
            command: ToyCommand::Cagrad(args),
        } => toy::cagrad(env, &args, out),
        Command::GpuInfo { json } => gpu_info::show(json, out),
        Command::Call {
            command: CallCommand::Weighting(args),
        } => call::weighting(env, &args, out),
        Command::Call {
            command: CallCommand::Grouping(args),
        } => call::grouping(env, &args, out),
        Command::Call {
            command: CallCommand::Fusion(args),
        } => call::fusion(env, &args, out),
    }
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

/// [`check_out`] for each of a command's output files `outs` (`(flag,
/// path)`), refusing two flags that name one file: one output would be lost.
fn check_outs(outs: &[(&str, &Path)], reads: &[&Path]) -> taskweave::Result<()> {
    for (k, (flag, out)) in outs.iter().enumerate() {
        if let Some((other, _)) = outs[..k].iter().find(|(_, o)| same_path(o, out)) {
            return Err(Error::Input(format!(
                "{other} and {flag} both name {}: one would overwrite the other; give each its own file",
                out.display()
            )));
        }
        check_out(out, reads)?;
    }
    Ok(())
}

/// Whether `a` and `b` are one file, existing or not (their folders resolved).
fn same_path(a: &Path, b: &Path) -> bool {
    let resolved = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.canonicalize()
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    a == b || resolved(a).is_some_and(|x| Some(x) == resolved(b))
}

/// Refuses an image output whose name promises another format (`x.svg`,
/// `x.jpg`): the file written is a PNG.
fn check_png(flag: &str, path: &Path) -> taskweave::Result<()> {
    match path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
    {
        Some(ext) if ext != "png" => Err(Error::Input(format!(
            "{flag} {}: the image written is a PNG; name it .png",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Refuses input files that are folders or devices before anything is read
/// (a device such as /dev/zero would be read until memory runs out).
fn check_inputs(inputs: &[(&str, &Path)]) -> taskweave::Result<()> {
    for (flag, path) in inputs {
        let kind = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => "a directory",
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                let t = meta.file_type();
                if t.is_char_device() || t.is_block_device() {
                    "a device"
                } else {
                    continue;
                }
            }
            // Reading names what is wrong.
            Err(_) => continue,
        };
        return Err(Error::Input(format!(
            "{flag} {}: it is {kind}; name a safetensors file",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses, before any work, an output file whose directory does not exist
/// or cannot be written, and an existing file that is, or lies inside, what
/// the command reads (`reads`: input files and run directories): writing it
/// would lose a pipeline file, a checkpoint or the input itself. A new file
/// inside a run directory is fine.
fn check_out(out: &Path, reads: &[&Path]) -> taskweave::Result<()> {
    let out_dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let problem = if out.is_dir() {
        "it is a directory; name a file".to_string()
    } else if out_dir.exists() && !out_dir.is_dir() {
        format!("{} is not a directory", out_dir.display())
    } else if !out_dir.is_dir() {
        format!("the directory {} does not exist", out_dir.display())
    } else if let Some(read) = overwritten(out, reads) {
        match read.is_dir() {
            // New files there are fine; an existing one may be the run's own.
            true => format!(
                "it exists inside {}, which this command reads, where a file may be the run's \
                 own (a checkpoint, its metrics): remove it first if it is yours, or write elsewhere",
                read.display()
            ),
            false => format!(
                "it is {}, which this command reads; name another file",
                read.display()
            ),
        }
    } else if let Err(e) = probe_writable(out_dir) {
        format!(
            "the directory {} is not writable ({})",
            out_dir.display(),
            taskweave_plugin_api::io_reason(&e)
        )
    } else {
        return Ok(());
    };
    Err(Error::Input(format!(
        "cannot write {}: {problem}",
        out.display()
    )))
}

/// Whether a file can be made in `dir`, tried with one that is removed
/// again: so that a long command fails at its start, not at its end.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".taskweave-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => std::fs::remove_file(&probe),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first of `reads` that the existing file `out` would overwrite,
/// comparing resolved paths (`..`, and links, which the write follows).
fn overwritten<'a>(out: &Path, reads: &[&'a Path]) -> Option<&'a Path> {
    let target = out.canonicalize().ok()?;
    reads.iter().copied().find(|read| {
        read.canonicalize()
            .is_ok_and(|read| target == read || target.starts_with(&read))
    })
}
