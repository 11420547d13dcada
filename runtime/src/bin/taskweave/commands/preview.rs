//! `taskweave preview`: the first examples of a pipeline's data drawn with
//! their labels, one row per example: every image input (float `[C, H, W]`
//! with 1 or 3 channels), then every per-pixel target (classes in a fixed
//! palette, unlabelled pixels white; regression maps in grey from their
//! smallest to their largest value, missing values magenta); the other
//! targets go into the first picture's title. To see what a data kind
//! generates before training on it. Given a run directory instead of a
//! pipeline, each target is followed by the run's prediction of it (classes:
//! the most likely one; maps: in grey over the target's range, so that
//! shades compare).

use std::io::Write;

use taskweave::data::{Split, Task, TaskType, IGNORE_PIXEL};
use taskweave::{Error, Pipeline, Result, Run};
use taskweave_report::{render_image_grid, Picture};
use tch::{Kind, Tensor};

use super::Env;
use crate::args::PreviewArgs;
use crate::output::Failure;

/// Class colours: background (class 0) black, then well-separated hues.
const PALETTE: [[f32; 3]; 12] = [
    [0.0, 0.0, 0.0],
    [0.90, 0.10, 0.10],
    [0.10, 0.60, 0.10],
    [0.15, 0.35, 0.90],
    [0.95, 0.75, 0.10],
    [0.60, 0.20, 0.80],
    [0.10, 0.80, 0.80],
    [0.95, 0.50, 0.10],
    [0.55, 0.35, 0.15],
    [0.95, 0.55, 0.75],
    [0.55, 0.55, 0.55],
    [0.60, 0.85, 0.30],
];

/// The most examples one preview draws: a row each, and an image taller
/// than this many rows is more than image viewers open.
const MAX_EXAMPLES: usize = 256;

pub fn run(env: &Env, args: &PreviewArgs, out: &mut dyn Write) -> Result<(), Failure> {
    if args.n > MAX_EXAMPLES {
        return Err(Error::Input(format!(
            "--n {}: a preview draws at most {MAX_EXAMPLES} examples (one row each)",
            args.n
        ))
        .into());
    }
    super::check_out(&args.out, &[&args.pipeline])?;
    super::check_png("--out", &args.out)?;
    let runtime = env.runtime(&args.plugins);
    let (split, tasks, predicted, kind) = if args.pipeline.is_dir() {
        if !args.sets.is_empty() {
            return Err(Error::Input(
                "--set changes a pipeline; a run directory keeps the pipeline it was trained with"
                    .into(),
            )
            .into());
        }
        let run = Run::open_to_read(&runtime, &args.pipeline)?;
        let (split, tasks, outputs) = run.predictions(&args.split, args.n)?;
        (split, tasks, Some(outputs), data_kind(run.pipeline()))
    } else {
        let pipeline = Pipeline::from_file(&runtime, &args.pipeline, &args.sets)?;
        let data = pipeline.load_data()?;
        let split = data.split(&args.split).map_err(Error::from)?;
        let n = args.n.min(split.len());
        let examples = split.slice(0, n).map_err(Error::from)?;
        (examples, data.tasks.clone(), None, data_kind(&pipeline))
    };
    let n = split.len();
    if n == 0 {
        return Err(Error::Input(format!("--n {}: nothing to draw", args.n)).into());
    }
    let mut pictures = Vec::new();
    let mut columns = 0;
    for row in 0..n {
        let pics = example(&split, &tasks, predicted.as_deref(), row)?;
        if pics.is_empty() {
            return Err(Error::Input(format!(
                "the `{kind}` data have no image input and no per-pixel task to draw"
            ))
            .into());
        }
        columns = columns.max(pics.len());
        pictures.extend(pics);
    }
    std::fs::write(&args.out, render_image_grid(&pictures, columns, 3))
        .map_err(|e| Error::io(&args.out, e))?;
    writeln!(
        out,
        "wrote {} ({n} {} examples)",
        args.out.display(),
        args.split
    )?;
    Ok(())
}

