//! Task affinity scores between timesteps (TAS, ANT's gradient cost): the
//! cosine similarity of the denoising loss's gradients at two timesteps,
//! on a grid of timesteps, computed in blocks so that at most two blocks of
//! gradients are in memory at once.

use tch::{Kind, Tensor};

use crate::error::Result;

/// The `[n, n]` cosine similarities of the gradients `gradient(t)` for
/// the `n` timesteps of `grid`, float64. Gradients are computed `block` at a
/// time: each block once for its own products and once more for every block
/// before it, so memory holds at most 2·`block` gradients.
pub fn cosines(
    grid: &[i64],
    block: usize,
    mut gradient: impl FnMut(i64) -> Result<Tensor>,
) -> Result<Tensor> {
    let n = grid.len();
    let block = block.clamp(1, n.max(1));
    let mut unit_block = |range: &[i64]| -> Result<Tensor> {
        let rows = range
            .iter()
            .map(|&t| {
                let g = gradient(t)?.f_to_kind(Kind::Double)?;
                // A zero gradient has no direction: its similarities are 0.
                let norm = g.f_norm()?.f_clamp_min(1e-300)?;
                Ok(g.f_div(&norm)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_stack(&rows, 0)?)
    };
    let chunks: Vec<&[i64]> = grid.chunks(block).collect();
    let mut matrix = vec![0.0f64; n * n];
    for (i, later) in chunks.iter().enumerate() {
        let b = unit_block(later)?;
        for (j, earlier) in chunks.iter().enumerate().take(i + 1) {
            let a = if j == i {
                b.shallow_clone()
            } else {
                unit_block(earlier)?
            };
            let product = Vec::<f64>::try_from(a.f_matmul(&b.f_tr()?)?.f_reshape([-1])?)?;
            let (r0, c0) = (j * block, i * block);
            for (r, row) in product.chunks(later.len()).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    matrix[(r0 + r) * n + c0 + c] = v;
                    matrix[(c0 + c) * n + r0 + r] = v;
                }
            }
        }
    }
    Ok(Tensor::from_slice(&matrix).f_reshape([n as i64, n as i64])?)
}

/// The `[T, T]` scores of every timestep pair from the grid's `[n, n]`
/// ones: each timestep takes the scores of its nearest grid timestep (the
/// earlier one on a tie), so that a grouping over all T timesteps can read
/// them.
pub fn expand(grid: &[i64], scores: &Tensor, steps: usize) -> Result<Tensor> {
    let nearest: Vec<i64> = (1..=steps as i64)
        .map(|t| {
            let at = grid.partition_point(|&g| g < t);
            let better_before = at > 0 && (at == grid.len() || t - grid[at - 1] <= grid[at] - t);
            if better_before {
                at as i64 - 1
            } else {
                at as i64
            }
        })
        .collect();
    let index = Tensor::from_slice(&nearest);
    Ok(scores
        .f_index_select(0, &index)?
        .f_index_select(1, &index)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_cosines_match_the_whole_matrix_and_expansion_copies_the_nearest_grid_point() {
        // Gradients of known directions: t ↦ (cos t, sin t, t).
        let g = |t: i64| -> Result<Tensor> {
            let t = t as f64;
            Ok(Tensor::from_slice(&[t.cos(), t.sin(), 0.1 * t]))
        };
        let ts = crate::diffusion::timestep_grid(10, 7);
        assert_eq!(ts, [1, 3, 4, 6, 7, 9, 10]);
        let whole = cosines(&ts, 7, g).unwrap();
        for block in [1, 2, 3] {
            let blocked = cosines(&ts, block, g).unwrap();
            assert!(
                blocked.allclose(&whole, 1e-12, 1e-12, false),
                "block {block}"
            );
        }
        for i in 0..7 {
            assert!((whole.double_value(&[i, i]) - 1.0).abs() < 1e-12);
            let (a, b) = (g(ts[i as usize]).unwrap(), g(ts[2]).unwrap());
            let cos = a.dot(&b).double_value(&[])
                / (a.norm().double_value(&[]) * b.norm().double_value(&[]));
            assert!((whole.double_value(&[i, 2]) - cos).abs() < 1e-12);
        }
        let full = expand(&ts, &whole, 10).unwrap();
        assert_eq!(full.size(), [10, 10]);
        // Timestep 2 is as near 1 as 3: it takes 1's row; 5 takes 4's; 8 takes 7's.
        for (t, nearest) in [(1, 0), (2, 0), (5, 2), (8, 4), (10, 6)] {
            assert!(full.get(t - 1).equal(
                &whole
                    .get(nearest)
                    .index_select(0, &Tensor::from_slice(&[0i64, 0, 1, 2, 2, 3, 4, 4, 5, 6]))
            ));
        }
    }
}
