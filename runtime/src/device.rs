//! Devices: `run.device` to a tch device, making CUDA visible to libtorch, the
//! process-wide kernels, and the GPU memory pool's settings and statistics.

use std::sync::OnceLock;

use taskweave_kernels::Kernels;
use tch::Device;

use crate::error::{Error, Result};

/// The process-wide kernel handle: one compiled-module cache per process,
/// shared by the runtime and (through the host) every plugin.
pub fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(Kernels::new)
}

/// Why CUDA cannot be used here, or `None` when it can.
///
/// The driver is probed first, so a machine without one never maps the (very
/// large) `libtorch_cuda.so`; with one, `libtorch_cuda.so` is loaded, because
/// tch's link line drops it under `--as-needed` and without it libtorch
/// reports no CUDA.
pub fn cuda_unavailable() -> Option<String> {
    static STATE: OnceLock<Option<String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let why = taskweave_kernels::device_count()
                .and_then(|_| taskweave_kernels::load_libtorch_cuda())
                .err()
                .map(|e| e.to_string());
            why.or_else(|| {
                (!tch::Cuda::is_available()).then(|| "libtorch reports no CUDA device".to_string())
            })
        })
        .clone()
}

/// Whether libtorch can use a CUDA device.
pub fn cuda_available() -> bool {
    cuda_unavailable().is_none()
}

/// The device `run.device` names: `auto` (CUDA device 0 when present, else the
/// CPU), `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn resolve(name: &str) -> Result<Device> {
    let cuda = |n: usize| {
        if let Some(why) = cuda_unavailable() {
            return Err(Error::Input(format!("run.device = \"{name}\" but CUDA cannot be used here ({why}); use \"auto\" or \"cpu\"")));
        }
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(Error::Input(format!(
                "run.device = \"{name}\" but there are {count} CUDA devices"
            )));
        }
        Ok(Device::Cuda(n))
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if cuda_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Input(format!(
                "run.device = \"{other}\": expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// Applies `run.cuda_allocator` (libtorch's `PYTORCH_CUDA_ALLOC_CONF` syntax)
/// and `run.gpu_memory_fraction` (0: no cap) to the caching allocator of CUDA
/// device `ordinal`: the one memory pool host and plugins allocate from.
///
/// The settings go to the allocator's live configuration (what
/// `torch.cuda.memory._set_allocator_settings` does), not to the environment:
/// they are checked (a misspelt key is an input error), safe to apply while
/// other runs' threads work, and govern allocations from then on.
pub fn configure_allocator(ordinal: usize, fraction: f64, settings: &str) -> Result<()> {
    if !settings.is_empty() {
        taskweave_kernels::memory::set_allocator_settings(settings)
            .map_err(|e| Error::Input(format!("run.cuda_allocator = {settings:?}: {e}")))?;
    }
    if fraction > 0.0 {
        taskweave_kernels::memory::set_memory_fraction(ordinal, fraction)
            .map_err(|e| Error::Run(format!("setting run.gpu_memory_fraction: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::configure_allocator;

    #[test]
    fn a_misspelt_allocator_setting_is_an_input_error_naming_key_and_setting() {
        // The shim parses settings without a GPU wherever it loads.
        if let Err(e) = taskweave_kernels::memory::shim_status() {
            eprintln!("skipped: the c10 shim is not available here: {e}");
            return;
        }
        let e = configure_allocator(0, 0.0, "expandable_segmets:True").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("run.cuda_allocator") && msg.contains("'expandable_segmets'"),
            "{msg}"
        );
        configure_allocator(0, 0.0, "max_split_size_mb:256").unwrap();
    }
}