fn data_kind(pipeline: &Pipeline) -> String {
    pipeline.config().data["kind"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// The pictures of example `row`, with the model's outputs `predicted`
/// (per task, for the split's rows) when given.
fn example(
    split: &Split,
    tasks: &[Task],
    predicted: Option<&[Tensor]>,
    row: usize,
) -> Result<Vec<Picture>> {
    let row = row as i64;
    let mut pictures = Vec::new();
    let mut notes = Vec::new();
    for (t, (task, target)) in tasks.iter().zip(&split.targets).enumerate() {
        let truth = target.f_get(row)?;
        let output = predicted
            .map(|p| p[t].f_get(row).map(|o| o.f_to_kind(Kind::Float)))
            .transpose()?
            .transpose()?;
        let predicted_name = format!("{} predicted", task.name);
        match task.kind {
            TaskType::DenseMulticlass { .. } => {
                pictures.push(classes(&task.name, &truth)?);
                if let Some(o) = &output {
                    pictures.push(classes(&predicted_name, &o.f_argmax(0, false)?)?);
                }
            }
            TaskType::DenseRegression { .. } => {
                let (picture, range) = grey(&task.name, &truth.f_get(0)?, None)?;
                pictures.push(picture);
                if let Some(o) = &output {
                    pictures.push(grey(&predicted_name, &o.f_get(0)?, Some(range))?.0);
                }
            }
            _ => {
                let mut note = format!("{}={}", task.name, values(&truth)?);
                if let Some(o) = &output {
                    note += &format!(" (predicted {})", values(o)?);
                }
                notes.push(note);
            }
        }
    }
    for (name, input) in split.inputs.iter().rev() {
        let x = input.f_get(row)?;
        if x.kind() == Kind::Float && x.dim() == 3 && matches!(x.size()[0], 1 | 3) {
            pictures.insert(0, image(name, &x)?);
        }
    }
    if let (Some(first), false) = (pictures.first_mut(), notes.is_empty()) {
        first.title = format!("{} {}", first.title, notes.join(" "));
    }
    Ok(pictures)
}

/// A small tensor's values, comma-separated.
fn values(t: &Tensor) -> Result<String> {
    let values = Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
    let shown: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
    Ok(shown.join(","))
}

/// A float `[C, H, W]` image, values clamped to [0, 1].
fn image(name: &str, x: &Tensor) -> Result<Picture> {
    let (c, h, w) = x.size3()?;
    let values = Vec::<f32>::try_from(x.f_permute([1, 2, 0])?.f_contiguous()?.f_reshape([-1])?)?;
    Ok(Picture {
        title: name.to_string(),
        width: w as usize,
        height: h as usize,
        channels: c as usize,
        values,
    })
}

/// Class indices `[H, W]` in the palette; unlabelled pixels white.
fn classes(name: &str, t: &Tensor) -> Result<Picture> {
    let (h, w) = t.size2()?;
    let ids = Vec::<i64>::try_from(t.f_reshape([-1])?)?;
    let values = ids
        .iter()
        .flat_map(|&id| match id {
            IGNORE_PIXEL => [1.0; 3],
            id => PALETTE[id.rem_euclid(PALETTE.len() as i64) as usize],
        })
        .collect();
    Ok(Picture {
        title: name.to_string(),
        width: w as usize,
        height: h as usize,
        channels: 3,
        values,
    })
}

/// A map `[H, W]` in grey over `range`, else from its smallest to its
/// largest finite value; the picture and the range used.
fn grey(name: &str, t: &Tensor, range: Option<(f32, f32)>) -> Result<(Picture, (f32, f32))> {
    let (h, w) = t.size2()?;
    let v = Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_reshape([-1])?)?;
    let (lo, hi) = range.unwrap_or_else(|| {
        let finite = v.iter().copied().filter(|x| x.is_finite());
        finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
    });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let values = v
        .iter()
        .map(|&x| {
            if x.is_finite() {
                (x - lo) / span
            } else {
                f32::NAN
            }
        })
        .collect();
    let picture = Picture {
        title: format!("{name} ({lo:.2}..{hi:.2})"),
        width: w as usize,
        height: h as usize,
        channels: 1,
        values,
    };
    Ok((picture, (lo, hi)))
}
