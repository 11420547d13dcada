//! `taskweave toy cagrad`: weightings on the CAGrad paper's two-objective toy,
//! their trajectories drawn on the loss landscape.

use std::io::Write;

use taskweave::Error;

use super::{dirs_or_default, Env};
use crate::args::CagradArgs;
use crate::output::Failure;

fn toy_table(text: &str) -> Result<serde_json::Value, Error> {
    if !text.trim_start().starts_with('{') {
        return Ok(serde_json::json!({ "kind": text.trim() }));
    }
    let source = format!("w = {text}");
    let doc: toml_edit::DocumentMut = source
        .parse()
        .map_err(|e| Error::Input(format!("--weighting {text}: not a TOML table: {e}")))?;
    let mut table = serde_json::Map::new();
    for (k, v) in doc["w"]
        .as_inline_table()
        .into_iter()
        .flat_map(|t| t.iter())
    {
        let value = match v {
            toml_edit::Value::String(s) => serde_json::json!(s.value()),
            toml_edit::Value::Integer(i) => serde_json::json!(i.value()),
            // JSON has no NaN or infinity: they would arrive as null.
            toml_edit::Value::Float(f) if !f.value().is_finite() => {
                return Err(Error::Input(format!(
                    "--weighting {text}: `{k}` = {} is not a finite number",
                    f.value()
                )))
            }
            toml_edit::Value::Float(f) => serde_json::json!(f.value()),
            toml_edit::Value::Boolean(b) => serde_json::json!(b.value()),
            other => {
                return Err(Error::Input(format!(
                    "--weighting {text}: unsupported value {other}"
                )))
            }
        };
        table.insert(k.to_string(), value);
    }
    Ok(serde_json::Value::Object(table))
}

pub fn cagrad(env: &Env, args: &CagradArgs, out: &mut dyn Write) -> Result<(), Failure> {
    super::check_out(&args.out, &[])?;
    super::check_png("--out", &args.out)?;
    let runtime = env.runtime(&dirs_or_default(args.plugins.clone()));
    runtime.registry().warn_problems();
    let tables: Vec<serde_json::Value> = if args.weightings.is_empty() {
        let mut names = vec!["ew", "mgda", "pcgrad", "imtl-g", "nash-mtl", "uw", "dwa"];
        if runtime
            .registry()
            .entries()
            .any(|e| e.manifest.name.as_str() == "rlw")
        {
            names.push("rlw");
        }
        let mut tables: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"kind": n}))
            .collect();
        tables.insert(
            3,
            serde_json::json!({"kind": "cagrad", "c": 0.5, "rescale": 2}),
        );
        tables
    } else {
        args.weightings
            .iter()
            .map(|w| toy_table(w))
            .collect::<Result<_, _>>()?
    };
    let options = crate::toy::ToyOptions {
        steps: args.steps,
        lr: args.lr,
        f1_scale: args.f1_scale,
        ..Default::default()
    };
    let trajectories = crate::toy::cagrad_toy(&runtime, &tables, &options)?;
    std::fs::write(&args.out, crate::toy::draw(&trajectories))
        .map_err(|e| Error::io(&args.out, e))?;
    for t in &trajectories {
        writeln!(
            out,
            "{:32} from ({:5.1}, {:5.1}) to ({:6.2}, {:6.2})  f1 {:8.4}  f2 {:8.4}",
            t.weighting,
            t.start.0,
            t.start.1,
            t.points.last().map_or(f64::NAN, |p| p.0),
            t.points.last().map_or(f64::NAN, |p| p.1),
            t.final_losses.0,
            t.final_losses.1
        )?;
    }
    writeln!(out, "wrote {}", args.out.display())?;
    Ok(())
}
