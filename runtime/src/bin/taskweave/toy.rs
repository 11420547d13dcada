//! The two-objective toy problem of CAGrad, run with any registered weighting
//! and drawn as trajectories over the loss landscape.
//!
//! The problem is the one of Liu, Liu, Jin, Stone and Liu, "Conflict-Averse
//! Gradient Descent for Multi-task Learning" (NeurIPS 2021, figure 1), as
//! defined by `Toy.forward` in `toy.py` of the official code
//! (<https://github.com/Cranial-XIX/CAGrad>), and reused unchanged apart from
//! a scale on the first objective by Nash-MTL (Navon et al., ICML 2022,
//! `experiments/toy/problem.py` of <https://github.com/AvivNavon/nash-mtl>)
//! and FAMO (Liu et al., NeurIPS 2023, <https://github.com/Cranial-XIX/FAMO>).
//! The formulas below were written from those definitions; no code was copied.
//!
//! For `x = (x1, x2)`, with `t = tanh(−x2)` and `LOWER = 5·10⁻⁶`:
//!
//! ```text
//! l1 = log(max(|0.5(−x1 − 7) − t|, LOWER)) + 6
//! l2 = log(max(|0.5(−x1 + 3) + t + 2|, LOWER)) + 6
//! q1 = ((−x1 + 7)² + 0.1(−x2 − 8)²)/10 − 20
//! q2 = ((−x1 − 7)² + 0.1(−x2 − 8)²)/10 − 20
//! c1 = max(tanh(x2/2), 0),  c2 = max(tanh(−x2/2), 0)
//! f1 = s·(c1·l1 + c2·q1),   f2 = c1·l2 + c2·q2
//! ```
//!
//! The scale `s` of `f1` is 1 in CAGrad and 0.1 in Nash-MTL and FAMO. Above
//! the x1 axis the objectives are logarithmic valleys that pull towards
//! different curves; below it they are quadratic bowls centred at `x1 = 7`
//! (`f1`) and `x1 = −7` (`f2`), so the Pareto set is a curve at `x2 ≈ −8.36`
//! for `x1 ∈ [−7, 7]` (see [`pareto_set`]).
//!
//! Standard settings of the sources: Adam with learning rate 10⁻³ on `x`
//! alone; 100 000 steps and starts (−8.5, 7.5), (−8.5, −5), (9, 9) in CAGrad
//! (whose toy runs CAGrad with c = 0.5 and divides its update by 1 + c);
//! 35 000 (Nash-MTL) or 50 000 (FAMO) steps from (−8.5, 7.5), (0, 0), (9, 9),
//! (−7.5, −0.5), (9, −1) with `s = 0.1`, and the weighting's own parameters
//! (UW's log-variances) trained by Adam at 0.025. The defaults here are
//! CAGrad's steps and scale and the start set (−8.5, 7.5), (−8.5, −5), (0, 0),
//! (9, 9), (10, −8).
//!
//! Every step computes the losses `[2]` and, with autograd, the per-task
//! gradients `[2, 2]` (one row per task) in f32, as the sources do. A
//! [`WeightingKind::Gradient`] weighting gets both and its update is applied
//! as the gradient of `x`; a [`WeightingKind::Loss`] weighting gets the
//! losses with their graph and its combined loss is differentiated with
//! respect to `x` (and the weighting's own parameters). Then Adam
//! ([`Optimizer`], β = (0.9, 0.999), ε = 10⁻⁸) steps `x`. The built-in
//! `cagrad` defaults to c = 0.4 (Nash-MTL's setting); CAGrad's own toy is
//! `{"kind": "cagrad", "c": 0.5, "rescale": 2}`.

use std::collections::HashMap;

use serde_json::{json, Value};
use taskweave_plugin_api::{MethodContext, Role, Weighting, WeightingInput, WeightingKind};
use tch::{Kind, Tensor};

use taskweave::optimizer::{AdamConfig, Optimizer, OptimizerConfig};
use taskweave::Runtime;
use taskweave::{Error, Result};
use taskweave_report::{
    render_png_sized, HeatMap, LegendPosition, Marker, MarkerShape, Panel, Series,
};

/// The floor under the absolute values inside the logarithms (`LOWER` in the
/// reference code).
const LOWER: f64 = 5e-6;

/// Trajectories run together in one tensor (see [`cagrad_toy`]).
const BATCH: usize = 24;

/// The start points used by default: CAGrad's three plus (0, 0) (from
/// Nash-MTL's set) and (10, −8).
pub const STARTS: [(f64, f64); 5] = [
    (-8.5, 7.5),
    (-8.5, -5.0),
    (0.0, 0.0),
    (9.0, 9.0),
    (10.0, -8.0),
];

/// How [`cagrad_toy`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyOptions {
    /// Optimizer steps per trajectory (CAGrad: 100 000; Nash-MTL: 35 000;
    /// FAMO: 50 000).
    pub steps: u64,
    /// Adam's learning rate for `x` (10⁻³ in every source).
    pub lr: f64,
    /// The seed every weighting is created with (RLW's draws, PCGrad's task
    /// order).
    pub seed: u64,
    /// Keep every `stride`-th point of the trajectory (the start and the
    /// final point are always kept); at least 1.
    pub stride: u64,
    /// The start points, each run separately with a fresh weighting.
    pub starts: Vec<(f64, f64)>,
    /// The scale `s` of the first objective: 1 in CAGrad, 0.1 in Nash-MTL and FAMO.
    pub f1_scale: f64,
    /// Adam's learning rate for a weighting's own parameters, such as UW's
    /// log-variances (Nash-MTL's `--method-params-lr`, 0.025).
    pub method_lr: f64,
    /// Worker threads (each runs whole batches of trajectories, see
    /// [`cagrad_toy`]); 0: the available parallelism. The result does not
    /// depend on it.
    pub threads: usize,
}

