//! The denoising objective (DDPM's ε-prediction, Ho et al. 2020) as
//! multi-task data: the clean samples x₀ of the data's input become noisy
//! inputs x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at a timestep t, read by the
//! denoiser beside sinusoidal features of t, and the target of every task is
//! ε. Each task is one interval of timesteps (ANT's clusters; one interval
//! 1..=T without a grouping): a row counts for the task whose interval holds
//! its t, so the per-task losses are the per-cluster denoising losses that a
//! weighting combines.
//!
//! The denoiser reads either one flat input (`features` = [x_t flattened,
//! time features], for an MLP) or, with a `unet` backbone, the noisy image
//! under the data input's own name beside the time features `t`; its tasks
//! then predict ε per pixel (`dense-regression` with MSE loss) instead of as
//! one vector.
//!
//! A training batch gets fresh t and ε at every step, from libtorch's
//! generator (which the trainer seeds from (seed, step), so resume repeats
//! them), with B/k rows per interval and t uniform inside it. The train,
//! validation and test splits the runtime evaluates on are noised once in
//! the same way, from a fixed stream per split (the same for every run
//! seed, so validation losses compare across runs): every interval gets a
//! k-th of the rows, however narrow it is.

use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::InputSpec;
use tch::{Device, Kind, Tensor};

use crate::data::{Dataset, RegressionLoss, Split, Task, TaskType};
use crate::error::{Error, Result};
use crate::sections::{BackboneConfig, DiffusionConfig};
use taskweave_plugin_api::nn::same_tensor;

/// The input an MLP denoiser reads: x_t flattened, then the timestep features.
pub const FEATURES: &str = "features";

/// The timestep features a U-Net denoiser reads beside the noisy image.
pub const TIME: &str = "t";

/// How the denoiser reads x_t and t.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// One input [`FEATURES`]; every task a vector of the sample's width.
    Flat,
    /// The noisy sample in its own shape under the data input's name, and
    /// [`TIME`]; every task per pixel.
    Image(String),
}

/// The seed of the fixed noise of the evaluation splits.
const EVAL_SEED: u64 = 0xd1ff_0510;

/// A denoising objective over one data set's clean samples.
pub struct Denoising {
    steps: usize,
    /// √ᾱ_t and √(1 − ᾱ_t) at index t − 1, float32 on the data's device.
    signal: Tensor,
    noise: Tensor,
    /// The tasks' timestep intervals, 1-based and inclusive, in order.
    intervals: Vec<(i64, i64)>,
    /// Each interval's first timestep and width, int64 `[k]`, on the device.
    starts: Tensor,
    widths: Tensor,
    time_features: usize,
    /// The training split's clean samples, flattened `[N, D]`.
    clean: Tensor,
    /// The shape of one sample.
    shape: Vec<usize>,
    layout: Layout,
}

