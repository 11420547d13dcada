//! ExcessMTL (He, Zhou, Han, Liu, "Robust Multi-Task Learning with Excess
//! Risks", ICML 2024): task weights raised in proportion to each task's
//! estimated excess risk, by exponentiated gradient steps.
//!
//! Per step, the squared gradients are accumulated per entry (`S += G∘G`, an
//! AdaGrad-style diagonal curvature estimate), the excess-risk proxy of task
//! i is `r_i = Σ_j g_ij²/sqrt(S_ij + 1e-7)`, normalised by its value at the
//! first step after the warm-up (`r_i/(r_i⁰ + 1e-7)`; not on that first step
//! itself), and the weights move as `w ← softmax(log w + η·r)` from `1/T`.
//! During `n_warmup_steps` the weights stay `1/T` and `r⁰` is the warm-up
//! mean of `r`. Conventions and defaults are TorchJD 0.18's `ExcessMTL`
//! (`robust_step_size` η = 1.0, `n_warmup_steps` 0), checked against it.
//!
//! The state is `S` (a `[T, P]` tensor on the gradients' device, in f32 for
//! f32, bf16 and f16 gradients as TorchJD keeps it, f64 for f64), the
//! weights, `r⁰` or the warm-up sum, the step count and `B`, a running upper
//! bound on every entry of `S` (the sum of each step's largest squared
//! entry); all of it is checkpointed. Before `B` could pass 1e37, `S` is
//! promoted to f64 for good, so gradients beyond 1e19 (whose squares
//! overflow f32) never turn `S` infinite.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::{json, Value};
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Error, Host, Method, MethodContext, Result, State, Weighting,
    WeightingInput, WeightingKind, WeightingOutput,
};

use super::combine::{check_finite_rows, checked, task_names, weighted};
use crate::vectors::{load_vector, softmax};

/// Added under the square root and to the normaliser, as the reference.
const EPS: f64 = 1e-7;

/// Below this bound on `S` an f32 `S` cannot overflow (f32's largest is 3.4e38).
const F32_SAFE: f64 = 1e37;

/// The ExcessMTL weighting.
struct ExcessMtl {
    tasks: Vec<String>,
    step_size: f64,
    warmup: u64,
    /// `S`, the accumulated squared gradients; `None` before the first step.
    squares: Option<Tensor>,
    /// `B ≥ max S`.
    bound: f64,
    /// Two `[T, P]` work matrices in `S`'s precision, kept across steps (not state).
    scratch: Option<(Tensor, Tensor)>,
    weights: Vec<f64>,
    /// The warm-up sum of `r`, then (from the first step after it) `r⁰`.
    reference: Vec<f64>,
    /// Steps seen.
    steps: u64,
}

impl ExcessMtl {
    /// The two work matrices, (re)made for `shape`, `precision` and `device`.
    fn scratch(
        &mut self,
        shape: &[i64],
        precision: Kind,
        device: taskweave_plugin_api::tch::Device,
    ) -> Result<(&mut Tensor, &mut Tensor)> {
        let fits = |(a, _): &(Tensor, Tensor)| {
            a.kind() == precision && a.device() == device && a.size() == shape
        };
        if !self.scratch.as_ref().is_some_and(fits) {
            let zeros = || Tensor::f_zeros(shape, (precision, device));
            self.scratch = Some((zeros()?, zeros()?));
        }
        let (a, b) = self.scratch.as_mut().expect("made above");
        Ok((a, b))
    }
}

