//! `decode` and `eval-lm`: decoding pipelines (see `taskweave::lm`).

use std::io::Write;
use std::path::{Path, PathBuf};

use taskweave::lm::eval::{alpha_of_bin, CorpusScore, ALPHA_BINS};
use taskweave::lm::{decode, eval, DecodePipeline};
use taskweave::Error;
use taskweave_report::{render_png, Panel, Series};

use super::{check_out, check_png, write_json, Env};
use crate::args::{DecodeArgs, PipelineArgs};
use crate::output::{Failure, Table};

fn pipeline(env: &Env, args: &PipelineArgs) -> Result<DecodePipeline, Failure> {
    Ok(DecodePipeline::from_file(
        &env.runtime(&args.plugins),
        &args.pipeline,
        &args.sets,
    )?)
}

pub fn decode(env: &Env, args: &DecodeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let pipeline = pipeline(env, &args.pipeline)?;
    let generated = decode::generate(&pipeline, args.prompt.as_bytes(), out)?;
    writeln!(out)?;
    if generated.context_full {
        let bytes = match generated.bytes.len() {
            1 => "1 byte".to_string(),
            n => format!("{n} bytes"),
        };
        tracing::warn!("stopped after {bytes}: the prompt and the text filled the models' context");
    }
    if args.steering {
        eprintln!(
            "{}",
            serde_json::to_string(&generated).map_err(std::io::Error::from)?
        );
    }
    Ok(())
}

pub fn eval(
    env: &Env,
    args: &PipelineArgs,
    json: bool,
    plot: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let pipeline = pipeline(env, args)?;
    if let Some(png) = plot {
        let reads = pipeline.reads();
        let reads: Vec<&Path> = std::iter::once(args.pipeline.as_path())
            .chain(reads.iter().map(PathBuf::as_path))
            .collect();
        check_out(png, &reads)?;
        check_png("--plot", png)?;
    }
    let scores = eval::evaluate(&pipeline)?;
    if let Some(png) = plot {
        std::fs::write(png, plot_alphas(&scores)).map_err(|e| Error::io(png, e))?;
    }
    if json {
        return write_json(out, &scores);
    }
    let mut table = Table::new(&[
        "corpus",
        "bytes",
        "bits/byte",
        "perplexity",
        "accuracy",
        "mean α",
        "steering",
    ]);
    for s in &scores {
        let steering: Vec<String> = s
            .experts
            .iter()
            .zip(&s.expert_share)
            .map(|(e, share)| format!("{e} {:.0}%", share * 100.0))
            .collect();
        table.row(vec![
            s.corpus.clone(),
            s.bytes.to_string(),
            format!("{:.4}", s.bits),
            format!("{:.4}", s.perplexity),
            format!("{:.4}", s.accuracy),
            format!("{:.3}", s.mean_alpha),
            steering.join(", "),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// One panel per corpus: per expert, the share of the corpus's bytes it
/// steered at each coefficient α.
fn plot_alphas(scores: &[CorpusScore]) -> Vec<u8> {
    let panels: Vec<Panel> = scores
        .iter()
        .map(|s| Panel {
            title: format!("{}: α per byte", s.corpus),
            x_label: "α".into(),
            y_label: "share of bytes".into(),
            series: s
                .experts
                .iter()
                .zip(&s.alpha_shares)
                .map(|(e, shares)| Series {
                    label: e.clone(),
                    points: (0..ALPHA_BINS as usize)
                        .map(|k| (alpha_of_bin(k), shares[k]))
                        .collect(),
                })
                .collect(),
            x_range: Some((0.0, 2.0)),
            ..Default::default()
        })
        .collect();
    render_png(&panels, panels.len().min(2))
}