impl Default for ToyOptions {
    fn default() -> ToyOptions {
        ToyOptions {
            steps: 100_000,
            lr: 1e-3,
            seed: 0,
            stride: 10,
            starts: STARTS.to_vec(),
            f1_scale: 1.0,
            method_lr: 0.025,
            threads: 0,
        }
    }
}

/// One run of one weighting from one start.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// The weighting, as `kind` or `kind(key=value, ...)` from its table.
    pub weighting: String,
    /// Where it started.
    pub start: (f64, f64),
    /// `x` at step 0 (the start), every `stride` steps, and at the end.
    pub points: Vec<(f64, f64)>,
    /// `(f1, f2)` at the last point.
    pub final_losses: (f64, f64),
    /// The scale of `f1` it ran with ([`ToyOptions::f1_scale`]).
    pub f1_scale: f64,
    /// Why the run ended early, if it did: the step at which the update of
    /// `x` (or the gradient of a weighting's own parameter) was not finite.
    /// The trajectory then ends at the last finite point.
    pub stopped: Option<String>,
}

/// The two objectives at `x` (shape `[..., 2]`, any float kind): a tensor of
/// shape `[..., 2]` holding `(f1, f2)`, differentiable with respect to `x`.
pub fn toy_losses(x: &Tensor, f1_scale: f64) -> Result<Tensor> {
    // Both objectives are computed side by side in a trailing dimension of
    // 2 (fewer autograd nodes: the toy's cost is all per-op overhead).
    let xs = x.f_unbind(-1)?;
    let (x1, x2) = (&xs[0], &xs[1]);
    // The blend: c1 = max(h, 0), c2 = max(−h, 0) with h = tanh(x2/2).
    let h = x2.f_mul_scalar(0.5)?.f_tanh()?;
    let c1 = h.f_clamp_min(0.0)?.f_unsqueeze(-1)?;
    let c2 = h.f_neg()?.f_clamp_min(0.0)?.f_unsqueeze(-1)?;
    // The log arguments 0.5(−x1 − 7) − t = u − v and 0.5(−x1 + 3) + t + 2
    // = u + v, with u = −x1/2, v = t + 3.5 and t = tanh(−x2).
    let u = x1.f_mul_scalar(-0.5)?;
    let v = x2.f_neg()?.f_tanh()?.f_add_scalar(3.5)?;
    let inner = Tensor::f_stack(&[u.f_sub(&v)?, u.f_add(&v)?], -1)?;
    let logs = inner
        .f_abs()?
        .f_clamp_min(LOWER)?
        .f_log()?
        .f_add_scalar(6.0)?;
    // The bowls ((x1 ∓ 7)² + 0.1(x2 + 8)²)/10 − 20.
    let tail = x2.f_add_scalar(8.0)?.f_square()?.f_mul_scalar(0.01)?;
    let bowls = Tensor::f_stack(&[x1.f_sub_scalar(7.0)?, x1.f_add_scalar(7.0)?], -1)?
        .f_square()?
        .f_mul_scalar(0.1)?
        .f_add(&tail.f_unsqueeze(-1)?)?
        .f_sub_scalar(20.0)?;
    let f = c1.f_mul(&logs)?.f_add(&c2.f_mul(&bowls)?)?;
    if f1_scale == 1.0 {
        return Ok(f);
    }
    let scale = Tensor::f_from_slice(&[f1_scale, 1.0])?
        .f_to_kind(f.kind())?
        .f_to_device(f.device())?;
    Ok(f.f_mul(&scale)?)
}

/// `n` points (at least 2) of the Pareto set, for `x1` evenly from −7 to 7.
///
/// Below the x1 axis `f_i = c2(x2)·q_i(x1, x2)`. Minimising `w·f1 + (1 − w)·f2`
/// over `x1` gives `x1 = 7(2w − 1)`, where the bracket is
/// `A(w) + 0.01(x2 + 8)²` with `A = 19.6·w(1 − w) − 20`, so each point's `x2`
/// minimises `tanh(−x2/2)·(A + 0.01(x2 + 8)²)`, found by bisection on its
/// derivative in [−12, −4], where it changes sign once. Scaling `f1` does
/// not change the set.
/// The sources draw it as the segment `x2 = −8.3552`, its value at `x1 = 0`.
pub fn pareto_set(n: usize) -> Vec<(f64, f64)> {
    let n = n.max(2);
    (0..n)
        .map(|i| {
            let w = i as f64 / (n - 1) as f64;
            let a = 19.6 * w * (1.0 - w) - 20.0;
            // The derivative of tanh(−y/2)·(a + 0.01(y + 8)²).
            let slope = |y: f64| {
                let sech2 = 1.0 / (y / 2.0).cosh().powi(2);
                -0.5 * sech2 * (a + 0.01 * (y + 8.0).powi(2)) + (-y / 2.0).tanh() * 0.02 * (y + 8.0)
            };
            (7.0 * (2.0 * w - 1.0), bisect(slope, -12.0, -4.0))
        })
        .collect()
}

