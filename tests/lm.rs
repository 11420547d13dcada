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

/// The `[data]` of the training pipeline, which the decoding pipelines
/// repeat so that they score exactly the documents the models held out.
const TEXT_DATA: &str = r#"[data]
kind = "text"
context = 32

[data.corpora]
count = ["text/count/*.txt"]
words = ["text/words/*.txt"]
"#;

fn lm_pipeline(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"[run]
name = "general"
device = "cpu"
out_dir = "{out}"

{data}
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
        out = dir.join("runs").display(),
        data = TEXT_DATA
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
        .filter(|v: &serde_json::Value| v["split"] == "val" && v["final"].is_null())
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
    decoding_pipelines_score_and_continue_text_with_the_trained_models(d);
}

/// A decoding pipeline over the runs of the test above: `general` as both
/// base models, `expert` (fine-tuned on `words`) as the one expert.
const RUN_MODELS: &str = r#"large = { kind = "run", dir = "runs/general" }
small = { kind = "run", dir = "runs/general" }
experts = { words = { kind = "run", dir = "runs/expert" } }"#;

/// Writes `decode.toml` with the `[models]` table's lines `models`.
fn decode_pipeline(dir: &Path, models: &str) {
    let text = r#"device = "cpu"

[plugins]
dirs = ["plugins"]

[models]
MODELS

[fusion]
kind = "large"

[decode]
max_new = 48

DATA
[eval]
experts = "all"
"#
    .replace("MODELS", models)
    .replace("DATA", TEXT_DATA);
    std::fs::write(dir.join("decode.toml"), text).unwrap();
}

/// `eval-lm --json` with `sets`: corpus → (bits, mean α).
fn eval_lm(dir: &Path, sets: &[&str]) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut args = vec!["eval-lm", "decode.toml", "--json"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (code, out, err) = run_cli(dir, &args);
    assert_eq!(code, 0, "{args:?}: {err}");
    let scores: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    scores
        .iter()
        .map(|s| {
            let number = |k: &str| s[k].as_f64().unwrap();
            (
                s["corpus"].as_str().unwrap().to_string(),
                (number("bits"), number("mean_alpha")),
            )
        })
        .collect()
}

