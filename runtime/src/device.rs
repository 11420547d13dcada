//! Devices: `run.device` to a tch device, and making CUDA visible to libtorch.

use std::sync::OnceLock;

use tch::Device;

use crate::error::{Error, Result};

/// Loads `libtorch_cuda.so` once, when a CUDA driver is present.
///
/// tch's link line drops `libtorch_cuda.so` under `--as-needed` (no symbol of
/// it is referenced), and without it libtorch reports no CUDA. Loading it here
/// registers libtorch's CUDA backend. Machines without a driver skip the load,
/// so CPU runs never pay for mapping the (very large) CUDA library.
pub fn load_cuda() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        // SAFETY: loading the system's CUDA driver library runs no code of ours.
        if unsafe { libloading::Library::new("libcuda.so.1") }.is_err() {
            return false;
        }
        let candidates = [
            Some("libtorch_cuda.so".to_string()),
            option_env!("TASKWEAVE_LIBTORCH_LIB").map(|d| format!("{d}/libtorch_cuda.so")),
        ];
        for candidate in candidates.into_iter().flatten() {
            // SAFETY: libtorch_cuda is the CUDA half of the libtorch this binary links.
            if let Ok(lib) = unsafe { libloading::Library::new(&candidate) } {
                // Never unloaded: libtorch keeps pointers into it.
                std::mem::forget(lib);
                return true;
            }
        }
        false
    })
}

/// Whether libtorch can use a CUDA device.
pub fn cuda_available() -> bool {
    load_cuda() && tch::Cuda::is_available()
}

/// The device `run.device` names: `auto` (CUDA device 0 when present, else the
/// CPU), `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn resolve(name: &str) -> Result<Device> {
    let cuda = |n: usize| {
        if !cuda_available() {
            return Err(Error::Input(format!(
                "run.device = \"{name}\" but libtorch sees no CUDA device here; use \"auto\" or \"cpu\""
            )));
        }
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(Error::Input(format!("run.device = \"{name}\" but there are {count} CUDA devices")));
        }
        Ok(Device::Cuda(n))
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Input(format!("run.device = \"{other}\": expected auto, cpu, cuda or cuda:N"))),
        },
    }
}
