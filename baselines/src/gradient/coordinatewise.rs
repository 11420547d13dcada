//! The weightings that never form the Gramian: they read the gradients entry
//! by entry (TrimmedMean, GradDrop) or ignore them when choosing the weights
//! (RGW).
//!
//! - `trimmed-mean` (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust
//!   Distributed Learning", ICML 2018; TorchJD's `TrimmedMean`): per
//!   parameter, the `trim_number` largest and smallest of the T entries are
//!   dropped and the rest averaged. Needs `T ≥ 2·trim_number + 1` (exit 2
//!   otherwise).
//! - `graddrop` (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just
//!   Pick a Sign", NeurIPS 2020; TorchJD's `GradDrop` with its identity `f`):
//!   per parameter, the sign purity `𝒫 = ½(1 + Σ_i g_i / Σ_i |g_i|)` and one
//!   uniform `U`; positive entries survive where `𝒫 > U`, negative ones where
//!   `𝒫 < U`, and task i's entry counts with `leak_i + (1 − leak_i)·kept`.
//!   The paper applies it to activation gradients; like TorchJD this applies
//!   it to the shared parameters' gradients. `U` is a pure function of (seed,
//!   step), so a resumed run draws the same masks.
//! - `rgw` (random gradient weighting, Lin et al., "Reasonable Effectiveness
//!   of Random Weighting", TMLR 2022; LibMTL's `RGW`, TorchJD's `Random`): the
//!   update `Σ_i w_i g_i` with `w = softmax(z)`, `z ~ N(0, I)` drawn per step
//!   from (seed, step). (`rlw`, the loss-weighting twin, is a plugin.)
//!
//! - `constant` (TorchJD's `Constant`): fixed weights, `weights` (1 each by
//!   default: the sum of the gradients, as `ew` gives through the losses).
//!
//! TrimmedMean and GradDrop report no per-task weights (there are none).
//!
//! A NaN or infinite gradient entry makes the update of GradDrop, RGW and
//! Constant non-finite (no check here, as in TorchJD: a check is one more
//! read of the update); the runtime checks every update before the
//! optimizer step and names the task. TrimmedMean checks, since its
//! selection would sort a NaN out of sight.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema, NoKeys};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use crate::vectors::softmax;

use super::combine::{check_finite_rows, checked, task_names, weighted};

/// The trimmed mean.
struct TrimmedMean {
    tasks: Vec<String>,
    trim: usize,
    /// The gradients copied out of the tensor, kept across steps: a fresh
    /// T×P allocation per step costs more in page faults than the copy.
    buffer: Vec<f32>,
}

impl TrimmedMean {
    /// Per column of the row-major `[T, P]` `data`, the mean of the entries
    /// left after dropping the `trim` largest and smallest; `None` if an
    /// entry is NaN or infinite (checked as the tiles are copied).
    ///
    /// Columns are taken in tiles of [`TILE`], copied row by row into a small
    /// buffer (NaN in the unused columns of the last tile). In each of `trim`
    /// rounds every column's largest remaining entry, then its smallest, is
    /// dropped by overwriting it with NaN, which no later round selects (the
    /// first of tied entries, so exactly one each time, as a sort would). The
    /// loops run across the tile's columns with selects instead of branches,
    /// so they vectorise; a sort along dim 0 of the tensor (TorchJD's way) is
    /// strided and several times slower. One thread: libtorch's OpenMP
    /// workers spin for a while after every parallel op (the finite check
    /// just before), and threads of our own compete with them for the cores
    /// (measured: 4.1 ms with two threads against 1.6 ms with one, T = 11,
    /// P = 74,752, 2 cores).
    fn columns(data: &[f32], t: usize, trim: usize) -> Option<Vec<f32>> {
        let p = data.len() / t.max(1);
        let mut out = vec![0.0f32; p];
        let mut tile = vec![f32::NAN; t * TILE];
        for (b, slots) in out.chunks_mut(TILE).enumerate() {
            let (j0, w) = (b * TILE, slots.len());
            for i in 0..t {
                let row = &mut tile[i * TILE..i * TILE + w];
                row.copy_from_slice(&data[i * p + j0..i * p + j0 + w]);
                if !row.iter().fold(true, |ok, x| ok & x.is_finite()) {
                    return None;
                }
            }
            for _ in 0..trim {
                drop_extreme(&mut tile, f32::max, f32::NEG_INFINITY);
                drop_extreme(&mut tile, f32::min, f32::INFINITY);
            }
            // f32 sums, as TorchJD's mean of the sorted rows.
            let mut sums = [0.0f32; TILE];
            for row in tile.chunks_exact(TILE) {
                for (sum, &x) in sums.iter_mut().zip(row) {
                    *sum += if x.is_nan() { 0.0 } else { x };
                }
            }
            let kept = (t - 2 * trim) as f32;
            for (slot, sum) in slots.iter_mut().zip(sums) {
                *slot = sum / kept;
            }
        }
        Some(out)
    }
}

