//! `taskweave`: the command line over the embedding API.
//!
//! Exit codes: 0 success, 1 failure during a run, 2 bad input (pipeline, data,
//! files, arguments), 130 / 143 a run that Ctrl-C / SIGTERM stopped after
//! checkpointing. A panic is a bug: it is reported as one and exits 1.
//! A closed standard output (`taskweave run ... | head`) ends a command quietly
//! with its own status; standard error that cannot be written is ignored.

mod args;
mod commands;
mod output;
mod toy;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use taskweave::logging::{self, Format};
use taskweave::Error;

use crate::args::{Cli, LogFormat};
use crate::output::Failure;

/// Reports `err` on stderr: rendered for people, or as one JSON log record
/// (with every diagnostic as its own record) under `--log-format json`.
fn report(err: &Error, format: Format) {
    let world = taskweave::dist::world();
    // Under mpirun every rank reports its own error: say which.
    let rank = world.is_parallel().then_some(world.rank());
    if format == Format::Json {
        if let Error::Config { diagnostics, .. } = err {
            for d in diagnostics {
                tracing::error!(
                    path = %d.path,
                    location = d.location.as_deref().unwrap_or(""),
                    help = d.help.as_deref().unwrap_or(""),
                    rank,
                    "{}",
                    d.message
                );
            }
        }
        tracing::error!(exit_code = err.exit_code(), rank, "{err}");
        return;
    }
    // Rendered diagnostics begin with `error:` themselves.
    let text = match err {
        Error::Config { .. } => err.to_string(),
        _ => format!("error: {err}"),
    };
    let mut text: String = match rank {
        Some(rank) => text
            .lines()
            .map(|line| match line.strip_prefix("error:") {
                Some(rest) => format!("error (rank {rank}):{rest}\n"),
                None => format!("{line}\n"),
            })
            .collect(),
        None => text,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    // One write, so that the lines of two ranks sharing a terminal do not interleave.
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    // The hook must not panic itself (a full stderr would abort the process).
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(
            std::io::stderr(),
            "internal error (a bug in taskweave, please report it): {info}"
        );
    }));
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Human => Format::Human,
        LogFormat::Json => Format::Json,
    };
    // Under mpirun: join the other ranks (MPI is finalised when `_ranks` drops).
    let _ranks = match taskweave::dist::init() {
        Ok(session) => session,
        Err(err) => {
            logging::init(format, "warn");
            report(&err, format);
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    let world = taskweave::dist::world();
    // The other ranks of a data-parallel run would repeat rank 0's logs and
    // warnings (they come from the same pipeline and data): errors only, as
    // PyTorch Lightning's rank-zero logging does. RUST_LOG still applies to all.
    let level = match (world.is_root(), cli.quiet) {
        (false, _) => "error",
        (true, true) => "warn",
        (true, false) => "info",
    };
    logging::init(format, level);
    // Before any command allocates (and after logging, which reports a user's own setting).
    taskweave::malloc::tune();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = std::io::stdout().lock();
        commands::dispatch(cli, &mut out).and_then(|()| Ok(out.flush()?))
    }));
    let code = exit_code(outcome, format);
    if world.is_parallel() && code != 0 {
        // A rank that fails takes the whole job down: the others may be
        // waiting for it in a collective operation.
        taskweave::dist::abort(code as i32);
    }
    ExitCode::from(code)
}

/// The exit status of a command's outcome, reporting its error.
fn exit_code(outcome: std::thread::Result<Result<(), Failure>>, format: Format) -> u8 {
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(Failure::Taskweave(err))) => {
            report(&err, format);
            err.exit_code() as u8
        }
        // The reader went away (`| head`): the command itself succeeded.
        Ok(Err(Failure::Output(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Ok(Err(Failure::Output(e))) => {
            let err = Error::Run(format!(
                "cannot write to standard output: {}",
                taskweave_plugin_api::io_reason(&e)
            ));
            report(&err, format);
            1
        }
        Err(_) => 1,
    }
}
