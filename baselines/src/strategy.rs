//! The standard training step.

use taskweave_plugin_api::config::{schema_for, NoKeys};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    register_method, task_gradients, Constructor, Group, Host, Method, MethodContext, Result,
    State, StepOps, StepReport, Strategy, Weighting, WeightingInput, WeightingKind,
};

/// One forward pass, then the pipeline's weighting decides the update:
/// a loss weighting gives one scalar loss to back-propagate; a gradient
/// weighting gets the per-task gradients of the shared parameters (T backward
/// passes, each head getting its own task's gradient) and returns the shared
/// update. A weighting that samples more than once per step
/// ([`Weighting::samples`]) also gets the per-task gradients of that many
/// extra batches ([`StepOps::extra_batch`]); each head then gets the mean of
/// its task's gradients over all the batches (as LibMTL's MoDo).
pub struct Standard {
    weighting: Box<dyn Weighting>,
}

impl Standard {
    /// A standard step around `weighting`.
    pub fn new(weighting: Box<dyn Weighting>) -> Standard {
        Standard { weighting }
    }
}

impl Strategy for Standard {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        ops.next_batch()?;
        let losses = ops.losses(true)?;
        let step = ops.current_step();
        let weights = match self.weighting.kind() {
            WeightingKind::Loss => {
                let out = self.weighting.weigh(&WeightingInput {
                    step,
                    losses: &losses,
                    grads: None,
                    more_grads: &[],
                })?;
                ops.backward(&out.combined)?;
                out.weights
            }
            WeightingKind::Gradient => {
                let (grads, mut heads) = task_gradients(ops, &losses)?;
                let samples = self.weighting.samples().max(1);
                let mut more = Vec::with_capacity(samples - 1);
                for _ in 1..samples {
                    ops.extra_batch()?;
                    let extra = ops.losses(true)?;
                    let (g, h) = task_gradients(ops, &extra)?;
                    for (sum, h) in heads.iter_mut().zip(&h) {
                        *sum = sum.f_add(h)?;
                    }
                    more.push(g);
                }
                if samples > 1 {
                    for head in heads.iter_mut() {
                        *head = head.f_div_scalar(samples as f64)?;
                    }
                }
                for (t, head) in heads.iter().enumerate() {
                    ops.set_grads(Group::Task(t), head)?;
                }
                let detached = losses.f_detach()?;
                let out = self.weighting.weigh(&WeightingInput {
                    step,
                    losses: &detached,
                    grads: Some(&grads),
                    more_grads: &more,
                })?;
                ops.set_grads(Group::Shared, &out.combined)?;
                out.weights
            }
        };
        ops.optimizer_step()?;
        Ok(StepReport {
            losses: losses.f_detach()?,
            weights,
        })
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .weighting
            .parameters()?
            .into_iter()
            .map(|(n, t)| (format!("weighting.{n}"), t))
            .collect())
    }

    fn state(&self) -> Result<State> {
        let mut state = State::default();
        state.nest("weighting", self.weighting.state()?);
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        self.weighting.load_state(state.unnest("weighting"))
    }
}

fn create(_config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Strategy>> {
    Ok(Box::new(Standard::new(
        host.weighting(&ctx.weighting_table()?, ctx)?,
    )))
}

register_method!(Method::new(
    "standard",
    env!("CARGO_PKG_VERSION"),
    "The standard step: forward, combine with the pipeline's weighting, backward, optimizer step",
    schema_for::<NoKeys>,
    Constructor::Strategy(create),
));