/// Columns per tile of [`TrimmedMean::columns`].
const TILE: usize = 64;

/// In each column of a `[T, TILE]` tile, overwrites with NaN the first entry
/// equal to the column's extreme (`pick` = `f32::max` or `f32::min`, which
/// skip NaN; `start` is their identity). Two passes of plain selects: the
/// extremes, then the first match.
fn drop_extreme(tile: &mut [f32], pick: impl Fn(f32, f32) -> f32, start: f32) {
    let mut best = [start; TILE];
    for row in tile.chunks_exact(TILE) {
        for (b, &x) in best.iter_mut().zip(row) {
            *b = pick(*b, x);
        }
    }
    let mut done = [0u32; TILE];
    for row in tile.chunks_exact_mut(TILE) {
        for ((x, d), &b) in row.iter_mut().zip(done.iter_mut()).zip(&best) {
            let hit = (*d == 0) & (*x == b);
            *x = if hit { f32::NAN } else { *x };
            *d |= hit as u32;
        }
    }
}

impl Weighting for TrimmedMean {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (input_grads, _) = checked(input, &self.tasks)?;
        let (t, trim) = (self.tasks.len(), self.trim);
        let grads = input_grads.f_detach()?;
        let (kind, device) = (grads.f_kind()?, grads.device());
        let combined = if device == Device::Cpu && kind == Kind::Float {
            let numel = grads.numel();
            self.buffer.resize(numel, 0.0);
            grads.f_contiguous()?.f_copy_data(&mut self.buffer, numel)?;
            match TrimmedMean::columns(&self.buffer, t, trim) {
                Some(mean) => Tensor::f_from_slice(&mean)?,
                None => {
                    // Names the task; the fallback message is never reached.
                    check_finite_rows(input_grads, &self.tasks)?;
                    return Err(Error::msg("a gradient entry is not finite"));
                }
            }
        } else {
            // Other dtypes and devices: the sort along the tasks on the tensor
            // (which would sort a NaN past the trimmed end: checked first).
            check_finite_rows(input_grads, &self.tasks)?;
            let (sorted, _) = grads.f_sort(0, false)?;
            sorted
                .f_narrow(0, trim as i64, (t - 2 * trim) as i64)?
                .f_mean_dim(0, false, None::<Kind>)?
        };
        Ok(WeightingOutput {
            combined,
            weights: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct TrimConfig {
    /// How many of the largest and of the smallest entries are dropped per parameter; needs T ≥ 2·trim_number + 1.
    trim_number: usize,
}

impl Default for TrimConfig {
    fn default() -> TrimConfig {
        TrimConfig { trim_number: 1 }
    }
}

fn create_trimmed_mean(
    config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Weighting>> {
    let TrimConfig { trim_number } = typed(config)?;
    let tasks = task_names(ctx)?;
    if tasks.len() < 2 * trim_number + 1 {
        return Err(Error::input(format!(
            "trimmed-mean with trim_number = {trim_number} needs at least {} tasks (2·trim_number + 1), there are {}",
            2 * trim_number + 1,
            tasks.len()
        )));
    }
    Ok(Box::new(TrimmedMean {
        tasks,
        trim: trim_number,
        buffer: Vec::new(),
    }))
}

/// GradDrop.
struct GradDrop {
    tasks: Vec<String>,
    seed: u64,
    /// `[T]`, f64 on the CPU.
    leak: Tensor,
    /// A `[T, P]` work matrix kept across steps: fresh T×P temporaries cost
    /// more in page faults than the arithmetic on them.
    scratch: Option<Tensor>,
}

impl Weighting for GradDrop {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (input_grads, _) = checked(input, &self.tasks)?;
        let grads = input_grads.f_detach()?;
        let (kind, device) = (grads.f_kind()?, grads.device());
        let p = grads.size2()?.1;
        let mut rng = SplitMix::at(self.seed, input.step);
        let uniform: Vec<f32> = (0..p).map(|_| rng.uniform() as f32).collect();
        let uniform = Tensor::f_from_slice(&uniform)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        let fits =
            |s: &Tensor| s.size() == grads.size() && s.kind() == kind && s.device() == device;
        if !self.scratch.as_ref().is_some_and(fits) {
            self.scratch = Some(grads.f_empty_like()?);
        }
        let scratch = self.scratch.as_mut().expect("allocated above");
        // In-place ops return their tensor again: the `let _` drop those handles.
        let sum = grads.f_sum_dim_intlist(0, false, kind)?;
        scratch.f_copy_(&grads)?;
        let _ = scratch.f_abs_()?;
        let magnitude = scratch.f_sum_dim_intlist(0, false, kind)?;
        // Where every entry is 0 the purity does not matter; 0/0 would be NaN.
        let ratio = sum.f_div(&magnitude.f_clamp_min(f64::MIN_POSITIVE)?)?;
        let purity = ratio.f_add_scalar(1.0)?.f_mul_scalar(0.5)?;
        // σ = sign(𝒫 − U) is the sign that survives: an entry is kept iff its
        // sign is σ, so kept·g = σ·relu(σ·g), with no boolean masks.
        let sigma = purity.f_sub(&uniform)?.f_sign()?;
        scratch.f_copy_(&grads)?;
        let _ = scratch.f_mul_(&sigma)?;
        let _ = scratch.f_relu_()?;
        let keep = self
            .leak
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        let leak = self.leak.f_to_kind(kind)?.f_to_device(device)?;
        let combined = keep
            .f_matmul(scratch)?
            .f_mul(&sigma)?
            .f_add(&leak.f_matmul(&grads)?)?;
        // A NaN or ±∞ entry makes its column's purity, hence σ and the
        // update there, NaN.
        Ok(WeightingOutput {
            combined,
            weights: None,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct DropConfig {
    /// Per task, in the order of [tasks], the share of its gradient kept whatever the mask (default: 0 each).
    leak: Option<Vec<f64>>,
}

fn create_graddrop(
    config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Weighting>> {
    let DropConfig { leak } = typed(config)?;
    let tasks = task_names(ctx)?;
    let t = tasks.len();
    let leak = leak.unwrap_or_else(|| vec![0.0; t]);
    if leak.len() != t || leak.iter().any(|l| !(0.0..=1.0).contains(l)) {
        return Err(Error::input(format!(
            "graddrop's `leak` needs one number in [0, 1] per task ({t}), got {leak:?}"
        )));
    }
    Ok(Box::new(GradDrop {
        tasks,
        seed: ctx.seed,
        leak: Tensor::f_from_slice(&leak)?,
        scratch: None,
    }))
}

/// Random gradient weighting.
struct Rgw {
    tasks: Vec<String>,
    seed: u64,
}

impl Rgw {
    /// `softmax(z)`, `z ~ N(0, I)` from (seed, step).
    fn weights(&self, step: u64) -> Vec<f64> {
        let mut rng = SplitMix::at(self.seed, step);
        let z: Vec<f64> = self.tasks.iter().map(|_| rng.normal()).collect();
        softmax(&z)
    }
}

impl Weighting for Rgw {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (grads, _) = checked(input, &self.tasks)?;
        weighted(grads, &self.weights(input.step))
    }
}

fn create_rgw(_config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    Ok(Box::new(Rgw {
        tasks: task_names(ctx)?,
        seed: ctx.seed,
    }))
}

/// Fixed weights.
struct Constant {
    tasks: Vec<String>,
    weights: Vec<f64>,
}

impl Weighting for Constant {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (grads, _) = checked(input, &self.tasks)?;
        weighted(grads, &self.weights)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct ConstantConfig {
    /// One weight per task, in the order of [tasks] (default: 1 each).
    weights: Option<Vec<f64>>,
}

fn create_constant(
    config: &Value,
    ctx: &MethodContext,
    _host: &Host,
) -> Result<Box<dyn Weighting>> {
    let ConstantConfig { weights } = typed(config)?;
    let tasks = task_names(ctx)?;
    let t = tasks.len();
    let weights = weights.unwrap_or_else(|| vec![1.0; t]);
    if weights.len() != t || weights.iter().any(|w| !w.is_finite()) {
        return Err(Error::input(format!(
            "constant's `weights` needs one finite number per task ({t}), got {weights:?}"
        )));
    }
    Ok(Box::new(Constant { tasks, weights }))
}

register_method!(Method::new(
    "constant",
    env!("CARGO_PKG_VERSION"),
    "Constant: the task gradients combined with fixed weights",
    schema_for::<ConstantConfig>,
    Constructor::Weighting(create_constant),
));

register_method!(Method::new(
    "trimmed-mean",
    env!("CARGO_PKG_VERSION"),
    "Trimmed mean: per parameter, the mean of the task gradients' entries without the largest and smallest (Yin et al., ICML 2018)",
    schema_for::<TrimConfig>,
    Constructor::Weighting(create_trimmed_mean),
));

register_method!(Method::new(
    "graddrop",
    env!("CARGO_PKG_VERSION"),
    "GradDrop: per parameter, keeps the gradient entries of one sign, drawn by their sign purity (Chen et al., NeurIPS 2020)",
    schema_for::<DropConfig>,
    Constructor::Weighting(create_graddrop),
));

register_method!(Method::new(
    "rgw",
    env!("CARGO_PKG_VERSION"),
    "RGW: the task gradients weighted by a softmax of normal draws, fresh each step (Lin et al., TMLR 2022)",
    schema_for::<NoKeys>,
    Constructor::Weighting(create_rgw),
));

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn the_trimmed_mean_drops_the_extremes_of_each_entry() {
        let grads = vec![
            vec![1.0, -5.0],
            vec![2.0, 100.0],
            vec![3.0, 0.0],
            vec![-40.0, 1.0],
            vec![4.0, 2.0],
        ];
        let mut method = create("trimmed-mean", json!({ "trim_number": 1 }), &context(5, 0));
        let out = weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None).unwrap();
        assert_eq!(values(&out.combined), vec![2.0, 1.0]);
        assert!(out.weights.is_none());
    }

    #[test]
    fn the_f32_selection_matches_the_sort_with_ties_and_odd_tiles() {
        // Small integers: many ties. 7 tasks, trim 2, 300 columns (4 full
        // tiles and a partial one).
        let mut rng = taskweave_plugin_api::rng::SplitMix::at(3, 0);
        let grads: Vec<Vec<f64>> = (0..7)
            .map(|_| (0..300).map(|_| rng.below(4) as f64 - 1.5).collect())
            .collect();
        let mut method = create("trimmed-mean", json!({ "trim_number": 2 }), &context(7, 0));
        // f64 input takes the tensor sort; f32 input the selection.
        let sorted = values(
            &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None)
                .unwrap()
                .combined,
        );
        let selected = values(
            &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Float), None)
                .unwrap()
                .combined,
        );
        // Both are exact means of small integers, rounded once to f32.
        let sorted: Vec<f32> = sorted.iter().map(|&x| x as f32).collect();
        let selected: Vec<f32> = selected.iter().map(|&x| x as f32).collect();
        assert_eq!(sorted, selected);
        let flat: Vec<f32> = grads.concat().iter().map(|&x| x as f32).collect();
        assert_eq!(super::TrimmedMean::columns(&flat, 7, 2), Some(sorted));
    }

    #[test]
    fn graddrop_keeps_unanimous_signs_and_drops_one_side_of_conflicts() {
        // Column 0: all positive (purity 1) → kept; column 1: all negative
        // (purity 0) → kept; column 2: conflicting → only one sign survives.
        let grads = vec![vec![1.0, -1.0, 2.0], vec![2.0, -3.0, -1.0]];
        let mut method = create("graddrop", json!({}), &context(2, 0));
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..64 {
            let d = values(
                &weigh(&mut *method, step, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .combined,
            );
            assert_eq!((d[0], d[1]), (3.0, -4.0));
            assert!(d[2] == 2.0 || d[2] == -1.0, "{d:?}");
            seen.insert(d[2] as i64);
        }
        // Purity 2/3: both signs occur over 64 steps.
        assert_eq!(seen.len(), 2);
        let mut leaky = create("graddrop", json!({ "leak": [1.0, 1.0] }), &context(2, 0));
        let d = values(
            &weigh(&mut *leaky, 5, &tensor_of(&grads, Kind::Double), None)
                .unwrap()
                .combined,
        );
        assert_eq!(d, vec![3.0, -4.0, 1.0]);
    }

    #[test]
    fn rgw_weights_are_a_fresh_softmax_each_step() {
        let grads = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        let mut method = create("rgw", json!({}), &context(3, 4));
        let a = values(
            &weigh(&mut *method, 0, &tensor_of(&grads, Kind::Double), None)
                .unwrap()
                .weights
                .unwrap(),
        );
        let b = values(
            &weigh(&mut *method, 1, &tensor_of(&grads, Kind::Double), None)
                .unwrap()
                .weights
                .unwrap(),
        );
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12 && a.iter().all(|&w| w > 0.0));
        assert_ne!(a, b);
        let mut again = create("rgw", json!({}), &context(3, 4));
        let c = values(
            &weigh(&mut *again, 0, &tensor_of(&grads, Kind::Double), None)
                .unwrap()
                .weights
                .unwrap(),
        );
        assert_eq!(a, c);
    }
}
