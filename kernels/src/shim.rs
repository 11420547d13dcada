//! The c10 shim: libtorch's current CUDA stream and the caching allocator's
//! statistics and knobs, which tch does not expose.
//!
//! The shim is a small C++ library built by `taskweave-kernels-native` and
//! embedded in this crate. It links libc10_cuda, so it is loaded only when
//! CUDA is in use: on first need its bytes are written (atomically, keyed by
//! their hash) under the cache directory and dlopened from there. Embedding
//! rather than shipping a file next to each binary keeps binaries built on
//! one machine runnable on another (shared/GPU.md). `TASKWEAVE_TORCH_SHIM`
//! names a prebuilt shim to use instead.
use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const ABI_VERSION: i32 = 2;

/// Caching-allocator statistics of one device, in bytes (aggregated over the
/// small and large pools, as `torch.cuda.memory_stats()` reports them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in live tensors.
    pub allocated: i64,
    /// Bytes held from the driver (live tensors plus cached free blocks).
    pub reserved: i64,
    /// Highest `allocated` since start or the last [`reset_peak_memory`].
    pub peak_allocated: i64,
    /// Highest `reserved` since start or the last [`reset_peak_memory`].
    pub peak_reserved: i64,
}

type FnVersion = unsafe extern "C" fn() -> i32;
type FnLastError = unsafe extern "C" fn() -> *const c_char;
type FnStream = unsafe extern "C" fn(i32, *mut *mut c_void) -> i32;
type FnStats = unsafe extern "C" fn(i32, *mut i64, *mut i64, *mut i64, *mut i64) -> i32;
type FnDevice = unsafe extern "C" fn(i32) -> i32;
type FnFraction = unsafe extern "C" fn(i32, f64) -> i32;
type FnVoid = unsafe extern "C" fn() -> i32;
type FnSettings = unsafe extern "C" fn(*const c_char) -> i32;

struct Shim {
    // Keeps the function pointers below valid; never unloaded.
    _lib: libloading::Library,
    last_error: FnLastError,
    current_stream: FnStream,
    memory_stats: FnStats,
    reset_peak: FnDevice,
    set_memory_fraction: FnFraction,
    set_allocator_settings: FnSettings,
    empty_cache: FnVoid,
}

/// Where the shim's bytes go: `<cache>/taskweave/shim/libtaskweave_torch_shim-<hash>.so`,
/// falling back to the temporary directory.
fn extracted_path(bytes: &[u8]) -> PathBuf {
    let hash: String = Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::compile::default_cache_dir()
        .and_then(|d| d.parent().map(|p| p.join("shim")))
        .unwrap_or_else(|| std::env::temp_dir().join("taskweave-shim"));
    dir.join(format!("libtaskweave_torch_shim-{hash}.so"))
}

fn open() -> Result<Shim, String> {
    let path = match std::env::var_os("TASKWEAVE_TORCH_SHIM") {
        Some(p) => PathBuf::from(p),
        None => {
            let bytes = taskweave_kernels_native::SHIM_LIBRARY;
            if bytes.is_empty() {
                return Err(format!(
                    "not built: {}",
                    taskweave_kernels_native::SHIM_MISSING
                ));
            }
            let path = extracted_path(bytes);
            if std::fs::read(&path).map(|b| b != bytes).unwrap_or(true) {
                crate::compile::atomic_write(&path, bytes).map_err(|e| e.to_string())?;
            }
            path
        }
    };
    // SAFETY: the shim's initialisers are those of a plain C++ library; its
    // dependencies (libc10_cuda, libc10) are already loaded by libtorch_cuda
    // whenever CUDA tensors exist.
    let lib = unsafe { libloading::Library::new(&path) }
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    // SAFETY: the symbol types match the extern "C" declarations in
    // native/shim/torch_shim.cpp, whose ABI version is checked first.
    unsafe {
        let version: FnVersion = *lib
            .get::<FnVersion>(b"taskweave_shim_abi_version\0")
            .map_err(|e| e.to_string())?;
        let found = version();
        if found != ABI_VERSION {
            return Err(format!(
                "{} has ABI version {found}, expected {ABI_VERSION}",
                path.display()
            ));
        }
        let get = |name: &[u8]| {
            lib.get::<*const c_void>(name)
                .map(|s| *s)
                .map_err(|e| e.to_string())
        };
        // Function pointers and data pointers have the same size on every
        // platform libtorch supports.
        let last_error =
            std::mem::transmute::<*const c_void, FnLastError>(get(b"taskweave_shim_last_error\0")?);
        let current_stream = std::mem::transmute::<*const c_void, FnStream>(get(
            b"taskweave_shim_current_stream\0",
        )?);
        let memory_stats =
            std::mem::transmute::<*const c_void, FnStats>(get(b"taskweave_shim_memory_stats\0")?);
        let reset_peak =
            std::mem::transmute::<*const c_void, FnDevice>(get(b"taskweave_shim_reset_peak\0")?);
        let set_memory_fraction = std::mem::transmute::<*const c_void, FnFraction>(get(
            b"taskweave_shim_set_memory_fraction\0",
        )?);
        let set_allocator_settings = std::mem::transmute::<*const c_void, FnSettings>(get(
            b"taskweave_shim_set_allocator_settings\0",
        )?);
        let empty_cache =
            std::mem::transmute::<*const c_void, FnVoid>(get(b"taskweave_shim_empty_cache\0")?);
        Ok(Shim {
            _lib: lib,
            last_error,
            current_stream,
            memory_stats,
            reset_peak,
            set_memory_fraction,
            set_allocator_settings,
            empty_cache,
        })
    }
}

