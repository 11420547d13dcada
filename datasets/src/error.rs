//! The one error type of the data kinds: each variant says where (file, row,
//! column, or `[data]` key) and what is wrong; every one is bad input except
//! [`Error::Torch`].

use std::path::PathBuf;

/// Why a data set cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be read at all.
    #[error("cannot read data file {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason, and what to do.
        reason: String,
    },
    /// A file's structure is wrong: no header, ragged rows, no data.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// One value in a file is unusable.
    #[error("{}: row {row}, column `{column}`: {message}", path.display())]
    Cell {
        /// The file.
        path: PathBuf,
        /// The row's line number in the file (the header is line 1).
        row: u64,
        /// The column's name.
        column: String,
        /// What is wrong with the value.
        message: String,
    },
    /// A `[data]` key cannot be used with these data.
    #[error("data.{key}: {message}")]
    Config {
        /// The key inside `[data]`, dotted.
        key: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// libtorch failed while building the tensors.
    #[error("{0}")]
    Torch(String),
}

impl Error {
    /// A problem with the `[data]` key `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Whether the input is at fault (a bad file or key), rather than libtorch.
    pub fn is_input(&self) -> bool {
        !matches!(self, Error::Torch(_))
    }
}

impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Error {
        // plugin-api's conversion cuts libtorch's C++ stack trace.
        Error::Torch(taskweave_plugin_api::Error::from(err).to_string())
    }
}

/// The file a data kind's `path` key names cannot be read: the OS's reason,
/// and where relative paths start.
pub(crate) fn unreadable(path: &std::path::Path, e: &std::io::Error) -> Error {
    Error::Unreadable {
        path: path.to_path_buf(),
        reason: format!(
            "{} (data.path is relative to the pipeline file)",
            taskweave_plugin_api::io_reason(e)
        ),
    }
}

/// Checks, without reading it, that `path` (what the `path` key names) is a
/// regular file; errors are on the key, so `validate` points at it.
pub(crate) fn check_data_file(path: &std::path::Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Error::config(
            "path",
            format!("data file {} is not a regular file", path.display()),
        )),
        Err(e) => Err(Error::config("path", unreadable(path, &e).to_string())),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
