//! Sample quality against true samples: sliced Wasserstein distance and the
//! maximum mean discrepancy, both on flattened samples in the data's units,
//! and the Fréchet distance between Gaussians fitted to features (FID's
//! formula, used on a Fashion-MNIST classifier's features as FD-FMNIST).

use taskweave_plugin_api::rng::SplitMix;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The Gaussian kernel bandwidths of [`mmd2`]'s default kernel, for data of
/// unit order spread (the `toy-2d` distributions).
pub const BANDWIDTHS: [f64; 6] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

fn check(a: &Tensor, b: &Tensor) -> Result<(i64, i64)> {
    let (sa, sb) = (a.size(), b.size());
    if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[1] || sa[0] < 2 || sb[0] < 2 {
        return Err(Error::Input(format!(
            "sample quality compares two sets of at least 2 points of one width, got {sa:?} and {sb:?}"
        )));
    }
    Ok((sa[0].min(sb[0]), sa[1]))
}

/// Sliced Wasserstein-2 distance: √(mean over `projections` random unit
/// directions (drawn from `seed`) of W₂² between the two sets projected on
/// the direction), the 1-D W₂ matching sorted values. Both sets are cut to
/// the first min(n, m) rows.
pub fn sliced_wasserstein(a: &Tensor, b: &Tensor, projections: usize, seed: u64) -> Result<f64> {
    let (rows, dim) = check(a, b)?;
    let mut rng = SplitMix::at(seed, 0);
    let dirs: Vec<f64> = (0..projections * dim as usize)
        .map(|_| rng.normal())
        .collect();
    let dirs = Tensor::from_slice(&dirs)
        .f_reshape([projections as i64, dim])?
        .f_to_device(a.device())?;
    let dirs = dirs.f_div(&dirs.f_norm_scalaropt_dim(2, [1], true)?)?;
    let project = |x: &Tensor| -> Result<Tensor> {
        let p = x
            .f_narrow(0, 0, rows)?
            .f_to_kind(Kind::Double)?
            .f_matmul(&dirs.f_tr()?)?;
        Ok(p.f_sort(0, false)?.0)
    };
    let diff = project(a)?.f_sub(&project(b)?)?;
    Ok(diff
        .f_square()?
        .f_mean(Kind::Double)?
        .f_double_value(&[])?
        .sqrt())
}

/// Squared maximum mean discrepancy, unbiased (diagonals left out, so it can
/// be slightly negative for equal distributions), with the kernel
/// k(x, y) = Σ_σ exp(−‖x − y‖² / (2σ²)) over `bandwidths`.
pub fn mmd2(a: &Tensor, b: &Tensor, bandwidths: &[f64]) -> Result<f64> {
    check(a, b)?;
    let (a, b) = (a.f_to_kind(Kind::Double)?, b.f_to_kind(Kind::Double)?);
    let kernel = |x: &Tensor, y: &Tensor| -> Result<Tensor> {
        let d2 = Tensor::f_cdist(x, y, 2.0, None)?.f_square()?;
        let mut k = d2.f_zeros_like()?;
        for s in bandwidths {
            k = k.f_add(&d2.f_div_scalar(-2.0 * s * s)?.f_exp()?)?;
        }
        Ok(k)
    };
    let off_diagonal_mean = |k: Tensor| -> Result<f64> {
        let n = k.size()[0] as f64;
        let total = k.f_sum(Kind::Double)?.f_double_value(&[])?;
        let diag = k
            .f_diagonal(0, 0, 1)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
        Ok((total - diag) / (n * (n - 1.0)))
    };
    let cross = kernel(&a, &b)?.f_mean(Kind::Double)?.f_double_value(&[])?;
    Ok(off_diagonal_mean(kernel(&a, &a)?)? + off_diagonal_mean(kernel(&b, &b)?)? - 2.0 * cross)
}