impl Denoising {
    /// The objective over `data`'s input `config.input` (float, any shape)
    /// with one task per interval of `intervals`, and the data the trainer
    /// sees: the three splits noised once, and for backbone `backbone`
    /// either the input `features` `[D + time_features]` and one vector
    /// task of width D per interval (any backbone but `unet`), or the
    /// noisy input in its shape `[C, H, W]` with `t` `[time_features]` and
    /// one dense-regression task per interval (`unet`).
    pub fn new(
        config: &DiffusionConfig,
        intervals: Vec<(i64, i64)>,
        data: &Dataset,
        backbone: &BackboneConfig,
    ) -> Result<(Denoising, Dataset)> {
        let spec = data.input(&config.input).ok_or_else(|| {
            let have: Vec<&str> = data.inputs.iter().map(|i| i.name.as_str()).collect();
            Error::Input(format!(
                "diffusion.input = {:?}: the data have no such input (they have: {}); name the input that holds the samples",
                config.input,
                have.join(", ")
            ))
        })?;
        if spec.kind != taskweave_plugin_api::InputKind::Float {
            return Err(Error::Input(format!(
                "diffusion.input = {:?} holds {} values; a diffusion model needs float samples",
                config.input,
                spec.kind.name()
            )));
        }
        config.check().map_err(Error::Input)?;
        let dim: usize = spec.shape.iter().product();
        let steps = config.steps as usize;
        let alpha_bar = config.schedule.alpha_bar(steps);
        let device = data.device();
        let column = |f: fn(f64) -> f64| -> Result<Tensor> {
            let values: Vec<f32> = alpha_bar.iter().map(|&a| f(a) as f32).collect();
            Ok(Tensor::from_slice(&values).f_to_device(device)?)
        };
        let (starts, widths): (Vec<i64>, Vec<i64>) =
            intervals.iter().map(|&(a, b)| (a, b - a + 1)).unzip();
        let flat = |split: &Split| -> Result<Tensor> {
            Ok(split
                .input(&config.input)
                .expect("checked above")
                .f_reshape([-1, dim as i64])?)
        };
        let denoising = Denoising {
            steps,
            signal: column(f64::sqrt)?,
            noise: column(|a| (1.0 - a).sqrt())?,
            starts: Tensor::from_slice(&starts).f_to_device(device)?,
            widths: Tensor::from_slice(&widths).f_to_device(device)?,
            intervals,
            time_features: config.time_features as usize,
            clean: flat(&data.train)?,
            shape: spec.shape.clone(),
            layout: match backbone {
                BackboneConfig::Unet(_) => Layout::Image(config.input.clone()),
                _ => Layout::Flat,
            },
        };
        let kind = match (&denoising.layout, spec.shape.as_slice()) {
            (Layout::Image(_), &[channels, height, width]) => TaskType::DenseRegression {
                channels,
                height,
                width,
            },
            // The backbone's plan names what it needs and what the data have.
            _ => TaskType::Vector(dim),
        };
        let tasks = denoising
            .intervals
            .iter()
            .map(|&(a, b)| {
                let mut task = Task::new(format!("t{a}-{b}"), kind);
                // ε-prediction's loss (Ho et al.) and its metric.
                task.loss = RegressionLoss::Mse;
                task.primary = "mse";
                task
            })
            .collect();
        let fixed = |split: &Split, stream: u64| denoising.fixed(&flat(split)?, stream);
        let time = denoising.time_features;
        let inputs = match &denoising.layout {
            Layout::Flat => vec![InputSpec::float(FEATURES, vec![dim + time])],
            Layout::Image(name) => vec![
                InputSpec::float(name, spec.shape.clone()),
                InputSpec::float(TIME, vec![time]),
            ],
        };
        let noised = Dataset {
            tasks,
            inputs,
            train: fixed(&data.train, 0)?,
            val: fixed(&data.val, 1)?,
            test: fixed(&data.test, 2)?,
        };
        Ok((denoising, noised))
    }

    /// Diffusion timesteps T.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The tasks' timestep intervals, 1-based and inclusive.
    pub fn intervals(&self) -> &[(i64, i64)] {
        &self.intervals
    }

    /// The task whose interval holds timestep `t`.
    pub fn task_of(&self, t: i64) -> usize {
        self.intervals
            .iter()
            .position(|&(_, b)| t <= b)
            .unwrap_or(self.intervals.len() - 1)
    }

    /// √ᾱ_t and √(1 − ᾱ_t) of timestep `t` (1-based).
    pub fn levels(&self, t: i64) -> Result<(f64, f64)> {
        Ok((
            self.signal.f_double_value(&[t - 1])?,
            self.noise.f_double_value(&[t - 1])?,
        ))
    }

    /// A training batch of the clean rows `index`, noised with fresh draws
    /// from libtorch's generator: B/k rows per interval, or, with `only`,
    /// every row in that task's interval.
    pub fn noised(&self, index: &Tensor, only: Option<usize>) -> Result<Split> {
        let x0 = self.clean.f_index_select(0, index)?;
        let (rows, device) = (x0.size()[0], x0.device());
        let k = self.intervals.len() as i64;
        let task = match only {
            None => Tensor::f_arange(rows, (Kind::Int64, device))?.f_remainder(k)?,
            Some(task) => Tensor::f_full([rows], task as i64, (Kind::Int64, device))?,
        };
        let widths = self.widths.f_index_select(0, &task)?;
        let offset = Tensor::f_rand([rows], (Kind::Double, device))?
            .f_mul(&widths.f_to_kind(Kind::Double)?)?
            .f_floor()?
            .f_to_kind(Kind::Int64)?
            .f_minimum(&widths.f_sub_scalar(1)?)?;
        let t = self.starts.f_index_select(0, &task)?.f_add(&offset)?;
        let eps = x0.f_randn_like()?;
        self.split(&x0, &t, &eps, &task)
    }

