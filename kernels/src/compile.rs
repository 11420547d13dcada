//! Kernel sources, NVRTC compilation and the on-disk PTX cache.
//!
//! A module's source is `common.cuh` followed by its `.cu` file. NVRTC
//! compiles it for the device's virtual architecture the first time a process
//! needs it; the PTX is cached under `$XDG_CACHE_HOME/taskweave/kernels/`
//! (else `~/.cache/...`), keyed by a SHA-256 of the source, the architecture,
//! the NVRTC version and the options, and written atomically (temporary file,
//! then rename) so concurrent processes never read half a file.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const COMMON: &str = include_str!("cuda/common.cuh");

/// The decimal value of `#define NAME VALUE` in `common.cuh`, evaluated at
/// compile time: launch sizes and limits have that one source, read by the
/// kernels and by their launches alike. A name that is missing (or not a
/// plain decimal) fails the build.
pub(crate) const fn define(name: &str) -> i64 {
    let (text, name) = (COMMON.as_bytes(), name.as_bytes());
    let prefix = b"#define ";
    let mut i = 0;
    while i + prefix.len() + name.len() < text.len() {
        let mut j = 0;
        let mut hit = i == 0 || text[i - 1] == b'\n';
        while hit && j < prefix.len() {
            hit = text[i + j] == prefix[j];
            j += 1;
        }
        let mut k = 0;
        while hit && k < name.len() {
            hit = text[i + prefix.len() + k] == name[k];
            k += 1;
        }
        let mut at = i + prefix.len() + name.len();
        if hit && text[at] == b' ' {
            at += 1;
            let mut value = 0i64;
            let mut digits = 0;
            while at < text.len() && text[at].is_ascii_digit() {
                value = value * 10 + (text[at] - b'0') as i64;
                at += 1;
                digits += 1;
            }
            if digits > 0 && (at == text.len() || text[at] == b'\n') {
                return value;
            }
        }
        i += 1;
    }
    panic!("common.cuh has no `#define NAME <decimal>` of this name")
}

/// One kernel module: a `.cu` file and the kernels it defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Module {
    /// The file name without `.cu`.
    pub name: &'static str,
    body: &'static str,
    /// The `extern "C"` kernels the module must define, named `{op}_{dtype}`.
    pub kernels: &'static [&'static str],
}

impl Module {
    /// A module from source text (for tests and experiments; the crate's
    /// own modules are the constants below).
    pub const fn new(
        name: &'static str,
        body: &'static str,
        kernels: &'static [&'static str],
    ) -> Self {
        Module {
            name,
            body,
            kernels,
        }
    }

    /// The full source handed to NVRTC: the shared helpers, then the module.
    pub fn source(&self) -> String {
        format!("{COMMON}\n{}", self.body)
    }
}

/// SAM perturb/restore (`sam.cu`).
pub const SAM: Module = Module {
    name: "sam",
    body: include_str!("cuda/sam.cu"),
    kernels: &[
        "sam_sqnorm_f32",
        "sam_perturb_f32",
        "sam_restore_f32",
        "sam_sqnorm_bf16",
        "sam_perturb_bf16",
        "sam_restore_bf16",
    ],
};

/// Gramian and combination of per-task gradients (`gramian.cu`).
pub const GRAMIAN: Module = Module {
    name: "gramian",
    body: include_str!("cuda/gramian.cu"),
    kernels: &[
        "gramian_f32_t1",
        "gramian_f32_t2",
        "gramian_f32_t3",
        "gramian_f32_t4",
        "gramian_f32_t5",
        "gramian_f32_t6",
        "gramian_f32_t7",
        "gramian_f32_t8",
        "gramian_f32_t9",
        "gramian_f32_t10",
        "gramian_f32_t11",
        "gramian_f32_t12",
        "gramian_f32_t13",
        "gramian_f32_t14",
        "gramian_f32_t15",
        "gramian_f32_t16",
        "gramian_bf16_t1",
        "gramian_bf16_t2",
        "gramian_bf16_t3",
        "gramian_bf16_t4",
        "gramian_bf16_t5",
        "gramian_bf16_t6",
        "gramian_bf16_t7",
        "gramian_bf16_t8",
        "gramian_bf16_t9",
        "gramian_bf16_t10",
        "gramian_bf16_t11",
        "gramian_bf16_t12",
        "gramian_bf16_t13",
        "gramian_bf16_t14",
        "gramian_bf16_t15",
        "gramian_bf16_t16",
        "combine_f32",
        "combine_bf16",
    ],
};

