//! One causal language model a decoding pipeline names: a run of `taskweave
//! lm train` at its selected checkpoint, giving next-byte logits for whole
//! windows (scoring) or one step at a time with a key-value cache (decoding).

use std::path::Path;

use taskweave_plugin_api::nn::KvCache;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::run::Run;
use crate::runtime::Runtime;
use crate::train::Trainer;

/// A trained byte-level language model.
pub struct LanguageModel {
    /// The name the pipeline gives it (`large`, `small`, an expert's).
    pub name: String,
    trainer: Trainer,
    context: usize,
    vocab: usize,
    /// Whether decoding reads only the new tokens (a causal backbone under
    /// hard sharing) rather than the whole window again.
    cached: bool,
    /// The tokens decoding has read, and their keys and values.
    read: Vec<i64>,
    cache: Vec<KvCache>,
}

impl LanguageModel {
    /// The model of the run in `dir` at its selected checkpoint (the
    /// best-validation one, else the newest), refusing a run that is not
    /// one language model. Its training pipeline's data are loaded to build
    /// it.
    pub fn open(runtime: &Runtime, name: &str, dir: &Path) -> Result<LanguageModel> {
        let named = |e: Error| match e {
            Error::Input(m) => Error::Input(format!("models.{name} ({}): {m}", dir.display())),
            other => other,
        };
        let run = Run::open(runtime, dir).map_err(named)?;
        run.pipeline().check_language_model().map_err(named)?;
        let trainer = run.trained(run.pipeline().load_data()?).map_err(named)?;
        let tokens = trainer
            .data()
            .input(taskweave_datasets::TOKENS)
            .ok_or_else(|| {
                Error::Input(format!("models.{name}: its data have no `tokens` input"))
            })?;
        let context = tokens.shape.first().copied().unwrap_or(0);
        let vocab = trainer.data().tasks[0].output_dim();
        let cached = run.pipeline().config().model.architecture["kind"] == "hard-sharing";
        Ok(LanguageModel {
            name: name.to_string(),
            trainer,
            context,
            vocab,
            cached,
            read: Vec::new(),
            cache: Vec::new(),
        })
    }

    /// The longest window of tokens the model reads (its training context).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The size of the vocabulary its logits cover.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Next-token logits `[B, L, V]` (float32, on `device`) for the ids
    /// `tokens` `[B, L]`, L at most [`LanguageModel::context`]; `at` names
    /// the step or batch in the error when a logit is not finite.
    pub fn logits(&mut self, tokens: &Tensor, device: Device, at: &str) -> Result<Tensor> {
        let inputs = [(
            taskweave_datasets::TOKENS.to_string(),
            tokens.shallow_clone(),
        )];
        let out = self.trainer.outputs(&inputs)?;
        self.checked(out, device, at)
    }

    /// The next-token logits `[1, V]` after the tokens decoding has read so
    /// far followed by `next` (which it has read then). A model with a
    /// key-value cache reads `next` alone; others read the whole window.
    pub fn read(&mut self, next: &[i64], device: Device, at: &str) -> Result<Tensor> {
        if self.read.len() + next.len() > self.context {
            return Err(Error::Input(format!(
                "model `{}`: {} tokens exceed its context of {}",
                self.name,
                self.read.len() + next.len(),
                self.context
            )));
        }
        self.read.extend_from_slice(next);
        let out = if self.cached {
            let inputs = [(
                taskweave_datasets::TOKENS.to_string(),
                Tensor::f_from_slice(next)?.f_unsqueeze(0)?,
            )];
            let out = self
                .trainer
                .outputs_cached(&inputs, &mut self.cache)?
                .ok_or_else(|| {
                    Error::Run(format!("model `{}` cannot decode with a cache", self.name))
                })?;
            self.checked(out, device, at)?
        } else {
            let window = Tensor::f_from_slice(&self.read)?.f_unsqueeze(0)?;
            self.logits(&window, device, at)?
        };
        Ok(out.f_select(1, -1)?)
    }

    /// Forgets what decoding has read: the next [`LanguageModel::read`]
    /// starts a new sequence.
    pub fn restart(&mut self) {
        self.read.clear();
        self.cache.clear();
    }

    /// The first task's output of `outputs` as float32 on `device`, refused
    /// when a value is NaN or +∞.
    fn checked(&self, outputs: Vec<Tensor>, device: Device, at: &str) -> Result<Tensor> {
        let out = outputs
            .into_iter()
            .next()
            .ok_or_else(|| Error::Run(format!("model `{}` gave no output", self.name)))?
            .f_to_kind(Kind::Float)?
            .f_to_device(device)?;
        // −∞ is a masked entry; NaN and +∞ are a broken model.
        let bad = out.f_isnan()?.f_logical_or(&out.f_isposinf()?)?;
        if bool::try_from(bad.f_any()?)? {
            return Err(Error::Run(format!(
                "model `{}` gave NaN or +inf logits at {at}",
                self.name
            )));
        }
        Ok(out)
    }
}
