//! One causal language model a decoding pipeline names: a run of `taskweave
//! lm train` at its selected checkpoint or a TorchScript module exported
//! from PyTorch, giving next-byte logits for whole windows (scoring) or one
//! step at a time (decoding; with a key-value cache for runs).

use std::path::{Path, PathBuf};

use taskweave_plugin_api::nn::KvCache;
use tch::{CModule, Device, Kind, Tensor};

use super::config::ModelRef;
use crate::error::{Error, Result};
use crate::run::Run;
use crate::runtime::Runtime;
use crate::train::Trainer;

/// What computes a model's logits.
enum Network {
    /// A run's model; `cached`: decoding reads only the new tokens (a causal
    /// backbone under hard sharing) rather than the whole window again.
    Run { trainer: Box<Trainer>, cached: bool },
    /// A TorchScript module on `device`.
    TorchScript { module: CModule, device: Device },
}

/// A trained byte-level language model.
pub struct LanguageModel {
    /// The name the pipeline gives it (`large`, `small`, an expert's).
    pub name: String,
    network: Network,
    context: usize,
    vocab: usize,
    /// The tokens decoding has read, and their keys and values.
    read: Vec<i64>,
    cache: Vec<KvCache>,
    /// A run's training `[data]` table and the folder its paths start at.
    trained_on: Option<(serde_json::Value, PathBuf)>,
}

impl LanguageModel {
    /// The model `model` names (paths relative to `base`), called `name`:
    /// a run's at its selected checkpoint (the best-validation one, else the
    /// newest; its training pipeline's data are loaded to build it), refused
    /// when the run is not one language model; or a TorchScript module,
    /// loaded on `device` and refused unless it maps ids `[B, L]` to logits
    /// `[B, L, V]`.
    pub fn open(
        runtime: &Runtime,
        name: &str,
        model: &ModelRef,
        base: &Path,
        device: Device,
    ) -> Result<LanguageModel> {
        let (network, context, vocab, trained_on) = match model {
            ModelRef::Run(run) => open_run(runtime, name, &base.join(&run.dir))?,
            ModelRef::Torchscript(ts) => {
                let path = base.join(&ts.path);
                let (network, vocab) = open_torchscript(name, &path, device)?;
                (network, ts.context as usize, vocab, None)
            }
        };
        Ok(LanguageModel {
            name: name.to_string(),
            network,
            context,
            vocab,
            read: Vec::new(),
            cache: Vec::new(),
            trained_on,
        })
    }

