//! The dynamic-logit-fusion grid (Fan et al. 2024; `Kernels::fusion_grid`). The derivation of the
//! single-pass kernel is at the top of `cuda/logit_fusion.cu`.
use cudarc::driver::{DeviceRepr, PushKernelArg};
use tch::{Kind, Tensor};

use super::{
    check_defined, check_device, check_float, check_same_kind, config, grid_u32, kernel_suffix,
    ptr, shape_err,
};
use crate::compile::{define, DiskCache, LOGIT_FUSION};
use crate::device::DeviceState;
use crate::error::{Error, Result};

const OP: &str = "fusion_grid";
/// Most experts the kernel takes (its argument struct has this many slots).
pub const MAX_EXPERTS: usize = define("TW_FUSION_MAX_EXPERTS") as usize;
/// Most grid values the kernel takes.
pub const MAX_ALPHAS: usize = define("TW_FUSION_MAX_ALPHAS") as usize;
const PARTIALS_BLOCK: u32 = define("TW_FUSION_BLOCK") as u32;
const CHUNK: i64 = define("TW_FUSION_BLOCK") * define("TW_FUSION_PER_THREAD");
const SELECT_BLOCK: u32 = define("TW_FUSION_SELECT_BLOCK") as u32;
const APPLY_BLOCK: u32 = define("TW_FUSION_APPLY_BLOCK") as u32;

/// The result of [`crate::Kernels::fusion_grid`] for a batch of rows.
#[derive(Debug)]
pub struct FusionOutput {
    /// `[B, V]` log-probabilities of the fused distribution P̃ of each row's
    /// best candidate (f32; f64 for f64 inputs).
    pub log_probs: Tensor,
    /// `[B, T]` the chosen α per row: `a` at the chosen expert, 0 elsewhere.
    pub alpha: Tensor,
    /// `[B]` the objective of the chosen candidate.
    pub objective: Tensor,
}

/// Mirrors `TwFusionArgs` in logit_fusion.cu.
#[repr(C)]
struct FusionArgs {
    large: u64,
    small: u64,
    experts: [u64; MAX_EXPERTS],
    alphas: [f32; MAX_ALPHAS],
    n_experts: i32,
    n_alphas: i32,
    vocab: i64,
    n_chunks: i32,
    step: f32,
}
const _: () = assert!(std::mem::size_of::<FusionArgs>() == 424);
// SAFETY: plain `repr(C)` data with the CUDA struct's layout (size asserted
// on both sides), passed by value as a kernel parameter.
unsafe impl DeviceRepr for FusionArgs {}

/// Checks the inputs; returns (B, V, dtype).
pub(crate) fn check(
    large: &Tensor,
    small: &Tensor,
    experts: &[Tensor],
    alphas: &[f64],
) -> Result<(i64, i64, Kind)> {
    check_defined(OP, "large", large)?;
    let kind = check_float(OP, "large", large)?;
    let (b, v) = match large.size()[..] {
        [b, v] if b >= 1 && v >= 1 => (b, v),
        _ => return Err(shape_err(OP, "large", "[B, V] with B, V >= 1", large)),
    };
    if experts.is_empty() || experts.len() > MAX_EXPERTS {
        return Err(Error::argument(
            OP,
            "number of experts",
            format!("1 to {MAX_EXPERTS}"),
            experts.len(),
        ));
    }
    if alphas.is_empty() || alphas.len() > MAX_ALPHAS {
        return Err(Error::argument(
            OP,
            "number of alphas",
            format!("1 to {MAX_ALPHAS}"),
            alphas.len(),
        ));
    }
    if let Some(a) = alphas.iter().find(|a| !a.is_finite()) {
        return Err(Error::argument(OP, "alphas", "finite values", a));
    }
    let named = std::iter::once(("small".to_string(), small)).chain(
        experts
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("experts[{i}]"), e)),
    );
    for (name, t) in named {
        check_defined(OP, &name, t)?;
        check_same_kind(OP, &name, t, kind)?;
        check_device(OP, &name, t, large.device())?;
        if t.size() != [b, v] {
            return Err(shape_err(
                OP,
                &name,
                format!("[{b}, {v}], the shape of large"),
                t,
            ));
        }
    }
    Ok((b, v, kind))
}

fn out_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

fn kl(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    // KL(p || q) per row, from log-probabilities, with 0 log 0 = 0: a token
    // p rules out adds nothing (masked tokens would give 0 · NaN).
    let p = log_p.f_exp()?;
    let terms = p.f_mul(&log_p.f_sub(log_q)?)?;
    Ok(terms
        .f_where_scalarother(&p.f_gt(0.0)?, 0.0)?
        .f_sum_dim_intlist(-1, false, None::<Kind>)?)
}

/// D = E − S with −∞ − −∞ = 0: a token both models rule out (a masked
/// vocabulary entry) moves nothing.
fn delta(e: &Tensor, s: &Tensor) -> Result<Tensor> {
    Ok(e.f_sub(s)?.f_where_scalarother(&e.f_ne_tensor(s)?, 0.0)?)
}

