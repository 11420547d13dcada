//! TaskExpert's gate: a softmax over slots per token and task, and the
//! weighted mixture of the experts' outputs and the task's memory.
use cudarc::driver::PushKernelArg;
use tch::{Kind, Tensor};

use super::{
    check_defined, check_device, check_float, check_same_kind, config, kernel_suffix, ptr,
    shape_err,
};
use crate::compile::{define, DiskCache, GATE};
use crate::device::DeviceState;
use crate::error::{Error, Result};

const OP: &str = "gate_mix";
const BLOCK: u32 = define("TW_GATE_BLOCK") as u32;
/// Tasks one launch mixes (more go in several launches).
const TASKS_PER_LAUNCH: i64 = define("TW_GATE_MAX_TASKS");
/// Most slots (experts, plus the memory) a gate may have: one warp's lanes.
pub const MAX_SLOTS: i64 = define("TW_GATE_MAX_SLOTS");

/// The shapes of one call: T tasks, R tokens, n experts, S slots, d features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    t: i64,
    r: i64,
    n: i64,
    s: i64,
    d: i64,
}

/// Checks `logits` `[T, R, S]`, `experts` `[R, n, d]` and `memory`
/// (`[T, R, d]`, only with S = n + 1) and returns their shapes and dtype.
pub(crate) fn check(
    logits: &Tensor,
    experts: &Tensor,
    memory: Option<&Tensor>,
) -> Result<(Dims, Kind)> {
    check_defined(OP, "experts", experts)?;
    let kind = check_float(OP, "experts", experts)?;
    let device = experts.device();
    let (r, n, d) = match experts.size()[..] {
        [r, n, d] if n >= 1 => (r, n, d),
        _ => return Err(shape_err(OP, "experts", "[R, n, d] with n >= 1", experts)),
    };
    check_defined(OP, "logits", logits)?;
    check_same_kind(OP, "logits", logits, kind)?;
    check_device(OP, "logits", logits, device)?;
    let (t, s) = match logits.size()[..] {
        [t, lr, s] if lr == r && (s == n || s == n + 1) && s <= MAX_SLOTS && t >= 1 => (t, s),
        _ => {
            return Err(shape_err(
                OP,
                "logits",
                format!(
                "[T, {r}, S] with S = {n} or {} (n experts, plus the memory), at most {MAX_SLOTS}",
                n + 1
            ),
                logits,
            ))
        }
    };
    if let Some(m) = memory {
        check_defined(OP, "memory", m)?;
        check_same_kind(OP, "memory", m, kind)?;
        check_device(OP, "memory", m, device)?;
        if s != n + 1 || m.size() != [t, r, d] {
            return Err(shape_err(
                OP,
                "memory",
                format!("[{t}, {r}, {d}] with a memory slot in logits (S = n + 1)"),
                m,
            ));
        }
    }
    Ok((Dims { t, r, n, s, d }, kind))
}

/// CPU/tch reference of [`crate::Kernels::gate_mix`], differentiable (it is
/// what training runs): the softmax in f32, the mixture in the inputs' dtype.
pub fn reference(
    logits: &Tensor,
    experts: &Tensor,
    memory: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (dims, kind) = check(logits, experts, memory)?;
    let weights = logits.f_softmax(-1, Kind::Float)?;
    let on_experts = weights.f_narrow(-1, 0, dims.n)?.f_to_kind(kind)?;
    // [T, R, n, 1] * [1, R, n, d] summed over n: elementwise, 2.5x faster
    // forward and backward on the CPU than a batched product of R tiny
    // [n] x [n, d] matrices (TaskExpert's shapes, one thread).
    let mut mixed = on_experts
        .f_unsqueeze(-1)?
        .f_mul(&experts.f_unsqueeze(0)?)?
        .f_sum_dim_intlist(-2, false, kind)?;
    if let Some(m) = memory {
        let on_memory = weights.f_narrow(-1, dims.n, 1)?.f_to_kind(kind)?;
        mixed = mixed.f_add(&on_memory.f_mul(m)?)?;
    }
    Ok((mixed, weights))
}

pub(crate) fn kernel_supports(kind: Kind, inputs: &[Option<&Tensor>]) -> bool {
    // The kernel has no backward: inputs that need gradients take the reference.
    kernel_suffix(kind).is_some() && inputs.iter().flatten().all(|x| !x.requires_grad())
}

/// The CUDA path of `gate_mix`: one launch per 8 tasks; experts read once per launch.
pub(crate) fn cuda(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    logits: &Tensor,
    experts: &Tensor,
    memory: Option<&Tensor>,
    (dims, kind): (Dims, Kind),
) -> Result<(Tensor, Tensor)> {
    let Dims { t, r, n, s, d } = dims;
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP,
        what: "experts".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let device = experts.device();
    let out = Tensor::f_empty([t, r, d], (kind, device))?;
    let weights = Tensor::f_empty([t, r, s], (Kind::Float, device))?;
    if r == 0 {
        return Ok((out, weights));
    }
    let (logits, experts) = (logits.f_contiguous()?, experts.f_contiguous()?);
    let memory = memory.map(Tensor::f_contiguous).transpose()?;
    let aligned = |x: &Tensor| ptr(x).is_multiple_of(16);
    let vec4 = i32::from(
        d % 4 == 0 && aligned(&experts) && aligned(&out) && memory.as_ref().is_none_or(aligned),
    );
    // A warp per token, grid-stride.
    let warps = BLOCK as i64 / 32;
    let grid = ((r + warps - 1) / warps).min(dev.sm_count as i64 * 16) as u32;
    let f = dev.function(&GATE, &format!("gate_mix_{sfx}"), cache)?;
    let stream = dev.stream()?;
    let elt = kind.elt_size_in_bytes() as u64;
    let mut first = 0;
    while first < t {
        let nt = TASKS_PER_LAUNCH.min(t - first);
        let (lp, ep, op, wp) = (
            ptr(&logits) + (first * r * s) as u64 * elt,
            ptr(&experts),
            ptr(&out) + (first * r * d) as u64 * elt,
            ptr(&weights) + (first * r * s) as u64 * 4,
        );
        let mp = memory
            .as_ref()
            .map_or(0, |m| ptr(m) + (first * r * d) as u64 * elt);
        let (nt32, n32, s32) = (nt as i32, n as i32, s as i32);
        let mut b = stream.launch_builder(&f);
        b.arg(&lp)
            .arg(&ep)
            .arg(&mp)
            .arg(&r)
            .arg(&nt32)
            .arg(&n32)
            .arg(&s32)
            .arg(&d)
            .arg(&vec4);
        b.arg(&op).arg(&wp);
        // SAFETY: logits [t, r, s], experts [r, n, d], memory [t, r, d] (or
        // null), out [t, r, d] of the kernel's dtype and weights [t, r, s]
        // f32 are live and contiguous on this device; the offsets select
        // tasks first..first + nt; s <= 32 and nt <= 8 as the kernel's
        // shared buffer requires; vec4 only when d % 4 == 0 and every base
        // is 16-byte aligned.
        unsafe { b.launch(config((grid, 1, 1), BLOCK)) }
            .map_err(Error::driver("launching gate_mix"))?;
        first += nt;
    }
    Ok((out, weights))
}
