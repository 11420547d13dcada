//! SAM perturb/restore over a parameter group (SAM-MTL, Phan et al. 2022; `Kernels::sam_perturb`).
use cudarc::driver::{DeviceRepr, PushKernelArg};
use tch::{Device, Kind, Tensor};

use super::{
    check_defined, check_device, check_float, check_same_kind, config, kernel_suffix, ptr,
    shape_err,
};
use crate::compile::{define, DiskCache, SAM};
use crate::device::DeviceState;
use crate::error::{Error, Result};

const OP_PERTURB: &str = "sam_perturb";
const OP_RESTORE: &str = "sam_restore";
const MAX_TENSORS: usize = define("TW_SAM_MAX_TENSORS") as usize;
const BLOCK: u32 = define("TW_SAM_BLOCK") as u32;
const CHUNK: i64 = define("TW_SAM_CHUNK");

/// Mirrors `TwTensorList` in sam.cu (passed by value: no host-to-device copy).
#[repr(C)]
struct TensorList {
    ptr0: [u64; MAX_TENSORS],
    ptr1: [u64; MAX_TENSORS],
    ptr2: [u64; MAX_TENSORS],
    numel: [i64; MAX_TENSORS],
    block_start: [u32; MAX_TENSORS + 1],
    count: i32,
}
const _: () = assert!(std::mem::size_of::<TensorList>() == 9224);
// SAFETY: plain `repr(C)` data with the layout of the CUDA struct (size
// asserted on both sides), passed by value as a kernel parameter.
unsafe impl DeviceRepr for TensorList {}

/// Checks the group and returns its device and dtype (`None` when empty).
pub(crate) fn check_group(
    op: &'static str,
    params: &[Tensor],
    others: &[Tensor],
    other_name: &str,
) -> Result<Option<(Device, Kind)>> {
    if params.len() != others.len() {
        return Err(Error::argument(
            op,
            format!("number of {other_name}"),
            format!("{} (one per parameter)", params.len()),
            others.len(),
        ));
    }
    let Some(first) = params.first() else {
        return Ok(None);
    };
    check_defined(op, "params[0]", first)?;
    let kind = check_float(op, "params[0]", first)?;
    let device = first.device();
    for (i, (p, o)) in params.iter().zip(others).enumerate() {
        let (pn, on) = (format!("params[{i}]"), format!("{other_name}[{i}]"));
        check_defined(op, &pn, p)?;
        check_defined(op, &on, o)?;
        check_same_kind(op, &pn, p, kind)?;
        check_same_kind(op, &on, o, kind)?;
        check_device(op, &pn, p, device)?;
        check_device(op, &on, o, device)?;
        if o.size() != p.size() {
            return Err(shape_err(
                op,
                &on,
                format!("{:?}, the shape of {pn}", p.size()),
                o,
            ));
        }
    }
    Ok(Some((device, kind)))
}

pub(crate) fn check_rho(rho: f64) -> Result<()> {
    if rho.is_finite() && rho >= 0.0 {
        Ok(())
    } else {
        Err(Error::argument(
            OP_PERTURB,
            "rho",
            "a finite value >= 0",
            rho,
        ))
    }
}

/// Makes `backup` hold one tensor per parameter with its shape, dtype and
/// device, reusing the tensors already there when they fit.
fn prepare_backup(params: &[Tensor], backup: &mut Vec<Tensor>) -> Result<()> {
    let fits = backup.len() == params.len()
        && params.iter().zip(backup.iter()).all(|(p, b)| {
            b.defined()
                && b.size() == p.size()
                && b.kind() == p.kind()
                && b.device() == p.device()
                && b.is_contiguous()
        });
    if !fits {
        backup.clear();
        for p in params {
            backup.push(Tensor::f_empty(p.size(), (p.f_kind()?, p.device()))?);
        }
    }
    Ok(())
}

/// CPU/tch reference of [`crate::Kernels::sam_perturb`]: eager per-tensor ops.
pub fn reference_perturb(
    params: &[Tensor],
    grads: &[Tensor],
    backup: &mut Vec<Tensor>,
    rho: f64,
    adaptive: bool,
) -> Result<Tensor> {
    check_rho(rho)?;
    let Some((device, _)) = check_group(OP_PERTURB, params, grads, "grads")? else {
        backup.clear();
        return Ok(Tensor::f_zeros([], (Kind::Double, Device::Cpu))?);
    };
    let _no_grad = tch::no_grad_guard();
    let mut sq = Tensor::f_zeros([], (Kind::Double, device))?;
    for (p, g) in params.iter().zip(grads) {
        let a = if adaptive {
            g.f_mul(&p.f_abs()?)?
        } else {
            g.shallow_clone()
        };
        sq = sq.f_add(&a.f_square()?.f_sum(Kind::Double)?)?;
    }
    let norm = sq.f_sqrt()?;
    // On the device: reading the norm back would synchronise.
    let scale = norm
        .f_add_scalar(1e-12)?
        .f_reciprocal()?
        .f_mul_scalar(rho)?;
    prepare_backup(params, backup)?;
    for ((p, g), b) in params.iter().zip(grads).zip(backup.iter_mut()) {
        b.f_copy_(p)?;
        let e = if adaptive {
            p.f_mul(p)?.f_mul(g)?
        } else {
            g.shallow_clone()
        };
        let mut p = p.shallow_clone();
        let _ = p.f_add_(&e.f_mul(&scale)?)?;
    }
    Ok(norm)
}

/// CPU/tch reference of [`crate::Kernels::sam_restore`]: one copy per tensor.
pub fn reference_restore(params: &[Tensor], backup: &[Tensor]) -> Result<()> {
    check_group(OP_RESTORE, params, backup, "backup")?;
    let _no_grad = tch::no_grad_guard();
    for (p, b) in params.iter().zip(backup) {
        let mut p = p.shallow_clone();
        p.f_copy_(b)?;
    }
    Ok(())
}

