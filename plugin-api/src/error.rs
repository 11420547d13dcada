//! The one error type that crosses the boundary, and the guard that produces it.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RErr, ROk, RResult, RString};
use abi_stable::StableAbi;

/// An error from a method or from the host: a message, stable across the ABI.
///
/// Any `std::error::Error` (a `tch::TchError`, an I/O error, a JSON error)
/// converts into it with `?`. It deliberately does not implement
/// `std::error::Error` itself, so that blanket conversion stays possible.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct Error {
    message: RString,
    /// The caller's input is at fault (a config value, a signal, a file),
    /// not the method: the CLI exits 2 instead of 1.
    input: bool,
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string().into(),
            input: false,
        }
    }

    /// An error in what the method was given (its config, its signals or
    /// data), which the user must fix: the CLI exits 2 for it, as for any
    /// bad input. Returned by a constructor, it is shown at the method's
    /// table in the pipeline (`train.weighting`, `model.architecture`); a
    /// message that starts with a full dotted key (`train.strategy.inner_lr:
    /// ...`) points at that key instead.
    pub fn input(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string().into(),
            input: true,
        }
    }

    /// Whether this is an [`Error::input`] error.
    pub fn is_input(&self) -> bool {
        self.input
    }

    /// The message, without any prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what was being done: `"{context}: {message}"`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message).into(),
            input: self.input,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.message.as_str(), f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(err: E) -> Self {
        let mut message = without_cpp_frames(&err.to_string());
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&without_cpp_frames(&cause.to_string()));
            source = cause.source();
        }
        Error::msg(message)
    }
}

/// What an I/O error says, in words, without Rust's "(os error N)" suffix:
/// "No such file or directory".
pub fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// A libtorch error as a user should see it: tch's "Internal torch error"
/// becomes "libtorch", and the C++ stack trace libtorch appends is cut.
fn without_cpp_frames(text: &str) -> String {
    let text = text
        .strip_prefix("Internal torch error: ")
        .map_or_else(|| text.to_string(), |rest| format!("libtorch: {rest}"));
    let cut = ["\nException raised from", "\nframe #"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    text[..cut].trim_end().to_string()
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by the hook that
    /// [`install_panic_hook`] installs, read by [`guard`].
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces this library's panic hook with one that records the panic location
/// for [`guard`] instead of printing to stderr: the host reports the panic as an
/// error, with the location, through its own logging.
///
/// Called once when the runtime initialises a plugin. Rust statics (and so the
/// panic hook) are per shared library, so this affects the plugin only.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
    }));
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Runs one call across the boundary: a returned error gets `who` and `call` as
/// context, a panic becomes an error naming both, the panic message and, inside
/// a plugin, its source location. Nothing unwinds past this function.
///
/// Every `Ffi*` adapter in this crate wraps its calls in `guard`; plugin authors
/// implementing the plain role traits never need to call it themselves. The
/// context is only formatted when there is an error, so the happy path costs no
/// allocation.
pub fn guard<T>(who: &str, call: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, Error> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => ROk(value),
        Ok(Err(err)) => RErr(err.context(format!("{who}: {call}"))),
        Err(payload) => {
            let location = PANIC_LOCATION.with(|slot| slot.borrow_mut().take());
            let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
            RErr(Error::msg(format!(
                "{who}: {call} panicked{at}: {}",
                panic_message(&*payload)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reasons_drop_the_os_error_number() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
    }

    #[test]
    fn libtorch_errors_lose_their_cpp_stack_trace() {
        let huge = tch::Tensor::f_zeros([1 << 40, 1 << 20], (tch::Kind::Float, tch::Device::Cpu));
        let err = Error::from(huge.expect_err("a 4 EiB tensor cannot be allocated"));
        let text = err.to_string();
        assert!(text.starts_with("libtorch: "), "{text}");
        assert!(
            !text.contains("frame #") && !text.contains("Exception raised from"),
            "{text}"
        );
    }

    #[test]
    fn guard_turns_a_panic_into_an_error_naming_the_call() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result: RResult<(), Error> = guard("method `demo`", "Weighting::weigh", || {
            panic!("index 7 out of range")
        });
        std::panic::set_hook(hook);
        let err = result.into_result().unwrap_err();
        assert!(
            err.message()
                .starts_with("method `demo`: Weighting::weigh panicked"),
            "{err}"
        );
        assert!(err.message().ends_with("index 7 out of range"), "{err}");
    }

    #[test]
    fn guard_adds_the_call_as_context_to_errors() {
        let result: RResult<(), Error> = guard("method `demo`", "Weighting::weigh", || {
            Err(Error::msg("bad shape"))
        });
        assert_eq!(
            result.into_result().unwrap_err().message(),
            "method `demo`: Weighting::weigh: bad shape"
        );
    }

    #[test]
    fn std_errors_convert_with_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err: Error = io.into();
        assert_eq!(err.message(), "no such file");
    }
}
