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

/// A device as `run.device` writes it: `cpu` or `cuda:N`.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// Bytes free on `device` now: `MemAvailable` on the CPU, the driver's free
/// memory on CUDA; `None` where that cannot be read.
pub fn free_memory(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(n) => taskweave_kernels::cuda_info(n)
            .ok()
            .map(|i| i.free_memory as u64),
        _ => std::fs::read_to_string("/proc/meminfo")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024),
    }
}

/// `bytes` as people read sizes: "512 B", "3.2 GB".
pub fn human_bytes(bytes: u128) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Refuses, as bad input, what needs at least `bytes` on `device` when the
/// device has less free: a clear error naming `what` (the keys that asked for
/// it) instead of libtorch's allocator failure or an abort of the process.
pub fn ensure_fits(device: Device, bytes: u128, what: impl FnOnce() -> String) -> Result<()> {
    match free_memory(device) {
        Some(free) if bytes > free as u128 => Err(Error::Input(format!(
            "{} needs at least {} on {}, which has {} free; make it smaller",
            what(),
            human_bytes(bytes),
            name(device),
            human_bytes(free as u128)
        ))),
        _ => Ok(()),
    }
}

/// Whether libtorch can use a CUDA device.
pub fn cuda_available() -> bool {
    cuda_unavailable().is_none()
}

/// The device the pipeline key `key` (`run.device`, a decoding pipeline's
/// `device`) names: `auto` (a CUDA device when present, else the
/// CPU), `cpu`, `cuda` or `cuda:N`. `auto` and `cuda` mean device 0, or under
/// `mpirun` one device per rank of each machine ([`crate::dist::rank_device`]).
pub fn resolve(key: &str, name: &str) -> Result<Device> {
    let cuda = |n: usize| {
        if let Some(why) = cuda_unavailable() {
            return Err(Error::Input(format!(
                "{key} = \"{name}\" but CUDA cannot be used here ({why}); use \"auto\" or \"cpu\""
            )));
        }
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(Error::Input(format!(
                "{key} = \"{name}\" but there are {count} CUDA devices"
            )));
        }
        Ok(Device::Cuda(n))
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" if !cuda_available() => Ok(Device::Cpu),
        "auto" | "cuda" => cuda(crate::dist::rank_device(
            tch::Cuda::device_count().max(0) as usize
        )),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Input(format!(
                "{key} = \"{other}\": expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// Keys of libtorch 2.11's CUDA caching-allocator settings
/// (c10/core/AllocatorConfig.h and c10/cuda/CUDAAllocatorConfig.h).
const ALLOCATOR_KEYS: &[&str] = &[
    "backend",
    "expandable_segments",
    "garbage_collection_threshold",
    "graph_capture_record_stream_reuse",
    "large_segment_size_mb",
    "max_non_split_rounding_mb",
    "max_split_size_mb",
    "per_process_memory_fraction",
    "pinned_num_register_threads",
    "pinned_reserve_segment_size_mb",
    "pinned_use_background_threads",
    "pinned_use_cuda_host_register",
    "release_lock_on_cudamalloc",
    "roundup_power2_divisions",
];

/// Checks the form of `run.cuda_allocator` without applying it, so that
/// `validate` and CPU runs catch what a CUDA run would refuse: comma-separated
/// `key:value` or `key:[v,...]` pairs whose keys libtorch knows. Values are
/// checked by libtorch itself when a CUDA run applies them.
pub fn check_allocator_settings(settings: &str) -> Result<(), String> {
    let mut rest = settings.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once(':')
            .ok_or_else(|| format!("`{rest}` is not of the form key:value"))?;
        let key = key.trim();
        if !ALLOCATOR_KEYS.contains(&key) {
            let hint =
                taskweave_plugin_api::config::did_you_mean(key, ALLOCATOR_KEYS.iter().copied())
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
            return Err(format!("unknown allocator setting `{key}`{hint}"));
        }
        let after = after.trim_start();
        let next = if let Some(list) = after.strip_prefix('[') {
            let (inner, next) = list
                .split_once(']')
                .ok_or_else(|| format!("the list of `{key}` has no closing `]`"))?;
            if inner.trim().is_empty() {
                return Err(format!("the list of `{key}` is empty"));
            }
            next
        } else {
            let (value, next) = after.split_at(after.find(',').unwrap_or(after.len()));
            if value.trim().is_empty() || value.contains([':', '[', ']']) {
                return Err(format!("`{key}` needs one value, as in {key}:VALUE"));
            }
            next
        };
        let next = next.trim_start();
        rest = match next.strip_prefix(',') {
            Some(more) => more.trim_start(),
            None if next.is_empty() => next,
            None => return Err(format!("expected `,` after the value of `{key}`")),
        };
    }
    Ok(())
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
        init_allocator(ordinal)?;
        taskweave_kernels::memory::set_memory_fraction(ordinal, fraction)
            .map_err(|e| Error::Run(format!("setting run.gpu_memory_fraction: {e}")))?;
    }
    Ok(())
}

/// Initialises the caching allocator of CUDA device `ordinal` with a
/// one-element allocation: c10 does that lazily, at the first CUDA tensor,
/// and both the memory fraction and the memory statistics fail before it
/// ("Allocator not initialized for device ... did you call init?").
pub fn init_allocator(ordinal: usize) -> Result<()> {
    drop(tch::Tensor::f_empty(
        [1],
        (tch::Kind::Float, Device::Cuda(ordinal)),
    )?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_allocator_settings, configure_allocator};

    #[test]
    fn allocator_settings_are_checked_without_a_gpu() {
        for good in [
            "",
            "expandable_segments:True",
            "max_split_size_mb:256, garbage_collection_threshold:0.6",
            "roundup_power2_divisions:[256:1,512:2,>:8],expandable_segments:False",
            "roundup_power2_divisions:4",
        ] {
            assert_eq!(check_allocator_settings(good), Ok(()), "{good}");
        }
        let e = check_allocator_settings("garbage:::").unwrap_err();
        assert!(e.contains("unknown allocator setting `garbage`"), "{e}");
        let e = check_allocator_settings("expandable_segmets:True").unwrap_err();
        assert!(e.contains("did you mean `expandable_segments`?"), "{e}");
        for bad in [
            "max_split_size_mb",
            "max_split_size_mb:",
            "max_split_size_mb:1:2",
            "roundup_power2_divisions:[1,2",
            "roundup_power2_divisions:[]",
            "max_split_size_mb:1]",
        ] {
            assert!(check_allocator_settings(bad).is_err(), "{bad}");
        }
    }

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
