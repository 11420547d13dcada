//! DTRN (Liu et al., "Deep Task-specific Bottom Representation Network for
//! Multi-Task Recommendation", CIKM 2023) as an
//! `Architecture` that owns the whole trunk: it reads the batch's categorical
//! `fields` and behaviour sequences itself (the host runs no backbone).
//!
//! 1. Interest module ([`interest`]): each behaviour sequence `seq.<b>`
//!    (item ids of the candidate column's vocabulary, valid where
//!    `seq.<b>.mask` is true) is encoded by one shared transformer block
//!    whose layer norms take (γ, β) from a hypernetwork of the task and
//!    behaviour embeddings, once per task, and pooled by attention to the
//!    candidate item: `u_{k,b}`.
//! 2. Refinement ([`refine`]), one per task: the fields `[e_1..e_F,
//!    u_{k,1}..u_{k,B}]` squeezed by their means, an MLP with reduction
//!    ratio r, gates `2·sigmoid`, each field scaled by its gate; `h_k` is
//!    their concatenation, which task k's head (its tower) reads.
//!
//! Ablations: `hypernetwork = false` (one (γ, β) for every task and
//! behaviour: the sequences' encodings are shared), `refinement = false`
//! (`h_k` the plain concatenation). The parameter count of every component,
//! and what separate per-(task, behaviour) encoders would cost instead, are
//! logged at start and reported with every evaluation (`parameters.*` under
//! `architecture` in metrics.jsonl).
//!
//! With `mixture = { experts, expert_hidden }`, `h_k` is instead task k's
//! input of an MMoE ([`mixture`]: shared experts, one gate per task), whose
//! output feeds the head.

mod interest;
mod mixture;
mod refine;

use interest::{Interest, Norms};
use mixture::Mixture;
use refine::Refine;
use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::nn::{Embedding, Linear};
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Architecture, ArchitectureInput, BackboneUse, Constructor, Error, Group, Host,
    InputKind, LogLevel, Method, MethodContext, Parameter, Result,
};

/// `dtrn`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct Config {
    /// The int64 input of categorical fields, one column per field.
    fields: String,
    /// The column of `fields` holding the candidate item (0-based); the
    /// behaviour sequences hold ids of its vocabulary.
    candidate: u32,
    /// The behaviour types: each reads the input `seq.<name>` (int64
    /// `[L]`) and, when the data have it, `seq.<name>.mask` (bool `[L]`,
    /// false at padding).
    #[schemars(length(min = 1, max = 64))]
    behaviours: Vec<String>,
    /// Width of every field and item embedding and of the encoder.
    #[schemars(range(min = 1, max = 4096))]
    dim: u32,
    /// Attention heads of the encoder (must divide `dim`).
    #[schemars(range(min = 1, max = 64))]
    heads: u32,
    /// Width of the task and behaviour embeddings and of the hypernetwork's
    /// hidden layer.
    #[schemars(range(min = 1, max = 4096))]
    hyper_dim: u32,
    /// Conditional layer norms from the hypernetwork (false: the ablation
    /// with one shared layer norm).
    hypernetwork: bool,
    /// The per-task SENet-like refinement (false: the ablation without it).
    refinement: bool,
    /// The refinement MLP's reduction ratio r.
    #[schemars(range(min = 1, max = 1024))]
    reduction: u32,
    /// Feed each task's representation to an MMoE instead of the head
    /// directly (absent: directly).
    #[serde(skip_serializing_if = "Option::is_none")]
    mixture: Option<MixtureConfig>,
}

/// `mixture`: the MMoE over the task-specific representations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
struct MixtureConfig {
    /// Experts.
    #[schemars(range(min = 1, max = 256))]
    experts: u32,
    /// Widths of each expert MLP (the last is the output width).
    #[schemars(length(min = 1), inner(range(min = 1, max = 1_048_576)))]
    expert_hidden: Vec<u32>,
}

impl Default for MixtureConfig {
    fn default() -> MixtureConfig {
        MixtureConfig {
            experts: 4,
            expert_hidden: vec![32],
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            fields: "fields".into(),
            candidate: 1,
            behaviours: Vec::new(),
            dim: 16,
            heads: 2,
            hyper_dim: 16,
            hypernetwork: true,
            refinement: true,
            reduction: 2,
            mixture: None,
        }
    }
}

/// One behaviour type's inputs.
struct Behaviour {
    sequence: String,
    mask: Option<String>,
}

struct Dtrn {
    fields_input: String,
    /// One table per field column.
    fields: Vec<Embedding>,
    candidate: usize,
    behaviours: Vec<Behaviour>,
    interest: Interest,
    refine: Vec<Refine>,
    mixture: Option<Mixture>,
    dim: usize,
    /// Parameters per component, and what per-(task, behaviour) encoders would cost.
    sizes: Vec<(String, f64)>,
}

