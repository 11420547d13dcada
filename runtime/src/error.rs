//! The runtime's errors. Each says what went wrong and what to do; the CLI maps
//! them to exit codes: 2 for bad input (config, data, files), 1 for failures
//! during a run.

use std::path::PathBuf;

/// Any error the runtime returns. Non-exhaustive: later versions may add
/// kinds, so a `match` needs a `_` arm ([`Error::exit_code`] classifies any).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline is invalid: every problem found, rendered with locations.
    #[error("{rendered}")]
    Config {
        /// The problems, each with where it was written.
        diagnostics: Vec<Located>,
        /// Their rendering against the pipeline text.
        rendered: String,
    },
    /// Other bad input: unreadable files, bad data, unusable arguments.
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{}: {}", path.display(), taskweave_plugin_api::io_reason(source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data cannot be loaded; the error names the file, row and column,
    /// or the `[data]` key.
    #[error(transparent)]
    Data(#[from] taskweave_datasets::Error),
    /// A method (built-in or plugin) failed; the message names it.
    #[error("{0}")]
    Method(String),
    /// A loss or the update became NaN or infinite.
    #[error("step {step}: {what}; the run stops here, its checkpoints so far kept. {}", nonfinite_advice(*step))]
    NonFinite {
        /// The training step.
        step: u64,
        /// What was not finite, naming the task.
        what: String,
    },
    /// Anything else that failed during a run.
    #[error("{0}")]
    Run(String),
    /// Ctrl-C, SIGTERM or a [`StopHandle`](crate::run::StopHandle) stopped a
    /// run, which checkpointed the step it reached.
    #[error("interrupted at step {step}, checkpointed in {}; {again} continues from there", dir.display())]
    Interrupted {
        /// The signal that stopped it (SIGINT or SIGTERM); `None` for a
        /// `StopHandle`.
        signal: Option<i32>,
        /// The step checkpointed.
        step: u64,
        /// The run directory.
        dir: PathBuf,
        /// The command that continues (`taskweave resume DIR`, in backticks).
        again: String,
    },
}

/// What to change after a non-finite step: at step 0 no update has been
/// taken, so the step sizes cannot be the cause.
fn nonfinite_advice(step: u64) -> &'static str {
    match step {
        0 => {
            "No update has been taken yet, so the learning rate is not the cause: look at \
              the data (inputs or labels too large for float32 arithmetic) and at the methods' \
              settings in train.strategy and train.weighting (a radius, a scale, a coefficient)"
        }
        _ => {
            "Lower the learning rate (or a method's own step sizes, such as Meta-RTL's \
              inner_lr and meta_lr), or set train.on_nonfinite = \"skip-step\" to skip such steps"
        }
    }
}

impl Error {
    /// The process exit code for this error: 2 for bad input, 130 for a run
    /// Ctrl-C (or a `StopHandle`) stopped, 143 for SIGTERM, 1 for run failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Input(_) => 2,
            Error::Data(e) if e.is_input() => 2,
            // What a shell reports for a process that the signal ended.
            Error::Interrupted { signal, .. } => 128 + signal.unwrap_or(libc::SIGINT),
            _ => 1,
        }
    }

    /// Whether this is libtorch failing to allocate (its words on a GPU and
    /// on the CPU).
    pub fn is_out_of_memory(&self) -> bool {
        let message = self.to_string();
        message.contains("out of memory") || message.contains("can't allocate memory")
    }

    /// An input error with `context` before its message (`train.init: ...`),
    /// saying where the bad input was met, unless the message begins with it
    /// already; any other error unchanged.
    pub fn input_context(self, context: impl std::fmt::Display) -> Error {
        let context = format!("{context}: ");
        match self {
            Error::Input(message) if message.starts_with(&context) => Error::Input(message),
            Error::Input(message) => Error::Input(format!("{context}{message}")),
            other => other,
        }
    }

    /// An I/O error on `path`: the user's to fix (exit 2) where the
    /// permissions or a read-only file system refused it.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                Error::Input(format!(
                    "{}: {}; check its permissions, or use another path",
                    path.display(),
                    taskweave_plugin_api::io_reason(&source)
                ))
            }
            _ => Error::Io { path, source },
        }
    }
}

impl From<taskweave_plugin_api::Error> for Error {
    fn from(err: taskweave_plugin_api::Error) -> Error {
        if err.is_input() {
            Error::Input(err.to_string())
        } else {
            Error::Method(err.to_string())
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Error {
        // plugin-api's conversion is the one place that cuts C++ stack traces.
        let message = taskweave_plugin_api::Error::from(err).to_string();
        Error::Run(if message.starts_with("libtorch") {
            message
        } else {
            format!("libtorch: {message}")
        })
    }
}

/// A config problem and where it was written.
#[derive(Clone, Debug)]
pub struct Located {
    /// The dotted path of the value at fault (empty for the whole file).
    pub path: String,
    /// `file:line:col` or `--set ...`; `None` for generated values.
    pub location: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn a_path_the_permissions_refuse_is_the_users_to_fix() {
        for kind in [ErrorKind::PermissionDenied, ErrorKind::ReadOnlyFilesystem] {
            let e = Error::io("/sys/x.png", std::io::Error::from(kind));
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().starts_with("/sys/x.png: "), "{e}");
            assert!(e.to_string().contains("check its permissions"), "{e}");
        }
        let e = Error::io("/x", std::io::Error::from(ErrorKind::UnexpectedEof));
        assert_eq!(e.exit_code(), 1, "{e}");
    }
}
