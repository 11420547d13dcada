//! `taskweave stats`: what a pipeline's data hold before training on them:
//! per task the rows of a split that have a label, and the Pearson
//! correlation of every pair of scalar tasks' labels over the rows both
//! label (how related the tasks are, for choosing sources or groups).

use std::io::Write;

use serde::Serialize;
use taskweave::{Error, Pipeline};

use super::{write_json, Env};
use crate::args::StatsArgs;
use crate::output::{Failure, Table};

/// What `--json` writes.
#[derive(Serialize)]
struct Stats {
    split: String,
    rows: usize,
    tasks: Vec<String>,
    labelled: Vec<usize>,
    /// `correlation[a][b]`; null where it is not defined.
    correlation: Vec<Vec<Option<f64>>>,
}

pub fn run(env: &Env, args: &StatsArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let at = &args.pipeline;
    let pipeline = Pipeline::from_file(&env.runtime(&at.plugins), &at.pipeline, &at.sets)?;
    // Errors that name a key point at where it was written, as `run`'s do.
    let data = pipeline.load_data().map_err(|e| pipeline.locate(e))?;
    let split = data.split(&args.split).map_err(Error::from)?;
    let stats = Stats {
        split: args.split.clone(),
        rows: split.len(),
        tasks: data.tasks.iter().map(|t| t.name.clone()).collect(),
        labelled: split.labelled().map_err(Error::from)?,
        correlation: split.label_correlations(&data.tasks).map_err(Error::from)?,
    };
    if args.json {
        return write_json(out, &stats);
    }
    writeln!(out, "{} split: {} rows", stats.split, stats.rows)?;
    let mut header = vec!["task", "labelled"];
    header.extend(stats.tasks.iter().map(String::as_str));
    let mut table = Table::new(&header);
    for (t, name) in stats.tasks.iter().enumerate() {
        let mut row = vec![name.clone(), stats.labelled[t].to_string()];
        row.extend(
            stats.correlation[t]
                .iter()
                .map(|r| r.map_or_else(|| "-".to_string(), |r| format!("{r:+.3}"))),
        );
        table.row(row);
    }
    table.write(out)?;
    Ok(())
}