/// The root of `f` on `[lo, hi]` where `f(lo) < 0 < f(hi)`, by bisection to
/// the last bit.
fn bisect(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    for _ in 0..200 {
        let mid = lo / 2.0 + hi / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if f(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo / 2.0 + hi / 2.0
}

/// The method table `value` names (`"pcgrad"` is short for `{"kind": "pcgrad"}`).
fn table_of(value: &Value) -> Value {
    match value {
        Value::String(kind) => json!({ "kind": kind }),
        other => other.clone(),
    }
}

/// `kind`, or `kind(key=value, ...)` for a table with more keys.
fn label_of(table: &Value) -> String {
    let kind = table.get("kind").and_then(Value::as_str).unwrap_or("?");
    let extra: Vec<String> = table
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    if extra.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}({})", extra.join(", "))
    }
}

fn check(options: &ToyOptions) -> Result<()> {
    let bad = |what: String| Err(Error::Input(format!("toy: {what}")));
    if !(options.lr.is_finite() && options.lr > 0.0) {
        return bad(format!(
            "--lr must be a positive number, got {}",
            options.lr
        ));
    }
    if !(options.method_lr.is_finite() && options.method_lr > 0.0) {
        return bad(format!(
            "method_lr must be a positive number, got {}",
            options.method_lr
        ));
    }
    if !(options.f1_scale.is_finite() && options.f1_scale > 0.0) {
        return bad(format!(
            "--f1-scale must be a positive number, got {}",
            options.f1_scale
        ));
    }
    if options.stride == 0 {
        return bad("stride must be at least 1".into());
    }
    if options.starts.is_empty() {
        return bad("no start points".into());
    }
    if let Some(s) = options
        .starts
        .iter()
        .find(|s| !(s.0.is_finite() && s.1.is_finite()))
    {
        return bad(format!("start point {s:?} is not finite"));
    }
    Ok(())
}

/// One trajectory to run: a fresh weighting and where it starts.
struct Job {
    weighting: Box<dyn Weighting>,
    label: String,
    start: (f64, f64),
}

