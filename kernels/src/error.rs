//! The crate's one error type.
use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages are lower-case and
/// say what was expected and what was found; none of these is a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable CUDA device: no driver library, no device, or libtorch without CUDA.
    #[error("no CUDA device: {reason}")]
    NoCuda {
        /// What was missing.
        reason: String,
    },
    /// NVRTC (the runtime compiler) could not be loaded.
    #[error("nvrtc unavailable: {reason}")]
    NoNvrtc {
        /// Where it was looked for.
        reason: String,
    },
    /// A tensor has the wrong shape.
    #[error("{op}: {what} shape, expected {expected}, got {got:?}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// Which argument.
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape found.
        got: Vec<i64>,
    },
    /// A tensor has an unsupported or inconsistent dtype.
    #[error("{op}: {what} dtype, expected {expected}, got {got:?}")]
    DType {
        /// The operation.
        op: &'static str,
        /// Which argument.
        what: String,
        /// The expected dtype(s), in words.
        expected: String,
        /// The dtype found.
        got: tch::Kind,
    },
    /// Tensors that must share a device do not.
    #[error("{op}: {what} device, expected {expected:?}, got {got:?}")]
    Device {
        /// The operation.
        op: &'static str,
        /// Which argument.
        what: String,
        /// The device of the first tensor.
        expected: tch::Device,
        /// The device found.
        got: tch::Device,
    },
    /// A non-tensor argument is out of range.
    #[error("{op}: {what}, expected {expected}, got {got}")]
    Argument {
        /// The operation.
        op: &'static str,
        /// Which argument.
        what: String,
        /// The valid range, in words.
        expected: String,
        /// The value found.
        got: String,
    },
    /// NVRTC rejected a kernel module.
    #[error("compiling kernel module {module} with nvrtc ({options}): {log}")]
    Compile {
        /// The module (`sam`, `gramian`, ...).
        module: &'static str,
        /// The NVRTC options used.
        options: String,
        /// NVRTC's log.
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("cuda driver: {context}: {source}")]
    Driver {
        /// What was being done.
        context: String,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The on-disk kernel cache could not be read or written.
    #[error("kernel cache at {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The c10 shim library is missing or failed.
    #[error("torch shim: {0}")]
    Shim(String),
    /// An NCCL call failed (the library itself missing is [`Error::NoCuda`]).
    #[error("nccl: {0}")]
    Nccl(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn driver(
        context: impl Into<String>,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
        let context = context.into();
        move |source| Error::Driver { context, source }
    }

    pub(crate) fn argument(
        op: &'static str,
        what: impl Into<String>,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Error {
        Error::Argument {
            op,
            what: what.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}