/// Dynamic logit fusion grid (`logit_fusion.cu`).
pub const LOGIT_FUSION: Module = Module {
    name: "logit_fusion",
    body: include_str!("cuda/logit_fusion.cu"),
    kernels: &[
        "fusion_partials_f32",
        "fusion_partials_bf16",
        "fusion_select",
        "fusion_apply_f32",
        "fusion_apply_bf16",
    ],
};

/// TaskExpert's gate softmax and slot mixture (`gate.cu`).
pub const GATE: Module = Module {
    name: "gate",
    body: include_str!("cuda/gate.cu"),
    kernels: &["gate_mix_f32", "gate_mix_bf16"],
};

/// Every module, in the order `precompile` builds them.
pub const MODULES: [Module; 4] = [SAM, GRAMIAN, LOGIT_FUSION, GATE];

/// NVRTC options besides the architecture. No fast math: the kernels are
/// compared with the reference at 1e-5.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// Where NVRTC may be when it is not on the loader's path: next to the
/// libtorch this process (or this crate's build) uses, in the PyPI layout
/// `site-packages/torch/lib` -> `site-packages/nvidia/cu13/lib`, and in the
/// usual toolkit directories.
fn nvrtc_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("TASKWEAVE_NVRTC_DIR") {
        dirs.push(PathBuf::from(p));
    }
    let mut torch_libs: Vec<PathBuf> = loaded_library_dirs("libtorch_cpu.so");
    if let Some(dir) = option_env!("TASKWEAVE_LIBTORCH_LIB") {
        torch_libs.push(PathBuf::from(dir));
    }
    for lib in torch_libs {
        // `.venv/libtorch` is a symlink into site-packages: resolve it first.
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        if let Some(site) = lib.parent().and_then(Path::parent) {
            dirs.push(site.join("nvidia/cu13/lib"));
            dirs.push(site.join("nvidia/cuda_nvrtc/lib"));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&home).join("lib64"));
            dirs.push(PathBuf::from(home).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

/// Directories of the shared objects mapped into this process whose file
/// name starts with `prefix` (from /proc/self/maps; empty elsewhere).
pub(crate) fn loaded_library_dirs(prefix: &str) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let p = Path::new(path);
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix))
        {
            if let Some(dir) = p.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    dirs
}

/// Loads NVRTC once per process. cudarc opens `libnvrtc.so.13` by name; when
/// that name is not on the loader's path we open the file by full path first
/// (RTLD_GLOBAL), after which the by-name open finds the loaded library. The
/// builtins library is preloaded too: NVRTC opens it by name as well.
pub fn ensure_nvrtc() -> Result<()> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let dirs = nvrtc_dirs();
            for dir in &dirs {
                let lib = dir.join("libnvrtc.so.13");
                if !lib.is_file() {
                    continue;
                }
                for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
                    let path = dir.join(name);
                    if path.is_file() {
                        // SAFETY: NVRTC's initialisers only set up its own
                        // state; the handle is leaked so the library stays
                        // loaded for the process, as cudarc expects.
                        let opened = unsafe {
                            libloading::os::unix::Library::open(Some(&path), libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL)
                        };
                        if let Ok(handle) = opened {
                            std::mem::forget(handle);
                        }
                    }
                }
                break;
            }
            // SAFETY: only probes whether the library can be opened.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                Ok(())
            } else {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                Err(format!("libnvrtc.so.13 is neither on the loader path nor in {}; set TASKWEAVE_NVRTC_DIR", looked.join(", ")))
            }
        })
        .clone()
        .map_err(|reason| Error::NoNvrtc { reason })
}

/// The NVRTC version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above); both pointers are valid.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::NoNvrtc {
            reason: format!("nvrtcVersion failed: {status:?}"),
        });
    }
    Ok((major, minor))
}

