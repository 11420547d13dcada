//! Every trainable tensor of a run laid out in one flat buffer, grouped: the
//! shared parameters first, then each task's, then the methods' own.
//!
//! Each parameter stays an ordinary leaf tensor (the method that created it
//! keeps its handle), but its data is redirected into the buffer. A group is
//! then one contiguous slice, so flat gradients, SAM perturbations, restores and
//! the optimizer update are a handful of whole-buffer operations instead of a
//! few per tensor.

use std::collections::HashMap;
use std::ops::Range;

use taskweave_plugin_api::Group;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::Param;

/// Position of a group in the layout.
fn rank(group: Option<Group>) -> (u8, usize) {
    match group {
        Some(Group::Shared) => (0, 0),
        Some(Group::Task(t)) => (1, t),
        None => (2, 0),
    }
}

struct Slot {
    name: String,
    leaf: Tensor,
    group: Option<Group>,
    range: Range<i64>,
}

/// The flat parameter buffer, its gradient buffer and the per-group slices.
pub struct FlatParams {
    data: Tensor,
    grad: Tensor,
    slots: Vec<Slot>,
    tasks: usize,
}

impl FlatParams {
    /// Moves `params` into one float32 buffer on `device`; `tasks` is the number
    /// of task groups.
    pub fn new(mut params: Vec<Param>, tasks: usize, device: Device) -> Result<FlatParams> {
        params.sort_by_key(|p| rank(p.group));
        let mut slots = Vec::with_capacity(params.len());
        let mut offset = 0i64;
        for p in params {
            if p.tensor.kind() != Kind::Float {
                return Err(Error::Method(format!(
                    "parameter `{}` is {}; parameters must be float32",
                    p.name,
                    taskweave_plugin_api::kind_name(p.tensor.kind())
                )));
            }
            if let Some(Group::Task(t)) = p.group {
                if t >= tasks {
                    return Err(Error::Method(format!(
                        "parameter `{}` is in task group {t}, but there are {tasks} tasks",
                        p.name
                    )));
                }
            }
            let numel = p.tensor.numel() as i64;
            slots.push(Slot {
                name: p.name,
                leaf: p.tensor,
                group: p.group,
                range: offset..offset + numel,
            });
            offset += numel;
        }
        let data = Tensor::f_zeros([offset], (Kind::Float, device))?;
        for slot in &mut slots {
            let mut view = data.f_narrow(0, slot.range.start, slot.range.end - slot.range.start)?;
            tch::no_grad(|| view.f_copy_(&slot.leaf.f_detach()?.f_reshape([-1])?))?;
            let shaped = view.f_view(slot.leaf.size().as_slice())?;
            // The leaf keeps its identity (and its owner's handle) but now reads
            // and writes the buffer.
            slot.leaf.set_data(&shaped);
        }
        let grad = Tensor::f_zeros([offset], (Kind::Float, device))?;
        Ok(FlatParams {
            data,
            grad,
            slots,
            tasks,
        })
    }

    /// Total number of parameter values.
    pub fn len(&self) -> i64 {
        self.data.numel() as i64
    }

    /// The parameter buffer.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// The gradient buffer the optimizer reads.
    pub fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// The slice of the buffer holding `group`.
    pub fn range(&self, group: Group) -> Result<Range<i64>> {
        if let Group::Task(t) = group {
            if t >= self.tasks {
                return Err(Error::Method(format!(
                    "task group {t} does not exist ({} tasks)",
                    self.tasks
                )));
            }
        }
        let mut it = self.slots.iter().filter(|s| s.group == Some(group));
        Ok(match it.next() {
            None => 0..0,
            Some(first) => {
                first.range.start..it.next_back().map_or(first.range.end, |s| s.range.end)
            }
        })
    }

    /// Where the methods' own parameters (in no group) start: they are last.
    pub fn methods_start(&self) -> i64 {
        self.slots
            .iter()
            .find(|s| s.group.is_none())
            .map_or(self.len(), |s| s.range.start)
    }

    /// `tensor[range]` for a flat tensor laid out like the buffer.
    pub fn slice(tensor: &Tensor, range: &Range<i64>) -> Result<Tensor> {
        Ok(tensor.f_narrow(0, range.start, range.end - range.start)?)
    }

    fn leaves(&self, filter: impl Fn(&Slot) -> bool) -> Vec<&Slot> {
        self.slots.iter().filter(|s| filter(s)).collect()
    }

