//! `toy-2d`: the 2-D distributions diffusion and flow papers test on, drawn
//! by the runtime from `(seed, split)` alone. The data have one float input
//! `x` `[2]` and no tasks: a `[diffusion]` section turns them into denoising
//! tasks (see the runtime's `diffusion` module).
//!
//! Each distribution has mean near 0 and spread near 1 per coordinate, so one
//! noise schedule suits them all:
//! - `eight-gaussians`: 8 Gaussians of std 0.1 centred on the circle of
//!   radius 1.5 at angles kπ/4;
//! - `swiss-roll`: (θ cos θ, θ sin θ)/6 for θ uniform in [1.5π, 4.5π],
//!   centred (its mean is (1/3, 1/(9π))), plus Gaussian noise of std 0.05;
//! - `checkerboard`: uniform on the 8 dark squares of a 4×4 board over
//!   [−2, 2]² (squares whose row and column indices have an even sum), scaled
//!   by 0.75;
//! - `two-moons`: the upper half circle (cos θ, sin θ) and the lower one
//!   (1 − cos θ, 0.5 − sin θ), θ uniform in [0, π], half the points each,
//!   centred at (0.5, 0.25), plus Gaussian noise of std 0.05.

use std::f64::consts::PI;
use std::path::Path;

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;

use crate::dataset::matrix;
use crate::error::Result;
use crate::{DataKind, Dataset, Footprint, InputSpec, Source, Split};

/// The name of the input holding the points.
const POINTS: &str = "x";

/// Which distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Eight Gaussians on a circle.
    EightGaussians,
    /// A swiss roll.
    SwissRoll,
    /// A checkerboard.
    Checkerboard,
    /// Two interleaved half circles.
    TwoMoons,
}

impl Distribution {
    /// One point drawn from the distribution.
    pub fn draw(self, rng: &mut SplitMix) -> [f64; 2] {
        match self {
            Distribution::EightGaussians => {
                let angle = rng.below(8) as f64 * PI / 4.0;
                [
                    1.5 * angle.cos() + 0.1 * rng.normal(),
                    1.5 * angle.sin() + 0.1 * rng.normal(),
                ]
            }
            Distribution::SwissRoll => {
                let theta = 1.5 * PI * (1.0 + 2.0 * rng.uniform());
                [
                    theta * theta.cos() / 6.0 - 1.0 / 3.0 + 0.05 * rng.normal(),
                    theta * theta.sin() / 6.0 - 1.0 / (9.0 * PI) + 0.05 * rng.normal(),
                ]
            }
            Distribution::Checkerboard => {
                // Dark square s of 8: row s / 2, column 2(s mod 2) + (row mod 2).
                let square = rng.below(8);
                let row = square / 2;
                let column = 2 * (square % 2) + row % 2;
                [
                    0.75 * (column as f64 + rng.uniform() - 2.0),
                    0.75 * (row as f64 + rng.uniform() - 2.0),
                ]
            }
            Distribution::TwoMoons => {
                let theta = PI * rng.uniform();
                let (x, y) = if rng.below(2) == 0 {
                    (theta.cos(), theta.sin())
                } else {
                    (1.0 - theta.cos(), 0.5 - theta.sin())
                };
                [
                    x - 0.5 + 0.05 * rng.normal(),
                    y - 0.25 + 0.05 * rng.normal(),
                ]
            }
        }
    }

    /// `rows` points drawn from `(seed, stream)`, row-major `[rows, 2]`.
    pub fn sample(self, rows: usize, seed: u64, stream: u64) -> Vec<f32> {
        let mut rng = SplitMix::at(seed, stream);
        (0..rows)
            .flat_map(|_| self.draw(&mut rng))
            .map(|v| v as f32)
            .collect()
    }
}

