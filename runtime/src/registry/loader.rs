//! Loading plugin `.so` files: each file once per process, never unloaded, and
//! every way a file can fail reduced to one line that says what to do.

use std::collections::HashMap;
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use abi_stable::library::{lib_header_from_path, LibraryError};

use super::{crash, elf, trust};
use taskweave_plugin_api::io_reason;
use taskweave_plugin_api::module::{Compat, PluginModuleRef, COMPAT_SYMBOL};
use taskweave_plugin_api::{FfiHostBox, MethodManifest};

/// A plugin library that loaded and passed every check.
pub struct Library {
    /// Where it was loaded from (canonical).
    pub path: PathBuf,
    /// Its root module.
    pub module: PluginModuleRef,
    /// The methods it provides.
    pub manifests: Vec<MethodManifest>,
}

/// Libraries are loaded once per process, whatever the number of registries
/// built over them (a pipeline may add plugin directories). The outcome is
/// cached too, so a bad file is diagnosed once.
fn cache() -> &'static Mutex<HashMap<PathBuf, Result<&'static Library, String>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Result<&'static Library, String>>>> =
        OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Every entry of `dir` named `*.so`, sorted by name, whatever it is: a
/// directory, broken link or FIFO with that name is reported by [`load`], not
/// skipped. Other names are not plugins (a README next to the plugins is fine).
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read plugin directory: {}", io_reason(&e)))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads `path` (once per process) and initialises it with `host` for logging;
/// a file others could have written is refused unless `allow_insecure`.
pub fn load(
    path: &Path,
    host: &FfiHostBox,
    allow_insecure: bool,
) -> Result<&'static Library, String> {
    // Before anything maps it: dlopen of a truncated file kills the process.
    elf::check(path)?;
    if !allow_insecure {
        trust::check(path)?;
    }
    let key = path
        .canonicalize()
        .map_err(|e| format!("cannot open: {}", io_reason(&e)))?;
    let mut cache = cache()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(outcome) = cache.get(&key) {
        return outcome.clone();
    }
    let outcome = load_uncached(&key, host).map(|lib| &*Box::leak(Box::new(lib)));
    cache.insert(key, outcome.clone());
    outcome
}

fn load_uncached(path: &Path, host: &FfiHostBox) -> Result<Library, String> {
    let _crash = crash::Guard::new(path);
    check_compat(path)?;
    let header = lib_header_from_path(path).map_err(|e| describe(&e))?;
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| describe(&e))?;
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    (module.init())(file_name.as_str().into(), host.clone());
    let manifests = (module.manifests())()
        .into_result()
        .map_err(|e| e.to_string())?;
    Ok(Library {
        path: path.to_path_buf(),
        module,
        manifests: manifests.into_iter().collect(),
    })
}

/// Opens the file as a shared library and reads its version symbol, so that a
/// library built against another libtorch or plugin ABI is refused with the
/// versions named, before abi_stable's layout check (whose report is long).
fn check_compat(path: &Path) -> Result<(), String> {
    // SAFETY: loading a shared library runs its initialisers; that is the point of a
    // plugin directory. Nothing from it is called until the checks below pass.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| open_error(&e.to_string()))?;
    // SAFETY: the symbol, when present, has the signature plugin-api gives it.
    let compat =
        unsafe { library.get::<extern "C" fn() -> *const c_char>(COMPAT_SYMBOL.as_bytes()) };
    let result = match compat {
        Err(_) => Err(format!(
            "not a taskweave plugin (no `{COMPAT_SYMBOL}` symbol); plugins are cdylib crates depending on taskweave-plugin-api"
        )),
        // SAFETY: plugin-api's function returns a static NUL-terminated string.
        Ok(f) => match unsafe { Compat::from_c(f()) } {
            None => Err("unreadable plugin version information".to_string()),
            Some(theirs) => match theirs.incompatibility(&Compat::current()) {
                Some(why) => Err(why),
                None => Ok(()),
            },
        },
    };
    // Libraries are never unloaded: unloading Rust code with thread-local
    // destructors or registered callbacks is unsound.
    std::mem::forget(library);
    result
}

/// One line for a dlopen failure: the loader's reason without the path it repeats.
fn open_error(message: &str) -> String {
    let reason = message.rsplit(": ").next().unwrap_or(message).trim();
    if reason.contains("file too short") || reason.contains("invalid ELF header") {
        format!("not a shared library ({reason})")
    } else if reason.contains("undefined symbol") {
        format!(
            "cannot be loaded: {}; was it built against another libtorch?",
            message.trim()
        )
    } else if message.contains("cannot open shared object") {
        // "...: libdep.so.1: cannot open shared object file: ...": the part
        // before names the dependency (the plugin file itself was read already).
        let parts: Vec<&str> = message.split(": ").collect();
        let at = parts
            .iter()
            .position(|p| p.starts_with("cannot open shared object"));
        let missing = at.filter(|&i| i > 0).map(|i| parts[i - 1].trim());
        match missing {
            Some(lib) => format!(
                "cannot be loaded: it needs {lib}, which is not found (set LD_LIBRARY_PATH?)"
            ),
            None => format!("cannot be loaded: {}", message.trim()),
        }
    } else {
        format!("cannot be loaded: {}", message.trim())
    }
}

/// One line for abi_stable's errors, whose Display spans many lines.
fn describe(err: &LibraryError) -> String {
    match err {
        LibraryError::OpenError { err, .. } => open_error(&err.to_string()),
        LibraryError::GetSymbolError { .. } => "not a taskweave plugin (no abi_stable root module)".to_string(),
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            taskweave_plugin_api::module::abi_mismatch(&actual_version.to_string(), &expected_version.to_string())
        }
        LibraryError::AbiInstability(_) => {
            "its types do not match this runtime's plugin ABI (built against another taskweave-plugin-api or libtorch); rebuild the plugin".to_string()
        }
        LibraryError::RootModule { err, .. } => format!("its root module failed to load: {err}"),
        other => other.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}