    /// Gradients of `loss` w.r.t. the given slots, flattened and concatenated;
    /// parameters the loss does not reach get zeros. Under data-parallel
    /// training they are averaged over the ranks here, the one place every
    /// gradient comes from, so methods only ever see reduced gradients (each
    /// rank's data losses carry the factor that makes the mean their sum:
    /// see `Ops::losses`).
    fn flat_grads(&self, loss: &Tensor, slots: &[&Slot], retain_graph: bool) -> Result<Tensor> {
        let inputs: Vec<&Tensor> = slots.iter().map(|s| &s.leaf).collect();
        if inputs.is_empty() {
            return Ok(Tensor::f_zeros([0], (Kind::Float, self.data.device()))?);
        }
        // libtorch dereferences the missing graph of such a loss (a segfault).
        if !loss.requires_grad() {
            return Err(Error::Method(
                "a gradient of a loss that does not require grad (computed under no_grad?)".into(),
            ));
        }
        let grads = Tensor::f_run_backward(&[loss], &inputs, retain_graph, false)?;
        let flat: Vec<Tensor> = grads
            .into_iter()
            .zip(slots)
            .map(|(g, s)| {
                if g.defined() {
                    g.f_reshape([-1])
                } else {
                    Tensor::f_zeros(
                        [s.range.end - s.range.start],
                        (Kind::Float, self.data.device()),
                    )
                }
            })
            .collect::<Result<_, _>>()?;
        let flat = Tensor::f_cat(&flat, 0)?;
        crate::dist::world().mean_(&flat)?;
        Ok(flat)
    }

    /// ∂loss/∂group for each of `groups`, one flat vector each, in the order asked.
    pub fn grads(
        &self,
        loss: &Tensor,
        groups: &[Group],
        retain_graph: bool,
    ) -> Result<Vec<Tensor>> {
        let mut wanted = groups.to_vec();
        wanted.sort_by_key(|g| rank(Some(*g)));
        wanted.dedup();
        let slots = self.leaves(|s| s.group.is_some_and(|g| wanted.contains(&g)));
        // One backward pass for all groups; its result is in buffer order.
        let all = self.flat_grads(loss, &slots, retain_graph)?;
        let mut at = HashMap::new();
        let mut offset = 0i64;
        for group in &wanted {
            let range = self.range(*group)?;
            at.insert(*group, (offset, range.end - range.start));
            offset += range.end - range.start;
        }
        groups
            .iter()
            .map(|g| Ok(all.f_narrow(0, at[g].0, at[g].1)?))
            .collect()
    }

    /// Adds ∂loss/∂θ for every parameter into the gradient buffer.
    pub fn backward(&mut self, loss: &Tensor) -> Result<()> {
        let slots: Vec<&Slot> = self.slots.iter().collect();
        let g = self.flat_grads(loss, &slots, false)?;
        let _ = self.grad.f_add_(&g)?;
        Ok(())
    }

    /// The model's groups in buffer order: shared, then each task's.
    pub fn model_groups(&self) -> Vec<Group> {
        std::iter::once(Group::Shared)
            .chain((0..self.tasks).map(Group::Task))
            .collect()
    }

    /// The methods' own parameters (in no group), in buffer order.
    pub fn method_leaves(&self) -> Vec<Tensor> {
        self.leaves(|s| s.group.is_none())
            .iter()
            .map(|s| s.leaf.shallow_clone())
            .collect()
    }

    /// Adds `grads` (shaped like [`FlatParams::method_leaves`]) into the
    /// methods' part of the gradient buffer.
    pub fn add_method_grads(&mut self, grads: &[Tensor]) -> Result<()> {
        let slots = self.leaves(|s| s.group.is_none());
        for (slot, g) in slots.iter().zip(grads) {
            let _ = Self::slice(&self.grad, &slot.range)?.f_add_(&g.f_reshape([-1])?)?;
        }
        Ok(())
    }

    /// Adds the flat gradient `grad` of the model's parameters (laid out as
    /// [`FlatParams::model`]) into the gradient buffer.
    pub fn add_model_grad(&mut self, grad: &Tensor) -> Result<()> {
        let model = self.model()?.numel() as i64;
        let _ = self.grad.f_narrow(0, 0, model)?.f_add_(grad)?;
        Ok(())
    }