/// Whether the kernels can take this group (else the reference does).
pub(crate) fn kernel_supports(params: &[Tensor], others: &[Tensor], kind: Kind) -> bool {
    kernel_suffix(kind).is_some() && params.iter().chain(others).all(Tensor::is_contiguous)
}

/// Groups of at most MAX_TENSORS non-empty tensors, with their block layout.
fn lists(tensors: &[(&Tensor, &Tensor, Option<&Tensor>)]) -> (Vec<Box<TensorList>>, u32) {
    let mut out = Vec::new();
    let mut total: u32 = 0;
    let mut cur: Option<Box<TensorList>> = None;
    for (a, b, c) in tensors.iter().filter(|(a, _, _)| a.numel() > 0) {
        let list = cur.get_or_insert_with(|| {
            Box::new(TensorList {
                ptr0: [0; MAX_TENSORS],
                ptr1: [0; MAX_TENSORS],
                ptr2: [0; MAX_TENSORS],
                numel: [0; MAX_TENSORS],
                block_start: [0; MAX_TENSORS + 1],
                count: 0,
            })
        });
        let i = list.count as usize;
        let n = a.numel() as i64;
        list.ptr0[i] = ptr(a);
        list.ptr1[i] = ptr(b);
        list.ptr2[i] = c.map(ptr).unwrap_or(0);
        list.numel[i] = n;
        let blocks = ((n + CHUNK - 1) / CHUNK) as u32;
        list.block_start[i + 1] = list.block_start[i] + blocks;
        list.count += 1;
        total += blocks;
        if list.count as usize == MAX_TENSORS {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    (out, total)
}

fn blocks(list: &TensorList) -> u32 {
    list.block_start[list.count as usize]
}

/// The CUDA path of `sam_perturb`: one norm launch and one update launch per
/// 256 tensors; the norm stays on the device.
pub(crate) fn cuda_perturb(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    params: &[Tensor],
    grads: &[Tensor],
    backup: &mut Vec<Tensor>,
    rho: f64,
    adaptive: bool,
) -> Result<Tensor> {
    let kind = params[0].f_kind()?;
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP_PERTURB,
        what: "params".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let device = params[0].device();
    prepare_backup(params, backup)?;
    let triples: Vec<_> = params
        .iter()
        .zip(grads)
        .zip(backup.iter())
        .map(|((p, g), b)| (p, g, Some(b)))
        .collect();
    let (lists, total) = lists(&triples);
    // [partials (total) | sum, norm | counter], zeroed: the counter must start at 0.
    let ws = Tensor::f_zeros([total as i64 + 3], (Kind::Double, device))?;
    let norm = ws.f_narrow(0, total as i64 + 1, 1)?.f_reshape([])?;
    if total == 0 {
        return Ok(norm);
    }
    let base = ptr(&ws);
    let (partials, out, counter) = (base, base + 8 * total as u64, base + 8 * (total as u64 + 2));
    let sqnorm = dev.function(&SAM, &format!("sam_sqnorm_{sfx}"), cache)?;
    let perturb = dev.function(&SAM, &format!("sam_perturb_{sfx}"), cache)?;
    let stream = dev.stream()?;
    let adaptive = adaptive as i32;
    let rho = rho as f32;
    let mut offset: u32 = 0;
    for list in &lists {
        let n = blocks(list);
        let mut b = stream.launch_builder(&sqnorm);
        b.arg(list.as_ref())
            .arg(&adaptive)
            .arg(&partials)
            .arg(&offset)
            .arg(&total)
            .arg(&counter)
            .arg(&out);
        // SAFETY: the list holds live, contiguous device tensors of the
        // kernel's dtype with the given element counts; the workspace has
        // `total + 3` f64 slots as laid out above; all on this device and
        // ordered on libtorch's stream.
        unsafe { b.launch(config((n, 1, 1), BLOCK)) }
            .map_err(Error::driver("launching sam_sqnorm"))?;
        offset += n;
    }
    for list in &lists {
        let n = blocks(list);
        let mut b = stream.launch_builder(&perturb);
        b.arg(list.as_ref()).arg(&adaptive).arg(&rho).arg(&out);
        // SAFETY: as above; ptr2 are the backups, same shapes and dtype.
        unsafe { b.launch(config((n, 1, 1), BLOCK)) }
            .map_err(Error::driver("launching sam_perturb"))?;
    }
    Ok(norm)
}

/// The CUDA path of `sam_restore`: one launch per 256 tensors.
pub(crate) fn cuda_restore(
    dev: &DeviceState,
    cache: Option<&DiskCache>,
    params: &[Tensor],
    backup: &[Tensor],
    kind: Kind,
) -> Result<()> {
    let sfx = kernel_suffix(kind).ok_or_else(|| Error::DType {
        op: OP_RESTORE,
        what: "params".into(),
        expected: "Float or BFloat16".into(),
        got: kind,
    })?;
    let pairs: Vec<_> = params
        .iter()
        .zip(backup)
        .map(|(p, b)| (p, b, None))
        .collect();
    let (lists, total) = lists(&pairs);
    if total == 0 {
        return Ok(());
    }
    let restore = dev.function(&SAM, &format!("sam_restore_{sfx}"), cache)?;
    let stream = dev.stream()?;
    for list in &lists {
        let mut b = stream.launch_builder(&restore);
        b.arg(list.as_ref());
        // SAFETY: live, contiguous, same-shape device tensors of the kernel's dtype.
        unsafe { b.launch(config((blocks(list), 1, 1), BLOCK)) }
            .map_err(Error::driver("launching sam_restore"))?;
    }
    Ok(())
}