    /// `x0` noised once from the fixed stream `stream`, as a training batch
    /// is: row i in interval i mod k, t uniform inside it.
    fn fixed(&self, x0: &Tensor, stream: u64) -> Result<Split> {
        let (rows, dim) = (x0.size()[0], x0.size()[1]);
        let mut rng = SplitMix::at(EVAL_SEED, stream);
        let k = self.intervals.len() as i64;
        let task: Vec<i64> = (0..rows).map(|i| i % k).collect();
        let t: Vec<i64> = task
            .iter()
            .map(|&c| {
                let (a, b) = self.intervals[c as usize];
                a + rng.below((b - a + 1) as u64) as i64
            })
            .collect();
        let eps: Vec<f32> = (0..rows * dim).map(|_| rng.normal() as f32).collect();
        let device = x0.device();
        let on = |t: Tensor| t.f_to_device(device);
        self.split(
            x0,
            &on(Tensor::from_slice(&t))?,
            &on(Tensor::from_slice(&eps).f_reshape([rows, dim])?)?,
            &on(Tensor::from_slice(&task))?,
        )
    }

    /// The split of clean rows `x0` at timesteps `t` with noise `eps`, each
    /// row counting for task `task`.
    fn split(&self, x0: &Tensor, t: &Tensor, eps: &Tensor, task: &Tensor) -> Result<Split> {
        let index = t.f_sub_scalar(1)?;
        let signal = self.signal.f_index_select(0, &index)?.f_unsqueeze(1)?;
        let noise = self.noise.f_index_select(0, &index)?.f_unsqueeze(1)?;
        let xt = x0.f_mul(&signal)?.f_add(&eps.f_mul(&noise)?)?;
        let k = self.intervals.len();
        let masks = if k == 1 {
            vec![None]
        } else {
            (0..k)
                .map(|c| Ok(Some(task.f_eq(c as i64)?)))
                .collect::<Result<_>>()?
        };
        let target = self.shaped(eps)?;
        Ok(Split {
            inputs: self.inputs(&xt, t)?,
            targets: (0..k).map(|_| target.shallow_clone()).collect(),
            masks,
        })
    }

    /// Flattened rows `[B, D]` as the denoiser's tasks hold them: as they
    /// are, or in the sample's shape for per-pixel tasks.
    fn shaped(&self, rows: &Tensor) -> Result<Tensor> {
        match self.layout {
            Layout::Flat => Ok(rows.shallow_clone()),
            Layout::Image(_) => self.unflatten(rows),
        }
    }

    /// The denoiser's inputs for noisy rows `xt` `[B, D]` at timesteps `t`
    /// (int64 `[B]`), by its layout.
    fn inputs(&self, xt: &Tensor, t: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let time = self.timestep_features(t, xt.device())?;
        Ok(match &self.layout {
            Layout::Flat => vec![(
                FEATURES.to_string(),
                Tensor::f_cat(&[xt.shallow_clone(), time], 1)?,
            )],
            Layout::Image(name) => vec![
                (name.clone(), self.unflatten(xt)?),
                (TIME.to_string(), time),
            ],
        })
    }

    /// The features of timesteps `t` (int64 `[B]`): sin(t·ω_j) and
    /// cos(t·ω_j) for the frequencies ω_j = 10000^(−j/(E/2)), j < E/2 (the
    /// Transformer's position features, as DDPM embeds its timesteps).
    fn timestep_features(&self, t: &Tensor, device: Device) -> Result<Tensor> {
        let half = (self.time_features / 2) as i64;
        let freqs = Tensor::f_arange(half, (Kind::Float, device))?
            .f_mul_scalar(-(10000f64.ln()) / half as f64)?
            .f_exp()?;
        let angles = t
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(1)?
            .f_mul(&freqs.f_unsqueeze(0)?)?;
        Ok(Tensor::f_cat(&[angles.f_sin()?, angles.f_cos()?], 1)?)
    }

    /// The width D of a flattened sample.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// Flattened samples `[N, D]` in the data's shape `[N, ...]`.
    pub fn unflatten(&self, samples: &Tensor) -> Result<Tensor> {
        let shape: Vec<i64> = std::iter::once(-1)
            .chain(self.shape.iter().map(|&d| d as i64))
            .collect();
        Ok(samples.f_reshape(shape.as_slice())?)
    }