impl Weighting for ExcessMtl {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Gradient
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let (grads, _) = checked(input, &self.tasks)?;
        // Two scratch matrices persist across steps and everything runs in
        // place: fresh T×P temporaries cost more in page faults than the
        // arithmetic.
        let shape = grads.size();
        if self.squares.as_ref().is_some_and(|s| s.size() != shape) {
            return Err(Error::msg(format!(
                "excess-mtl: the gradients have shape {shape:?}, its state {:?}",
                self.squares.as_ref().map(Tensor::size)
            )));
        }
        let device = grads.device();
        let g = grads.f_detach()?;
        // G∘G in S's precision; its largest entry both bounds S's growth and
        // checks G (NaN propagates, ±∞ squares to ∞): no extra pass over G.
        // When it is not finite, or S could pass f32's range, the rows are
        // checked (a NaN or ∞ entry is named, before the state takes it in)
        // and the step is redone in f64.
        let mut precision = match self.squares.as_ref().map(Tensor::kind) {
            Some(Kind::Double) => Kind::Double,
            _ if g.f_kind()? == Kind::Double => Kind::Double,
            _ => Kind::Float,
        };
        let largest = loop {
            let (squared, _) = self.scratch(&shape, precision, device)?;
            if g.f_kind()? == precision {
                let _ = g.f_square_out(squared)?;
            } else {
                squared.f_copy_(&g)?;
                let _ = squared.f_square_()?;
            }
            let largest = squared.f_max()?.f_double_value(&[])?;
            let fits = precision == Kind::Double || self.bound + largest <= F32_SAFE;
            if largest.is_finite() && fits {
                break largest;
            }
            if !largest.is_finite() {
                check_finite_rows(grads, &self.tasks)?;
                if precision == Kind::Double {
                    return Err(Error::msg(
                        "excess-mtl: a squared gradient entry overflows f64 (an entry beyond about 1e154)",
                    ));
                }
            }
            precision = Kind::Double;
        };
        self.bound += largest;
        let squares = match &mut self.squares {
            // A resumed state is loaded on the CPU; a promotion changes the kind.
            Some(s) => {
                if s.device() != device || s.kind() != precision {
                    *s = s.f_to_device(device)?.f_to_kind(precision)?;
                }
                s
            }
            None => self
                .squares
                .insert(Tensor::f_zeros(shape.as_slice(), (precision, device))?),
        };
        // In-place ops return their tensor again: the `let _` drop those handles.
        let (squared, curvature) = self.scratch.as_mut().expect("made above");
        let _ = squares.f_add_(squared)?;
        let _ = squares.f_add_scalar_out(curvature, EPS)?;
        let _ = curvature.f_sqrt_()?;
        let _ = squared.f_div_(curvature)?;
        let r = squared
            .f_sum_dim_intlist(1, false, precision)?
            .f_to_kind(Kind::Double)?;
        let r = Vec::<f64>::try_from(&r)?;
        if self.steps < self.warmup {
            self.reference.iter_mut().zip(&r).for_each(|(s, x)| *s += x);
        } else {
            let scaled: Vec<f64> = if self.steps == self.warmup {
                // The first step after the warm-up sets r⁰.
                if self.warmup > 0 {
                    self.reference
                        .iter_mut()
                        .for_each(|s| *s /= self.warmup as f64);
                    r.iter()
                        .zip(&self.reference)
                        .map(|(x, r0)| x / (r0 + EPS))
                        .collect()
                } else {
                    self.reference = r.clone();
                    r
                }
            } else {
                r.iter()
                    .zip(&self.reference)
                    .map(|(x, r0)| x / (r0 + EPS))
                    .collect()
            };
            let logits: Vec<f64> = self
                .weights
                .iter()
                .zip(&scaled)
                .map(|(w, x)| w.ln() + self.step_size * x)
                .collect();
            self.weights = softmax(&logits);
        }
        self.steps += 1;
        // G was checked finite above; an overflow of the update itself is
        // the runtime's to catch, as for every update.
        weighted(grads, &self.weights)
    }

    fn state(&self) -> Result<State> {
        let Some(squares) = &self.squares else {
            return Ok(State::default());
        };
        Ok(State {
            tensors: vec![
                ("squares".into(), squares.f_detach_copy()?),
                ("weights".into(), Tensor::f_from_slice(&self.weights)?),
                ("reference".into(), Tensor::f_from_slice(&self.reference)?),
            ],
            meta: json!({ "steps": self.steps, "bound": self.bound }),
        })
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        let t = self.tasks.len();
        if state.is_empty() {
            self.squares = None;
            self.bound = 0.0;
            self.weights = vec![1.0 / t as f64; t];
            self.reference = vec![0.0; t];
            self.steps = 0;
            return Ok(());
        }
        let steps = state.meta["steps"]
            .as_u64()
            .ok_or_else(|| Error::msg("excess-mtl state: `steps` missing"))?;
        let bound = state.meta["bound"]
            .as_f64()
            .ok_or_else(|| Error::msg("excess-mtl state: `bound` missing"))?;
        let squares = state.take_tensor("squares")?;
        if squares.size().first() != Some(&(t as i64)) {
            return Err(Error::msg(format!(
                "excess-mtl state: `squares` must have {t} rows, got shape {:?}",
                squares.size()
            )));
        }
        let weights = load_vector(&mut state, "excess-mtl", "weights", t)?;
        let reference = load_vector(&mut state, "excess-mtl", "reference", t)?;
        self.weights = weights.unwrap_or_else(|| vec![1.0 / t as f64; t]);
        self.reference = reference.unwrap_or_else(|| vec![0.0; t]);
        self.squares = Some(squares);
        (self.steps, self.bound) = (steps, bound);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Step size η of the exponentiated-gradient update of the weights.
    #[schemars(range(min = 0.0))]
    robust_step_size: f64,
    /// Steps that only measure the reference excess risk (weights stay 1/T).
    n_warmup_steps: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            robust_step_size: 1.0,
            n_warmup_steps: 0,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let config: Config = typed(config)?;
    let tasks = task_names(ctx)?;
    let t = tasks.len();
    Ok(Box::new(ExcessMtl {
        tasks,
        step_size: config.robust_step_size,
        warmup: config.n_warmup_steps,
        squares: None,
        bound: 0.0,
        scratch: None,
        weights: vec![1.0 / t as f64; t],
        reference: vec![0.0; t],
        steps: 0,
    }))
}