/// Runs each weighting (a method table like `{"kind": "pcgrad"}`, or just
/// its name) from every start point of `options`, and returns the
/// trajectories weighting by weighting, each in the order of the starts.
///
/// Each (weighting, start) pair gets a freshly created weighting (so
/// stateful methods start clean), created by `runtime` with tasks
/// `["f1", "f2"]` on the CPU and `options.seed`. For speed, up to 24
/// trajectories run together as the rows of one tensor, one forward and one
/// backward pass per step for all of them (the per-step cost of autograd on
/// two numbers is the same as on fifty); batches run on
/// `options.threads` workers. The result is a function of the arguments
/// only, not of `options.threads`; a trajectory can differ in the last bits
/// depending on which others share its batch (vectorised and scalar
/// libtorch kernels round differently).
///
/// Errors: bad options or method tables (unknown kind, invalid keys) as
/// [`Error::Input`]; a weighting that fails, naming it, the start and the step.
/// A non-finite update ends that trajectory early instead (see
/// [`Trajectory::stopped`]).
pub fn cagrad_toy(
    runtime: &Runtime,
    weightings: &[Value],
    options: &ToyOptions,
) -> Result<Vec<Trajectory>> {
    check(options)?;
    let mut jobs = Vec::with_capacity(weightings.len() * options.starts.len());
    for value in weightings {
        let table = table_of(value);
        let label = label_of(&table);
        for &start in &options.starts {
            let ctx = MethodContext {
                tasks: vec!["f1".into(), "f2".into()].into(),
                device: "cpu".into(),
                seed: options.seed,
                weighting: table.to_string().into(),
                ..Default::default()
            };
            let weighting = runtime
                .create_method(Role::Weighting, &table, &ctx)?
                .into_weighting()
                .map_err(|e| Error::Input(format!("toy: {label}: {e}")))?;
            jobs.push(Job {
                weighting,
                label: label.clone(),
                start,
            });
        }
    }
    // Fixed batches (not a function of `threads`): job i goes to batch
    // i % count, which mixes cheap and costly weightings in every batch.
    let total = jobs.len();
    let count = total.div_ceil(BATCH).max(1);
    let mut batches: Vec<Vec<Job>> = (0..count).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        batches[i % count].push(job);
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, batches.len().max(1));
    // Batch i goes to worker i % threads; results come back by index.
    let mut queues: Vec<Vec<(usize, Vec<Job>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, batch) in batches.into_iter().enumerate() {
        queues[i % threads].push((i, batch));
    }
    let mut results: Vec<(usize, Result<Vec<Trajectory>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                scope.spawn(move || {
                    queue
                        .into_iter()
                        .map(|(i, batch)| (i, run_batch(batch, options)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(0, Err(Error::Run("toy: a worker thread panicked".into())))]
                })
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    // Back to job order: job i is entry i / count of batch i % count.
    let mut batches = Vec::with_capacity(count);
    for (_, batch) in results {
        batches.push(batch?.into_iter());
    }
    let mut all = Vec::with_capacity(total);
    for i in 0..total {
        if let Some(t) = batches.get_mut(i % count).and_then(Iterator::next) {
            all.push(t);
        }
    }
    Ok(all)
}

/// Adam as PyTorch's defaults have it, at learning rate `lr`.
fn adam(lr: f64, params: &Tensor) -> Result<Optimizer> {
    let config = AdamConfig {
        lr,
        ..AdamConfig::default()
    };
    Optimizer::new(&OptimizerConfig::Adam(config), params)
}

/// One trajectory while it runs.
struct Live {
    weighting: Box<dyn Weighting>,
    label: String,
    start: (f64, f64),
    kind: WeightingKind,
    /// The weighting's own parameters and their optimizers.
    params: Vec<(Tensor, Optimizer)>,
    points: Vec<(f64, f64)>,
    stopped: Option<String>,
}

impl Live {
    /// `e` with the trajectory and step it met: still an input error (exit
    /// 2) when it was one, such as a setting the weighting refuses.
    fn fail(&self, step: u64, e: impl Into<Error>) -> Error {
        let context = format!("toy: {} from {:?}, step {step}", self.label, self.start);
        match e.into() {
            Error::Input(message) => Error::Input(format!("{context}: {message}")),
            other => Error::Method(format!("{context}: {other}")),
        }
    }
}

/// Runs a batch of trajectories in lockstep: `x` is `[N, 2]`, one row per
/// trajectory, and every step takes one forward and one backward pass for
/// the whole batch. Rows never interact: the losses are elementwise, the
/// per-task copies below keep the tasks' gradients apart, and Adam is
/// elementwise, so each row follows exactly its own trajectory.
fn run_batch(jobs: Vec<Job>, options: &ToyOptions) -> Result<Vec<Trajectory>> {
    let n = jobs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut live = Vec::with_capacity(n);
    for job in jobs {
        let kind = job.weighting.kind();
        let params = job
            .weighting
            .parameters()?
            .into_iter()
            .map(|(_, p)| -> Result<(Tensor, Optimizer)> {
                let optimizer = adam(options.method_lr, &p)?;
                Ok((p, optimizer))
            })
            .collect::<Result<Vec<_>>>()?;
        live.push(Live {
            weighting: job.weighting,
            label: job.label,
            start: job.start,
            kind,
            params,
            points: Vec::new(),
            stopped: None,
        });
    }
    let flat: Vec<f32> = live
        .iter()
        .flat_map(|l| [l.start.0 as f32, l.start.1 as f32])
        .collect();
    let x = Tensor::f_from_slice(&flat)?.f_reshape([n as i64, 2])?;
    let mut optimizer = adam(options.lr, &x)?;
    let read = |x: &Tensor| -> Result<Vec<f64>> {
        Ok(Vec::<f64>::try_from(
            x.f_to_kind(Kind::Double)?.f_flatten(0, -1)?,
        )?)
    };
    let first = read(&x)?;
    for (j, l) in live.iter_mut().enumerate() {
        l.points.push((first[2 * j], first[2 * j + 1]));
    }
    // Rows of gradient weightings still running, as a [N, 1] mask.
    let gradient_mask = |live: &[Live]| -> Result<Tensor> {
        let m: Vec<f32> = live
            .iter()
            .map(|l| {
                f32::from(u8::from(
                    l.kind == WeightingKind::Gradient && l.stopped.is_none(),
                ))
            })
            .collect();
        Ok(Tensor::f_from_slice(&m)?.f_reshape([n as i64, 1])?)
    };
    let mut mask = gradient_mask(&live)?;
    for step in 0..options.steps {
        if live.iter().all(|l| l.stopped.is_some()) {
            break;
        }
        // z[j, t] is a copy of x[j] that only task t sees, so one backward
        // pass gives every task's gradient separately: dz[j, t] = ∇f_t(x[j]).
        let z = x
            .f_unsqueeze(1)?
            .f_expand([n as i64, 2, 2], false)?
            .f_contiguous()?
            .set_requires_grad(true);
        let f = toy_losses(&z, options.f1_scale)?;
        // losses[j, t] = f_t(z[j, t]).
        let losses = f.f_diagonal(0, 1, 2)?;
        let detached = losses.f_detach()?;
        let mut roots = Vec::new();
        if live
            .iter()
            .any(|l| l.kind == WeightingKind::Gradient && l.stopped.is_none())
        {
            roots.push(losses.f_mul(&mask)?.f_sum(Kind::Float)?);
        }
        let mut inputs = vec![z.shallow_clone()];
        // One unbind (one autograd node) rather than a select per row.
        let rows = losses.f_unbind(0)?;
        for (l, own) in live.iter_mut().zip(&rows) {
            if l.kind != WeightingKind::Loss || l.stopped.is_some() {
                continue;
            }
            let out = l
                .weighting
                .weigh(&WeightingInput {
                    step,
                    losses: own,
                    grads: None,
                    more_grads: &[],
                })
                .map_err(|e| l.fail(step, e))?;
            if out.combined.size() != Vec::<i64>::new() {
                return Err(l.fail(
                    step,
                    Error::Method(format!(
                        "the combined loss has shape {:?}, expected a scalar",
                        out.combined.size()
                    )),
                ));
            }
            roots.push(out.combined);
            inputs.extend(l.params.iter().map(|(p, _)| p.shallow_clone()));
        }
        let mut grads = Tensor::f_run_backward(&roots, &inputs, false, false)?.into_iter();
        let dz = grads
            .next()
            .ok_or_else(|| Error::Run("toy: autograd returned no gradient".into()))?;
        // dz[j, t, i] = ∂f_t/∂x_i at x[j]; the update is assembled here, row by row.
        let dz_values = Vec::<f32>::try_from(dz.f_flatten(0, -1)?)?;
        let dz_rows = dz.f_unbind(0)?;
        let loss_rows = detached.f_unbind(0)?;
        let mut values = vec![0f32; 2 * n];
        let mut param_grads: Vec<Vec<Tensor>> = Vec::with_capacity(n);
        for (j, l) in live.iter_mut().enumerate() {
            let mut pg = Vec::new();
            match (l.stopped.is_some(), l.kind) {
                (true, _) => {}
                (false, WeightingKind::Loss) => {
                    // The gradient of x is the sum over its task copies.
                    let d = &dz_values[4 * j..4 * j + 4];
                    values[2 * j] = d[0] + d[2];
                    values[2 * j + 1] = d[1] + d[3];
                    pg = grads.by_ref().take(l.params.len()).collect();
                }
                (false, WeightingKind::Gradient) => {
                    let out = l
                        .weighting
                        .weigh(&WeightingInput {
                            step,
                            losses: &loss_rows[j],
                            grads: Some(&dz_rows[j]),
                            more_grads: &[],
                        })
                        .map_err(|e| l.fail(step, e))?;
                    let update = Vec::<f32>::try_from(&out.combined).unwrap_or_default();
                    let [u0, u1] = update[..] else {
                        return Err(l.fail(
                            step,
                            Error::Method(format!(
                                "the update has shape {:?}, expected [2]",
                                out.combined.size()
                            )),
                        ));
                    };
                    values[2 * j] = u0;
                    values[2 * j + 1] = u1;
                }
            }
            param_grads.push(pg);
        }
        let mut newly_stopped = false;
        for (j, l) in live.iter_mut().enumerate() {
            if l.stopped.is_some() {
                continue;
            }
            let mut ok = values[2 * j].is_finite() && values[2 * j + 1].is_finite();
            for g in &param_grads[j] {
                ok &= taskweave::train::all_finite(g)?;
            }
            if !ok {
                l.stopped = Some(format!("stopped at step {step}: non-finite update"));
                values[2 * j] = 0.0;
                values[2 * j + 1] = 0.0;
                newly_stopped = true;
                let here = read(&x)?;
                let p = (here[2 * j], here[2 * j + 1]);
                if l.points.last() != Some(&p) {
                    l.points.push(p);
                }
            }
        }
        if newly_stopped {
            mask = gradient_mask(&live)?;
        }
        let update = Tensor::f_from_slice(&values)?.f_reshape([n as i64, 2])?;
        tch::no_grad(|| -> Result<()> {
            optimizer.step(&x, &update)?;
            for (l, grads) in live.iter_mut().zip(&param_grads) {
                if l.stopped.is_some() {
                    continue;
                }
                for ((p, opt), g) in l.params.iter_mut().zip(grads) {
                    // A parameter the combined loss did not reach has no gradient.
                    if g.defined() {
                        opt.step(p, g)?;
                    }
                }
            }
            Ok(())
        })?;
        let done = step + 1;
        if done % options.stride == 0 || done == options.steps {
            let now = read(&x)?;
            for (j, l) in live.iter_mut().enumerate() {
                if l.stopped.is_none() {
                    l.points.push((now[2 * j], now[2 * j + 1]));
                }
            }
        }
    }
    live.into_iter()
        .map(|l| {
            let end = l.points.last().copied().unwrap_or(l.start);
            let f = Vec::<f64>::try_from(toy_losses(
                &Tensor::f_from_slice(&[end.0, end.1])?,
                options.f1_scale,
            )?)?;
            Ok(Trajectory {
                weighting: l.label,
                start: l.start,
                points: l.points,
                final_losses: (f[0], f[1]),
                f1_scale: options.f1_scale,
                stopped: l.stopped,
            })
        })
        .collect()
}

/// The mean loss `(f1 + f2)/2` on a `n × n` grid over `range` in both
/// coordinates, for [`HeatMap`].
fn mean_loss_grid(range: (f64, f64), n: usize, f1_scale: f64) -> Result<HeatMap> {
    let step = (range.1 - range.0) / (n - 1) as f64;
    let mut xy = Vec::with_capacity(2 * n * n);
    for j in 0..n {
        for i in 0..n {
            xy.push(range.0 + i as f64 * step);
            xy.push(range.0 + j as f64 * step);
        }
    }
    let x = Tensor::f_from_slice(&xy)?.f_view([(n * n) as i64, 2])?;
    let mean = toy_losses(&x, f1_scale)?.f_mean_dim(-1, false, Kind::Double)?;
    Ok(HeatMap {
        x_range: range,
        y_range: range,
        cols: n,
        values: Vec::<f64>::try_from(mean)?,
        limits: None,
        contours: 12,
        label: "(f1+f2)/2".into(),
    })
}

/// Formats a coordinate compactly: "-8.5", "0", "10".
fn coord(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Draws one panel per weighting (in order of first appearance): the mean
/// loss `(f1 + f2)/2` as a heat map with contour lines over the plane, the
/// Pareto set as a wide grey curve, each trajectory as a line in its start's
/// colour (the same in every panel) with the start as a black disc and the
/// end as a disc in the line's colour (a cross where the run stopped early).
/// Three panels of 600x440 px per row, each with its legend on the right;
/// returns the PNG file bytes.
///
/// The plane shown is [−11, 11]² (the sources' range), widened to every
/// trajectory point, at most to [−100, 100]².
pub fn draw(trajectories: &[Trajectory]) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    let mut starts: Vec<(f64, f64)> = Vec::new();
    for t in trajectories {
        if !names.contains(&t.weighting.as_str()) {
            names.push(&t.weighting);
        }
        if !starts.contains(&t.start) {
            starts.push(t.start);
        }
    }
    let (mut lo, mut hi) = (-11.0f64, 11.0f64);
    for p in trajectories
        .iter()
        .flat_map(|t| t.points.iter().chain(std::iter::once(&t.start)))
    {
        for v in [p.0, p.1] {
            if v.is_finite() {
                lo = lo.min(v - 0.5).max(-100.0);
                hi = hi.max(v + 0.5).min(100.0);
            }
        }
    }
    // The heat map reaches a little past the axes so the plot's inset
    // margin is filled too.
    let margin = (hi - lo) * 0.02;
    let mut heatmaps: HashMap<u64, Option<HeatMap>> = HashMap::new();
    let pareto = Series {
        label: "Pareto set".into(),
        points: pareto_set(200),
    };
    let panels: Vec<Panel> = names
        .iter()
        .map(|&name| {
            let runs: Vec<&Trajectory> = trajectories
                .iter()
                .filter(|t| t.weighting == name)
                .collect();
            let scale = runs.first().map_or(1.0, |t| t.f1_scale);
            let heatmap = heatmaps
                .entry(scale.to_bits())
                .or_insert_with(|| mean_loss_grid((lo - margin, hi + margin), 241, scale).ok())
                .clone();
            let mut series = Vec::with_capacity(starts.len());
            let mut markers = Vec::new();
            for (i, &start) in starts.iter().enumerate() {
                let run = runs.iter().find(|t| t.start == start);
                series.push(Series {
                    label: format!("from ({}, {})", coord(start.0), coord(start.1)),
                    points: run.map(|t| t.points.clone()).unwrap_or_default(),
                });
                if let Some(t) = run {
                    if let Some(&end) = t.points.last() {
                        let shape = if t.stopped.is_some() {
                            MarkerShape::Cross
                        } else {
                            MarkerShape::Disc
                        };
                        markers.push(Marker {
                            at: end,
                            shape,
                            color: Some(i),
                            radius: 3,
                        });
                    }
                }
            }
            // Starts go on top.
            markers.extend(
                starts
                    .iter()
                    .filter(|s| runs.iter().any(|t| t.start == **s))
                    .map(|&s| Marker::new(s)),
            );
            let title = if scale == 1.0 {
                name.to_string()
            } else {
                format!("{name}, f1 x {}", coord(scale))
            };
            Panel {
                title,
                x_label: "x1".into(),
                y_label: "x2".into(),
                series,
                heatmap,
                guides: vec![pareto.clone()],
                markers,
                x_range: Some((lo, hi)),
                y_range: Some((lo, hi)),
                legend: LegendPosition::Right,
                ..Panel::default()
            }
        })
        .collect();
    render_png_sized(&panels, 3, (600, 440))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The toy in plain f64, written again from the paper's definition.
    fn reference(x1: f64, x2: f64) -> (f64, f64) {
        let t = (-x2).tanh();
        let l1 = (0.5 * (-x1 - 7.0) - t).abs().max(5e-6).ln() + 6.0;
        let l2 = (0.5 * (-x1 + 3.0) + t + 2.0).abs().max(5e-6).ln() + 6.0;
        let c1 = (x2 * 0.5).tanh().max(0.0);
        let c2 = (-x2 * 0.5).tanh().max(0.0);
        let q1 = ((-x1 + 7.0).powi(2) + 0.1 * (-x2 - 8.0).powi(2)) / 10.0 - 20.0;
        let q2 = ((-x1 - 7.0).powi(2) + 0.1 * (-x2 - 8.0).powi(2)) / 10.0 - 20.0;
        (l1 * c1 + q1 * c2, l2 * c1 + q2 * c2)
    }

    fn at(x1: f64, x2: f64, kind: Kind) -> (f64, f64) {
        let x = Tensor::from_slice(&[x1, x2]).to_kind(kind);
        let f = Vec::<f64>::try_from(toy_losses(&x, 1.0).unwrap().to_kind(Kind::Double)).unwrap();
        (f[0], f[1])
    }

    fn runtime() -> Runtime {
        Runtime::new(&taskweave::Config::new())
    }

    #[test]
    fn toy_values_match_hand_computed_ones() {
        // On the x1 axis both blends are 0, so both objectives are 0.
        assert_eq!(at(0.0, 0.0, Kind::Double), (0.0, 0.0));
        // At (7, -8), the centre of f1's bowl: c2 = tanh(4), q1 = -20,
        // q2 = 14²/10 - 20 = -0.4, c1 = 0.
        let c2 = 4f64.tanh();
        let (f1, f2) = at(7.0, -8.0, Kind::Double);
        assert!((f1 - (-20.0 * c2)).abs() < 1e-12, "{f1}");
        assert!((f2 - (-0.4 * c2)).abs() < 1e-12, "{f2}");
        // At (-7, 8): c1 = tanh(4), c2 = 0, tanh(-8) = -t8;
        // l1 = ln|0 + t8| + 6, l2 = ln|5 - t8 + 2| + 6.
        let (c1, t8) = (4f64.tanh(), 8f64.tanh());
        let (f1, f2) = at(-7.0, 8.0, Kind::Double);
        assert!((f1 - c1 * (t8.ln() + 6.0)).abs() < 1e-12, "{f1}");
        assert!((f2 - c1 * ((7.0 - t8).ln() + 6.0)).abs() < 1e-12, "{f2}");
        // Where f1's log argument 0.5(-x1 - 7) - tanh(-x2) vanishes
        // (x1 = -7 + 2 tanh(x2)), the floor LOWER applies; c1 = tanh(1) at x2 = 2.
        let x2: f64 = 2.0;
        let x1 = -7.0 - 2.0 * (-x2).tanh();
        let (f1, _) = at(x1, x2, Kind::Double);
        assert!(
            (f1 - (1f64.tanh() * (5e-6f64.ln() + 6.0))).abs() < 1e-9,
            "{f1}"
        );
        // Elsewhere, against the f64 reference, in f64 and in f32.
        for &(x1, x2) in &[
            (-8.5, 7.5),
            (-8.5, -5.0),
            (9.0, 9.0),
            (10.0, -8.0),
            (1.3, -0.7),
            (-2.0, 0.4),
            (3.0, -8.3552),
        ] {
            let (r1, r2) = reference(x1, x2);
            let (d1, d2) = at(x1, x2, Kind::Double);
            assert!(
                (d1 - r1).abs() < 1e-12 && (d2 - r2).abs() < 1e-12,
                "({x1}, {x2})"
            );
            let (s1, s2) = at(x1, x2, Kind::Float);
            assert!(
                (s1 - r1).abs() < 1e-4 * (1.0 + r1.abs())
                    && (s2 - r2).abs() < 1e-4 * (1.0 + r2.abs()),
                "({x1}, {x2})"
            );
        }
        // The scale multiplies f1 only.
        let x = Tensor::from_slice(&[10.0f64, -8.0]);
        let f = Vec::<f64>::try_from(toy_losses(&x, 0.1).unwrap()).unwrap();
        let (r1, r2) = reference(10.0, -8.0);
        assert!((f[0] - 0.1 * r1).abs() < 1e-12 && (f[1] - r2).abs() < 1e-12);
    }

    #[test]
    fn toy_gradients_match_finite_differences() {
        for &(x1, x2) in &[
            (-8.5, 7.5),
            (-8.5, -5.0),
            (9.0, 9.0),
            (10.0, -8.0),
            (1.3, -0.7),
            (-2.0, 0.4),
            (0.5, -9.0),
        ] {
            let x = Tensor::from_slice(&[x1, x2]).set_requires_grad(true);
            let f = toy_losses(&x, 1.0).unwrap();
            for t in 0..2 {
                let g = Tensor::run_backward(&[f.get(t)], &[&x], true, false)
                    .pop()
                    .unwrap();
                let g = Vec::<f64>::try_from(g).unwrap();
                let h = 1e-6;
                let pick = |p: (f64, f64)| if t == 0 { p.0 } else { p.1 };
                let d1 = (pick(reference(x1 + h, x2)) - pick(reference(x1 - h, x2))) / (2.0 * h);
                let d2 = (pick(reference(x1, x2 + h)) - pick(reference(x1, x2 - h))) / (2.0 * h);
                assert!(
                    (g[0] - d1).abs() < 1e-6 * (1.0 + d1.abs()),
                    "f{} at ({x1}, {x2}): {} vs {d1}",
                    t + 1,
                    g[0]
                );
                assert!(
                    (g[1] - d2).abs() < 1e-6 * (1.0 + d2.abs()),
                    "f{} at ({x1}, {x2}): {} vs {d2}",
                    t + 1,
                    g[1]
                );
            }
        }
    }

    #[test]
    fn toy_pareto_set_is_pareto_stationary() {
        let set = pareto_set(41);
        assert_eq!(set.len(), 41);
        assert_eq!(set[0].0, -7.0);
        assert_eq!(set[40].0, 7.0);
        // The sources' segment height at x1 = 0.
        assert!((set[20].1 - -8.3552).abs() < 1e-4, "{:?}", set[20]);
        for &(x1, x2) in &set {
            assert!((-8.5..-8.0).contains(&x2), "({x1}, {x2})");
            // Stationary for w·f1 + (1 - w)·f2 with w = (x1 + 7)/14: the
            // weighted gradient vanishes.
            let w = (x1 + 7.0) / 14.0;
            let x = Tensor::from_slice(&[x1, x2]).set_requires_grad(true);
            let f = toy_losses(&x, 1.0).unwrap();
            let mix = f.get(0) * w + f.get(1) * (1.0 - w);
            let g = Vec::<f64>::try_from(
                Tensor::run_backward(&[mix], &[&x], false, false)
                    .pop()
                    .unwrap(),
            )
            .unwrap();
            assert!(
                g[0].abs() < 1e-9 && g[1].abs() < 1e-9,
                "({x1}, {x2}): {g:?}"
            );
        }
    }

    fn mean(f: (f64, f64)) -> f64 {
        (f.0 + f.1) / 2.0
    }

    #[test]
    fn toy_short_runs_lower_the_mean_loss() {
        let options = ToyOptions {
            steps: 2000,
            starts: vec![(-8.5, -5.0)],
            ..ToyOptions::default()
        };
        let runs = cagrad_toy(
            &runtime(),
            &[json!({"kind": "ew"}), json!("mgda")],
            &options,
        )
        .unwrap();
        assert_eq!(runs.len(), 2);
        let start = mean(reference(-8.5, -5.0));
        for t in &runs {
            assert_eq!(t.start, (-8.5, -5.0));
            assert_eq!(t.points[0], (-8.5, -5.0));
            // Start, 200 strided points.
            assert_eq!(t.points.len(), 201, "{}", t.weighting);
            assert!(t.stopped.is_none());
            let end = *t.points.last().unwrap();
            let (r1, r2) = reference(end.0, end.1);
            assert!((t.final_losses.0 - r1).abs() < 1e-4 && (t.final_losses.1 - r2).abs() < 1e-4);
            // Adam moves at most about lr per coordinate per step.
            assert!(
                (end.0 + 8.5).abs() <= 2.1 && (end.1 + 5.0).abs() <= 2.1,
                "{end:?}"
            );
            assert!(
                mean(t.final_losses) < start - 1.0,
                "{}: {start} -> {:?}",
                t.weighting,
                t.final_losses
            );
        }
        assert_eq!(runs[0].weighting, "ew");
        assert_eq!(runs[1].weighting, "mgda");
    }

    #[test]
    fn toy_runs_are_deterministic() {
        let options = ToyOptions {
            steps: 300,
            stride: 7,
            starts: vec![(0.0, 0.0), (9.0, 9.0)],
            ..ToyOptions::default()
        };
        let tables = [
            json!("pcgrad"),
            json!({"kind": "cagrad", "c": 0.5}),
            json!("uw"),
            json!("nash-mtl"),
        ];
        let a = cagrad_toy(&runtime(), &tables, &options).unwrap();
        let b = cagrad_toy(
            &runtime(),
            &tables,
            &ToyOptions {
                threads: 1,
                ..options.clone()
            },
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
        assert_eq!(a[2].weighting, "cagrad(c=0.5)");
        // 300 steps at stride 7: the start, 42 strided points, the end.
        assert_eq!(a[0].points.len(), 44);
        let other = cagrad_toy(
            &runtime(),
            &tables[..1],
            &ToyOptions {
                lr: 2e-3,
                ..options
            },
        )
        .unwrap();
        assert_ne!(other[0].points, a[0].points);
    }

    #[test]
    fn toy_batched_rows_follow_their_own_trajectories() {
        // 30 trajectories make two batches of 15 (rows interleaved); each
        // must match the same trajectory run alone, up to rounding.
        let starts: Vec<(f64, f64)> = (0..6)
            .map(|i| (-8.0 + 3.0 * i as f64, 6.0 - 2.5 * i as f64))
            .collect();
        let tables = [
            json!("ew"),
            json!("uw"),
            json!("mgda"),
            json!("cagrad"),
            json!("rlw"),
        ];
        let options = ToyOptions {
            steps: 250,
            stride: 50,
            starts: starts.clone(),
            ..ToyOptions::default()
        };
        // RLW is a plugin: included when the built plugin is there.
        let rt = Runtime::new(
            taskweave::Config::new().plugin_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins")),
        );
        let has = rt.registry().names(Role::Weighting);
        let tables: Vec<Value> = tables
            .into_iter()
            .filter(|t| has.iter().any(|n| t == n.as_str()))
            .collect();
        let together = cagrad_toy(&rt, &tables, &options).unwrap();
        assert_eq!(together.len(), tables.len() * starts.len());
        for (k, t) in together.iter().enumerate() {
            let (w, s) = (k / starts.len(), k % starts.len());
            assert_eq!(t.start, starts[s]);
            let alone = cagrad_toy(
                &rt,
                &tables[w..=w],
                &ToyOptions {
                    starts: vec![starts[s]],
                    ..options.clone()
                },
            )
            .unwrap();
            assert_eq!(alone[0].weighting, t.weighting);
            assert_eq!(alone[0].points.len(), t.points.len());
            for (a, b) in alone[0].points.iter().zip(&t.points) {
                assert!(
                    (a.0 - b.0).abs() < 1e-4 && (a.1 - b.1).abs() < 1e-4,
                    "{} from {:?}: {a:?} vs {b:?}",
                    t.weighting,
                    t.start
                );
            }
        }
    }

    #[test]
    fn toy_bad_input_is_an_error() {
        let rt = runtime();
        let good = [json!("ew")];
        for options in [
            ToyOptions {
                lr: 0.0,
                ..ToyOptions::default()
            },
            ToyOptions {
                stride: 0,
                ..ToyOptions::default()
            },
            ToyOptions {
                starts: vec![],
                ..ToyOptions::default()
            },
            ToyOptions {
                starts: vec![(f64::NAN, 0.0)],
                ..ToyOptions::default()
            },
            ToyOptions {
                f1_scale: -1.0,
                ..ToyOptions::default()
            },
        ] {
            assert!(
                matches!(cagrad_toy(&rt, &good, &options), Err(Error::Input(_))),
                "{options:?}"
            );
        }
        let options = ToyOptions {
            steps: 5,
            ..ToyOptions::default()
        };
        for table in [
            json!({"kind": "no-such-method"}),
            json!({"kind": "cagrad", "c": -1}),
            json!(3),
            json!({"kind": "mmoe"}),
        ] {
            assert!(
                cagrad_toy(&rt, std::slice::from_ref(&table), &options).is_err(),
                "{table}"
            );
        }
        // No steps: just the start.
        let runs = cagrad_toy(
            &rt,
            &good,
            &ToyOptions {
                steps: 0,
                ..ToyOptions::default()
            },
        )
        .unwrap();
        assert_eq!(runs.len(), 5);
        assert!(runs.iter().all(|t| t.points == vec![t.start]));
    }

    #[test]
    fn toy_drawing_shows_every_weighting_and_start() {
        let options = ToyOptions {
            steps: 50,
            ..ToyOptions::default()
        };
        let runs = cagrad_toy(&runtime(), &[json!("ew"), json!("pcgrad")], &options).unwrap();
        let png = draw(&runs);
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let reader = decoder.read_info().unwrap();
        // Two panels of 600x440 in one row.
        assert_eq!((reader.info().width, reader.info().height), (1200, 440));
        assert_eq!(draw(&runs), png, "deterministic");
        // Nothing to draw still gives an image.
        assert!(!draw(&[]).is_empty());
    }
}