fn decoding_pipelines_score_and_continue_text_with_the_trained_models(d: &Path) {
    install_plugin(d, "taskweave-logit-fusion");
    decode_pipeline(d, RUN_MODELS);
    // The large model alone scores the held-out documents exactly as its
    // own run's test evaluation did (the same windows, the same checkpoint).
    let large = eval_lm(d, &[]);
    for corpus in ["count", "words"] {
        let (bits, alpha) = large[corpus];
        let own = test_bits(d, "general", corpus);
        assert!((bits - own).abs() < 1e-4, "{corpus}: {bits} vs {own}");
        assert_eq!(alpha, 0.0);
    }
    // With the small base equal to the large one, the expert's shift is
    // matched exactly at α = 1: dynamic fusion becomes the expert itself.
    let expert = eval_lm(d, &["fusion={kind=\"expert\"}"]);
    let fused = eval_lm(d, &["fusion={kind=\"logit-fusion\"}"]);
    let proxy = eval_lm(d, &["fusion={kind=\"proxy\"}"]);
    for corpus in ["count", "words"] {
        let (e, (f, alpha), p) = (expert[corpus].0, fused[corpus], proxy[corpus].0);
        assert!(
            (f - e).abs() < 1e-4 && (p - e).abs() < 1e-4,
            "{corpus}: fused {f}, proxy {p}, expert {e}"
        );
        assert!(alpha > 0.99, "{corpus}: mean α {alpha}");
    }
    // The α plot, and the shares it draws: every steered byte in the bin of
    // α = 1.
    let (code, out, err) = run_cli(
        d,
        &[
            "eval-lm",
            "decode.toml",
            "--json",
            "--plot",
            "alpha.png",
            "--set",
            "fusion={kind=\"logit-fusion\"}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(d.join("alpha.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let scores: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for s in &scores {
        let numbers = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        // The binned coefficients give back the mean α, which eval-lm sums
        // from the raw ones (up to the grid's rounding).
        let mut binned_alpha = 0.0;
        for bins in s["alpha_shares"].as_array().unwrap() {
            let bins = numbers(bins);
            assert_eq!(bins.len(), 20);
            let total: f64 = bins.iter().sum();
            assert!(total > 0.0 && bins[9] >= 0.99 * total, "α = 1 bin: {s}");
            binned_alpha += bins
                .iter()
                .enumerate()
                .map(|(k, b)| (k + 1) as f64 * 0.1 * b)
                .sum::<f64>();
        }
        let mean_alpha = s["mean_alpha"].as_f64().unwrap();
        assert!((binned_alpha - mean_alpha).abs() < 0.05, "{s}");
    }
    let (code, _, err) = run_cli(
        d,
        &["eval-lm", "decode.toml", "--plot", "no/such/dir/a.png"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the directory no/such/dir does not exist"),
        "{err}"
    );
    // A directory no file can be made in: said at once, not after the evaluation.
    let (code, out, err) = run_cli(d, &["eval-lm", "decode.toml", "--plot", "/proc/alpha.png"]);
    assert!(
        code == 2 && out.is_empty() && err.contains("the directory /proc is not writable"),
        "{code}: {err}"
    );
    assert!(
        expert["words"].0 < large["words"].0 - 0.05,
        "the expert should know `words` better: {expert:?} vs {large:?}"
    );
    // `validate` knows a decoding pipeline (it has [models]).
    let (code, out, err) = run_cli(d, &["validate", "decode.toml"]);
    assert!(code == 0 && out.contains("ok"), "{err}");
    // A corpus renamed (or its files matched otherwise) would draw other
    // test documents, among them training ones: refused.
    let (code, _, err) = run_cli(
        d,
        &[
            "eval-lm",
            "decode.toml",
            "--set",
            "data.corpora={renamed=[\"text/words/*.txt\"]}",
        ],
    );
    assert!(
        code == 2
            && err.contains("data.corpora.renamed: it holds documents model `large` trained on"),
        "{err}"
    );
    // A fusion setting that fits no expert names the section.
    let (code, _, err) = run_cli(
        d,
        &[
            "eval-lm",
            "decode.toml",
            "--set",
            "fusion={kind=\"proxy\", expert=5}",
        ],
    );
    assert!(code == 2 && err.contains("fusion: expert = 5"), "{err}");
    // The longest prompt the error allows still gets a byte: the models read
    // the start token and the prompt, the whole context, and give the next.
    let (code, _, err) = run_cli(d, &["decode", "decode.toml", "--prompt", &"a".repeat(5000)]);
    let most: usize = err
        .split("give at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{code}: {err}"));
    let (code, _, err) = run_cli(d, &["decode", "decode.toml", "--prompt", &"a".repeat(most)]);
    assert!(code == 0 && err.contains("stopped after 1 byte:"), "{err}");
    // Greedy decoding: the same text every time, and in the words corpus
    // every word is one of its six (each is fixed by its first letter).
    let decode = |extra: &[&str]| {
        let mut args = vec![
            "decode",
            "decode.toml",
            "--prompt",
            "river stone ",
            "--set",
            "fusion={kind=\"logit-fusion\"}",
        ];
        args.extend(extra);
        let (code, out, err) = run_cli(d, &args);
        assert_eq!(code, 0, "{err}");
        (out, err)
    };
    let (text, _) = decode(&[]);
    assert_eq!(decode(&[]).0, text);
    let words = ["apple", "river", "stone", "cloud", "ember", "lotus"];
    let complete: Vec<&str> = text
        .trim_end()
        .split([' ', '.', '\n'])
        .filter(|w| !w.is_empty())
        .collect();
    assert!(complete.len() >= 4, "{text:?}");
    for w in &complete[..complete.len() - 1] {
        assert!(words.contains(w), "{w:?} in {text:?}");
    }
    // The start token, the prompt and the text fill the 32-token context,
    // whose last position still gives one more byte: generation stops there.
    assert_eq!(
        text.trim_end_matches('\n').len(),
        32 - "river stone ".len(),
        "{text:?}"
    );
    let (_, steering) = decode(&["--steering"]);
    let line: serde_json::Value = serde_json::from_str(steering.lines().last().unwrap()).unwrap();
    assert_eq!(line["steering"][0][0], "words", "{line}");
    // Bad input: a prompt longer than the context, a corpus without its expert.
    let (code, _, err) = run_cli(d, &["decode", "decode.toml", "--prompt", &"x".repeat(40)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--prompt: 40 bytes") && err.contains("at most 31 bytes"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        d,
        &["eval-lm", "decode.toml", "--set", "eval.experts=\"own\""],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("models.experts: corpus `count` has no expert of its name"),
        "{err}"
    );
    let (code, _, err) = run_cli(d, &["eval-lm", "decode.toml", "--set", "models.experts={}"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("models.experts: name at least one expert"),
        "{err}"
    );
    // Another document split of the models' own corpora would score documents they trained on.
    let (code, _, err) = run_cli(d, &["eval-lm", "decode.toml", "--set", "data.seed=5"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "data.seed = 5, but model `large` was trained on the same corpora with data.seed = 0"
        ),
        "{err}"
    );
    // `decode` of "ab" with the given --set options.
    let decode_with = |sets: &[&str]| {
        let mut args = vec!["decode", "decode.toml", "--prompt", "ab"];
        for set in sets {
            args.extend(["--set", set]);
        }
        run_cli(d, &args)
    };
    // Without experts the large model alone still decodes; a fusion that
    // picks among experts says there are none.
    let (code, _, err) = decode_with(&["models.experts={}"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = decode_with(&["models.experts={}", "fusion={kind=\"logit-fusion\"}"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("there are none: name at least one (models.experts)"),
        "{err}"
    );
    // Greedy decoding ignores top-k: said.
    let (code, _, err) = decode_with(&["decode.top_k=5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("decode.top_k applies when sampling"), "{err}");
    // eval-lm never samples: the same file scores.
    let (code, _, err) = run_cli(
        d,
        &["-q", "eval-lm", "decode.toml", "--set", "decode.top_k=5"],
    );
    assert_eq!(code, 0, "{err}");
    // A decoding pipeline's device key is `device`, not `run.device`.
    let (code, _, err) = decode_with(&["device=\"bogus\""]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("device = \"bogus\": expected auto") && !err.contains("run.device"),
        "{err}"
    );
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
        "data.kind: not one causal language model over byte-level text",
    );
    refused(
        &["lm", "train", "lm.toml", "--set", "model.head.shared=false"],
        "model.head.shared: not one causal language model",
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
    // ... and points at the --set that gave them, not at the file's [data].
    refused(
        &[
            "lm",
            "train",
            "lm.toml",
            "--set",
            "data.corpora={words=[\"text/none/*.txt\"]}",
        ],
        "--> --set data.corpora={words=",
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

/// Exports modules from PyTorch into `dir` (a one-block causal byte model
/// `gpt.pt`, the same with 100 outputs `gpt100.pt`, `flat.pt`, which returns
/// `[B, L]`, `broken.pt`, whose logits are NaN from position 3, `last.pt`,
/// logits for the last position only, and `masked.pt`, −inf everywhere) and `expected.json`: PyTorch's greedy
/// continuation of "ab" and its logits over the whole sequence.
fn export_torchscript(dir: &Path) -> serde_json::Value {
    let script = r#"
import json, torch
torch.manual_seed(0)

class Gpt(torch.nn.Module):
    def __init__(self, vocab_out=256, dim=32, context=64):
        super().__init__()
        self.tokens = torch.nn.Embedding(258, dim)
        self.positions = torch.nn.Parameter(torch.randn(context, dim) * 0.3)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.GELU(), torch.nn.Linear(64, dim))
        self.out = torch.nn.Linear(dim, vocab_out)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions[: ids.size(1)]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / 32 ** 0.5
        causal = torch.ones_like(scores[0], dtype=torch.bool).tril()
        x = x + torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v
        return self.out(x + self.mlp(x))

class Flat(torch.nn.Module):
    def forward(self, ids):
        return ids.float()

class Last(torch.nn.Module):
    """Logits for the last position only, [B, 1, 256], whatever L."""
    def forward(self, ids):
        return torch.zeros(ids.size(0), 1, 256) + ids[:, -1:, None].float()

class Masked(torch.nn.Module):
    """−inf for every byte: nothing could follow."""
    def forward(self, ids):
        return torch.full((ids.size(0), ids.size(1), 256), float("-inf"))

class Broken(torch.nn.Module):
    """Finite logits for the prompt, NaN from the 4th position on."""
    def forward(self, ids):
        logits = torch.zeros(ids.size(0), ids.size(1), 256)
        return logits.masked_fill(torch.arange(ids.size(1)).view(1, -1, 1) >= 3, float("nan"))

example = torch.tensor([[256, 104, 105, 33]])
traced = torch.jit.trace(Gpt().eval(), example)
traced.save("gpt.pt")
torch.jit.trace(Gpt(vocab_out=100).eval(), example).save("gpt100.pt")
torch.jit.trace(Flat(), example).save("flat.pt")
torch.jit.trace(Broken(), example).save("broken.pt")
torch.jit.trace(Last(), example).save("last.pt")
torch.jit.trace(Masked(), example).save("masked.pt")
ids = [256, 97, 98]
with torch.no_grad():
    for _ in range(12):
        ids.append(int(traced(torch.tensor([ids]))[0, -1].argmax()))
    logits = traced(torch.tensor([ids]))[0]
json.dump({"ids": ids, "logits": logits.flatten().tolist()}, open("expected.json", "w"))
"#;
    std::fs::write(dir.join("export.py"), script).unwrap();
    let status = std::process::Command::new(workspace().join(".venv/bin/python"))
        .arg("export.py")
        .current_dir(dir)
        .status()
        .expect("running .venv/bin/python (make venv)");
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

#[test]
fn torchscript_models_exported_from_pytorch_give_pytorch_s_logits_and_decode() {
    use taskweave::lm::config::{ModelRef, TorchScriptModel};
    use taskweave::lm::LanguageModel;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    corpora(d);
    let expected = export_torchscript(d);
    let ids: Vec<i64> = serde_json::from_value(expected["ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let want = Tensor::from_slice(&want).view([ids.len() as i64, 256]);
    // The logits of the whole window, and of the last position read one
    // token at a time, are PyTorch's.
    let runtime = taskweave::Runtime::new(&taskweave::Config::new());
    let gpt = ModelRef::Torchscript(TorchScriptModel {
        path: "gpt.pt".into(),
        context: 64,
    });
    let mut model = LanguageModel::open(&runtime, "large", &gpt, d, Device::Cpu).unwrap();
    assert_eq!((model.vocab(), model.context()), (256, 64));
    let window = Tensor::from_slice(&ids).view([1, -1]);
    let logits = model.logits(&window, Device::Cpu, "test").unwrap().get(0);
    let gap = f64::try_from((&logits - &want).abs().max()).unwrap();
    assert!(gap < 1e-5, "largest difference from PyTorch: {gap}");
    let _ = model.read(&ids[..3], Device::Cpu, "prompt").unwrap();
    for (k, &id) in ids[3..].iter().enumerate() {
        let last = model.read(&[id], Device::Cpu, "step").unwrap();
        assert!(last
            .get(0)
            .allclose(&want.get(3 + k as i64), 1e-5, 1e-5, false));
    }
    // `taskweave decode` with it continues "ab" as PyTorch's greedy loop did.
    let models = r#"large = { kind = "torchscript", path = "gpt.pt", context = 64 }
small = { kind = "torchscript", path = "gpt.pt", context = 64 }
experts = { words = { kind = "torchscript", path = "gpt.pt", context = 64 } }"#;
    decode_pipeline(d, models);
    let (code, _, err) = run_cli(
        d,
        &[
            "decode",
            "decode.toml",
            "--prompt",
            "ab",
            "--steering",
            "--set",
            "decode.max_new=12",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let bytes: Vec<i64> = serde_json::from_value(line["bytes"].clone()).unwrap();
    assert_eq!(bytes, ids[3..], "{line}");
    // A model whose logits turn NaN: exit 1 naming it and the step.
    let set = "models.large={kind=\"torchscript\", path=\"broken.pt\", context=64}";
    let (code, _, err) = run_cli(
        d,
        &["decode", "decode.toml", "--prompt", "ab", "--set", set],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("model `large` gave NaN or +inf logits, or −inf for every byte, at step 1"),
        "{err}"
    );
    // Every byte masked: exit 1 naming it, not bytes drawn from nothing.
    let set = "models.large={kind=\"torchscript\", path=\"masked.pt\", context=64}";
    let (code, _, err) = run_cli(
        d,
        &["decode", "decode.toml", "--prompt", "ab", "--set", set],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("−inf for every byte"), "{err}");
    // Logits of the right shape for one id only: refused at the first longer window.
    let set = "models.large={kind=\"torchscript\", path=\"last.pt\", context=64}";
    let (code, _, err) = run_cli(
        d,
        &["decode", "decode.toml", "--prompt", "ab", "--set", set],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("model `large` returned logits [1, 1, 256] for ids [1, 3]"),
        "{err}"
    );
    // A training pipeline given to decode: said so, not every key it lacks.
    let training = small_pipeline(d, "training", "");
    let (code, _, err) = run_cli(d, &["decode", training.to_str().unwrap(), "--prompt", "ab"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a training pipeline"), "{err}");
    // Bad models: another vocabulary, the wrong output shape, not a module.
    std::fs::write(d.join("notes.pt"), "not a module").unwrap();
    for (key, file, needle) in [
        (
            "experts.words",
            "gpt100.pt",
            "models.experts.words: its logits cover 100 tokens and the large model's 256",
        ),
        (
            "small",
            "flat.pt",
            "flat.pt): it returns Float [1, 1] for ids [1, 1]",
        ),
        ("small", "notes.pt", "notes.pt): not a TorchScript module"),
        ("small", "none.pt", "none.pt): no such file"),
    ] {
        let set = format!("models.{key}={{kind=\"torchscript\", path=\"{file}\", context=64}}");
        let (code, _, err) = run_cli(
            d,
            &["decode", "decode.toml", "--prompt", "ab", "--set", &set],
        );
        assert_eq!(code, 2, "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
}