impl Dtrn {
    fn all_parameters(&self) -> Vec<(&'static str, Parameter)> {
        let mut out = Vec::new();
        for (f, table) in self.fields.iter().enumerate() {
            for (name, tensor) in table.parameters(&format!("fields.{f}")) {
                let group = Group::Shared;
                out.push((
                    "embeddings",
                    Parameter {
                        name,
                        tensor,
                        group,
                    },
                ));
            }
        }
        self.interest.parameters(&mut out);
        for (t, r) in self.refine.iter().enumerate() {
            r.parameters(t, &mut out);
        }
        if let Some(m) = &self.mixture {
            m.parameters(&mut out);
        }
        out
    }
}

impl Architecture for Dtrn {
    fn parameters(&self) -> Result<Vec<Parameter>> {
        Ok(self.all_parameters().into_iter().map(|(_, p)| p).collect())
    }

    // No dropout, no state across calls.
    fn replicable(&self) -> bool {
        true
    }

    fn output_dim(&self) -> usize {
        match &self.mixture {
            Some(m) => m.output_dim(),
            None => (self.fields.len() + self.behaviours.len()) * self.dim,
        }
    }

    fn backbone(&self) -> BackboneUse {
        BackboneUse::None
    }

    fn forward(&mut self, input: &ArchitectureInput<'_>) -> Result<Vec<Tensor>> {
        let ids = input.input(&self.fields_input)?;
        // The host checked every id against its input's vocabulary at load,
        // and `create` that the sequences' vocabularies fit the candidate's.
        let embedded = self
            .fields
            .iter()
            .enumerate()
            .map(|(f, table)| table.forward(&ids.f_select(1, f as i64)?))
            .collect::<Result<Vec<_>>>()?;
        let candidate = &embedded[self.candidate];
        let items = &self.fields[self.candidate];
        let mut pooled = Vec::with_capacity(self.behaviours.len()); // each [K or 1, N, d]
        for (b, behaviour) in self.behaviours.iter().enumerate() {
            let sequence = input.input(&behaviour.sequence)?;
            let valid = match &behaviour.mask {
                Some(mask) => input.input(mask)?.f_to_kind(Kind::Bool)?,
                None => {
                    Tensor::f_ones(sequence.size().as_slice(), (Kind::Bool, sequence.device()))?
                }
            };
            pooled.push(
                self.interest
                    .forward(b, &items.forward(sequence)?, &valid, candidate)?,
            );
        }
        let fields = Tensor::f_stack(&embedded, 1)?; // [N, F, d]
        (0..self.refine.len())
            .map(|k| {
                let mut all = vec![fields.shallow_clone()];
                for u in &pooled {
                    // Shared norms give one encoding for every task.
                    let row = if u.size()[0] == 1 { 0 } else { k as i64 };
                    all.push(u.f_get(row)?.f_unsqueeze(1)?);
                }
                let h = self.refine[k].forward(&Tensor::f_cat(&all, 1)?)?;
                match &self.mixture {
                    Some(m) => m.forward(k, &h),
                    None => Ok(h),
                }
            })
            .collect()
    }

    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        Ok(self.sizes.clone())
    }
}