/// The Fréchet distance between Gaussians fitted to the rows of `a` and of
/// `b` (features `[n, d]`, `[m, d]`): |μa − μb|² + tr Σa + tr Σb −
/// 2 tr (Σa^½ Σb Σa^½)^½, with the trace of the root from the eigenvalues
/// of the symmetric Σa^½ Σb Σa^½ (negative rounding clamped to 0). Float64.
pub fn frechet(a: &Tensor, b: &Tensor) -> Result<f64> {
    check(a, b)?;
    let moments = |x: &Tensor| -> Result<(Tensor, Tensor)> {
        let x = x.f_to_kind(Kind::Double)?;
        let mean = x.f_mean_dim([0].as_slice(), true, Kind::Double)?;
        let centred = x.f_sub(&mean)?;
        let cov = centred
            .f_tr()?
            .f_mm(&centred)?
            .f_div_scalar((x.size()[0] - 1) as f64)?;
        Ok((mean, cov))
    };
    let ((ma, ca), (mb, cb)) = (moments(a)?, moments(b)?);
    let (values, vectors) = ca.f_linalg_eigh("L")?;
    let root_a = vectors
        .f_mul(&values.f_clamp_min(0.0)?.f_sqrt()?.f_unsqueeze(0)?)?
        .f_mm(&vectors.f_tr()?)?;
    let middle = root_a.f_mm(&cb)?.f_mm(&root_a)?;
    // Symmetrised: the products round it slightly off.
    let middle = middle.f_add(&middle.f_tr()?)?.f_div_scalar(2.0)?;
    let (inner, _) = middle.f_linalg_eigh("L")?;
    let root_trace = inner.f_clamp_min(0.0)?.f_sqrt()?.f_sum(Kind::Double)?;
    let value = ma
        .f_sub(&mb)?
        .f_square()?
        .f_sum(Kind::Double)?
        .f_add(&ca.f_trace()?)?
        .f_add(&cb.f_trace()?)?
        .f_sub(&root_trace.f_mul_scalar(2.0)?)?;
    Ok(value.f_double_value(&[])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(rows: i64, shift: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([rows, 2], (Kind::Double, tch::Device::Cpu)) + shift
    }

    #[test]
    fn both_distances_are_near_zero_for_one_distribution_and_grow_with_a_shift() {
        let (a, b) = (normal(2000, 0.0, 1), normal(2000, 0.0, 2));
        let far = normal(2000, 1.0, 3);
        let sw_same = sliced_wasserstein(&a, &b, 64, 0).unwrap();
        let sw_far = sliced_wasserstein(&a, &far, 64, 0).unwrap();
        assert!(sw_same < 0.1, "{sw_same}");
        // A shift by (1, 1) moves every projection by cos θ + sin θ: mean square 1.
        assert!((sw_far - 1.0).abs() < 0.15, "{sw_far}");
        let mmd_same = mmd2(&a, &b, &BANDWIDTHS).unwrap();
        let mmd_far = mmd2(&a, &far, &BANDWIDTHS).unwrap();
        assert!(mmd_same.abs() < 0.01, "{mmd_same}");
        assert!(
            mmd_far > 20.0 * mmd_same.abs().max(1e-4),
            "{mmd_far} vs {mmd_same}"
        );
    }

    #[test]
    fn frechet_distance_matches_the_closed_form_for_diagonal_gaussians() {
        // N(μ, diag σ²) in 3-D: FD = |Δμ|² + Σ (σa − σb)².
        tch::manual_seed(5);
        let draw = |mean: [f64; 3], std: [f64; 3]| {
            let z = Tensor::randn([200_000, 3], (Kind::Double, tch::Device::Cpu));
            z * Tensor::from_slice(&std) + Tensor::from_slice(&mean)
        };
        let a = draw([0.0, 1.0, 0.0], [1.0, 2.0, 0.5]);
        let b = draw([1.0, 1.0, -2.0], [3.0, 2.0, 1.5]);
        let want = 1.0 + 4.0 + (4.0 + 0.0 + 1.0);
        let got = frechet(&a, &b).unwrap();
        assert!((got - want).abs() < 0.05 * want, "{got} vs {want}");
        let same = frechet(&a, &draw([0.0, 1.0, 0.0], [1.0, 2.0, 0.5])).unwrap();
        assert!(same.abs() < 0.01, "{same}");
        // Symmetric, and unchanged when both sets turn by one rotation
        // (covariances no longer diagonal).
        let ab = frechet(&a, &b).unwrap();
        let ba = frechet(&b, &a).unwrap();
        assert!((ab - ba).abs() < 1e-9 * ab, "{ab} vs {ba}");
        let (c, s) = (0.6f64, 0.8f64);
        let turn = Tensor::from_slice(&[c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]).reshape([3, 3]);
        let turned = frechet(&a.mm(&turn), &b.mm(&turn)).unwrap();
        assert!((turned - ab).abs() < 1e-6 * ab, "{turned} vs {ab}");
    }

    #[test]
    fn sets_of_other_widths_are_refused() {
        let a = normal(10, 0.0, 1);
        let b = Tensor::zeros([10, 3], (Kind::Double, tch::Device::Cpu));
        assert!(sliced_wasserstein(&a, &b, 4, 0).is_err());
        assert!(mmd2(&a, &b, &BANDWIDTHS).is_err());
        assert!(frechet(&a, &b).is_err());
    }
}