    /// The per-interval loss sums and row counts (float32 `[k]` each) of a
    /// batch when every task's output is one tensor (a shared head over
    /// shared features): each row's mean squared error once, summed within
    /// each interval by one product with the interval masks, instead of k
    /// masked losses over the whole batch. Sum over count is each interval's
    /// loss, as `task_loss` gives it. `None` when the outputs differ (a head
    /// per interval).
    pub fn shared_loss_sums(
        &self,
        outputs: &[Tensor],
        batch: &Split,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let first = &outputs[0];
        let same = outputs.iter().all(|o| same_tensor(o, first));
        let target = &batch.targets[0];
        if !same || first.size() != target.size() {
            return Ok(None);
        }
        let per_row = first
            .f_sub(target)?
            .f_square()?
            .f_flatten(1, -1)?
            .f_mean_dim([1].as_slice(), false, Kind::Float)?;
        let masks: Option<Vec<Tensor>> = batch
            .masks
            .iter()
            .map(|m| m.as_ref().map(Tensor::shallow_clone))
            .collect();
        Ok(Some(match masks {
            None => (
                per_row.f_sum(Kind::Float)?.f_unsqueeze(0)?,
                Tensor::f_full([1], per_row.size()[0], (Kind::Float, per_row.device()))?,
            ),
            Some(masks) => {
                let member = Tensor::f_stack(&masks, 0)?.f_to_kind(Kind::Float)?;
                (
                    member.f_mv(&per_row)?,
                    member.f_sum_dim_intlist([1].as_slice(), false, Kind::Float)?,
                )
            }
        }))
    }

    /// The first `rows` clean training samples `[rows, D]` with noise drawn
    /// once from a fixed stream: the probe batch of [`super::affinity`].
    pub fn probe(&self, rows: usize) -> Result<(Tensor, Tensor)> {
        let x0 = self
            .clean
            .f_narrow(0, 0, (rows as i64).min(self.clean.size()[0]))?;
        let mut rng = SplitMix::at(EVAL_SEED, 3);
        let eps: Vec<f32> = (0..x0.numel()).map(|_| rng.normal() as f32).collect();
        let eps = Tensor::from_slice(&eps)
            .f_reshape(x0.size().as_slice())?
            .f_to_device(x0.device())?;
        Ok((x0, eps))
    }

    /// `x0` noised with `eps` at timestep `t`: x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε.
    pub fn noisy(&self, x0: &Tensor, eps: &Tensor, t: i64) -> Result<Tensor> {
        let (signal, noise) = self.levels(t)?;
        Ok(x0.f_mul_scalar(signal)?.f_add(&eps.f_mul_scalar(noise)?)?)
    }

    /// The denoiser's inputs for noisy rows `xt` `[B, D]` all at timestep `t`.
    pub fn inputs_at(&self, xt: &Tensor, t: i64) -> Result<Vec<(String, Tensor)>> {
        let steps = Tensor::f_full([xt.size()[0]], t, (Kind::Int64, xt.device()))?;
        self.inputs(xt, &steps)
    }

    /// The device of the objective's tensors.
    pub fn device(&self) -> Device {
        self.clean.device()
    }
}

/// The contiguous intervals (1-based, inclusive) of a partition of timesteps
/// 1..=T given as each timestep's group, when group g is the g-th run of
/// timesteps; `None` for any other partition.
pub fn intervals_of(groups: &[usize]) -> Option<Vec<(i64, i64)>> {
    let mut intervals: Vec<(i64, i64)> = Vec::new();
    for (i, &g) in groups.iter().enumerate() {
        let t = i as i64 + 1;
        if i > 0 && groups[i - 1] == g {
            intervals.last_mut().expect("i > 0").1 = t;
        } else if g == intervals.len() {
            intervals.push((t, t));
        } else {
            return None;
        }
    }
    Some(intervals)
}

