//! The operations: argument checks shared by both paths, the CPU/tch
//! references and the CUDA launchers.
pub(crate) mod fusion;
pub(crate) mod gate;
pub(crate) mod gramian;
pub(crate) mod sam;

use cudarc::driver::LaunchConfig;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

pub(crate) fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

/// The `{dtype}` suffix of a kernel name, for the dtypes kernels exist for.
pub(crate) fn kernel_suffix(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Float => Some("f32"),
        Kind::BFloat16 => Some("bf16"),
        _ => None,
    }
}

pub(crate) fn cuda_ordinal(device: Device) -> Option<usize> {
    match device {
        Device::Cuda(i) => Some(i),
        _ => None,
    }
}

/// The device address of a tensor's first element, as a kernel argument.
pub(crate) fn ptr(t: &Tensor) -> u64 {
    t.data_ptr() as u64
}

pub(crate) fn config(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn grid_u32(op: &'static str, what: &str, n: u64, max: u64) -> Result<u32> {
    if n > max {
        return Err(Error::argument(op, what, format!("at most {max}"), n));
    }
    Ok(n as u32)
}

pub(crate) fn check_defined(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.defined() {
        Ok(())
    } else {
        Err(Error::argument(
            op,
            what.to_string(),
            "a defined tensor",
            "an undefined tensor",
        ))
    }
}

pub(crate) fn check_float(op: &'static str, what: &str, t: &Tensor) -> Result<Kind> {
    let kind = t.f_kind()?;
    if is_float(kind) {
        Ok(kind)
    } else {
        Err(Error::DType {
            op,
            what: what.to_string(),
            expected: "a floating-point dtype".into(),
            got: kind,
        })
    }
}

pub(crate) fn check_same_kind(op: &'static str, what: &str, t: &Tensor, kind: Kind) -> Result<()> {
    let got = t.f_kind()?;
    if got == kind {
        Ok(())
    } else {
        Err(Error::DType {
            op,
            what: what.to_string(),
            expected: format!("{kind:?}, like the first"),
            got,
        })
    }
}

pub(crate) fn check_device(op: &'static str, what: &str, t: &Tensor, device: Device) -> Result<()> {
    let got = t.device();
    if got == device {
        Ok(())
    } else {
        Err(Error::Device {
            op,
            what: what.to_string(),
            expected: device,
            got,
        })
    }
}

pub(crate) fn shape_err(
    op: &'static str,
    what: &str,
    expected: impl Into<String>,
    t: &Tensor,
) -> Error {
    Error::Shape {
        op,
        what: what.to_string(),
        expected: expected.into(),
        got: t.size(),
    }
}
