//! `taskweave lm train`: byte-level causal language models on `[data] kind =
//! "text"` corpora written here, per-corpus bits per byte and perplexity,
//! fine-tuning an expert from another run, and exit 2 for pipelines that are
//! not one language model.

use std::path::Path;

use taskweave_plugin_api::rng::SplitMix;
use taskweave_tests::*;
use tch::{Device, Kind, Tensor};

/// Two corpora of 12 documents each: `count` (numbers counting up from a
/// random start, almost deterministic) and `words` (random sentences over
/// six words: about 2.6 bits per word of five bytes).
fn corpora(dir: &Path) {
    let mut rng = SplitMix::at(5, 0);
    for corpus in ["count", "words"] {
        std::fs::create_dir_all(dir.join("text").join(corpus)).unwrap();
        for i in 0..12 {
            let text = document(corpus, &mut rng);
            std::fs::write(dir.join("text").join(corpus).join(format!("{i}.txt")), text).unwrap();
        }
    }
}

fn document(corpus: &str, rng: &mut SplitMix) -> String {
    let words = ["apple", "river", "stone", "cloud", "ember", "lotus"];
    if corpus == "count" {
        let start = rng.below(500) as usize;
        return (start..start + 300).map(|n| format!("{n} ")).collect();
    }
    (0..250)
        .map(|i| {
            let w = words[rng.below(words.len() as u64) as usize];
            if i % 8 == 7 {
                format!("{w}.\n")
            } else {
                format!("{w} ")
            }
        })
        .collect()
}

fn lm_pipeline(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"[run]
name = "general"
device = "cpu"
out_dir = "{out}"

[data]
kind = "text"
context = 32

[data.corpora]
count = ["text/count/*.txt"]
words = ["text/words/*.txt"]

[model]
backbone = {{ kind = "transformer-lm", dim = 32, depth = 1, heads = 2 }}
head = {{ hidden = [], shared = true }}

[train]
steps = 300
batch = 32
optimizer = {{ kind = "adamw", lr = 0.003 }}

[eval]
every = 100
"#,
        out = dir.join("runs").display()
    );
    let path = dir.join("lm.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn test_bits(dir: &Path, run: &str, corpus: &str) -> f64 {
    let text = std::fs::read_to_string(dir.join("runs").join(run).join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    summary["test"][corpus]["bits"].as_f64().unwrap()
}

fn lm_train(dir: &Path, sets: &[&str]) {
    let mut args = vec!["-q", "lm", "train", "lm.toml", "--overwrite"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (code, _, err) = run_cli(dir, &args);
    assert_eq!(code, 0, "{args:?}: {err}");
}

#[test]
fn lm_train_learns_each_corpus_reports_bits_per_byte_and_init_makes_an_expert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    corpora(d);
    lm_pipeline(d);
    lm_train(d, &[]);
    // Uniform guessing over 256 bytes is 8 bits per byte.
    let (count, words) = (
        test_bits(d, "general", "count"),
        test_bits(d, "general", "words"),
    );
    assert!(count < 3.0 && words < 3.0, "count {count}, words {words}");
    // Every evaluation reports each corpus's perplexity and bits per byte.
    let log = std::fs::read_to_string(d.join("runs/general/metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["split"] == "val")
        .collect();
    assert_eq!(evals.len(), 3, "{log}");
    for corpus in ["count", "words"] {
        let m = &evals[2]["tasks"][corpus];
        let bits = m["bits"].as_f64().unwrap();
        let perplexity = m["perplexity"].as_f64().unwrap();
        assert!((perplexity.log2() - bits).abs() < 1e-6, "{m}");
    }
    // An expert: the general model fine-tuned on `words` alone beats the
    // same 60 steps from scratch on it.
    let words_only = "data.corpora={words=[\"text/words/*.txt\"]}";
    let expert = [
        "run.name=expert",
        words_only,
        "train.steps=60",
        "train.init=runs/general",
    ];
    lm_train(d, &expert);
    lm_train(d, &["run.name=scratch", words_only, "train.steps=60"]);
    let (expert, scratch) = (
        test_bits(d, "expert", "words"),
        test_bits(d, "scratch", "words"),
    );
    assert!(expert < scratch - 0.5, "expert {expert}, scratch {scratch}");
}

#[test]
fn lm_train_refuses_what_is_not_one_language_model_and_empty_corpora() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    corpora(d);
    lm_pipeline(d);
    let refused = |args: &[&str], needle: &str| {
        let (code, _, err) = run_cli(d, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    small_pipeline(d, "tabular", "[train]\nsteps = 1\n");
    refused(
        &["lm", "train", "tabular.toml"],
        "data.kind: `lm train` trains one causal language model over byte-level text",
    );
    refused(
        &["lm", "train", "lm.toml", "--set", "model.head.shared=false"],
        "model.head.shared: `lm train` trains one causal language model",
    );
    refused(
        &[
            "lm",
            "train",
            "lm.toml",
            "--set",
            "data.corpora.words=[\"text/none/*.txt\"]",
        ],
        "data.corpora.words: the patterns [\"text/none/*.txt\"] match no non-empty file",
    );
    // A per-token task of the user's own tensors over a backbone without tokens.
    let mut tensors = Vec::new();
    for split in ["train", "val", "test"] {
        tensors.push((
            format!("{split}.inputs.features"),
            Tensor::randn([8, 4], (Kind::Float, Device::Cpu)),
        ));
        tensors.push((
            format!("{split}.targets.tag"),
            Tensor::randint(5, [8, 3], (Kind::Int64, Device::Cpu)),
        ));
    }
    Tensor::write_safetensors(&tensors, d.join("tags.safetensors")).unwrap();
    small_pipeline(d, "tags", "[train]\nsteps = 1\n");
    refused(
        &[
            "run",
            "tags.toml",
            "--set",
            "data={kind=\"tensors\", path=\"tags.safetensors\", tasks={tag={type=\"token-multiclass\", classes=5}}}",
        ],
        "model.backbone: task `tag` is token-multiclass (one output per position), but backbone `mlp` gives no tokens",
    );
}
