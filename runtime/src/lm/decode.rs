//! `taskweave decode`: text drawn one byte at a time from the fused
//! distribution, written as it is drawn.

use std::io::Write;
use std::time::Instant;

use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::FusionInput;
use tch::Kind;

use super::config::SamplingConfig;
use super::{active_expert, DecodePipeline};
use crate::error::{Error, Result};

/// What one call of [`generate`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generated {
    /// The bytes drawn.
    pub bytes: Vec<u8>,
    /// Per byte drawn: the active expert's name (`None` where the fusion
    /// left the large model alone) and its coefficient.
    pub steering: Vec<(Option<String>, f64)>,
    /// Whether generation stopped because the context was full (rather
    /// than at `max_new`).
    pub context_full: bool,
    /// Where the time went, in seconds.
    pub seconds: Timing,
}

/// Seconds spent decoding.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timing {
    /// The whole loop, prompt included.
    pub total: f64,
    /// The large model's forward passes (each ends reading a flag back,
    /// which waits for the device).
    pub large: f64,
    /// The fusion's calls.
    pub fusion: f64,
}

/// The index drawn from log-probabilities `log_probs` (`V` values) as
/// `sampling` says: the most probable at temperature 0, else a draw from the
/// tempered distribution restricted to the top-k and then the top-p bytes.
pub fn choose(log_probs: &[f64], sampling: &SamplingConfig, rng: &mut SplitMix) -> usize {
    let most = |(i, _): (usize, &f64), (j, _): (usize, &f64)| log_probs[i].total_cmp(&log_probs[j]);
    if sampling.temperature == 0.0 {
        return log_probs
            .iter()
            .enumerate()
            .max_by(|a, b| most(*a, *b))
            .map_or(0, |(i, _)| i);
    }
    let mut order: Vec<usize> = (0..log_probs.len())
        .filter(|&i| log_probs[i].is_finite())
        .collect();
    order.sort_by(|&i, &j| log_probs[j].total_cmp(&log_probs[i]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k as usize);
    }
    let top = order.first().map_or(0.0, |&i| log_probs[i]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((log_probs[i] - top) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // The smallest prefix of the sorted bytes holding top_p of the mass.
    let mut kept = 0;
    let mut mass = 0.0;
    while kept < weights.len() && (kept == 0 || mass < sampling.top_p * total) {
        mass += weights[kept];
        kept += 1;
    }
    let mut u = rng.uniform() * mass;
    for (k, w) in weights[..kept].iter().enumerate() {
        if u < *w {
            return order[k];
        }
        u -= w;
    }
    order.get(kept.saturating_sub(1)).copied().unwrap_or(0)
}

/// Continues `prompt` with up to `decode.max_new` bytes, each written to
/// `out` as soon as it is drawn. Each model reads the prompt once and then
/// one byte per step (with its key-value cache); a prompt that does not fit
/// the shortest context is refused.
pub fn generate(
    pipeline: &DecodePipeline,
    prompt: &[u8],
    out: &mut dyn Write,
) -> Result<Generated> {
    // Greedy decoding takes the most probable byte: a top-k or top-p setting
    // would be ignored (eval-lm, which never samples, reads the same file).
    let sampling = &pipeline.config().decode;
    if sampling.temperature == 0.0 {
        let given = [
            ("top_k", sampling.top_k != 0),
            ("top_p", sampling.top_p != 1.0),
        ];
        if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
            return Err(Error::Input(format!(
                "decode.{key} applies when sampling, and decode.temperature = 0 decodes greedily: \
                 set a temperature above 0, or leave decode.{key} out"
            )));
        }
    }
    let mut models = pipeline.models()?;
    let context = models.context();
    let mut tokens: Vec<i64> = std::iter::once(taskweave_datasets::BOS)
        .chain(prompt.iter().map(|&b| b as i64))
        .collect();
    if tokens.len() > context {
        return Err(Error::Input(format!(
            "--prompt: {} bytes and the start token do not fit the models' context of {context} tokens; give at most {} bytes",
            prompt.len(),
            context - 1
        )));
    }
    let names: Vec<String> = pipeline.config().models.experts.keys().cloned().collect();
    let mut fusion = pipeline.fusion(&names)?;
    let sampling = &pipeline.config().decode;
    let mut rng = SplitMix::at(sampling.seed, 0);
    let device = pipeline.device();
    let mut generated = Generated {
        bytes: Vec::new(),
        steering: Vec::new(),
        context_full: false,
        seconds: Timing::default(),
    };
    let start = Instant::now();
    let mut fresh = tokens.len();
    while generated.bytes.len() < sampling.max_new as usize {
        // The models read up to `context` tokens and give the next one's
        // logits; a byte after that would not fit.
        if tokens.len() > context {
            generated.context_full = true;
            break;
        }
        let at = format!("step {}", generated.bytes.len());
        // The prompt at the first step, then the byte drawn last.
        let next = &tokens[tokens.len() - fresh..];
        let mut last = |m: &mut super::LanguageModel| m.read(next, device, &at);
        let clock = Instant::now();
        let large = last(&mut models.large)?;
        generated.seconds.large += clock.elapsed().as_secs_f64();
        let small = last(&mut models.small)?;
        let experts = models
            .experts
            .iter_mut()
            .map(&mut last)
            .collect::<Result<Vec<_>>>()?;
        let clock = Instant::now();
        let fused = fusion
            .fuse(&FusionInput {
                large: &large,
                small: &small,
                experts: &experts,
            })
            .map_err(|e| Error::from(e).input_context("fusion"))?;
        // Reading the result back waits for the device, so it is counted too.
        let log_probs =
            Vec::<f64>::try_from(fused.log_probs.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
        generated.seconds.fusion += clock.elapsed().as_secs_f64();
        let byte = choose(&log_probs, sampling, &mut rng);
        let byte = u8::try_from(byte).map_err(|_| {
            Error::Run(format!(
                "the fusion chose token {byte}, which is not a byte"
            ))
        })?;
        let (expert, alpha) = active_expert(&fused.alpha)?;
        let alpha = alpha.f_double_value(&[0])?;
        let expert = (alpha != 0.0).then(|| names[expert.int64_value(&[0]) as usize].clone());
        generated.steering.push((expert, alpha));
        generated.bytes.push(byte);
        // A reader that went away (`| head`) has what it wanted: stop.
        match out.write_all(&[byte]).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            result => {
                result.map_err(|e| Error::Run(format!("cannot write the generated text: {e}")))?
            }
        }
        tokens.push(byte as i64);
        fresh = 1;
    }
    generated.seconds.total = start.elapsed().as_secs_f64();
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f64, top_k: u64, top_p: f64) -> SamplingConfig {
        SamplingConfig {
            temperature,
            top_k,
            top_p,
            ..SamplingConfig::default()
        }
    }

    #[test]
    fn greedy_takes_the_most_probable_and_top_k_and_top_p_cut_the_tail() {
        let log_probs: Vec<f64> = [0.5f64, 0.3, 0.15, 0.05, 0.0]
            .iter()
            .map(|p| p.ln())
            .collect();
        let mut rng = SplitMix::at(1, 0);
        assert_eq!(choose(&log_probs, &sampling(0.0, 0, 1.0), &mut rng), 0);
        let draws = |s: SamplingConfig, rng: &mut SplitMix| {
            let mut counts = [0usize; 5];
            for _ in 0..20_000 {
                counts[choose(&log_probs, &s, rng)] += 1;
            }
            counts
        };
        // Temperature 1 over everything: the probabilities themselves; the
        // zero-probability byte (−∞) is never drawn.
        let all = draws(sampling(1.0, 0, 1.0), &mut rng);
        assert_eq!(all[4], 0);
        for (count, p) in all.iter().zip([0.5, 0.3, 0.15, 0.05]) {
            assert!((*count as f64 / 20_000.0 - p).abs() < 0.015, "{all:?}");
        }
        // top_k = 2: only the first two, renormalised 5:3.
        let k = draws(sampling(1.0, 2, 1.0), &mut rng);
        assert_eq!(k[2] + k[3] + k[4], 0, "{k:?}");
        assert!((k[0] as f64 / 20_000.0 - 0.625).abs() < 0.015, "{k:?}");
        // top_p = 0.75: 0.5 + 0.3 reach it, so the first two only.
        let p = draws(sampling(1.0, 0, 0.75), &mut rng);
        assert_eq!(p[2] + p[3] + p[4], 0, "{p:?}");
        // Temperature 0.1 raises the probabilities to the 10th power:
        // 0.5¹⁰ / Σ pᵢ¹⁰ ≈ 0.994 for the most probable.
        let cold = draws(sampling(0.1, 0, 1.0), &mut rng);
        let tempered: f64 = [0.5f64, 0.3, 0.15, 0.05].iter().map(|p| p.powi(10)).sum();
        let share = 0.5f64.powi(10) / tempered;
        assert!(
            (cold[0] as f64 / 20_000.0 - share).abs() < 0.003,
            "{cold:?} vs {share}"
        );
    }
}
