//! `taskweave call weighting`: one method call on tensors from files, to
//! cross-check a method against another framework on the same numbers: a
//! gradient weighting's own update, or a loss weighting's weights applied to
//! the gradients.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use taskweave::registry::KindTable;
use taskweave::spec::{validate, Node, NodeValue, Origin, Source};
use taskweave::train::checkpoint::{self, Checkpoint};
use taskweave::{Error, Result, Runtime};
use taskweave_plugin_api::{aggregate, MethodContext, Role};
use tch::{Device, Kind, Tensor};

use super::{dirs_or_default, Env};
use crate::args::WeightingArgs;
use crate::output::Failure;

pub fn weighting(env: &Env, args: &WeightingArgs, out: &mut dyn Write) -> Result<(), Failure> {
    run(&env.runtime(&dirs_or_default(args.plugins.clone())), args)?;
    writeln!(out, "wrote {}", args.out.display())?;
    Ok(())
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
fn run(runtime: &Runtime, call: &WeightingArgs) -> Result<()> {
    let out_dir = call
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !out_dir.is_dir() {
        return Err(Error::Input(format!(
            "cannot write {}: the directory {} does not exist",
            &call.out.display(),
            out_dir.display()
        )));
    }
    let grads = read_tensor(&call.grads, "grads")?;
    if grads.dim() != 2
        || !matches!(
            grads.kind(),
            Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
        )
    {
        return Err(Error::Input(format!(
            "`grads` must be a floating-point matrix [T, P], got a {} tensor of shape {:?}",
            taskweave_plugin_api::kind_name(grads.kind()),
            grads.size()
        )));
    }
    let tasks = grads.size()[0];
    if tasks == 0 {
        return Err(Error::Input(format!(
            "`grads` in {} has no rows: a weighting needs at least one task",
            &call.grads.display()
        )));
    }
    let losses = match call.losses.as_deref() {
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
        .apply_sets(&mut node, &call.sets)
        .map_err(|d| source.error(vec![d]))?;
    let kind = Node {
        value: NodeValue::String(call.name.clone()),
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
    .map_err(|diagnostics| source.error(diagnostics))?;

    let ctx = MethodContext {
        tasks: (0..tasks)
            .map(|t| format!("task{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        seed: call.seed,
        weighting: table.to_string().into(),
        ..Default::default()
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
        &call.out,
        &Checkpoint {
            tensors,
            meta: json!({"weighting": table, "step": call.step}),
        },
    )
}
