//! `text`: byte-level language modelling on local text files. Each named
//! corpus is a set of files (one file = one document) selected by glob
//! patterns and becomes one `token-multiclass` task, so the metrics of every
//! evaluation are per corpus; an example is a window of `context` bytes of
//! one document and its targets are the next bytes.
//!
//! Tokens are the 256 byte values plus two specials: [`BOS`] starts every
//! document and [`PAD`] fills the last window of a document. A document of n
//! bytes is the sequence BOS b₁ … bₙ cut into windows of `context` tokens
//! without overlap; every byte is a target exactly once (padding targets are
//! [`IGNORE_TOKEN`]), so the mean cross-entropy over a split is that split's
//! exact cross-entropy per byte (windows after the first see only their own
//! bytes as context). The outputs are the 256 bytes: a special is never a
//! target.
//!
//! Documents are split into train / val / test per corpus after a seeded
//! shuffle, so no document has bytes in two splits. A corpus's task has a
//! label on its own rows only (its label mask), and the targets tensor is
//! one for all tasks: one shared head (`model.head.shared = true`) makes one
//! language model over the mixture, in which every corpus's mean loss
//! weighs the same whatever its size.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::rng::SplitMix;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::split::{assign, Fractions};
use crate::{DataKind, Dataset, Footprint, InputSpec, Source, Split, Task, TaskType, IGNORE_TOKEN};

/// The name of the id input `[N, context]`.
pub const TOKENS: &str = "tokens";
/// The number of byte values: the classes of every task.
pub const BYTES: usize = 256;
/// The token that starts every document.
pub const BOS: i64 = 256;
/// The token that fills a document's last window.
pub const PAD: i64 = 257;
/// The input vocabulary: the bytes and the two specials.
pub const VOCAB: usize = 258;

/// `[data] kind = "text"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Corpus name → glob patterns of its documents (`*`, `?`, `[...]`, and
    /// `**` for any depth), relative to the pipeline file; one file is one
    /// document, and each corpus is one task.
    pub corpora: IndexMap<String, Vec<String>>,
    /// Tokens per example: the model's context.
    #[serde(default = "TextConfig::default_context")]
    #[schemars(range(min = 2, max = 65_536))]
    pub context: u64,
    /// The share of each corpus's documents in each split.
    #[serde(default)]
    pub split: Fractions,
    /// Seed of the document split and of which documents `max_bytes` keeps
    /// (independent of run.seed, so model seeds vary over fixed data).
    #[serde(default)]
    pub seed: u64,
    /// At most this many bytes of each corpus (0: all of it): its documents
    /// in seeded order until the cap, the last one cut short.
    #[serde(default)]
    pub max_bytes: u64,
}

impl TextConfig {
    fn default_context() -> u64 {
        128
    }
}

/// The `text` data kind.
pub struct Text;

inventory::submit! { DataKind::of::<Text>() }

/// One corpus's documents: each file and the bytes of it that are used.
struct Corpus {
    name: String,
    documents: Vec<(PathBuf, u64)>,
}

impl Corpus {
    fn bytes(&self) -> u64 {
        self.documents.iter().map(|(_, n)| n).sum()
    }
}

/// Every document a validated `[data] kind = "text"` table names, its
/// patterns relative to `dir` (none where the table is no such table or
/// matches nothing): what a command writing files must not overwrite.
pub fn documents(table: &serde_json::Value, dir: &Path) -> Vec<PathBuf> {
    let Ok(config) = crate::config_of::<Text>(table) else {
        return Vec::new();
    };
    config
        .corpora
        .iter()
        .flat_map(|(name, patterns)| matches(name, patterns, dir).unwrap_or_default())
        .map(|(path, _)| path)
        .collect()
}