register_method!(Method::new(
    "excess-mtl",
    env!("CARGO_PKG_VERSION"),
    "ExcessMTL: task weights raised with each task's estimated excess risk (He et al., ICML 2024)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use crate::gradient::testing::{context, create, instances, tensor_of, values, weigh};
    use taskweave_plugin_api::serde_json::json;
    use taskweave_plugin_api::tch::Kind;

    #[test]
    fn resuming_mid_warmup_and_after_continues_exactly() {
        let (_, grads) = instances().swap_remove(11);
        let t = grads.len();
        let g = tensor_of(&grads, Kind::Float);
        let config = json!({ "n_warmup_steps": 2 });
        for stop in [1, 3] {
            let mut straight = create("excess-mtl", config.clone(), &context(t, 0));
            for step in 0..stop {
                weigh(&mut *straight, step, &g, None).unwrap();
            }
            let mut resumed = create("excess-mtl", config.clone(), &context(t, 0));
            resumed.load_state(straight.state().unwrap()).unwrap();
            for step in stop..stop + 2 {
                let a = weigh(&mut *straight, step, &g, None).unwrap();
                let b = weigh(&mut *resumed, step, &g, None).unwrap();
                assert!(a.combined.equal(&b.combined), "stop {stop} step {step}");
            }
        }
    }

    #[test]
    fn squares_beyond_f32_move_the_state_to_f64_and_a_nan_leaves_it_alone() {
        // 1e20² overflows f32: S is kept in f64 from then on, and the
        // weights are those of the same gradients given in f64.
        let grads = vec![vec![1e20, 1.0, 0.0], vec![0.5, -2.0, 3.0]];
        let mut narrow = create("excess-mtl", json!({}), &context(2, 0));
        let mut wide = create("excess-mtl", json!({}), &context(2, 0));
        for step in 0..3 {
            let a = weigh(&mut *narrow, step, &tensor_of(&grads, Kind::Float), None).unwrap();
            let b = weigh(&mut *wide, step, &tensor_of(&grads, Kind::Double), None).unwrap();
            let (wa, wb) = (values(&a.weights.unwrap()), values(&b.weights.unwrap()));
            for (x, y) in wa.iter().zip(&wb) {
                assert!((x - y).abs() < 1e-6, "step {step}: {wa:?} vs {wb:?}");
            }
        }
        let state = narrow.state().unwrap();
        assert!(state.tensors.iter().all(|(_, t)| t.kind() == Kind::Double));
        let nan = vec![vec![1.0, 1.0, 0.0], vec![f64::NAN, -2.0, 3.0]];
        let err = weigh(&mut *narrow, 3, &tensor_of(&nan, Kind::Float), None)
            .err()
            .expect("a NaN gradient is an error");
        assert!(err.to_string().contains("task `task1` (row 1)"), "{err}");
        let after = narrow.state().unwrap();
        for ((_, x), (_, y)) in state.tensors.iter().zip(&after.tensors) {
            assert!(x.equal(y), "the failed step changed the state");
        }
    }

    #[test]
    fn a_task_with_larger_excess_risk_gains_weight() {
        // Task 1's gradient keeps its size while task 0's shrinks: task 1's
        // normalised excess risk grows, and so does its weight.
        let mut method = create("excess-mtl", json!({}), &context(2, 0));
        let mut weights = vec![];
        for step in 0..5 {
            let shrink = 0.5f64.powi(step as i32);
            let grads = vec![vec![shrink, 0.0], vec![0.0, 1.0]];
            weights = values(
                &weigh(&mut *method, step, &tensor_of(&grads, Kind::Double), None)
                    .unwrap()
                    .weights
                    .unwrap(),
            );
        }
        assert!(weights[1] > 0.6, "{weights:?}");
    }
}
