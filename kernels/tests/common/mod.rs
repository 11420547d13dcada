//! Helpers shared by the test modules.
#![allow(dead_code, reason = "each test module uses a different subset")]
use tch::{Device, Kind, Reduction, Tensor};

/// ‖a − b‖ / ‖b‖ in f64 (‖a‖ when b is zero).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double).to_device(Device::Cpu);
    let b = b.to_kind(Kind::Double).to_device(Device::Cpu);
    let num = (&a - &b).norm().double_value(&[]);
    let den = b.norm().double_value(&[]);
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Random tensors of the given shapes, seeded.
pub fn randn_list(shapes: &[Vec<i64>], kind: Kind, device: Device) -> Vec<Tensor> {
    shapes
        .iter()
        .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, device)).to_kind(kind))
        .collect()
}

/// Deep copies.
pub fn copies(ts: &[Tensor]) -> Vec<Tensor> {
    ts.iter().map(|t| t.copy()).collect()
}

/// Bit-for-bit equality (NaN-safe: compares the raw bytes).
pub fn bit_equal(a: &Tensor, b: &Tensor) -> bool {
    if a.size() != b.size() || a.kind() != b.kind() {
        return false;
    }
    let to_bytes = |t: &Tensor| {
        let t = t.to_device(Device::Cpu).contiguous();
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut v = vec![0u8; n];
        t.copy_data_u8(&mut v, t.numel());
        v
    };
    to_bytes(a) == to_bytes(b)
}

/// Shapes that look like a small network's parameter list, including a
/// scalar, an empty tensor and sizes that are not multiples of 4.
pub fn param_shapes(n: usize) -> Vec<Vec<i64>> {
    (0..n)
        .map(|i| match i % 7 {
            0 => vec![64, 3, 3, 3],
            1 => vec![64],
            2 => vec![129, 17],
            3 => vec![],
            4 => vec![0, 5],
            5 => vec![4099],
            _ => vec![33, 31],
        })
        .collect()
}

/// SAM's perturbation by its definition, in f64 on the same (rounded)
/// inputs: the norm ‖Ag‖ and the perturbed parameters.
pub fn sam_expected(
    params: &[Tensor],
    grads: &[Tensor],
    rho: f64,
    adaptive: bool,
) -> (f64, Vec<Tensor>) {
    let mut sq = 0.0;
    for (p, g) in params.iter().zip(grads) {
        let (p, g) = (p.to_kind(Kind::Double), g.to_kind(Kind::Double));
        let a = if adaptive { &g * p.abs() } else { g };
        sq += (&a * &a).sum(Kind::Double).double_value(&[]);
    }
    let norm = sq.sqrt();
    let out = params
        .iter()
        .zip(grads)
        .map(|(p, g)| {
            let (p, g) = (p.to_kind(Kind::Double), g.to_kind(Kind::Double));
            let a2 = if adaptive { &p * &p } else { p.ones_like() };
            &p + a2 * g * (rho / (norm + 1e-12))
        })
        .collect();
    (norm, out)
}

/// KL(p || q) for one row, from logits, with tch's kl_div.
fn kl_row(p_logits: &Tensor, q_logits: &Tensor) -> f64 {
    let lp = p_logits.log_softmax(0, Kind::Double);
    let lq = q_logits.log_softmax(0, Kind::Double);
    lq.kl_div(&lp, Reduction::Sum, true).double_value(&[])
}

/// The logit-fusion objective of candidate α = a·e_t for one row, by its
/// definition (`Kernels::fusion_grid`), from f64 row logits: NaN counts as +∞.
pub fn fusion_objective(
    large: &Tensor,
    small: &Tensor,
    experts: &[Tensor],
    a: f64,
    t: usize,
) -> f64 {
    let fused = large + (&experts[t] - small) * a;
    let (kl1, kl2) = (kl_row(&fused, large), kl_row(large, &fused));
    let obj: f64 = experts
        .iter()
        .map(|e| (kl1 - kl_row(e, small)).powi(2) + (kl2 - kl_row(small, e)).powi(2))
        .sum();
    if obj.is_nan() {
        f64::INFINITY
    } else {
        obj
    }
}
