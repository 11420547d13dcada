//! One causal language model a decoding pipeline names: a run of `taskweave
//! lm train` at its selected checkpoint, giving next-byte logits.

use std::path::Path;

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
        Ok(LanguageModel {
            name: name.to_string(),
            trainer,
            context,
            vocab,
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
        let out = self
            .trainer
            .outputs(&inputs)?
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