/// The cache key of `module` built for `arch` (e.g. `compute_90`) by NVRTC
/// `version`: a hex SHA-256 over everything that changes the PTX.
pub fn cache_key(source: &str, arch: &str, version: (i32, i32), options: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in [
        source,
        arch,
        &format!("{}.{}", version.0, version.1),
        &options.join(" "),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$XDG_CACHE_HOME/taskweave/kernels`, else
/// `$HOME/.cache/taskweave/kernels`; `None` when neither is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("taskweave").join("kernels"))
}

/// A disk cache of compiled kernel modules.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// A cache rooted at `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: dir.into() }
    }

    /// The file that holds `module` under `key`.
    pub fn path(&self, module: &str, key: &str) -> PathBuf {
        self.dir
            .join(format!("{module}-{}.ptx", &key[..key.len().min(32)]))
    }

    /// The cached text, if present and non-empty.
    pub fn load(&self, module: &str, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path(module, key))
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// Writes `text` atomically: a temporary file in the same directory, then
    /// a rename over the final name, so readers see all or nothing.
    pub fn store(&self, module: &str, key: &str, text: &str) -> Result<PathBuf> {
        atomic_write(&self.path(module, key), text.as_bytes())
    }
}

/// Writes `bytes` to `path` through a uniquely named temporary file and a rename.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let cache_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Cache { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(cache_err(dir))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Cache {
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    Ok(path.to_path_buf())
}

/// Compiles `module` to PTX for `arch` (e.g. `compute_90`) with NVRTC, going
/// through `cache` when given. Compile errors carry NVRTC's log.
pub fn compile(module: &Module, arch: &str, cache: Option<&DiskCache>) -> Result<String> {
    compile_inner(module, arch, cache, true)
}

/// Like [`compile`] but ignores a cached file (and replaces it): for a cached
/// file the driver refused.
pub(crate) fn recompile(module: &Module, arch: &str, cache: Option<&DiskCache>) -> Result<String> {
    compile_inner(module, arch, cache, false)
}

fn compile_inner(
    module: &Module,
    arch: &str,
    cache: Option<&DiskCache>,
    read_cache: bool,
) -> Result<String> {
    let version = nvrtc_version()?;
    let source = module.source();
    let key = cache_key(&source, arch, version, OPTIONS);
    if let Some(text) = cache
        .filter(|_| read_cache)
        .and_then(|c| c.load(module.name, &key))
    {
        return Ok(text);
    }
    let arch_opt = format!("--gpu-architecture={arch}");
    let mut options: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(arch_opt);
    let opts = cudarc::nvrtc::CompileOptions {
        options: options.clone(),
        name: Some(format!("{}.cu", module.name)),
        ..Default::default()
    };
    // cudarc unwraps a few NVRTC calls internally; keep any panic inside this crate.
    let compiled = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&source, opts));
    let ptx = match compiled {
        Ok(Ok(ptx)) => ptx,
        Ok(Err(e)) => {
            let log = match &e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    log.to_string_lossy().into_owned()
                }
                other => format!("{other:?}"),
            };
            return Err(Error::Compile {
                module: module.name,
                options: options.join(" "),
                log,
            });
        }
        Err(_) => {
            return Err(Error::Compile {
                module: module.name,
                options: options.join(" "),
                log: "nvrtc panicked".into(),
            })
        }
    };
    let text = ptx.to_src();
    if let Some(cache) = cache {
        // The cache only saves time: a read-only home must not stop the run.
        if let Err(e) = cache.store(module.name, &key, &text) {
            tracing::warn!("not caching kernel module {}: {e}", module.name);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_sizes_come_from_common_cuh_only() {
        assert_eq!(define("TW_FUSION_BLOCK"), 128);
        assert_eq!(define("TW_SAM_MAX_TENSORS"), 256);
        // A name that only prefixes a defined one is not it.
        assert!(std::panic::catch_unwind(|| define("TW_FUSION")).is_err());
        // No module defines a launch size of its own.
        let defined: Vec<&str> = COMMON
            .lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, v)| v.bytes().all(|b| b.is_ascii_digit()))
            .map(|(n, _)| n)
            .collect();
        assert!(defined.len() >= 14, "{defined:?}");
        for m in &MODULES {
            for name in &defined {
                let again = format!("#define {name} ");
                assert!(
                    !m.body.contains(&again),
                    "{}.cu defines {name} again",
                    m.name
                );
            }
        }
    }
}
