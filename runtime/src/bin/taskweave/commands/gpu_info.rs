//! `taskweave gpu-info`: what CUDA looks like from here. Never fails: a machine
//! without a GPU gets a clear "not available" with the reason.

use std::io::Write;

use serde::Serialize;
use taskweave_kernels::{CudaInfo, StreamSource};
use taskweave_plugin_api::module::Compat;

use super::write_json;
use crate::output::Failure;

#[derive(Serialize)]
struct GpuInfo {
    /// The libtorch that runs (which LD_LIBRARY_PATH may change).
    libtorch: String,
    libtorch_dir: Option<String>,
    /// The libtorch tch was built for.
    libtorch_built_for: String,
    tch: String,
    cuda: String,
    libtorch_cuda_loaded: bool,
    nvrtc: String,
    devices: Vec<DeviceView>,
}

#[derive(Serialize)]
struct DeviceView {
    ordinal: usize,
    name: String,
    compute_capability: String,
    multiprocessors: i32,
    total_memory: usize,
    free_memory: usize,
    driver_cuda_version: String,
    kernel_stream: &'static str,
}

fn stream_name(stream: &StreamSource) -> &'static str {
    match stream {
        StreamSource::TorchCurrent => "libtorch's current stream",
        StreamSource::LegacyDefault => "the legacy default stream",
    }
}

impl From<&CudaInfo> for DeviceView {
    fn from(d: &CudaInfo) -> DeviceView {
        DeviceView {
            ordinal: d.ordinal,
            name: d.name.clone(),
            compute_capability: format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
            multiprocessors: d.sm_count,
            total_memory: d.total_memory,
            free_memory: d.free_memory,
            driver_cuda_version: format!("{}.{}", d.driver_version.0, d.driver_version.1),
            kernel_stream: stream_name(&d.stream),
        }
    }
}

pub fn show(json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let compat = Compat::current();
    let (libtorch, libtorch_dir) = match taskweave_kernels::loaded_libtorch() {
        Ok((dir, version)) => (version, Some(dir.display().to_string())),
        Err(why) => (format!("unknown ({why})"), None),
    };
    let nvrtc = taskweave_kernels::compile::nvrtc_version()
        .map(|(a, b)| format!("{a}.{b}"))
        .map_err(|e| e.to_string());
    let devices: Result<Vec<CudaInfo>, String> = match taskweave::device::cuda_unavailable() {
        Some(why) => Err(why),
        None => (0..taskweave_kernels::device_count().unwrap_or(0))
            .map(taskweave_kernels::cuda_info)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string()),
    };
    let info = GpuInfo {
        libtorch,
        libtorch_dir,
        libtorch_built_for: compat.libtorch.clone(),
        tch: compat.tch.clone(),
        cuda: match &devices {
            Ok(_) => "available".into(),
            Err(why) => format!("not available: {why}"),
        },
        libtorch_cuda_loaded: devices.is_ok(),
        nvrtc: match &nvrtc {
            Ok(v) => v.clone(),
            Err(e) => format!("not found: {e}"),
        },
        devices: devices
            .as_ref()
            .map(|list| list.iter().map(DeviceView::from).collect())
            .unwrap_or_default(),
    };
    if json {
        return write_json(out, &info);
    }
    let from = info
        .libtorch_dir
        .as_ref()
        .map(|d| format!(" from {d}"))
        .unwrap_or_default();
    writeln!(
        out,
        "libtorch {}{from} (tch {}, built for libtorch {})",
        info.libtorch, info.tch, info.libtorch_built_for
    )?;
    match &nvrtc {
        Ok(v) => writeln!(out, "NVRTC {v} (kernels compile at first use)")?,
        Err(e) => writeln!(out, "NVRTC not found: {e}")?,
    }
    match devices {
        Err(why) => writeln!(
            out,
            "CUDA not available: {why}\nruns with device = \"auto\" use the CPU"
        )?,
        Ok(_) => {
            writeln!(
                out,
                "libtorch_cuda loaded; {} CUDA device(s)",
                info.devices.len()
            )?;
            let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
            for d in &info.devices {
                writeln!(
                    out,
                    "  cuda:{}  {}  compute {}  {} SMs  {:.1} GiB total, {:.1} GiB free  driver CUDA {}  kernels on {}",
                    d.ordinal,
                    d.name,
                    d.compute_capability,
                    d.multiprocessors,
                    gib(d.total_memory),
                    gib(d.free_memory),
                    d.driver_cuda_version,
                    d.kernel_stream
                )?;
            }
        }
    }
    Ok(())
}
