//! `taskweave eval-lm`: the fused distribution's cross-entropy on every
//! held-out byte of each corpus, by teacher forcing (every model reads the
//! true preceding bytes of the window), so the perplexity is exact.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tch::{Kind, Tensor};

use super::config::ExpertChoice;
use super::{active_expert, DecodePipeline, Models};
use crate::data::IGNORE_TOKEN;
use crate::error::{Error, Result};

/// One corpus's score under the pipeline's fusion.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusScore {
    /// The corpus (a task of the held-out text).
    pub corpus: String,
    /// The held-out bytes scored.
    pub bytes: u64,
    /// Mean cross-entropy per byte, in nats.
    pub ce: f64,
    /// Mean cross-entropy per byte, in bits.
    pub bits: f64,
    /// `exp(ce)`.
    pub perplexity: f64,
    /// How often the most probable byte was the next one.
    pub accuracy: f64,
    /// The experts the fusion was given.
    pub experts: Vec<String>,
    /// Per expert: the share of bytes at which it was the active one with
    /// a non-zero coefficient.
    pub expert_share: Vec<f64>,
    /// The mean coefficient of the active expert over all bytes (0 where
    /// the fusion left the large model alone).
    pub mean_alpha: f64,
    /// Per expert, per coefficient on the grid 0.1, 0.2, …, 2.0: the share
    /// of bytes at which it was the active one with that coefficient
    /// (rounded to the grid; beyond it, the nearest end). With the bytes the
    /// fusion left alone, the shares add up to 1.
    pub alpha_shares: Vec<Vec<f64>>,
}

/// Refuses a held-out split that holds documents a run model trained on. A
/// corpus's test documents are drawn by its name, its files and the split
/// settings: a held-out corpus holding any document of a model's training
/// corpora must be one of them (the same name and patterns) with the same
/// `split`, `seed` and `max_bytes`.
fn check_held_out(pipeline: &DecodePipeline, models: &Models) -> Result<()> {
    let ours = &pipeline.config().data;
    // Each held-out corpus with its documents, globbed once for every model.
    let held_out: Vec<_> = corpora(ours, &pipeline.dir)
        .into_iter()
        .map(|corpus| {
            let mut one = ours.clone();
            one["corpora"] = serde_json::json!({ &corpus.0: ours["corpora"][&corpus.0] });
            let files = documents(&one, &pipeline.dir);
            (corpus, files)
        })
        .collect();
    let all = [&models.large, &models.small]
        .into_iter()
        .chain(&models.experts);
    for model in all {
        let Some((theirs, dir)) = model.trained_on() else {
            continue;
        };
        if theirs["kind"] != ours["kind"] {
            continue;
        }
        let trained = corpora(theirs, dir);
        let trained_files: HashSet<PathBuf> = documents(theirs, dir).into_iter().collect();
        for (corpus, files) in &held_out {
            if !files.iter().any(|file| trained_files.contains(file)) {
                continue;
            }
            if !trained.contains(corpus) {
                return Err(Error::Input(format!(
                    "data.corpora.{}: it holds documents model `{}` trained on, under another \
                     corpus name or other patterns; a corpus's test documents are drawn by its \
                     name and files, so these would include training documents: name the corpus \
                     and its patterns as the model's pipeline does",
                    corpus.0, model.name
                )));
            }
            if let Some(key) = ["split", "seed", "max_bytes"]
                .into_iter()
                .find(|k| theirs[k] != ours[k])
            {
                return Err(Error::Input(format!(
                    "data.{key} = {}, but model `{}` was trained on the same corpora with data.{key} = {}: \
                     the test split would hold documents it trained on; use its data.{key}",
                    ours[key], model.name, theirs[key]
                )));
            }
        }
    }
    Ok(())
}

/// The documents of a text `[data]` table, resolved (`..` and links), so
/// that pipelines in different folders compare.
fn documents(data: &Value, dir: &Path) -> Vec<PathBuf> {
    taskweave_datasets::documents(data, dir)
        .into_iter()
        .map(|file| file.canonicalize().unwrap_or(file))
        .collect()
}

/// Each corpus of a text `[data]` table as its name and its patterns made
/// absolute from `dir` (`..` resolved), so that pipelines in different
/// folders compare.
fn corpora(data: &Value, dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let absolute = |pattern: &str| {
        let mut path = PathBuf::new();
        for part in dir.join(pattern).components() {
            match part {
                Component::ParentDir => {
                    path.pop();
                }
                Component::CurDir => {}
                other => path.push(other),
            }
        }
        path
    };
    data["corpora"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, patterns)| {
            let patterns = patterns.as_array().into_iter().flatten();
            (
                name.clone(),
                patterns.filter_map(Value::as_str).map(absolute).collect(),
            )
        })
        .collect()
}

/// Steps of the coefficient grid of [`CorpusScore::alpha_shares`]: 0.1 to 2.0.
pub const ALPHA_BINS: i64 = 20;

/// The coefficient of bin `k` of [`CorpusScore::alpha_shares`].
pub fn alpha_of_bin(k: usize) -> f64 {
    (k + 1) as f64 * ALPHA_STEP
}

const ALPHA_STEP: f64 = 0.1;

