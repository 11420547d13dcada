//! FD-FMNIST: the Fréchet distance between samples and real items in the
//! feature space of a Fashion-MNIST classifier (FID's formula on a feature
//! space the runtime can train here; not comparable to FID). The classifier
//! is a run of its own, trained by the engine the first time a diffusion run
//! on `fashion-mnist` data is sampled and kept beside the images
//! (`<data dir>/fd-fmnist/<source>-<size>px/`), so every later sample of any
//! run on the same items measures in the same space. Its directory is
//! locked like any run's: a second process sampling while the first trains
//! it is refused (exit 2) rather than training it twice; sample once alone
//! first when starting several.

use serde_json::Value;
use tch::Tensor;

use super::Run;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::runtime::{Config, Runtime};
use crate::train::Trainer;

/// The classifier's pipeline: a LeNet-like conv net with a 128-wide hidden
/// layer (whose outputs are the features), 5 epochs of Adam (1,950 steps on
/// the 50,000 fitting items); run with the diffusion run's device and
/// threads on the same items.
const CLASSIFIER: &str = r#"
[model]
backbone = { kind = "conv", input = "x", channels = [32, 64, 128] }
head = { hidden = [128] }

[train]
epochs = 5
batch = 128
optimizer = { kind = "adam", lr = 0.001 }

[eval]
every = 500
"#;

/// The trained classifier, with its evaluation batch.
pub(super) struct Classifier {
    trainer: Trainer,
    batch: usize,
}

/// The trained classifier for the items of `pipeline`'s data, training it
/// first when no finished run of it exists (a killed one resumes); `None`
/// for data other than `fashion-mnist`.
pub(super) fn classifier(pipeline: &Pipeline) -> Result<Option<Classifier>> {
    let data = &pipeline.config().data;
    if data["kind"].as_str() != Some("fashion-mnist") {
        return Ok(None);
    }
    let items = taskweave_datasets::items_of(data, pipeline.dir())?;
    let (source, size, images) = (items.source, items.size, items.dir);
    let run = &pipeline.config().run;
    let toml = format!(
        "[run]\nname = \"{source}-{size}px\"\nseed = 0\ndevice = {}\nthreads = {}\nout_dir = {}\n\n\
         [data]\nkind = \"fashion-mnist\"\nsource = \"{source}\"\ndir = {}\nsize = {size}\nval = 2000\n{CLASSIFIER}",
        quoted(&run.device),
        run.threads,
        quoted(&images.join("fd-fmnist").to_string_lossy()),
        quoted(&images.to_string_lossy()),
    );
    let runtime = Runtime::new(&Config::new());
    let classifier = Pipeline::from_str(&runtime, &toml, &images, &[])?;
    let dir = classifier.run_dir();
    let finished = dir.join("summary.json").is_file();
    let run = match dir.join("config.toml").is_file() {
        true => Run::open(&runtime, &dir)?,
        false => Run::start(classifier, false)?,
    };
    if !finished {
        tracing::info!(
            "training the FD-FMNIST classifier once, into {}",
            dir.display()
        );
        run.train(true)?;
    }
    Ok(Some(Classifier {
        trainer: run.trained(run.load_data()?)?,
        batch: run.pipeline().config().eval.batch as usize,
    }))
}

/// `s` as a TOML basic string (JSON's escapes are TOML's).
fn quoted(s: &str) -> String {
    Value::String(s.into()).to_string()
}

/// FD-FMNIST of samples, beside the same distance between real items.
pub struct Frechet {
    /// Between the samples and the test items.
    pub samples: f64,
    /// Between as many training items as samples and the test items: what
    /// a perfect model would score at this sample count (the estimate is
    /// biased upwards for small counts).
    pub real: f64,
}

impl Frechet {
    /// Measures `samples` against the test items, and training items
    /// against them, in `classifier`'s feature space.
    pub(super) fn measure(
        classifier: &mut Classifier,
        samples: &Tensor,
        train: &Tensor,
        test: &Tensor,
    ) -> Result<Frechet> {
        let count = samples.size()[0].min(train.size()[0]);
        let batch = classifier.batch;
        let mut features = |x: &Tensor| classifier.trainer.hidden_features(x, batch);
        let (drawn, real, truth) = (
            features(samples)?,
            features(&train.f_narrow(0, 0, count)?)?,
            features(test)?,
        );
        Ok(Frechet {
            samples: crate::diffusion::quality::frechet(&drawn, &truth)?,
            real: crate::diffusion::quality::frechet(&real, &truth)?,
        })
    }
}
