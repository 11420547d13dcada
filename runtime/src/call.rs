//! One method call on tensors from files (`taskweave call weighting`), so
//! results can be cross-checked against other frameworks.

use std::path::Path;

use serde_json::json;
use taskweave_plugin_api::{aggregate, MethodContext, Role};
use tch::{Device, Kind, Tensor};

use crate::config::{validate, KindTable, Node, NodeValue, Origin, Source};
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::train::checkpoint::{self, Checkpoint};

/// One weighting call: which weighting, on which tensors, written where.
pub struct WeightingCall<'a> {
    /// The weighting's name.
    pub name: &'a str,
    /// Config overrides, `key=value` (TOML values).
    pub sets: &'a [String],
    /// Safetensors file with `grads` `[T, P]`.
    pub grads: &'a Path,
    /// Safetensors file with `losses` `[T]` (default: every loss 1).
    pub losses: Option<&'a Path>,
    /// Seed of the method's randomness (PCGrad's order, RLW's draws).
    pub seed: u64,
    /// The step number the weighting sees.
    pub step: u64,
    /// Where `update` `[P]` and `weights` `[T]` are written (safetensors).
    pub out: &'a Path,
}

fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    let (tensors, _) = checkpoint::read_file(path)?;
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let listed = names.join(", ");
    tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            Error::Input(format!(
                "{} has no tensor `{name}` (it has: {listed})",
                path.display()
            ))
        })
}

/// Runs the weighting once on the given gradients (and losses) and writes its
/// update: a gradient weighting's own, or a loss weighting's weights applied to
/// the gradients.
pub fn weighting(runtime: &Runtime, call: &WeightingCall<'_>) -> Result<()> {
    let out_dir = call
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !out_dir.is_dir() {
        return Err(Error::Input(format!(
            "cannot write {}: the directory {} does not exist",
            call.out.display(),
            out_dir.display()
        )));
    }
    let grads = read_tensor(call.grads, "grads")?;
    if grads.dim() != 2
        || !matches!(
            grads.kind(),
            Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
        )
    {
        return Err(Error::Input(format!(
            "`grads` must be a floating-point matrix [T, P], got a {} tensor of shape {:?}",
            crate::error::kind_name(grads.kind()),
            grads.size()
        )));
    }
    let tasks = grads.size()[0];
    if tasks == 0 {
        return Err(Error::Input(format!(
            "`grads` in {} has no rows: a weighting needs at least one task",
            call.grads.display()
        )));
    }
    let losses = match call.losses {
        Some(path) => read_tensor(path, "losses")?,
        None => Tensor::f_ones([tasks], (grads.kind(), Device::Cpu))?,
    };
    if losses.size() != [tasks] {
        return Err(Error::Input(format!(
            "`losses` must have shape [{tasks}], got {:?}",
            losses.size()
        )));
    }

    // The method table, validated like a pipeline's, with `--set` locations in errors.
    let mut source = Source::string(String::new(), ".".into());
    let mut node = Node::table(Origin::Generated);
    source
        .apply_sets(&mut node, call.sets)
        .map_err(|d| Error::config(vec![d], &source))?;
    let kind = Node {
        value: NodeValue::String(call.name.to_string()),
        origin: Origin::Generated,
    };
    let _ = node.set_path(&["kind"], kind);
    let table = validate(
        &node,
        &json!({"x-taskweave-role": "Weighting"}),
        "weighting",
        &KindTable {
            registry: runtime.registry(),
        },
    )
    .map_err(|diagnostics| Error::config(diagnostics, &source))?;

    let ctx = MethodContext {
        tasks: (0..tasks)
            .map(|t| format!("task{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        seed: call.seed,
        feature_dim: 0,
        weighting: table.to_string().into(),
    };
    let mut method = runtime
        .create_method(Role::Weighting, &table, &ctx)?
        .into_weighting()?;
    let out = aggregate(
        method.as_mut(),
        call.step,
        &losses.f_to_kind(grads.kind())?,
        &grads,
    )?;
    let mut tensors = vec![("update".to_string(), out.combined)];
    if let Some(weights) = out.weights {
        tensors.push(("weights".to_string(), weights));
    }
    checkpoint::write(
        call.out,
        &Checkpoint {
            tensors,
            meta: json!({"weighting": table, "step": call.step}),
        },
    )
}