/// `[data] kind = "toy-2d"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Toy2dConfig {
    /// Which distribution.
    pub distribution: Distribution,
    /// Training points.
    #[schemars(range(min = 1, max = 100_000_000))]
    pub train: u64,
    /// Validation points.
    #[schemars(range(min = 1, max = 100_000_000))]
    pub val: u64,
    /// Test points: the fresh true samples sample quality is measured against.
    #[schemars(range(min = 1, max = 100_000_000))]
    pub test: u64,
    /// Generator seed (independent of run.seed, so model seeds vary over fixed data).
    pub seed: u64,
}

impl Default for Toy2dConfig {
    fn default() -> Toy2dConfig {
        Toy2dConfig {
            distribution: Distribution::EightGaussians,
            train: 20_000,
            val: 2_000,
            test: 2_000,
            seed: 0,
        }
    }
}

/// The `toy-2d` data kind.
pub struct Toy2d;

inventory::submit! { DataKind::of::<Toy2d>() }

impl Source for Toy2d {
    const NAME: &'static str = "toy-2d";
    type Config = Toy2dConfig;

    fn footprint(c: &Toy2dConfig, _dir: &Path) -> Footprint {
        let rows = (c.train + c.val + c.test) as u128;
        Some((
            rows * 2 * 4 * 2,
            format!("data.train + data.val + data.test = {rows} points"),
        ))
    }

    fn load(c: &Toy2dConfig, _dir: &Path) -> Result<Dataset> {
        let split = |rows: u64, stream: u64| -> Result<Split> {
            let rows = rows as usize;
            let points = c.distribution.sample(rows, c.seed, stream);
            Ok(Split {
                inputs: vec![(POINTS.to_string(), matrix(points, rows, 2)?)],
                targets: Vec::new(),
                masks: Vec::new(),
            })
        };
        Ok(Dataset {
            tasks: Vec::new(),
            inputs: vec![InputSpec::float(POINTS, vec![2])],
            train: split(c.train, 0)?,
            val: split(c.val, 1)?,
            test: split(c.test, 2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(points: &[f32]) -> ([f64; 2], [f64; 2]) {
        let n = (points.len() / 2) as f64;
        let mut mean = [0.0; 2];
        let mut var = [0.0; 2];
        for p in points.chunks(2) {
            for d in 0..2 {
                mean[d] += p[d] as f64 / n;
            }
        }
        for p in points.chunks(2) {
            for d in 0..2 {
                var[d] += (p[d] as f64 - mean[d]).powi(2) / n;
            }
        }
        (mean, var)
    }

    #[test]
    fn each_distribution_is_centred_with_unit_order_spread_and_repeats_from_its_seed() {
        for d in [
            Distribution::EightGaussians,
            Distribution::SwissRoll,
            Distribution::Checkerboard,
            Distribution::TwoMoons,
        ] {
            let points = d.sample(20_000, 7, 0);
            let (mean, var) = moments(&points);
            for k in 0..2 {
                assert!(mean[k].abs() < 0.1, "{d:?} mean {mean:?}");
                assert!((0.15..2.0).contains(&var[k]), "{d:?} variance {var:?}");
            }
            assert_eq!(d.sample(10, 7, 0), points[..20].to_vec());
            assert_ne!(d.sample(10, 7, 1), points[..20].to_vec());
        }
    }

    #[test]
    fn the_checkerboard_fills_only_dark_squares_and_the_gaussians_sit_on_their_circle() {
        for p in Distribution::Checkerboard.sample(5_000, 1, 0).chunks(2) {
            let (col, row) = (
                (p[0] as f64 / 0.75 + 2.0).floor(),
                (p[1] as f64 / 0.75 + 2.0).floor(),
            );
            assert!((0.0..4.0).contains(&col) && (0.0..4.0).contains(&row));
            assert_eq!((col + row) as i64 % 2, 0, "{p:?}");
        }
        for p in Distribution::EightGaussians.sample(5_000, 1, 0).chunks(2) {
            let r = (p[0] as f64).hypot(p[1] as f64);
            assert!((r - 1.5).abs() < 0.6, "{p:?}");
        }
    }
}