/// Scores the test split of the pipeline's `[data]` with its fusion, one
/// corpus at a time.
pub fn evaluate(pipeline: &DecodePipeline) -> Result<Vec<CorpusScore>> {
    if pipeline.config().models.experts.is_empty() {
        return Err(Error::Input(
            "models.experts: name at least one expert (the fusion moves the large model by the \
             experts' change from the small one)"
                .into(),
        ));
    }
    let data = pipeline.load_data()?;
    let mut models = pipeline.models()?;
    check_held_out(pipeline, &models)?;
    let context = data.inputs[0].shape[0];
    if context > models.context() {
        let short = [&models.large, &models.small]
            .into_iter()
            .chain(&models.experts)
            .find(|m| m.context() < context)
            .map_or_else(String::new, |m| m.name.clone());
        return Err(Error::Input(format!(
            "data.context: windows of {context} tokens, but model `{short}` reads at most {}; give data.context at most that",
            models.context()
        )));
    }
    let names: Vec<String> = pipeline.config().models.experts.keys().cloned().collect();
    let device = pipeline.device();
    let batch = pipeline.config().eval.batch as i64;
    let split = &data.test;
    let tokens = &split.inputs[0].1;
    let mut scores = Vec::new();
    for (t, task) in data.tasks.iter().enumerate() {
        // The experts this corpus is scored with, as indices into `names`.
        let chosen: Vec<usize> = match pipeline.config().eval.experts {
            ExpertChoice::All => (0..names.len()).collect(),
            ExpertChoice::Own => vec![names.iter().position(|n| *n == task.name).ok_or_else(|| {
                Error::Input(format!(
                    "models.experts: corpus `{}` has no expert of its name (eval.experts = \"own\"); name one `{}` or set eval.experts = \"all\"",
                    task.name, task.name
                ))
            })?],
        };
        let experts: Vec<String> = chosen.iter().map(|&e| names[e].clone()).collect();
        let mut fusion = pipeline.fusion(&experts)?;
        let rows = match &split.masks[t] {
            Some(mask) => mask.f_nonzero()?.f_squeeze_dim(1)?,
            None => Tensor::f_arange(split.len() as i64, (Kind::Int64, tokens.device()))?,
        };
        let (mut nats, mut hits, mut count, mut alpha_sum) = (0.0, 0.0, 0.0, 0.0);
        let mut alpha_counts = vec![vec![0.0; ALPHA_BINS as usize]; experts.len()];
        let n = rows.size()[0];
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let at = format!("corpus `{}`, windows {start}..{}", task.name, start + len);
            let index = rows.f_narrow(0, start, len)?;
            let input = tokens.f_index_select(0, &index)?;
            let target = split.targets[t]
                .f_index_select(0, &index)?
                .f_to_device(device)?;
            // Only the labelled positions (padding predicts nothing).
            let valid = target.f_ne(IGNORE_TOKEN)?.f_flatten(0, -1)?;
            let flat = |m: &mut super::LanguageModel| -> Result<Tensor> {
                let logits = m.logits(&input, device, &at)?;
                let v = logits.size()[2];
                Ok(logits.f_reshape([-1, v])?.f_index(&[Some(&valid)])?)
            };
            let large = flat(&mut models.large)?;
            let small = flat(&mut models.small)?;
            let expert_logits = chosen
                .iter()
                .map(|&e| flat(&mut models.experts[e]))
                .collect::<Result<Vec<_>>>()?;
            let fused = fusion
                .fuse(&taskweave_plugin_api::FusionInput {
                    large: &large,
                    small: &small,
                    experts: &expert_logits,
                })
                .map_err(|e| Error::from(e).input_context("fusion"))?;
            let want = target.f_flatten(0, -1)?.f_index(&[Some(&valid)])?;
            let log_probs = fused.log_probs.f_to_kind(Kind::Double)?;
            let picked = log_probs.f_gather(1, &want.f_unsqueeze(1)?, false)?;
            nats -= picked.f_sum(Kind::Double)?.f_double_value(&[])?;
            hits += log_probs
                .f_argmax(1, false)?
                .f_eq_tensor(&want)?
                .f_sum(Kind::Double)?
                .f_double_value(&[])?;
            count += want.size()[0] as f64;
            let (active, alpha) = active_expert(&fused.alpha)?;
            alpha_sum += alpha.f_sum(Kind::Double)?.f_double_value(&[])?;
            let steering = alpha.f_ne(0.0)?;
            let bins = alpha
                .f_div_scalar(ALPHA_STEP)?
                .f_round()?
                .f_clamp(1.0, ALPHA_BINS as f64)?
                .f_sub_scalar(1.0)?
                .f_to_kind(Kind::Int64)?;
            for (e, counts) in alpha_counts.iter_mut().enumerate() {
                let mine = active.f_eq(e as i64)?.f_logical_and(&steering)?;
                let hist = bins
                    .f_masked_select(&mine)?
                    .f_bincount(None::<Tensor>, ALPHA_BINS)?;
                for (c, h) in counts.iter_mut().zip(Vec::<f64>::try_from(
                    hist.f_to_kind(Kind::Double)?
                        .f_to_device(tch::Device::Cpu)?,
                )?) {
                    *c += h;
                }
            }
            start += len;
        }
        let ce = nats / count.max(1.0);
        let alpha_shares: Vec<Vec<f64>> = alpha_counts
            .iter()
            .map(|c| c.iter().map(|v| v / count.max(1.0)).collect())
            .collect();
        scores.push(CorpusScore {
            corpus: task.name.clone(),
            bytes: count as u64,
            ce,
            bits: ce / std::f64::consts::LN_2,
            perplexity: ce.exp(),
            accuracy: hits / count.max(1.0),
            experts,
            expert_share: alpha_shares.iter().map(|s| s.iter().sum()).collect(),
            mean_alpha: alpha_sum / count.max(1.0),
            alpha_shares,
        });
    }
    Ok(scores)
}
