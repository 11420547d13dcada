//! The task-specific refinement (SENet-like): each field vector squeezed to
//! its mean, an MLP with reduction ratio r, gates `2·sigmoid`, each field
//! scaled by its gate; the output is the fields' concatenation.

use taskweave_plugin_api::nn::{Activation, Linear};
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{Group, Parameter, Result};

/// One task's refinement (`None`: the ablation, a plain concatenation).
pub struct Refine(Option<(Linear, Linear)>);

impl Refine {
    /// Over `slots` field vectors with reduction ratio `reduction`.
    pub fn new(slots: usize, reduction: usize, on: bool, device: Device) -> Result<Refine> {
        if !on {
            return Ok(Refine(None));
        }
        let hidden = slots.div_ceil(reduction).max(1);
        Ok(Refine(Some((
            Linear::new(slots, hidden, device)?,
            Linear::new(hidden, slots, device)?,
        ))))
    }

    /// `h_k` `[N, S · d]` of the field vectors `fields` `[N, S, d]`.
    pub fn forward(&self, fields: &Tensor) -> Result<Tensor> {
        let refined = match &self.0 {
            None => fields.shallow_clone(),
            Some((squeeze, excite)) => {
                let z = fields.f_mean_dim(-1, false, None::<Kind>)?; // [N, S]
                let hidden = Activation::Relu.apply(&squeeze.forward(&z)?)?;
                let gates = excite.forward(&hidden)?.f_sigmoid()?.f_mul_scalar(2.0)?;
                fields.f_mul(&gates.f_unsqueeze(-1)?)?
            }
        };
        Ok(refined.f_flatten(1, -1)?)
    }

    /// Task `task`'s tensors, in its group, under the component `refinement`.
    pub fn parameters(&self, task: usize, out: &mut Vec<(&'static str, Parameter)>) {
        let Some((squeeze, excite)) = &self.0 else {
            return;
        };
        for (prefix, layer) in [("squeeze", squeeze), ("excite", excite)] {
            for (name, tensor) in layer.parameters(&format!("refine{task}.{prefix}")) {
                let group = Group::Task(task);
                out.push((
                    "refinement",
                    Parameter {
                        name,
                        tensor,
                        group,
                    },
                ));
            }
        }
    }
}
