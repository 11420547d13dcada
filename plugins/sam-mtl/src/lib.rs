//! SAM-MTL: sharpness-aware multi-task learning with task-based flat regions
//! (Phan, Tran, Nguyen, Le, Venkatesh, "Improving Multi-task Learning via Seeking
//! Task-based Flat Regions", 2022), a `Strategy` that composes with any weighting.
//!
//! One step:
//! 1. one forward pass: per-task losses L_t;
//! 2. g_t = ∇L_t over the shared parameters and task t's head;
//! 3. for each task: move to the worst point of its ρ-ball,
//!    ε_t = ρ·A²g_t/(‖A g_t‖ + 1e-12) (A = |θ| when `adaptive`, ASAM; one norm
//!    for the shared part and one for the head unless `joint_norm`), take
//!    L_t there (normalisation statistics untouched) and its gradient g_t^SAM,
//!    then restore the parameters bit for bit;
//! 4. head t gets g_t^SAM,h;
//! 5. the shared parameters get AGG({g_t^sh}) + AGG({g_t^SAM,sh − g_t^sh}): the
//!    "loss" and "flat" families aggregated separately, each by its own instance
//!    of the aggregator (so stateful aggregators keep one history per family);
//! 6. one optimizer step.
//!
//! An aggregator with trainable parameters (UW) learns them: its combined
//! loss over the detached losses goes through the host's backward pass, and
//! the parameters are the strategy's (`loss_family.*`, `flat_family.*`).
//! `ew` sums the gradients where the FS-MTL reference averages them (weights
//! 1 vs 1/T): the same direction, T times the step, which the learning rate
//! absorbs.
//!
//! The extra cost over the base step is exactly T forward and T backward passes.
//! Only one T×P gradient matrix is held: the loss family is aggregated first,
//! then each row is overwritten by its flat-family difference.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    aggregate_and_loss, register_method, task_gradients, Constructor, Group, Host, Method,
    MethodContext, Result, State, StepOps, StepReport, Strategy, Weighting, WeightingOutput,
};

/// The SAM-MTL strategy.
pub struct SamMtl {
    rho: f64,
    adaptive: bool,
    joint_norm: bool,
    /// Aggregates the loss family {g_t}.
    loss_family: Box<dyn Weighting>,
    /// Aggregates the flat family {g_t^SAM − g_t}.
    flat_family: Box<dyn Weighting>,
}

/// [`aggregate_and_loss`], with a loss weighting's combined loss sent
/// through the host's backward pass: the aggregator's own parameters (UW's
/// log-variances) learn from the losses it aggregates.
fn aggregate_learning(
    weighting: &mut dyn Weighting,
    ops: &mut dyn StepOps,
    step: u64,
    losses: &Tensor,
    grads: &Tensor,
) -> Result<WeightingOutput> {
    let (update, loss) = aggregate_and_loss(weighting, step, losses, grads)?;
    if let Some(loss) = loss.filter(Tensor::requires_grad) {
        ops.backward(&loss)?;
    }
    Ok(update)
}

impl Strategy for SamMtl {
    fn step(&mut self, ops: &mut dyn StepOps) -> Result<StepReport> {
        ops.next_batch()?;
        let losses = ops.losses(true)?;
        let step = ops.current_step();
        let (grads, heads) = task_gradients(ops, &losses)?;
        let losses = losses.f_detach()?;
        let loss_update =
            aggregate_learning(self.loss_family.as_mut(), ops, step, &losses, &grads)?;

        for (t, head) in heads.iter().enumerate() {
            let row = grads.f_get(t as i64)?;
            if self.joint_norm {
                ops.perturb(
                    &[Group::Shared, Group::Task(t)],
                    &[row.shallow_clone(), head.shallow_clone()],
                    self.rho,
                    self.adaptive,
                )?;
            } else {
                ops.perturb(
                    &[Group::Shared],
                    &[row.shallow_clone()],
                    self.rho,
                    self.adaptive,
                )?;
                ops.perturb(
                    &[Group::Task(t)],
                    &[head.shallow_clone()],
                    self.rho,
                    self.adaptive,
                )?;
            }
            let perturbed = ops.losses(false)?.f_get(t as i64)?;
            let mut sam = ops.grads(&perturbed, &[Group::Shared, Group::Task(t)], false)?;
            ops.restore()?;
            let (Some(sam_head), Some(sam_shared)) = (sam.pop(), sam.pop()) else {
                return Err(taskweave_plugin_api::Error::msg(
                    "the host returned fewer gradients than groups",
                ));
            };
            ops.set_grads(Group::Task(t), &sam_head)?;
            // Row t becomes g_t^SAM − g_t (the loss family is already aggregated).
            let flat = sam_shared.f_sub(&row)?;
            grads.f_get(t as i64)?.f_copy_(&flat)?;
        }
        let flat_update =
            aggregate_learning(self.flat_family.as_mut(), ops, step, &losses, &grads)?;
        ops.set_grads(
            Group::Shared,
            &loss_update.combined.f_add(&flat_update.combined)?,
        )?;
        ops.optimizer_step()?;
        Ok(StepReport {
            losses,
            weights: loss_update.weights,
        })
    }

    /// The aggregators' own trainable parameters (UW's log-variances): each
    /// family's instance learns from the losses it aggregates.
    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (family, weighting) in [
            ("loss_family", &self.loss_family),
            ("flat_family", &self.flat_family),
        ] {
            for (name, tensor) in weighting.parameters()? {
                out.push((format!("{family}.{name}"), tensor));
            }
        }
        Ok(out)
    }

    fn state(&self) -> Result<State> {
        let mut state = State::default();
        state.nest("loss_family", self.loss_family.state()?);
        state.nest("flat_family", self.flat_family.state()?);
        Ok(state)
    }

    fn load_state(&mut self, mut state: State) -> Result<()> {
        self.loss_family.load_state(state.unnest("loss_family"))?;
        self.flat_family.load_state(state.unnest("flat_family"))
    }
}

/// SAM-MTL's config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// Radius ρ of the neighbourhood searched for each task's worst point.
    #[schemars(range(min = 0.0))]
    rho: f64,
    /// Scale the perturbation by |θ| (ASAM), as the reference code does.
    adaptive: bool,
    /// One norm over shared and head gradients instead of one each.
    joint_norm: bool,
    /// Weighting that aggregates each gradient family (default: the pipeline's train.weighting).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-taskweave-role" = "Weighting"))]
    aggregator: Option<Value>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rho: 2.0,
            adaptive: true,
            joint_norm: false,
            aggregator: None,
        }
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Strategy>> {
    let config: Config = typed(config)?;
    let table = match config.aggregator {
        Some(table) => table,
        None => ctx.weighting_table()?,
    };
    Ok(Box::new(SamMtl {
        rho: config.rho,
        adaptive: config.adaptive,
        joint_norm: config.joint_norm,
        loss_family: host.weighting(&table, ctx)?,
        flat_family: host.weighting(&table, ctx)?,
    }))
}

register_method!(Method::new(
    "sam-mtl",
    env!("CARGO_PKG_VERSION"),
    "SAM-MTL: per-task sharpness-aware gradients, loss and flat families aggregated apart (Phan et al., 2022)",
    schema_for::<Config>,
    Constructor::Strategy(create),
));