    /// Overwrites the gradient of `group` with `grad` (flat).
    pub fn set_grad(&mut self, group: Group, grad: &Tensor) -> Result<()> {
        let range = self.range(group)?;
        let expected = range.end - range.start;
        if grad.size() != [expected] {
            return Err(Error::Method(format!(
                "gradient for {group:?} has shape {:?}, expected [{expected}]",
                grad.size()
            )));
        }
        Self::slice(&self.grad, &range)?.f_copy_(grad)?;
        Ok(())
    }

    /// Clears the gradient buffer.
    pub fn zero_grad(&mut self) -> Result<()> {
        let _ = self.grad.f_zero_()?;
        Ok(())
    }

    /// The model's parameters (every group, before the methods' own), as
    /// one view of the buffer.
    pub fn model(&self) -> Result<Tensor> {
        let end = self
            .slots
            .iter()
            .filter(|s| s.group.is_some())
            .map(|s| s.range.end)
            .max()
            .unwrap_or(0);
        Ok(self.data.f_narrow(0, 0, end)?)
    }

    /// Overwrites the model's parameters with `values` (laid out as [`FlatParams::model`]).
    pub fn set_model(&mut self, values: &Tensor) -> Result<()> {
        let model = self.model()?;
        if values.size() != model.size() || values.kind() != Kind::Float {
            return Err(Error::Method(format!(
                "set_parameters_flat: {} {:?} values for {} parameters of float32",
                taskweave_plugin_api::kind_name(values.kind()),
                values.size(),
                model.numel()
            )));
        }
        tch::no_grad(|| model.shallow_clone().f_copy_(values))?;
        Ok(())
    }

    /// Every parameter as (name, leaf), in buffer order.
    pub fn named(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.leaf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, values: &[f32], group: Option<Group>) -> Param {
        Param {
            name: name.into(),
            tensor: Tensor::from_slice(values).set_requires_grad(true),
            group,
        }
    }

    #[test]
    fn leaves_share_the_buffer_and_groups_are_contiguous() {
        let head = param("h", &[5.0], Some(Group::Task(0)));
        let handle = head.tensor.shallow_clone();
        let flat = FlatParams::new(
            vec![
                head,
                param("s", &[1.0, 2.0], Some(Group::Shared)),
                param("m", &[9.0], None),
            ],
            1,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(flat.data()).unwrap(),
            vec![1.0, 2.0, 5.0, 9.0]
        );
        assert_eq!(flat.range(Group::Task(0)).unwrap(), 2..3);
        let _ = tch::no_grad(|| flat.data().shallow_clone().f_mul_scalar_(2.0)).unwrap();
        assert_eq!(
            handle.double_value(&[0]),
            10.0,
            "the owner's handle sees buffer updates"
        );
        assert!(handle.requires_grad() && handle.is_leaf());
    }

    #[test]
    fn grads_per_group_and_zero_for_unreached_parameters() {
        let s = param("s", &[1.0, 2.0], Some(Group::Shared));
        let h0 = param("h0", &[3.0], Some(Group::Task(0)));
        let h1 = param("h1", &[4.0], Some(Group::Task(1)));
        let (ts, th0) = (s.tensor.shallow_clone(), h0.tensor.shallow_clone());
        let mut flat = FlatParams::new(vec![s, h0, h1], 2, Device::Cpu).unwrap();
        let loss = (&ts * &th0).sum(Kind::Float);
        let g = flat
            .grads(
                &loss,
                &[Group::Task(1), Group::Shared, Group::Task(0)],
                true,
            )
            .unwrap();
        assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), vec![0.0]);
        assert_eq!(Vec::<f32>::try_from(&g[1]).unwrap(), vec![3.0, 3.0]);
        assert_eq!(Vec::<f32>::try_from(&g[2]).unwrap(), vec![3.0]);
        flat.backward(&loss).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(flat.grad()).unwrap(),
            vec![3.0, 3.0, 3.0, 0.0]
        );
        assert!(flat
            .set_grad(Group::Shared, &Tensor::from_slice(&[1.0f32]))
            .is_err());
        let detached = tch::no_grad(|| (&ts * &th0).sum(Kind::Float));
        assert!(flat.grads(&detached, &[Group::Shared], false).is_err());
        assert!(flat.backward(&detached).is_err());
    }
}