/// The non-empty files `patterns` match, sorted and without repeats.
fn matches(name: &str, patterns: &[String], dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let key = format!("corpora.{name}");
    let mut files = Vec::new();
    for pattern in patterns {
        let full = dir.join(pattern);
        let text = full.to_str().ok_or_else(|| {
            Error::config(&key, format!("the pattern `{pattern}` is not valid UTF-8"))
        })?;
        let found = glob::glob(text)
            .map_err(|e| Error::config(&key, format!("`{pattern}` is not a glob pattern: {e}")))?;
        for entry in found {
            let path = entry.map_err(|e| Error::Unreadable {
                path: e.path().to_path_buf(),
                reason: taskweave_plugin_api::io_reason(e.error()),
            })?;
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() > 0 => files.push((path, meta.len())),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Unreadable {
                        reason: taskweave_plugin_api::io_reason(&e),
                        path,
                    })
                }
            }
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::config(
            key,
            format!(
                "the patterns {patterns:?} match no non-empty file (patterns are relative to the pipeline file{})",
                if dir.join("data").is_dir() { "" } else { "; `make corpora` fetches the project's corpora into data/corpora/" }
            ),
        ));
    }
    Ok(files)
}

/// The random stream of corpus `name`'s document order and split: from its
/// name, not its place in the table, so that a pipeline of one corpus (an
/// expert's fine-tuning) holds out exactly the documents a pipeline of
/// several holds out of it.
fn stream(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Every corpus's documents, `max_bytes` applied.
fn corpora(c: &TextConfig, dir: &Path) -> Result<Vec<Corpus>> {
    if c.corpora.is_empty() {
        return Err(Error::config("corpora", "no corpus: name at least one"));
    }
    let mut out = Vec::new();
    for (name, patterns) in &c.corpora {
        let mut documents = matches(name, patterns, dir)?;
        if c.max_bytes > 0 {
            SplitMix::at(c.seed, stream(name)).shuffle(&mut documents);
            let mut left = c.max_bytes;
            documents.retain_mut(|(_, n)| {
                *n = (*n).min(left);
                left -= *n;
                *n > 0
            });
        }
        out.push(Corpus {
            name: name.clone(),
            documents,
        });
    }
    Ok(out)
}

/// Windows of `context` tokens of one document: inputs and next-byte
/// targets appended to `inputs` and `targets`; returns how many.
fn windows(bytes: &[u8], context: usize, inputs: &mut Vec<i64>, targets: &mut Vec<i64>) -> usize {
    let sequence: Vec<i64> = std::iter::once(BOS)
        .chain(bytes.iter().map(|&b| b as i64))
        .collect();
    let mut count = 0;
    // Position i predicts sequence[i + 1]; the last token predicts nothing.
    for start in (0..sequence.len() - 1).step_by(context) {
        for i in start..start + context {
            inputs.push(sequence.get(i).copied().unwrap_or(PAD));
            targets.push(sequence.get(i + 1).copied().unwrap_or(IGNORE_TOKEN));
        }
        count += 1;
    }
    count
}

impl Source for Text {
    const NAME: &'static str = "text";
    type Config = TextConfig;

    fn check(c: &TextConfig, dir: &Path) -> Result<()> {
        c.split.check()?;
        corpora(c, dir).map(|_| ())
    }

    fn footprint(c: &TextConfig, dir: &Path) -> Footprint {
        let bytes: u64 = corpora(c, dir).ok()?.iter().map(Corpus::bytes).sum();
        // Inputs and targets, int64 each, per byte (padding aside).
        Some((
            bytes as u128 * 16,
            format!("data.corpora: {bytes} bytes of text"),
        ))
    }

    fn load(c: &TextConfig, dir: &Path) -> Result<Dataset> {
        let context = c.context as usize;
        // Per split: inputs, targets and each row's corpus.
        let mut parts: [(Vec<i64>, Vec<i64>, Vec<usize>); 3] = Default::default();
        let corpora = corpora(c, dir)?;
        for (index, corpus) in corpora.iter().enumerate() {
            let seed = c.seed ^ stream(&corpus.name);
            let split_of = assign(corpus.documents.len(), &c.split, true, seed)?;
            // data.max_bytes may be what left too few documents.
            let more = match c.max_bytes {
                0 => "give the corpus more files".to_string(),
                cap => format!(
                    "data.max_bytes = {cap} keeps only these of its files: raise it, or give the corpus more files"
                ),
            };
            for (s, split) in ["train", "val", "test"].iter().enumerate() {
                if !split_of.contains(&s) {
                    return Err(Error::config(
                        format!("corpora.{}", corpus.name),
                        format!(
                            "its {} documents leave the {split} split without one (split by document with data.split); {more}",
                            corpus.documents.len()
                        ),
                    ));
                }
            }
            for ((path, used), &s) in corpus.documents.iter().zip(&split_of) {
                let mut bytes = std::fs::read(path).map_err(|e| Error::Unreadable {
                    path: path.clone(),
                    reason: taskweave_plugin_api::io_reason(&e),
                })?;
                bytes.truncate(*used as usize);
                let (inputs, targets, rows) = &mut parts[s];
                let n = windows(&bytes, context, inputs, targets);
                rows.extend(std::iter::repeat_n(index, n));
            }
        }
        let tasks: Vec<Task> = corpora
            .iter()
            .map(|corpus| {
                Task::new(
                    corpus.name.clone(),
                    TaskType::TokenMulticlass {
                        classes: BYTES,
                        length: context,
                    },
                )
            })
            .collect();
        let [train, val, test] = parts.map(|(inputs, targets, rows)| -> Result<Split> {
            let n = rows.len() as i64;
            let targets = Tensor::from_slice(&targets).f_reshape([n, context as i64])?;
            let rows = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
            Ok(Split {
                inputs: vec![(
                    TOKENS.to_string(),
                    Tensor::from_slice(&inputs).f_reshape([n, context as i64])?,
                )],
                targets: (0..corpora.len())
                    .map(|_| targets.shallow_clone())
                    .collect(),
                masks: (0..corpora.len())
                    .map(|t| Ok(Some(rows.f_eq(t as i64)?)))
                    .collect::<Result<_>>()?,
            })
        });
        Ok(Dataset {
            tasks,
            inputs: vec![InputSpec::index(TOKENS, vec![context], vec![VOCAB])],
            train: train?,
            val: val?,
            test: test?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_predict_every_byte_once_after_bos_and_pad_the_last() {
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        assert_eq!(windows(b"abcde", 4, &mut inputs, &mut targets), 2);
        let (a, e) = (b'a' as i64, b'e' as i64);
        assert_eq!(inputs, [BOS, a, a + 1, a + 2, a + 3, e, PAD, PAD]);
        assert_eq!(
            targets,
            [
                a,
                a + 1,
                a + 2,
                a + 3,
                e,
                IGNORE_TOKEN,
                IGNORE_TOKEN,
                IGNORE_TOKEN
            ]
        );
        // A document filling its windows exactly leaves no empty window.
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        assert_eq!(windows(b"abc", 2, &mut inputs, &mut targets), 2);
        assert_eq!(targets, [a, a + 1, a + 2, IGNORE_TOKEN]);
    }

    fn corpus_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (corpus, text) in [
            ("prose", "the cat sat on the mat. "),
            ("code", "fn f(x) { x }\n"),
        ] {
            std::fs::create_dir(dir.path().join(corpus)).unwrap();
            for i in 0..10 {
                let body = text.repeat(i + 1);
                std::fs::write(dir.path().join(corpus).join(format!("{i}.txt")), body).unwrap();
            }
        }
        std::fs::write(dir.path().join("prose/empty.txt"), "").unwrap();
        dir
    }

    fn config(patterns: &[(&str, &str)], max_bytes: u64) -> TextConfig {
        TextConfig {
            corpora: patterns
                .iter()
                .map(|(n, p)| (n.to_string(), vec![p.to_string()]))
                .collect(),
            context: 16,
            split: Fractions::default(),
            seed: 3,
            max_bytes,
        }
    }

    #[test]
    fn corpora_become_masked_tasks_split_by_document_with_every_byte_a_target_once() {
        let dir = corpus_dir();
        let c = config(&[("prose", "prose/*.txt"), ("code", "code/*")], 0);
        let data = Text::load(&c, dir.path()).unwrap();
        data.check("text").unwrap();
        assert_eq!(data.tasks.len(), 2);
        assert_eq!(data.tasks[0].name, "prose");
        let total: i64 =
            (1..=10).map(|i| i * 24).sum::<i64>() + (1..=10).map(|i| i * 14).sum::<i64>();
        let mut labelled = 0;
        for split in [&data.train, &data.val, &data.test] {
            let valid = split.targets[0].ne(IGNORE_TOKEN);
            labelled += valid.sum(tch::Kind::Int64).int64_value(&[]);
            // Each row belongs to exactly one corpus.
            let both = split.masks[0]
                .as_ref()
                .unwrap()
                .logical_xor(split.masks[1].as_ref().unwrap());
            assert!(bool::try_from(both.all()).unwrap());
        }
        assert_eq!(labelled, total);
        // Documents, not windows, are split: 8/1/1 of each corpus's 10.
        let rows_of = |s: &Split, t: usize| {
            s.masks[t]
                .as_ref()
                .unwrap()
                .sum(tch::Kind::Int64)
                .int64_value(&[])
        };
        assert!(rows_of(&data.val, 0) >= 2 && rows_of(&data.val, 0) <= 16);
        let again = Text::load(&c, dir.path()).unwrap();
        assert!(again.train.inputs[0].1.equal(&data.train.inputs[0].1));
    }

    #[test]
    fn a_corpus_alone_holds_out_the_same_documents_as_beside_others() {
        let dir = corpus_dir();
        let both = Text::load(
            &config(&[("prose", "prose/*"), ("code", "code/*")], 0),
            dir.path(),
        )
        .unwrap();
        let alone = Text::load(&config(&[("code", "code/*")], 0), dir.path()).unwrap();
        let rows = |s: &Split, t: usize| {
            let index = s.masks[t].as_ref().unwrap().nonzero().squeeze_dim(1);
            s.inputs[0].1.index_select(0, &index)
        };
        assert!(rows(&both.test, 1).equal(&rows(&alone.test, 0)));
        assert!(rows(&both.train, 1).equal(&rows(&alone.train, 0)));
    }

    #[test]
    fn max_bytes_caps_each_corpus_and_bad_globs_name_their_corpus() {
        let dir = corpus_dir();
        let mut c = config(&[("prose", "prose/*"), ("code", "code/*")], 500);
        // Fewer documents pass the cap: halves and quarters still give each split one.
        c.split = Fractions {
            train: 0.5,
            val: 0.25,
            test: 0.25,
        };
        let capped = Text::load(&c, dir.path()).unwrap();
        for t in 0..2 {
            let bytes: i64 = [&capped.train, &capped.val, &capped.test]
                .iter()
                .map(|s| {
                    let mask = s.masks[t].as_ref().unwrap().unsqueeze(1);
                    s.targets[t]
                        .ne(IGNORE_TOKEN)
                        .logical_and(&mask)
                        .sum(tch::Kind::Int64)
                        .int64_value(&[])
                })
                .sum();
            assert_eq!(bytes, 500);
        }
        let e = Text::check(
            &config(&[("prose", "prose/*"), ("c", "nothing/*.h")], 0),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("data.corpora.c: the patterns [\"nothing/*.h\"] match no non-empty file"),
            "{e}"
        );
        let e = Text::check(&config(&[("p", "prose/[")], 0), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("data.corpora.p: `prose/[` is not a glob pattern"),
            "{e}"
        );
        let e = Text::load(&config(&[("p", "prose/1.txt")], 0), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("data.corpora.p: its 1 documents leave the val split without one")
                && e.ends_with("give the corpus more files"),
            "{e}"
        );
        // Ten files, of which a cap of 4 bytes keeps one: the cap is named.
        let e = Text::load(&config(&[("p", "prose/*")], 4), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("data.max_bytes = 4 keeps only these"), "{e}");
    }
}
