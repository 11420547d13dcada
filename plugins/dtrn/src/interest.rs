//! The task-specific interest module: one shared transformer encoder whose
//! layer-norm gains and biases are made per (task, behaviour) by a
//! hypernetwork (conditional layer norm), and attention pooling of the
//! encoded sequence to the candidate item.

use taskweave_plugin_api::nn::{Activation, Linear};
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{Group, Parameter, Result};

/// Where each (task, behaviour) encoding's norm parameters come from.
pub enum Norms {
    /// A hypernetwork H(e_task ⊕ e_behaviour) → (γ₁, β₁, γ₂, β₂), with one
    /// embedding per task (in that task's group) and per behaviour.
    Hyper {
        tasks: Vec<Tensor>,
        behaviours: Tensor,
        hidden: Linear,
        out: Linear,
    },
    /// The ablation: one (γ₁, β₁, γ₂, β₂) for every task and behaviour.
    Shared(Tensor),
}

impl Norms {
    /// Per task, its `[4 · dim]` norm parameters for `behaviour` (γ as an
    /// offset from 1), or one row for all tasks (`[1, 4 · dim]`) when shared.
    fn of(&self, behaviour: usize) -> Result<Tensor> {
        match self {
            Norms::Shared(p) => Ok(p.f_unsqueeze(0)?),
            Norms::Hyper {
                tasks,
                behaviours,
                hidden,
                out,
            } => {
                let tasks = Tensor::f_stack(tasks, 0)?;
                let b = behaviours
                    .f_get(behaviour as i64)?
                    .f_unsqueeze(0)?
                    .f_expand([tasks.size()[0], -1], false)?;
                let h =
                    Activation::Relu.apply(&hidden.forward(&Tensor::f_cat(&[tasks, b], 1)?)?)?;
                Ok(out.forward(&h)?)
            }
        }
    }
}

/// The encoder, the norm parameters and the pooling.
pub struct Interest {
    pub norms: Norms,
    pub positions: Tensor,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    query: Linear,
    key: Linear,
    heads: i64,
    dim: i64,
}

/// Layer norm of `x` `[K, N, L, d]` without its own affine, then `γ`, `β`
/// `[K, d]` (γ as an offset from 1) per leading index. An `x` of `[N, L, d]`,
/// the same for every k, is normalised once and broadcast to `[K, N, L, d]`.
fn conditional_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let d = x.size()[x.dim() - 1];
    let k = gamma.size()[0];
    let normed = x.f_layer_norm([d], None::<&Tensor>, None::<&Tensor>, 1e-5, false)?;
    let shape = [k, 1, 1, d];
    Ok(normed
        .f_mul(&gamma.f_add_scalar(1.0)?.f_view(shape)?)?
        .f_add(&beta.f_view(shape)?)?)
}

impl Interest {
    /// An encoder `dim` wide with `heads` heads over sequences of at most
    /// `length` items, with norm parameters from `norms`.
    pub fn new(
        dim: usize,
        heads: usize,
        length: usize,
        norms: Norms,
        device: Device,
    ) -> Result<Interest> {
        let mut positions = Tensor::f_empty([length as i64, dim as i64], (Kind::Float, device))?;
        let _ = positions.f_normal_(0.0, 0.02)?;
        Ok(Interest {
            norms,
            positions: positions.set_requires_grad(true),
            qkv: Linear::new(dim, 3 * dim, device)?,
            proj: Linear::new(dim, dim, device)?,
            fc1: Linear::new(dim, 4 * dim, device)?,
            fc2: Linear::new(4 * dim, dim, device)?,
            query: Linear::new(dim, dim, device)?,
            key: Linear::new(dim, dim, device)?,
            heads: heads as i64,
            dim: dim as i64,
        })
    }