/// An objective over 12 training points (x₀ of row i = (2i, 2i + 1)), T =
/// 10, cosine schedule, 4 timestep features, with one task per interval.
#[cfg(test)]
pub(crate) fn fixture(intervals: Vec<(i64, i64)>) -> (Denoising, Dataset) {
    let split = |rows: i64| Split {
        inputs: vec![(
            "x".into(),
            Tensor::f_arange(rows * 2, (Kind::Float, Device::Cpu))
                .unwrap()
                .f_reshape([rows, 2])
                .unwrap(),
        )],
        targets: vec![],
        masks: vec![],
    };
    let data = Dataset {
        tasks: vec![],
        inputs: vec![InputSpec::float("x", vec![2])],
        train: split(12),
        val: split(6),
        test: split(6),
    };
    let config = DiffusionConfig {
        steps: 10,
        schedule: crate::noise::NoiseSchedule::Cosine,
        time_features: 4,
        ..DiffusionConfig::default()
    };
    Denoising::new(&config, intervals, &data, &BackboneConfig::default()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timestep of each row, read back from its features' first sine
    /// (frequency 1: sin t is one-to-one on 1..=10).
    fn timesteps(split: &Split) -> Vec<i64> {
        let features = Vec::<f32>::try_from(split.inputs[0].1.f_reshape([-1]).unwrap()).unwrap();
        features
            .chunks(6)
            .map(|row| {
                (1..=10)
                    .min_by(|&a, &b| {
                        let d = |t: i64| ((t as f32).sin() - row[2]).abs();
                        d(a).total_cmp(&d(b))
                    })
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn shared_loss_sums_over_counts_equal_the_masked_task_losses_and_need_one_output() {
        for intervals in [vec![(1, 10)], vec![(1, 2), (3, 5), (6, 10)]] {
            let (denoising, data) = fixture(intervals);
            tch::manual_seed(1);
            let batch = denoising
                .noised(&Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]), None)
                .unwrap();
            let out = batch.targets[0].f_randn_like().unwrap();
            let outputs: Vec<Tensor> = data.tasks.iter().map(|_| out.shallow_clone()).collect();
            let (sums, counts) = denoising
                .shared_loss_sums(&outputs, &batch)
                .unwrap()
                .unwrap();
            let fused = crate::train::metrics::loss_means(&sums, &counts).unwrap();
            for (t, task) in data.tasks.iter().enumerate() {
                let one = crate::train::metrics::task_loss(
                    task,
                    &out,
                    &batch.targets[t],
                    batch.masks[t].as_ref(),
                )
                .unwrap();
                let (a, b) = (fused.double_value(&[t as i64]), one.double_value(&[]));
                assert!(
                    (a - b).abs() < 1e-6 * b.abs().max(1.0),
                    "task {t}: {a} vs {b}"
                );
            }
            // A head per interval: other tensors, the generic path.
            let own: Vec<Tensor> = data.tasks.iter().map(|_| out.copy()).collect();
            assert!(own.len() == 1 || denoising.shared_loss_sums(&own, &batch).unwrap().is_none());
        }
    }

    #[test]
    fn a_batch_spreads_its_rows_over_the_intervals_and_noises_them_by_the_schedule() {
        let (denoising, data) = fixture(vec![(1, 2), (3, 10)]);
        assert_eq!(data.tasks.len(), 2);
        assert_eq!(data.tasks[1].name, "t3-10");
        assert_eq!(data.inputs[0].shape, [2 + 4]);
        tch::manual_seed(3);
        let index = Tensor::from_slice(&[0i64, 5, 7, 11]);
        let batch = denoising.noised(&index, None).unwrap();
        let t = timesteps(&batch);
        let mask = |c: usize| {
            Vec::<bool>::try_from(batch.masks[c].as_ref().unwrap().shallow_clone()).unwrap()
        };
        assert_eq!(mask(0), [true, false, true, false]);
        assert_eq!(mask(1), [false, true, false, true]);
        for (row, &t) in t.iter().enumerate() {
            let (a, b) = denoising.intervals()[row % 2];
            assert!((a..=b).contains(&t), "row {row}: t = {t}");
            // x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, with x₀ = (2i, 2i + 1) for row i.
            let (signal, noise) = denoising.levels(t).unwrap();
            let i = [0.0, 5.0, 7.0, 11.0][row];
            for d in 0..2 {
                let xt = batch.inputs[0].1.double_value(&[row as i64, d]);
                let eps = batch.targets[0].double_value(&[row as i64, d]);
                assert!((xt - (signal * (2.0 * i + d as f64) + noise * eps)).abs() < 1e-4);
            }
        }
        // One task's batch: every row in its interval, counting for it alone.
        let only = denoising.noised(&index, Some(0)).unwrap();
        assert!(timesteps(&only).iter().all(|t| (1..=2).contains(t)));
        assert_eq!(
            Vec::<bool>::try_from(only.masks[0].as_ref().unwrap().shallow_clone()).unwrap(),
            [true; 4]
        );
        // The evaluation splits are noised the same way, once.
        let (again, _) = fixture(vec![(1, 2), (3, 10)]);
        let (a, b) = (
            timesteps(&data.val),
            timesteps(
                &again
                    .fixed(&again.clean.f_narrow(0, 0, 6).unwrap(), 1)
                    .unwrap(),
            ),
        );
        assert_eq!(a, b);
        assert!(a.iter().step_by(2).all(|t| (1..=2).contains(t)));
    }

    #[test]
    fn intervals_are_read_from_ordered_runs_only() {
        assert_eq!(
            intervals_of(&[0, 0, 1, 1, 1, 2]),
            Some(vec![(1, 2), (3, 5), (6, 6)])
        );
        assert_eq!(intervals_of(&[0, 0, 0]), Some(vec![(1, 3)]));
        assert_eq!(intervals_of(&[0, 1, 0]), None, "group 0 twice");
        assert_eq!(intervals_of(&[1, 1, 0]), None, "out of order");
        assert_eq!(intervals_of(&[0, 2, 2]), None, "group 1 missing");
        assert_eq!(intervals_of(&[]), Some(vec![]));
    }
}
