//! The Gramian of per-task gradients and their weighted combination.
use cudarc::driver::PushKernelArg;
use tch::{Kind, Tensor};

use super::{
    check_defined, check_device, check_float, config, grid_u32, kernel_suffix, ptr, shape_err,
};
use crate::compile::{define, DiskCache, GRAMIAN};
use crate::device::DeviceState;
use crate::error::{Error, Result};
use crate::kernels::GramianBackend;

const OP_GRAMIAN: &str = "gramian";
const OP_COMBINE: &str = "combine";
/// Largest T the Gramian kernel is instantiated for.
pub(crate) const GRAMIAN_MAX_TASKS: i64 = define("TW_GRAM_MAX_T");
const GRAM_BLOCK: u32 = define("TW_GRAM_BLOCK") as u32;
const COMBINE_BLOCK: u32 = define("TW_COMBINE_BLOCK") as u32;
const COMBINE_MAX_ROWS: i64 = define("TW_COMBINE_MAX_K");
const COMBINE_MAX_TASKS: i64 = define("TW_COMBINE_MAX_T");

/// The Gramian's dtype: f32 for f32/bf16/f16 gradients, f64 for f64.
pub(crate) fn gramian_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Checks `grads` ([T, P], float) and returns (T, P, dtype).
pub(crate) fn check_grads(op: &'static str, grads: &Tensor) -> Result<(i64, i64, Kind)> {
    check_defined(op, "grads", grads)?;
    let kind = check_float(op, "grads", grads)?;
    match grads.size()[..] {
        [t, p] if t >= 1 => Ok((t, p, kind)),
        _ => Err(shape_err(op, "grads", "[T, P] with T >= 1", grads)),
    }
}

/// CPU/tch reference of [`crate::Kernels::gramian`]: `G Gᵀ` by libtorch's
/// matmul (cuBLAS on CUDA), in f32 for bf16/f16 gradients (a matmul in their
/// dtype would round the Gramian itself to bf16/f16).
pub fn reference_gramian(grads: &Tensor) -> Result<Tensor> {
    let (_, _, kind) = check_grads(OP_GRAMIAN, grads)?;
    let _no_grad = tch::no_grad_guard();
    let g = grads.f_to_kind(gramian_kind(kind))?;
    Ok(g.f_matmul(&g.f_tr()?)?)
}

/// Checks `weights` ([T] or [K, T]) against `grads` ([T, P]); returns (K, T, P).
pub(crate) fn check_combine(weights: &Tensor, grads: &Tensor) -> Result<(i64, i64, i64, Kind)> {
    let (t, p, kind) = check_grads(OP_COMBINE, grads)?;
    check_defined(OP_COMBINE, "weights", weights)?;
    check_float(OP_COMBINE, "weights", weights)?;
    check_device(OP_COMBINE, "weights", weights, grads.device())?;
    let k = match weights.size()[..] {
        [wt] if wt == t => 1,
        [k, wt] if wt == t && k >= 1 => k,
        _ => {
            return Err(shape_err(
                OP_COMBINE,
                "weights",
                format!("[{t}] or [K, {t}] (T from grads)"),
                weights,
            ))
        }
    };
    Ok((k, t, p, kind))
}

/// CPU/tch reference of [`crate::Kernels::combine`]: `W G` by libtorch's matmul.
pub fn reference_combine(weights: &Tensor, grads: &Tensor) -> Result<Tensor> {
    let (_, _, _, kind) = check_combine(weights, grads)?;
    let _no_grad = tch::no_grad_guard();
    Ok(weights.f_to_kind(kind)?.f_matmul(grads)?)
}

/// Whether `backend` computes the Gramian of T tasks of `kind` with the
/// kernel (see [`GramianBackend`] for the measurements behind `Auto`).
pub(crate) fn gramian_kernel_chosen(backend: GramianBackend, t: i64, kind: Kind) -> bool {
    let exists = kernel_suffix(kind).is_some() && (1..=GRAMIAN_MAX_TASKS).contains(&t);
    match backend {
        GramianBackend::Cublas => false,
        GramianBackend::Auto | GramianBackend::Kernel => exists,
    }
}

