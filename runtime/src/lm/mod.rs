//! Decoding pipelines: one large and one small base language model, small
//! experts, and a `Fusion` method that turns their next-byte logits into one
//! distribution at every step (dynamic logit fusion, proxy tuning, or one
//! model alone). [`DecodePipeline`] is the validated file; [`eval::evaluate`]
//! scores held-out text by teacher forcing (`taskweave eval-lm`) and
//! [`decode::generate`] draws text (`taskweave decode`).
//!
//! The models are runs of `taskweave lm train`; their logits are computed
//! where each run's pipeline puts them and fused on the decoding pipeline's
//! `device`.

pub mod config;
pub mod decode;
pub mod eval;
mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskweave_plugin_api::{Fusion, MethodContext, Role};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::host::RuntimeHost;
use crate::pipeline::{check_data, load_typed, read_source, Loaded};
use crate::registry::Registry;
use crate::runtime::Runtime;
pub use config::DecodeConfig;
pub use model::LanguageModel;

/// A validated decoding pipeline file.
pub struct DecodePipeline {
    config: DecodeConfig,
    dir: PathBuf,
    registry: Arc<Registry>,
    runtime: Runtime,
    device: Device,
}

/// The models of a decoding pipeline, loaded.
pub struct Models {
    /// The large base model.
    pub large: LanguageModel,
    /// The small base model.
    pub small: LanguageModel,
    /// The small experts, in the pipeline's order.
    pub experts: Vec<LanguageModel>,
}

impl Models {
    /// Every model, large first.
    fn all(&mut self) -> impl Iterator<Item = &mut LanguageModel> {
        [&mut self.large, &mut self.small]
            .into_iter()
            .chain(self.experts.iter_mut())
    }

    /// The shortest context of all the models: the longest window each can read.
    pub fn context(&mut self) -> usize {
        self.all().map(|m| m.context()).min().unwrap_or(0)
    }
}

/// Whether the pipeline file at `path` is a decoding pipeline (it has a
/// `[models]` table); false for a training pipeline and for a file that
/// cannot be read or parsed.
pub fn is_decoding_pipeline(path: &Path) -> bool {
    read_source(path)
        .ok()
        .and_then(|source| source.parse().ok())
        .is_some_and(|parsed| parsed.get("models").is_some())
}

impl DecodePipeline {
    /// Loads and validates the decoding pipeline at `path` with `sets`
    /// (`dotted.key=value`) applied first.
    pub fn from_file(runtime: &Runtime, path: &Path, sets: &[String]) -> Result<DecodePipeline> {
        let source = read_source(path)?;
        // A training pipeline (the models' own, say) given by mistake: say
        // so, rather than list every key it lacks.
        if let Ok(parsed) = source.parse() {
            let has = |key: &str| parsed.get(key).is_some();
            if !has("models") && (has("train") || has("model")) {
                return Err(Error::Input(format!(
                    "{} is a training pipeline (it has [model] or [train]); `decode` and `eval-lm` \
                     read a decoding pipeline: [models], [fusion] and [data] (README: language models)",
                    path.display()
                )));
            }
        }
        let Loaded {
            source,
            root,
            config,
            registry,
        } = load_typed::<DecodeConfig>(runtime, source, sets, &config::schema(), |_| {})?;
        if let Some(problem) = check_data(&root, &config.data, &source.dir) {
            return Err(source.error(vec![problem]));
        }
        if config.data["kind"] != "text" {
            return Err(Error::Input(
                "data.kind: a decoding pipeline scores byte-level text: use `kind = \"text\"`"
                    .into(),
            ));
        }
        let device = crate::device::resolve("device", &config.device)?;
        Ok(DecodePipeline {
            dir: source.dir.clone(),
            runtime: runtime.clone(),
            config,
            registry,
            device,
        })
    }

    /// The resolved config.
    pub fn config(&self) -> &DecodeConfig {
        &self.config
    }

    /// What the pipeline reads besides its own file: every model's run
    /// directory or TorchScript file, and its corpora's documents.
    pub fn reads(&self) -> Vec<PathBuf> {
        let models = &self.config.models;
        let mut paths: Vec<PathBuf> = [&models.large, &models.small]
            .into_iter()
            .chain(models.experts.values())
            .map(|m| match m {
                config::ModelRef::Run(run) => self.dir.join(&run.dir),
                config::ModelRef::Torchscript(ts) => self.dir.join(&ts.path),
            })
            .collect();
        paths.extend(taskweave_datasets::documents(&self.config.data, &self.dir));
        paths
    }

    /// Loads every model, refusing models whose vocabularies differ.
    pub fn models(&self) -> Result<Models> {
        let open = |name: &str, model: &config::ModelRef| {
            LanguageModel::open(&self.runtime, name, model, &self.dir, self.device)
        };
        let models = &self.config.models;
        let loaded = Models {
            large: open("large", &models.large)?,
            small: open("small", &models.small)?,
            experts: models
                .experts
                .iter()
                .map(|(name, m)| open(&format!("experts.{name}"), m))
                .collect::<Result<_>>()?,
        };
        let vocab = loaded.large.vocab();
        for m in std::iter::once(&loaded.small).chain(&loaded.experts) {
            if m.vocab() != vocab {
                return Err(Error::Input(format!(
                    "models.{}: its logits cover {} tokens and the large model's {vocab}; every model must share one vocabulary",
                    m.name,
                    m.vocab()
                )));
            }
        }
        Ok(loaded)
    }

    /// The pipeline's fusion method for `experts` experts.
    pub fn fusion(&self, experts: &[String]) -> Result<Box<dyn Fusion>> {
        let ctx = MethodContext {
            device: crate::device::name(self.device).into(),
            seed: self.config.decode.seed,
            tasks: experts.iter().map(|e| e.as_str().into()).collect(),
            ..Default::default()
        };
        let host = RuntimeHost::with_registry(self.registry.clone());
        Ok(self
            .registry
            .create_table(Role::Fusion, &self.config.fusion, &ctx, &host)?
            .into_fusion()?)
    }

    /// Where the logits are fused.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The held-out text's data (the pipeline's `[data]` table).
    pub fn load_data(&self) -> Result<crate::data::Dataset> {
        crate::data::load(&self.config.data, &self.dir)
    }
}

/// The one expert each row of a fusion's `alpha` `[N, T]` steers with (the
/// first with a non-zero coefficient; 0 when none: the large model itself,
/// which every expert gives at α = 0) and its coefficient: `([N] i64, [N])`.
/// Without experts (`T = 0`, the large model alone) both are 0.
pub fn active_expert(alpha: &Tensor) -> Result<(Tensor, Tensor)> {
    if alpha.size().get(1) == Some(&0) {
        let rows = alpha.size()[0];
        return Ok((
            Tensor::f_zeros([rows], (Kind::Int64, alpha.device()))?,
            Tensor::f_zeros([rows], (alpha.kind(), alpha.device()))?,
        ));
    }
    let expert = alpha.f_ne(0.0)?.f_to_kind(Kind::Int)?.f_argmax(1, false)?;
    let coefficient = alpha
        .f_gather(1, &expert.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    Ok((expert, coefficient))
}