fn create(config: &Value, ctx: &MethodContext, host: &Host) -> Result<Box<dyn Architecture>> {
    let config: Config = typed(config)?;
    let device: Device = ctx.device()?;
    // A sequence is int64 [L] too, and would pass for L fields whose
    // "candidate" is one of its positions.
    if let Some(behaviour) = config.fields.strip_prefix("seq.") {
        return Err(Error::input(format!(
            "fields: `{}` is a behaviour sequence (list `{behaviour}` in behaviours); fields names the categorical input, such as `fields`",
            config.fields
        )));
    }
    let spec = ctx.input(&config.fields).ok_or_else(|| {
        let have: Vec<String> = ctx.inputs().into_iter().map(|i| i.name).collect();
        Error::input(format!(
            "fields: the data have no input `{}` (they have: {})",
            config.fields,
            have.join(", ")
        ))
    })?;
    if spec.kind != InputKind::Index || spec.shape.len() != 1 {
        return Err(Error::input(format!(
            "fields: input `{}` must be int64 ids [F], one column per field",
            config.fields
        )));
    }
    let columns = spec.shape[0];
    let candidate = config.candidate as usize;
    if candidate >= columns {
        return Err(Error::input(format!(
            "candidate: column {candidate} does not exist; `{}` has {columns} columns",
            config.fields
        )));
    }
    if config.behaviours.is_empty() {
        return Err(Error::input(
            "behaviours: name at least one behaviour type (its sequence is the input `seq.<name>`)",
        ));
    }
    let vocab: Vec<usize> = (0..columns)
        .map(|c| spec.vocab_of(c).unwrap_or(0))
        .collect();
    let (dim, heads) = (config.dim as usize, config.heads as usize);
    if dim % heads != 0 {
        return Err(Error::input(format!(
            "heads: {heads} heads do not divide dim = {dim}"
        )));
    }
    let mut length = 0;
    let mut behaviours = Vec::new();
    for (b, name) in config.behaviours.iter().enumerate() {
        if config.behaviours[..b].contains(name) {
            return Err(Error::input(format!(
                "behaviours: `{name}` is listed twice"
            )));
        }
        let sequence = format!("seq.{name}");
        let seq = ctx.input(&sequence).ok_or_else(|| {
            Error::input(format!(
                "behaviours: `{name}` is named, but the data have no input `{sequence}`"
            ))
        })?;
        if seq.kind != InputKind::Index || seq.shape.len() != 1 || seq.shape[0] == 0 {
            return Err(Error::input(format!(
                "behaviours: input `{sequence}` must be int64 item ids [L] with L ≥ 1, it is {:?} {:?}",
                seq.kind, seq.shape
            )));
        }
        let items = seq.vocab_of(0).unwrap_or(0);
        if items == 0 || items > vocab[candidate] {
            return Err(Error::input(format!(
                "behaviours: input `{sequence}` holds ids of a vocabulary of {items}, but they must be items of the candidate column {candidate} of `{}`, whose vocabulary is {}",
                config.fields, vocab[candidate]
            )));
        }
        length = length.max(seq.shape[0]);
        let mask = format!("{sequence}.mask");
        behaviours.push(Behaviour {
            mask: ctx.input(&mask).map(|_| mask),
            sequence,
        });
    }
    let tasks = ctx.num_tasks();
    let hyper = config.hyper_dim as usize;
    let norms = if config.hypernetwork {
        let out = Linear::new(hyper, 4 * dim, device)?;
        // Start near plain layer norm: small (γ − 1, β).
        taskweave_plugin_api::tch::no_grad(|| -> Result<()> {
            let _ = out.weight.shallow_clone().f_mul_scalar_(0.1)?;
            let _ = out.bias.shallow_clone().f_zero_()?;
            Ok(())
        })?;
        let embedding =
            |rows: usize| -> Result<Tensor> { Ok(Embedding::new(rows, hyper, device)?.weight) };
        Norms::Hyper {
            tasks: (0..tasks)
                .map(|_| {
                    Ok(embedding(1)?
                        .f_squeeze_dim(0)?
                        .f_detach()?
                        .set_requires_grad(true))
                })
                .collect::<Result<_>>()?,
            behaviours: embedding(behaviours.len())?,
            hidden: Linear::new(2 * hyper, hyper, device)?,
            out,
        }
    } else {
        Norms::Shared(
            Tensor::f_zeros([4 * dim as i64], (Kind::Float, device))?.set_requires_grad(true),
        )
    };
    let slots = columns + behaviours.len();
    let mut dtrn = Dtrn {
        fields_input: config.fields.clone(),
        fields: vocab
            .iter()
            .map(|&v| Embedding::new(v, dim, device))
            .collect::<Result<_>>()?,
        candidate,
        interest: Interest::new(dim, heads, length, norms, device)?,
        refine: (0..tasks)
            .map(|_| Refine::new(slots, config.reduction as usize, config.refinement, device))
            .collect::<Result<_>>()?,
        mixture: config
            .mixture
            .as_ref()
            .map(|m| {
                let hidden: Vec<usize> = m.expert_hidden.iter().map(|&w| w as usize).collect();
                Mixture::new(tasks, slots * dim, m.experts as usize, &hidden, device)
            })
            .transpose()?,
        behaviours,
        dim,
        sizes: Vec::new(),
    };
    let mut sizes: Vec<(String, f64)> = Vec::new();
    for (component, p) in dtrn.all_parameters() {
        let n = p.tensor.numel() as f64;
        match sizes
            .iter_mut()
            .find(|(c, _)| c == &format!("parameters.{component}"))
        {
            Some((_, total)) => *total += n,
            None => sizes.push((format!("parameters.{component}"), n)),
        }
    }
    let per_pair = (tasks * dtrn.behaviours.len()) as f64 * Interest::encoder_size(dim) as f64;
    sizes.push(("parameters.separate_encoders".into(), per_pair));
    let line: Vec<String> = sizes.iter().map(|(c, n)| format!("{c} = {n}")).collect();
    host.log(LogLevel::Info, "dtrn", &line.join(", "));
    dtrn.sizes = sizes;
    Ok(Box::new(dtrn))
}

register_method!(Method::new(
    "dtrn",
    env!("CARGO_PKG_VERSION"),
    "DTRN: task-specific bottom representations from behaviour sequences by a hypernetwork's conditional layer norms, with per-task field refinement (Liu et al., CIKM 2023)",
    schema_for::<Config>,
    Constructor::Architecture(create),
));

#[cfg(test)]
mod tests;