/// CPU/tch reference of [`crate::Kernels::fusion_grid`]: the eager composite,
/// one batched log-softmax per expert over the whole grid (few, larger ops:
/// a decoding step's single row is bound by per-op overhead). Also the
/// baseline the kernel is timed against.
pub fn reference(
    large: &Tensor,
    small: &Tensor,
    experts: &[Tensor],
    alphas: &[f64],
) -> Result<FusionOutput> {
    let (b, _, kind) = check(large, small, experts, alphas)?;
    let _no_grad = tch::no_grad_guard();
    let k_out = out_kind(kind);
    let device = large.device();
    let l = large.f_to_kind(k_out)?;
    let s = small.f_to_kind(k_out)?;
    let log_p = l.f_log_softmax(-1, None::<Kind>)?;
    let log_q = s.f_log_softmax(-1, None::<Kind>)?;
    let mut deltas = Vec::with_capacity(experts.len());
    let (mut klq, mut klqr) = (Vec::new(), Vec::new());
    for e in experts {
        let e = e.f_to_kind(k_out)?;
        let log_qt = e.f_log_softmax(-1, None::<Kind>)?;
        klq.push(kl(&log_qt, &log_q)?);
        klqr.push(kl(&log_q, &log_qt)?);
        deltas.push(delta(&e, &s)?);
    }
    let klq = Tensor::f_stack(&klq, 0)?; // [T, B]
    let klqr = Tensor::f_stack(&klqr, 0)?;
    let grid = Tensor::f_from_slice(alphas)?
        .f_to_kind(k_out)?
        .f_to_device(device)?;
    // Every grid value of one expert at once: [A, B, V] candidates. a = 0 is
    // P itself (0·(−∞) would be NaN where an expert alone rules a token out).
    let steering = grid.f_ne(0.0)?.f_view([-1, 1])?;
    let per_expert = deltas
        .iter()
        .map(|d| {
            let log_pt = l
                .f_unsqueeze(0)?
                .f_add(&grid.f_view([-1, 1, 1])?.f_mul(&d.f_unsqueeze(0)?)?)?
                .f_log_softmax(-1, None::<Kind>)?;
            let kl1 = kl(&log_pt, &log_p)?.f_where_scalarother(&steering, 0.0)?; // [A, B]
            let kl2 = kl(&log_p, &log_pt)?.f_where_scalarother(&steering, 0.0)?;
            let x = kl1.f_unsqueeze(1)?.f_sub(&klq)?.f_square()?; // [A, T', B]
            let y = kl2.f_unsqueeze(1)?.f_sub(&klqr)?.f_square()?;
            Ok(x.f_add(&y)?.f_sum_dim_intlist(1, false, None::<Kind>)?) // [A, B]
        })
        .collect::<Result<Vec<_>>>()?;
    // Candidate c = k * T + t: argmin's first minimum is then the earliest
    // grid value, then the smallest t.
    let objs = Tensor::f_stack(&per_expert, 1)? // [A, T, B]
        .f_permute([2, 0, 1])?
        .f_reshape([b, -1])?; // [B, A * T]
    let objs = objs.f_nan_to_num(Some(f64::INFINITY), Some(f64::INFINITY), None)?;
    let best = objs.f_argmin(-1, true)?; // [B, 1]
    let objective = objs
        .f_gather(1, &best, false)?
        .f_squeeze_dim(1)?
        .f_to_kind(k_out)?;
    let n_t = experts.len() as i64;
    let t_idx = best.f_remainder(n_t)?; // [B, 1]
    let k_idx = best.f_floor_divide_scalar(n_t)?.f_squeeze_dim(1)?;
    let a_best = grid.f_index_select(0, &k_idx)?.f_unsqueeze(1)?; // [B, 1]
    let alpha = Tensor::f_zeros([b, n_t], (k_out, device))?.f_scatter(1, &t_idx, &a_best)?;
    let stacked = Tensor::f_stack(&deltas, 0)?; // [T, B, V]
    let v = large.size()[1];
    let idx = t_idx.f_view([1, b, 1])?.f_expand([1, b, v], false)?;
    let d_best = stacked.f_gather(0, &idx, false)?.f_squeeze_dim(0)?;
    let log_probs = l
        .f_add(&d_best.f_mul(&a_best)?)?
        .f_log_softmax(-1, None::<Kind>)?;
    let alpha = if k_out == Kind::Double {
        alpha
    } else {
        alpha.f_to_kind(Kind::Float)?
    };
    Ok(FusionOutput {
        log_probs,
        alpha,
        objective,
    })
}

/// The grid step when `alphas` is uniform and increasing (the kernel then
/// chains multiplies instead of exps), else 0.
pub(crate) fn uniform_step(alphas: &[f64]) -> f32 {
    if alphas.len() < 2 {
        return 0.0;
    }
    let h = (alphas[alphas.len() - 1] - alphas[0]) / (alphas.len() - 1) as f64;
    if h.is_nan() || h <= 0.0 {
        return 0.0;
    }
    let uniform = alphas
        .iter()
        .enumerate()
        .all(|(k, &a)| (a - (alphas[0] + k as f64 * h)).abs() <= 1e-6 * a.abs().max(1.0));
    if uniform {
        h as f32
    } else {
        0.0
    }
}