fn shim() -> Result<&'static Shim> {
    static SHIM: OnceLock<Result<Shim, String>> = OnceLock::new();
    SHIM.get_or_init(open)
        .as_ref()
        .map_err(|e| Error::Shim(e.clone()))
}

/// Whether the shim can be loaded here; the reason when it cannot.
pub fn shim_status() -> Result<()> {
    shim().map(|_| ())
}

impl Shim {
    fn check(&self, what: &str, code: i32) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: the shim returns a pointer to a thread-local NUL-terminated
        // string that stays valid until its next failing call on this thread.
        let msg = unsafe { CStr::from_ptr((self.last_error)()) }
            .to_string_lossy()
            .into_owned();
        let first = msg.lines().next().unwrap_or("").to_owned();
        Err(Error::Shim(format!("{what}: {first}")))
    }
}

fn device_index(device: usize) -> Result<i32> {
    i32::try_from(device)
        .map_err(|_| Error::argument("torch shim", "device index", "a CUDA ordinal", device))
}

/// libtorch's current stream on CUDA device `device` (what
/// `torch.cuda.current_stream(device)` returns), as a raw `cudaStream_t`.
pub fn current_stream(device: usize) -> Result<*mut c_void> {
    let s = shim()?;
    let mut stream: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the shim catches every C++ exception.
    let code = unsafe { (s.current_stream)(device_index(device)?, &mut stream) };
    s.check("current stream", code)?;
    Ok(stream)
}

/// Caching-allocator statistics of CUDA device `device`.
pub fn memory_stats(device: usize) -> Result<MemoryStats> {
    let s = shim()?;
    let mut m = MemoryStats::default();
    // SAFETY: valid out-pointers; the shim catches every C++ exception.
    let code = unsafe {
        (s.memory_stats)(
            device_index(device)?,
            &mut m.allocated,
            &mut m.reserved,
            &mut m.peak_allocated,
            &mut m.peak_reserved,
        )
    };
    s.check("memory stats", code)?;
    Ok(m)
}

/// Resets the peak statistics of CUDA device `device`.
pub fn reset_peak_memory(device: usize) -> Result<()> {
    let s = shim()?;
    // SAFETY: plain value arguments; the shim catches every C++ exception.
    let code = unsafe { (s.reset_peak)(device_index(device)?) };
    s.check("reset peak", code)
}

/// Caps the caching allocator of device `device` at `fraction` of its memory.
pub fn set_memory_fraction(device: usize, fraction: f64) -> Result<()> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::argument(
            "set_memory_fraction",
            "fraction",
            "a value in (0, 1]",
            fraction,
        ));
    }
    let s = shim()?;
    // SAFETY: plain value arguments; the shim catches every C++ exception.
    let code = unsafe { (s.set_memory_fraction)(device_index(device)?, fraction) };
    s.check("set memory fraction", code)
}

/// Applies caching-allocator `settings` (`PYTORCH_CUDA_ALLOC_CONF` syntax,
/// e.g. `"expandable_segments:True,max_split_size_mb:256"`) to the live
/// configuration, as `torch.cuda.memory._set_allocator_settings` does: unknown
/// keys and malformed values are errors, and the settings govern allocations
/// from then on.
pub fn set_allocator_settings(settings: &str) -> Result<()> {
    let c = std::ffi::CString::new(settings).map_err(|_| {
        Error::argument(
            "set_allocator_settings",
            "settings",
            "text without NUL bytes",
            settings,
        )
    })?;
    let s = shim()?;
    // SAFETY: a valid NUL-terminated string that outlives the call; the shim
    // catches every C++ exception.
    let code = unsafe { (s.set_allocator_settings)(c.as_ptr()) };
    s.check("allocator settings", code)
}

/// Returns the allocator's cached free blocks to the driver.
pub fn empty_cache() -> Result<()> {
    let s = shim()?;
    // SAFETY: no arguments; the shim catches every C++ exception.
    let code = unsafe { (s.empty_cache)() };
    s.check("empty cache", code)
}
