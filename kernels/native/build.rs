//! Builds the native pieces of taskweave-kernels:
//!
//! 1. `libtaskweave_torch_shim.so`, a small C++ library over c10's CUDA stream
//!    and caching-allocator API (tch exposes neither). It is a separate shared
//!    library, not linked into anything, because linking it would pull
//!    libc10_cuda/libcudart into every CPU-only process; the kernels crate
//!    embeds its bytes and dlopens it only when CUDA tensors are in use.
//! 2. Where `nvcc` exists, PTX for every `.cu` module (the kernels crate
//!    otherwise compiles them with NVRTC at first use).
//!
//! Neither failure stops the build: a missing header or compiler becomes a
//! reason string that the kernels crate reports when the piece is needed.
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    for var in [
        "DEP_TCH_LIBTORCH_LIB",
        "LIBTORCH_CXX11_ABI",
        "CUDA_HOME",
        "CUDA_PATH",
        "NVCC",
        "TASKWEAVE_PTX_ARCH",
        "CXX",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-changed=../src/cuda");

    let mut generated = String::new();
    match build_shim(&manifest, &out) {
        Ok(path) => {
            let _ = writeln!(generated, "/// The shim library's bytes.\npub static SHIM_LIBRARY: &[u8] = include_bytes!({:?});", path.display().to_string());
            let _ = writeln!(generated, "/// Why the shim is missing; empty when it was built.\npub static SHIM_MISSING: &str = \"\";");
        }
        Err(reason) => {
            println!("cargo:warning=taskweave-kernels: torch shim not built ({reason}); kernels will use the legacy default stream");
            let _ = writeln!(
                generated,
                "/// The shim library's bytes.\npub static SHIM_LIBRARY: &[u8] = &[];"
            );
            let _ = writeln!(generated, "/// Why the shim is missing; empty when it was built.\npub static SHIM_MISSING: &str = {reason:?};");
        }
    }
    let (arch, modules) = build_ptx(&manifest, &out);
    let _ = writeln!(generated, "/// Virtual architecture of [`PREBUILT_PTX`] (e.g. 75 for compute_75); 0 when empty.\npub static PREBUILT_PTX_ARCH: u32 = {arch};");
    let _ = writeln!(generated, "/// `(module, ptx)` built by nvcc at build time; empty without nvcc.\npub static PREBUILT_PTX: &[(&str, &str)] = &[");
    for (name, path) in modules {
        let _ = writeln!(
            generated,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    let _ = writeln!(generated, "];");
    fs::write(out.join("native.rs"), generated).expect("write native.rs");
}

/// The CUDA include directory with `cuda_runtime_api.h`: CUDA_HOME/CUDA_PATH,
/// the PyPI wheel layout next to libtorch, or /usr/local/cuda.
fn cuda_include(libtorch_lib: &Path) -> Option<PathBuf> {
    // `.venv/libtorch` is a symlink into site-packages: resolve it first.
    let libtorch_lib =
        &fs::canonicalize(libtorch_lib).unwrap_or_else(|_| libtorch_lib.to_path_buf());
    let mut candidates: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(env::var_os)
        .map(|d| PathBuf::from(d).join("include"))
        .collect();
    // site-packages/torch/lib -> site-packages/nvidia/cu13/include
    if let Some(site) = libtorch_lib.parent().and_then(Path::parent) {
        candidates.push(site.join("nvidia/cu13/include"));
        candidates.push(site.join("nvidia/cuda_runtime/include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates
        .into_iter()
        .find(|d| d.join("cuda_runtime_api.h").is_file())
}

fn build_shim(manifest: &Path, out: &Path) -> Result<PathBuf, String> {
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .map_err(|_| "torch-sys did not publish its libtorch directory".to_string())?,
    );
    let include = lib
        .parent()
        .ok_or("libtorch directory has no parent")?
        .join("include");
    if !include.join("c10/cuda/CUDAStream.h").is_file() {
        return Err(format!(
            "{} has no c10/cuda headers (a CPU-only libtorch?)",
            include.display()
        ));
    }
    if !lib.join("libc10_cuda.so").is_file() {
        return Err(format!(
            "{} has no libc10_cuda.so (a CPU-only libtorch?)",
            lib.display()
        ));
    }
    let cuda =
        cuda_include(&lib).ok_or("no CUDA headers (cuda_runtime_api.h) found; set CUDA_HOME")?;
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let target = out.join("libtaskweave_torch_shim.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args(["-std=c++17", "-O2", "-g0", "-fPIC", "-shared", "-w", "-s"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(&cuda);
    if !cuda.join("crt/host_defines.h").is_file() {
        // Wheels ship cuda_runtime.h without crt/: fill in the two host-only headers it needs.
        cmd.arg("-I").arg(manifest.join("shim/cuda-stubs"));
    }
    cmd.arg(manifest.join("shim/torch_shim.cpp"))
        .arg("-o")
        .arg(&target)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args([
            "-Wl,-soname,libtaskweave_torch_shim.so",
            "-lc10_cuda",
            "-lc10",
        ]);
    let output = cmd
        .output()
        .map_err(|e| format!("running the C++ compiler: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("unknown error");
        return Err(format!("C++ compile failed: {first}"));
    }
    Ok(target)
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(env::var_os)
        .map(|d| PathBuf::from(d).join("bin"))
        .collect();
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/bin"));
    dirs.into_iter()
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// Each module is `common.cuh` followed by `<module>.cu`, exactly as the
/// kernels crate hands it to NVRTC.
fn build_ptx(manifest: &Path, out: &Path) -> (u32, Vec<(String, PathBuf)>) {
    let Some(nvcc) = find_nvcc() else {
        return (0, Vec::new());
    };
    let arch: u32 = env::var("TASKWEAVE_PTX_ARCH")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(75);
    let dir = manifest.join("../src/cuda");
    let Ok(common) = fs::read_to_string(dir.join("common.cuh")) else {
        return (0, Vec::new());
    };
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".cu"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut modules = Vec::new();
    for name in names {
        let Ok(body) = fs::read_to_string(dir.join(format!("{name}.cu"))) else {
            continue;
        };
        let src = out.join(format!("{name}.full.cu"));
        let ptx = out.join(format!("{name}.ptx"));
        if fs::write(&src, format!("{common}\n{body}")).is_err() {
            continue;
        }
        let status = Command::new(&nvcc)
            .arg("-ptx")
            .arg(format!("-arch=compute_{arch}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => modules.push((name, ptx)),
            _ => println!("cargo:warning=taskweave-kernels: nvcc failed on {name}.cu; it will be compiled with NVRTC at run time"),
        }
    }
    (if modules.is_empty() { 0 } else { arch }, modules)
}
