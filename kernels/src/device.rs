//! CUDA devices as the kernels see them: availability checks, the primary
//! context (shared with libtorch), the per-process module cache and the
//! stream to launch on.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::compile::{self, DiskCache, Module};
use crate::error::{Error, Result};

/// Which stream kernels are launched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamSource {
    /// libtorch's current stream of the device, obtained through the c10 shim.
    TorchCurrent,
    /// The legacy default stream: the shim is unavailable. This is libtorch's
    /// default stream, so ordering is right unless the caller switched
    /// libtorch to another stream.
    LegacyDefault,
}

/// What the kernels know about one CUDA device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaInfo {
    /// The CUDA ordinal.
    pub ordinal: usize,
    /// The device's name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Number of streaming multiprocessors.
    pub sm_count: i32,
    /// The stream kernels are launched on.
    pub stream: StreamSource,
    /// Total device memory in bytes.
    pub total_memory: usize,
    /// Free device memory in bytes when asked.
    pub free_memory: usize,
    /// The driver's CUDA version (major, minor), e.g. (13, 0).
    pub driver_version: (i32, i32),
}

/// Loads `libtorch_cuda.so` into the process (RTLD_GLOBAL), once.
///
/// tch's link line drops it under `--as-needed`, and without it libtorch
/// reports no CUDA (shared/GPU.md). Looks it up by name (loader path and
/// RUNPATH), next to the libtorch already mapped into the process, and in the
/// libtorch this crate was built against.
pub fn load_libtorch_cuda() -> Result<()> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = vec![PathBuf::from("libtorch_cuda.so")];
            for dir in compile::loaded_library_dirs("libtorch_cpu.so") {
                candidates.push(dir.join("libtorch_cuda.so"));
            }
            if let Some(dir) = option_env!("TASKWEAVE_LIBTORCH_LIB") {
                candidates.push(PathBuf::from(dir).join("libtorch_cuda.so"));
            }
            let mut errors = Vec::new();
            for c in &candidates {
                // SAFETY: libtorch_cuda's initialisers register its CUDA
                // backend with the libtorch already loaded; it is never unloaded.
                let opened = unsafe {
                    libloading::os::unix::Library::open(
                        Some(c),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                match opened {
                    Ok(lib) => {
                        std::mem::forget(lib);
                        return Ok(());
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(format!(
                "libtorch_cuda.so could not be loaded: {}",
                errors.join("; ")
            ))
        })
        .clone()
        .map_err(|reason| Error::NoCuda { reason })
}

/// The libtorch mapped into this process: its `lib/` directory and version,
/// read from the files beside it (`../version.py` in the PyPI wheel,
/// `../build-version` in the libtorch archive). This is the library that runs,
/// which `LD_LIBRARY_PATH` may make another than the one built against.
pub fn loaded_libtorch() -> std::result::Result<(PathBuf, String), String> {
    let dir = compile::loaded_library_dirs("libtorch_cpu.so")
        .into_iter()
        .next()
        .ok_or("libtorch_cpu.so is not mapped into this process")?;
    let root = dir.parent().unwrap_or(&dir);
    let from_wheel = std::fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        });
    let from_archive = || {
        std::fs::read_to_string(root.join("build-version"))
            .ok()
            .map(|v| v.trim().to_string())
    };
    match from_wheel.or_else(from_archive) {
        Some(version) if !version.is_empty() => Ok((dir, version)),
        _ => Err(format!(
            "the libtorch in {} has no version.py or build-version beside it",
            dir.display()
        )),
    }
}

/// Checks the driver library before anything touches cudarc, whose loaders
/// panic when a library is missing.
fn driver_present() -> Result<()> {
    // SAFETY: only probes whether the driver library can be opened.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::NoCuda {
            reason: "libcuda.so (the NVIDIA driver library) was not found".into(),
        })
    }
}

/// Number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    driver_present()?;
    let n = CudaContext::device_count().map_err(|e| Error::NoCuda {
        reason: format!("the driver failed to initialise: {e}"),
    })?;
    if n <= 0 {
        return Err(Error::NoCuda {
            reason: "the driver reports no CUDA device".into(),
        });
    }
    Ok(n as usize)
}

/// Device `ordinal`'s information, or a clear [`Error::NoCuda`] when there is
/// no usable CUDA device. Creating the state retains the primary context.
pub fn cuda_info(ordinal: usize) -> Result<CudaInfo> {
    device(ordinal).map(|d| d.info())
}

pub(crate) struct DeviceState {
    pub(crate) ordinal: usize,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) arch: String,
    pub(crate) cc: (i32, i32),
    pub(crate) sm_count: i32,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

/// The process-wide state of device `ordinal` (primary context, modules).
pub(crate) fn device(ordinal: usize) -> Result<Arc<DeviceState>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<DeviceState>>>> = OnceLock::new();
    let mut map = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    let n = device_count()?;
    if ordinal >= n {
        return Err(Error::NoCuda {
            reason: format!("device {ordinal} does not exist, the driver reports {n}"),
        });
    }
    // The primary context: the one libtorch's runtime API calls use.
    let ctx = CudaContext::new(ordinal).map_err(Error::driver(format!(
        "retaining the primary context of device {ordinal}"
    )))?;
    let cc = ctx
        .compute_capability()
        .map_err(Error::driver("reading the compute capability"))?;
    let sm_count = ctx
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .map_err(Error::driver("reading the multiprocessor count"))?;
    let name = ctx.name().unwrap_or_else(|_| "unknown".into());
    let state = Arc::new(DeviceState {
        ordinal,
        ctx,
        arch: format!("compute_{}{}", cc.0, cc.1),
        cc,
        sm_count,
        name,
        modules: Mutex::new(HashMap::new()),
    });
    map.insert(ordinal, state.clone());
    Ok(state)
}