    /// For a run: the `[data]` table it was trained on and the folder its
    /// relative paths start at (`None` for TorchScript modules).
    pub fn trained_on(&self) -> Option<(&serde_json::Value, &Path)> {
        self.trained_on
            .as_ref()
            .map(|(data, dir)| (data, dir.as_path()))
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
        let out = match &mut self.network {
            Network::Run { trainer, .. } => {
                let inputs = [(
                    taskweave_datasets::TOKENS.to_string(),
                    tokens.shallow_clone(),
                )];
                trainer.outputs(&inputs)?
            }
            Network::TorchScript { module, device } => {
                let _no_grad = tch::no_grad_guard();
                // Ids are bytes and 256 (start of text), as the README
                // promises such a model: the padding id that fills a
                // document's last window becomes 256. Padding only ever
                // follows the text, so a causal model's logits at the text's
                // positions do not change (and those at padding are not scored).
                let ids = tokens
                    .f_clamp_max(taskweave_datasets::BOS)?
                    .f_to_device(*device)?;
                let out = module.forward_ts(&[ids]).map_err(|e| {
                    Error::Run(format!("model `{}` failed at {at}: {e}", self.name))
                })?;
                let (want, got) = (
                    [tokens.size()[0], tokens.size()[1], self.vocab as i64],
                    out.size(),
                );
                if got != want {
                    return Err(Error::Input(format!(
                        "model `{}` returned logits {got:?} for ids {:?} at {at}; a TorchScript \
                         language model returns [B, L, V] = {want:?}",
                        self.name,
                        tokens.size()
                    )));
                }
                vec![out]
            }
        };
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
        let out = if let Network::Run {
            trainer,
            cached: true,
        } = &mut self.network
        {
            let inputs = [(
                taskweave_datasets::TOKENS.to_string(),
                Tensor::f_from_slice(next)?.f_unsqueeze(0)?,
            )];
            let out = trainer
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
        // −∞ is a masked entry; NaN and +∞ are a broken model, and so is a
        // position where every entry is masked (no byte could follow).
        let bad = out.f_isnan()?.f_logical_or(&out.f_isposinf()?)?;
        let none = out.f_isneginf()?.f_all_dim(-1, false)?;
        if bool::try_from(bad.f_any()?.f_logical_or(&none.f_any()?)?)? {
            return Err(Error::Run(format!(
                "model `{}` gave NaN or +inf logits, or −inf for every byte, at {at}",
                self.name
            )));
        }
        Ok(out)
    }
}

/// A run's network, context, vocabulary and training `[data]` (with its folder).
type Opened = (Network, usize, usize, Option<(serde_json::Value, PathBuf)>);

/// A run of `taskweave lm train` at `dir`: its network, context, vocabulary
/// and the `[data]` it was trained on.
fn open_run(runtime: &Runtime, name: &str, dir: &Path) -> Result<Opened> {
    let named = |e: Error| e.input_context(format!("models.{name} ({})", dir.display()));
    let run = Run::open_to_read(runtime, dir).map_err(named)?;
    run.pipeline().check_language_model().map_err(named)?;
    let trainer = run.trained(run.load_data()?).map_err(named)?;
    let tokens = trainer
        .data()
        .input(taskweave_datasets::TOKENS)
        .ok_or_else(|| Error::Input(format!("models.{name}: its data have no `tokens` input")))?;
    let context = tokens.shape.first().copied().unwrap_or(0);
    let vocab = trainer.data().tasks[0].output_dim();
    let cached = run.pipeline().config().model.architecture["kind"] == "hard-sharing";
    let trainer = Box::new(trainer);
    let pipeline = run.pipeline();
    let trained_on = (pipeline.config().data.clone(), pipeline.dir().to_path_buf());
    Ok((
        Network::Run { trainer, cached },
        context,
        vocab,
        Some(trained_on),
    ))
}

/// The TorchScript module at `path` on `device` and its vocabulary, read
/// from its logits for one start token.
fn open_torchscript(name: &str, path: &Path, device: Device) -> Result<(Network, usize)> {
    let refuse = |what: String| {
        Error::Input(format!(
            "models.{name} ({}): {what}; a TorchScript language model maps ids [B, L] (int64) to logits [B, L, V]",
            path.display()
        ))
    };
    if !path.is_file() {
        return Err(refuse("no such file".into()));
    }
    let module = CModule::load_on_device(path, device)
        .map_err(|e| refuse(format!("not a TorchScript module ({})", first_line(&e))))?;
    let probe = Tensor::f_from_slice(&[taskweave_datasets::BOS])?
        .f_view([1, 1])?
        .f_to_device(device)?;
    let out = {
        let _no_grad = tch::no_grad_guard();
        module.forward_ts(&[probe]).map_err(|e| {
            refuse(format!(
                "its forward fails on ids [1, 1] ({})",
                first_line(&e)
            ))
        })?
    };
    let size = out.size();
    if size.len() != 3 || size[..2] != [1, 1] || !out.is_floating_point() {
        return Err(refuse(format!(
            "it returns {:?} {size:?} for ids [1, 1]",
            out.kind()
        )));
    }
    Ok((Network::TorchScript { module, device }, size[2] as usize))
}

/// The first line of an error (libtorch's carry a C++ backtrace).
fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