pub(crate) fn kernel_supports(kind: Kind) -> bool {
    kernel_suffix(kind).is_some()
}

/// The CUDA path: partials (chunks x rows), select (one block per row), apply.
pub(crate) fn cuda(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    large: &Tensor,
    small: &Tensor,
    experts: &[Tensor],
    alphas: &[f64],
    dims: (i64, i64, Kind),
) -> Result<FusionOutput> {
    let (b, v, kind) = dims;
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP,
        what: "large".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let device = large.device();
    let rows = grid_u32(OP, "number of rows", b as u64, 65535)?;
    let n_chunks = (v + CHUNK - 1) / CHUNK;
    let (n_t, n_a) = (experts.len() as i64, alphas.len() as i64);
    let l = large.f_contiguous()?;
    let s = small.f_contiguous()?;
    let es: Vec<Tensor> = experts
        .iter()
        .map(|e| e.f_contiguous())
        .collect::<Result<_, _>>()?;
    let mut args = FusionArgs {
        large: ptr(&l),
        small: ptr(&s),
        experts: [0; MAX_EXPERTS],
        alphas: [0.0; MAX_ALPHAS],
        n_experts: n_t as i32,
        n_alphas: n_a as i32,
        vocab: v,
        n_chunks: n_chunks as i32,
        step: uniform_step(alphas),
    };
    for (slot, e) in args.experts.iter_mut().zip(&es) {
        *slot = ptr(e);
    }
    for (slot, a) in args.alphas.iter_mut().zip(alphas) {
        *slot = *a as f32;
    }
    let record = 4 + 5 * n_t + 3 * n_t * n_a;
    let ws = Tensor::f_empty([b * n_chunks * record], (Kind::Float, device))?;
    let sel = Tensor::f_empty([b, 4], (Kind::Float, device))?;
    let alpha = Tensor::f_empty([b, n_t], (Kind::Float, device))?;
    let objective = Tensor::f_empty([b], (Kind::Float, device))?;
    let log_probs = Tensor::f_empty([b, v], (Kind::Float, device))?;
    let partials = dev.function(&LOGIT_FUSION, &format!("fusion_partials_{sfx}"), cache)?;
    let select = dev.function(&LOGIT_FUSION, "fusion_select", cache)?;
    let apply = dev.function(&LOGIT_FUSION, &format!("fusion_apply_{sfx}"), cache)?;
    let stream = dev.stream()?;
    let (wsp, selp, ap, op, lp) = (
        ptr(&ws),
        ptr(&sel),
        ptr(&alpha),
        ptr(&objective),
        ptr(&log_probs),
    );
    let chunks = grid_u32(OP, "number of chunks", n_chunks as u64, u32::MAX as u64)?;
    let mut call = stream.launch_builder(&partials);
    call.arg(&args).arg(&wsp);
    // SAFETY: every pointer in args is a live contiguous [B, V] tensor of the
    // kernel's dtype on this device; ws has B * chunks * record f32 slots,
    // each written by exactly one block.
    unsafe { call.launch(config((chunks, rows, 1), PARTIALS_BLOCK)) }
        .map_err(Error::driver("launching fusion_partials"))?;
    let mut call = stream.launch_builder(&select);
    call.arg(&args).arg(&wsp).arg(&ap).arg(&op).arg(&selp);
    // SAFETY: reads the records written above (same stream); alpha is [B, T],
    // objective [B], sel [B, 4], all f32 on this device.
    unsafe { call.launch(config((rows, 1, 1), SELECT_BLOCK)) }
        .map_err(Error::driver("launching fusion_select"))?;
    let apply_grid = ((v + 4 * APPLY_BLOCK as i64 - 1) / (4 * APPLY_BLOCK as i64)) as u32;
    let mut call = stream.launch_builder(&apply);
    call.arg(&args).arg(&selp).arg(&lp);
    // SAFETY: sel was written by fusion_select on this stream; log_probs is
    // [B, V] f32 on this device.
    unsafe { call.launch(config((apply_grid, rows, 1), APPLY_BLOCK)) }
        .map_err(Error::driver("launching fusion_apply"))?;
    Ok(FusionOutput {
        log_probs,
        alpha,
        objective,
    })
}

#[cfg(test)]
mod tests {
    use super::uniform_step;

    #[test]
    fn uniform_step_detects_increasing_uniform_grids_only() {
        let grid: Vec<f64> = (0..=20).map(|k| k as f64 * 0.1).collect();
        assert!((uniform_step(&grid) - 0.1).abs() < 1e-7);
        assert_eq!(uniform_step(&[1.0]), 0.0);
        assert_eq!(uniform_step(&[0.0, 0.1, 0.3]), 0.0);
        assert_eq!(uniform_step(&[2.0, 1.0, 0.0]), 0.0);
        assert_eq!(uniform_step(&[1.0, 1.0]), 0.0);
    }
}