    /// `u_{k,b}` `[K, N, d]` (or `[1, N, d]` with shared norms) of behaviour
    /// `behaviour`: its item embeddings `items` `[N, L, d]`, valid where
    /// `valid` `[N, L]` is true, encoded with each task's norms and pooled by
    /// attention to the candidate `candidate` `[N, d]`. A row without valid
    /// items pools to zeros.
    pub fn forward(
        &self,
        behaviour: usize,
        items: &Tensor,
        valid: &Tensor,
        candidate: &Tensor,
    ) -> Result<Tensor> {
        let (n, l, d) = items.size3()?;
        let params = self.norms.of(behaviour)?; // [K, 4d]
        let k = params.size()[0];
        let part = |i: i64| params.f_narrow(1, i * d, d);
        let (g1, b1, g2, b2) = (part(0)?, part(1)?, part(2)?, part(3)?);
        // [N, L, d]: the same for every task until the first residual add
        // broadcasts it to [K, N, L, d] (one layer norm instead of K).
        let x = items.f_add(&self.positions.f_narrow(0, 0, l)?)?;
        // Empty rows attend to everything (their output is discarded) so
        // that no softmax runs over nothing.
        let any = valid.f_any_dim(1, true)?; // [N, 1]
        let keys = valid.f_logical_or(&any.f_logical_not()?)?;
        let h = self.heads;
        let qkv = self
            .qkv
            .forward(&conditional_norm(&x, &g1, &b1)?)?
            .f_reshape([k * n, l, 3, h, d / h])?
            .f_permute([2, 0, 3, 1, 4])?;
        let mask = keys
            .f_unsqueeze(0)?
            .f_expand([k, n, l], false)?
            .f_reshape([k * n, 1, 1, l])?;
        let attended = Tensor::f_scaled_dot_product_attention(
            &qkv.f_get(0)?,
            &qkv.f_get(1)?,
            &qkv.f_get(2)?,
            Some(mask),
            0.0,
            false,
            None,
            false,
        )?
        .f_transpose(1, 2)?
        .f_reshape([k, n, l, d])?;
        let x = x.f_add(&self.proj.forward(&attended)?)?;
        let hidden =
            Activation::Gelu.apply(&self.fc1.forward(&conditional_norm(&x, &g2, &b2)?)?)?;
        let x = x.f_add(&self.fc2.forward(&hidden)?)?; // [K, N, L, d]
                                                       // Attention pooling to the candidate item.
        let q = self.query.forward(candidate)?.f_view([1, n, 1, d])?;
        let scores = self
            .key
            .forward(&x)?
            .f_mul(&q)?
            .f_sum_dim_intlist(-1, false, None::<Kind>)?
            .f_div_scalar((self.dim as f64).sqrt())?
            .f_masked_fill(&keys.f_logical_not()?.f_unsqueeze(0)?, f64::NEG_INFINITY)?; // [K, N, L]
        let weights = scores.f_softmax(-1, None::<Kind>)?.f_unsqueeze(-1)?;
        let pooled = x
            .f_mul(&weights)?
            .f_sum_dim_intlist(2, false, None::<Kind>)?;
        Ok(pooled.f_mul(&any.f_to_kind(pooled.kind())?.f_unsqueeze(0)?)?)
    }

    /// Trainable tensors by component: (`encoder`, `hypernetwork` or
    /// `norms`, `pooling`), each with its group.
    pub fn parameters(&self, out: &mut Vec<(&'static str, Parameter)>) {
        let shared = |name: String, tensor: Tensor| Parameter {
            name,
            tensor,
            group: Group::Shared,
        };
        out.push((
            "encoder",
            shared("encoder.positions".into(), self.positions.shallow_clone()),
        ));
        for (prefix, layer) in [
            ("encoder.qkv", &self.qkv),
            ("encoder.proj", &self.proj),
            ("encoder.fc1", &self.fc1),
            ("encoder.fc2", &self.fc2),
        ] {
            out.extend(
                layer
                    .parameters(prefix)
                    .into_iter()
                    .map(|(n, t)| ("encoder", shared(n, t))),
            );
        }
        for (prefix, layer) in [("pooling.query", &self.query), ("pooling.key", &self.key)] {
            out.extend(
                layer
                    .parameters(prefix)
                    .into_iter()
                    .map(|(n, t)| ("pooling", shared(n, t))),
            );
        }
        match &self.norms {
            Norms::Shared(p) => out.push(("norms", shared("norms".into(), p.shallow_clone()))),
            Norms::Hyper {
                tasks,
                behaviours,
                hidden,
                out: last,
            } => {
                for (t, e) in tasks.iter().enumerate() {
                    out.push((
                        "hypernetwork",
                        Parameter {
                            name: format!("hypernetwork.task{t}"),
                            tensor: e.shallow_clone(),
                            group: Group::Task(t),
                        },
                    ));
                }
                out.push((
                    "hypernetwork",
                    shared("hypernetwork.behaviours".into(), behaviours.shallow_clone()),
                ));
                for (prefix, layer) in [("hypernetwork.hidden", hidden), ("hypernetwork.out", last)]
                {
                    out.extend(
                        layer
                            .parameters(prefix)
                            .into_iter()
                            .map(|(n, t)| ("hypernetwork", shared(n, t))),
                    );
                }
            }
        }
    }

    /// The parameters one separate encoder (with its own norms) would have:
    /// what per-(task, behaviour) encoders would cost each.
    pub fn encoder_size(dim: usize) -> u128 {
        let d = dim as u128;
        Linear::size(dim, 3 * dim)
            + Linear::size(dim, dim)
            + Linear::size(dim, 4 * dim)
            + Linear::size(4 * dim, dim)
            + 4 * d
    }
}