impl DeviceState {
    fn info(&self) -> CudaInfo {
        let stream = if crate::shim::shim_status().is_ok() {
            StreamSource::TorchCurrent
        } else {
            StreamSource::LegacyDefault
        };
        let (free_memory, total_memory) = self.ctx.mem_get_info().unwrap_or((0, 0));
        let mut version = 0;
        // SAFETY: the driver library is loaded (the context exists); the call
        // writes one integer.
        let _ = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        CudaInfo {
            ordinal: self.ordinal,
            name: self.name.clone(),
            compute_capability: self.cc,
            sm_count: self.sm_count,
            stream,
            total_memory,
            free_memory,
            driver_version: (version / 1000, (version % 1000) / 10),
        }
    }

    /// `module` loaded into this device's context: nvcc's PTX when it was
    /// built for this architecture or an older one, else NVRTC's.
    pub(crate) fn module(
        &self,
        module: &Module,
        cache: Option<&DiskCache>,
    ) -> Result<Arc<CudaModule>> {
        let mut map = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(module.name) {
            return Ok(m.clone());
        }
        let own_arch = (self.cc.0 * 10 + self.cc.1) as u32;
        let prebuilt = taskweave_kernels_native::PREBUILT_PTX
            .iter()
            .find(|(n, _)| *n == module.name)
            .filter(|_| taskweave_kernels_native::PREBUILT_PTX_ARCH <= own_arch);
        let m = match prebuilt.and_then(|(_, ptx)| self.ctx.load_module(Ptx::from_src(*ptx)).ok()) {
            Some(m) => m,
            None => self.load_compiled(module, cache)?,
        };
        map.insert(module.name, m.clone());
        Ok(m)
    }

    fn load_compiled(&self, module: &Module, cache: Option<&DiskCache>) -> Result<Arc<CudaModule>> {
        let what = || format!("loading kernel module {}", module.name);
        let ptx = compile::compile(module, &self.arch, cache)?;
        match self.ctx.load_module(Ptx::from_src(ptx)) {
            Ok(m) => Ok(m),
            // A damaged cache file: compile afresh (replacing it), once.
            Err(_) if cache.is_some() => {
                let ptx = compile::recompile(module, &self.arch, cache)?;
                self.ctx
                    .load_module(Ptx::from_src(ptx))
                    .map_err(Error::driver(what()))
            }
            Err(e) => Err(Error::driver(what())(e)),
        }
    }

    pub(crate) fn function(
        &self,
        module: &Module,
        name: &str,
        cache: Option<&DiskCache>,
    ) -> Result<CudaFunction> {
        self.module(module, cache)?
            .load_function(name)
            .map_err(Error::driver(format!("finding kernel {name}")))
    }

    /// The stream to launch on: libtorch's current stream of this device, or
    /// the legacy default stream when the shim is unavailable.
    pub(crate) fn stream(&self) -> Result<Arc<CudaStream>> {
        match crate::shim::current_stream(self.ordinal) {
            Ok(raw) => {
                // SAFETY: libtorch owns this stream, which belongs to the
                // primary context of this device, and keeps it alive for the
                // process (pool streams are never destroyed). Kernels are
                // ordered with libtorch's work by being launched on it.
                Ok(unsafe {
                    self.ctx
                        .wrap_borrowed_stream(raw as cudarc::driver::sys::CUstream)
                })
            }
            Err(e @ Error::Shim(_)) if crate::shim::shim_status().is_err() => {
                static WARNED: OnceLock<()> = OnceLock::new();
                WARNED.get_or_init(|| {
                    tracing::warn!("{e}; launching kernels on the legacy default stream")
                });
                Ok(self.ctx.default_stream())
            }
            Err(e) => Err(e),
        }
    }
}

/// Times GPU work submitted on libtorch's current stream of one device with
/// CUDA events: no synchronisation between timed calls, so the GPU is fed as
/// in a real run (host launch gaps of eager code count, as they do there).
pub struct StreamTimer {
    state: Arc<DeviceState>,
    stream: Arc<CudaStream>,
    pairs: Vec<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>,
}

impl StreamTimer {
    /// A timer for CUDA device `ordinal`.
    pub fn new(ordinal: usize) -> Result<Self> {
        let state = device(ordinal)?;
        let stream = state.stream()?;
        Ok(StreamTimer {
            state,
            stream,
            pairs: Vec::new(),
        })
    }

    /// Runs `f`, recording events on the stream before and after it.
    pub fn time<R>(&mut self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .state
            .ctx
            .new_event(flags)
            .map_err(Error::driver("creating an event"))?;
        let end = self
            .state
            .ctx
            .new_event(flags)
            .map_err(Error::driver("creating an event"))?;
        start
            .record(&self.stream)
            .map_err(Error::driver("recording an event"))?;
        let out = f()?;
        end.record(&self.stream)
            .map_err(Error::driver("recording an event"))?;
        self.pairs.push((start, end));
        Ok(out)
    }

    /// Waits for the stream and returns each timed call's duration in µs.
    pub fn finish(self) -> Result<Vec<f64>> {
        self.pairs
            .iter()
            .map(|(s, e)| {
                s.elapsed_ms(e)
                    .map(|ms| ms as f64 * 1e3)
                    .map_err(Error::driver("reading an event"))
            })
            .collect()
    }
}