pub(crate) fn combine_kernel_supports(k: i64, t: i64, kind: Kind) -> bool {
    kernel_suffix(kind).is_some() && k <= COMBINE_MAX_ROWS && t <= COMBINE_MAX_TASKS
}

/// The CUDA path of `gramian`: one launch; the last block writes [T, T].
pub(crate) fn cuda_gramian(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    grads: &Tensor,
    t: i64,
    p: i64,
    kind: Kind,
) -> Result<Tensor> {
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP_GRAMIAN,
        what: "grads".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let device = grads.device();
    if p == 0 {
        return Ok(Tensor::f_zeros([t, t], (Kind::Float, device))?);
    }
    let g = grads.f_contiguous()?;
    let k = t * (t + 1) / 2;
    let per_block = GRAM_BLOCK as i64 * 2;
    let grid = ((p + per_block - 1) / per_block)
        .min(dev.sm_count as i64 * 4)
        .max(1);
    // [partials (grid * K) | counter]; zeroed for the counter.
    let ws = Tensor::f_zeros([grid * k + 1], (Kind::Double, device))?;
    let out = Tensor::f_empty([t, t], (Kind::Float, device))?;
    let f = dev.function(&GRAMIAN, &format!("gramian_{sfx}_t{t}"), cache)?;
    let stream = dev.stream()?;
    let (gp, partials, counter, op) = (
        ptr(&g),
        ptr(&ws),
        ptr(&ws) + 8 * (grid * k) as u64,
        ptr(&out),
    );
    let mut b = stream.launch_builder(&f);
    b.arg(&gp).arg(&p).arg(&partials).arg(&counter).arg(&op);
    // SAFETY: g is a live contiguous [t, p] tensor of the kernel's dtype, the
    // workspace holds grid * k partials and a zeroed counter, out is [t, t]
    // f32; all on this device and ordered on libtorch's stream.
    unsafe { b.launch(config((grid as u32, 1, 1), GRAM_BLOCK)) }
        .map_err(Error::driver("launching gramian"))?;
    Ok(out)
}

/// The CUDA path of `combine`: reads G once for all K rows of W.
pub(crate) fn cuda_combine(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    weights: &Tensor,
    grads: &Tensor,
    dims: (i64, i64, i64),
    kind: Kind,
) -> Result<Tensor> {
    let (k, t, p) = dims;
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP_COMBINE,
        what: "grads".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let device = grads.device();
    let out_shape: Vec<i64> = if weights.dim() == 1 {
        vec![p]
    } else {
        vec![k, p]
    };
    let out = Tensor::f_empty(out_shape.as_slice(), (kind, device))?;
    if p == 0 {
        return Ok(out);
    }
    let w = weights.f_to_kind(Kind::Float)?.f_contiguous()?;
    let g = grads.f_contiguous()?;
    // Four columns per thread where every row starts 16-byte aligned.
    let vec4 = p % 4 == 0 && ptr(&g).is_multiple_of(16) && ptr(&out).is_multiple_of(16);
    let columns = if vec4 { p / 4 } else { p };
    let grid = grid_u32(
        OP_COMBINE,
        "grid",
        ((columns + COMBINE_BLOCK as i64 - 1) / COMBINE_BLOCK as i64).min(dev.sm_count as i64 * 8)
            as u64,
        u32::MAX as u64,
    )?;
    let f = dev.function(&GRAMIAN, &format!("combine_{sfx}"), cache)?;
    let stream = dev.stream()?;
    let (wp, gp, op, nt, nk) = (ptr(&w), ptr(&g), ptr(&out), t as i32, k as i32);
    let vec4 = i32::from(vec4);
    let mut b = stream.launch_builder(&f);
    b.arg(&wp)
        .arg(&gp)
        .arg(&p)
        .arg(&nt)
        .arg(&nk)
        .arg(&vec4)
        .arg(&op);
    // SAFETY: w is [k, t] f32, g is [t, p] and out [k, p] of the kernel's
    // dtype, contiguous, live, on this device; k <= 8 and t <= 64 as the
    // kernel's shared buffer requires; vec4 only with p % 4 == 0 and
    // 16-byte aligned bases.
    unsafe { b.launch(config((grid, 1, 1), COMBINE_BLOCK)) }
        .map_err(Error::driver("launching combine"))?;
    Ok(out)
}
