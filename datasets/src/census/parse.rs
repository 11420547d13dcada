//! Parsing the two files into compact tables: numbers as f32, categories as
//! ids into vocabularies built from the training file (id 0 is kept for a
//! value the training file never has).

use std::collections::HashMap;
use std::path::Path;

use super::columns::{Column, CATEGORICAL, COLUMNS, NUMERIC};
use crate::error::{Error, Result};

/// One file's rows.
#[derive(Debug, Default, PartialEq)]
pub struct Table {
    /// Number of rows.
    pub rows: usize,
    /// `rows × NUMERIC`, row-major.
    pub numeric: Vec<f32>,
    /// `rows × CATEGORICAL` vocabulary ids, row-major.
    pub codes: Vec<u16>,
}

/// Both files, parsed.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    /// Per categorical column, its values by id; id 0 is "not in the training file".
    pub vocab: Vec<Vec<String>>,
    /// The training file.
    pub train: Table,
    /// The test file.
    pub test: Table,
}

/// What id 0 of every vocabulary stands for.
pub const UNSEEN: &str = "(not in the training file)";

/// Parses the training and test files' bytes (`paths` for messages).
pub fn parse(train: &[u8], test: &[u8], paths: [&Path; 2]) -> Result<Parsed> {
    let mut ids: Vec<HashMap<String, u16>> = vec![HashMap::new(); CATEGORICAL];
    let mut vocab: Vec<Vec<String>> = vec![vec![UNSEEN.to_string()]; CATEGORICAL];
    let train = table(train, paths[0], |c, value| {
        if let Some(&id) = ids[c].get(value) {
            return Ok(id);
        }
        let id = u16::try_from(vocab[c].len())
            .map_err(|_| "more than 65,535 distinct values".to_string())?;
        ids[c].insert(value.to_string(), id);
        vocab[c].push(value.to_string());
        Ok(id)
    })?;
    let test = table(test, paths[1], |c, value| {
        Ok(ids[c].get(value).copied().unwrap_or(0))
    })?;
    Ok(Parsed { vocab, train, test })
}

/// One file: `", "`-separated, no header, 42 cells per line.
fn table(
    bytes: &[u8],
    path: &Path,
    mut id: impl FnMut(usize, &str) -> Result<u16, String>,
) -> Result<Table> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!(
            "not UTF-8 text (byte {}); the file is corrupt, run `make census` again",
            e.valid_up_to()
        ),
    })?;
    let mut out = Table::default();
    for (line_no, line) in text.lines().enumerate() {
        let row = line_no as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cell = |column: usize, message: String| Error::Cell {
            path: path.to_path_buf(),
            row,
            column: COLUMNS[column.min(COLUMNS.len() - 1)].0.to_string(),
            message,
        };
        let mut cells = 0;
        let mut c = 0;
        for (column, raw) in line.split(',').enumerate() {
            cells += 1;
            if column >= COLUMNS.len() {
                continue;
            }
            let value = raw.trim();
            match COLUMNS[column].1 {
                Column::Numeric => {
                    let v: f32 = value
                        .parse()
                        .ok()
                        .filter(|v: &f32| v.is_finite())
                        .ok_or_else(|| cell(column, format!("`{value}` is not a number")))?;
                    out.numeric.push(v);
                }
                Column::Categorical => {
                    out.codes.push(id(c, value).map_err(|m| cell(column, m))?);
                    c += 1;
                }
                Column::Weight => {}
            }
        }
        if cells != COLUMNS.len() {
            return Err(Error::File {
                path: path.to_path_buf(),
                message: format!(
                    "row {row} has {cells} cells, expected {}; the file is truncated or corrupt, run `make census` again",
                    COLUMNS.len()
                ),
            });
        }
        out.rows += 1;
    }
    debug_assert_eq!(out.numeric.len(), out.rows * NUMERIC);
    if out.rows == 0 {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: "no rows; run `make census` again".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A line of the file format with the given age, education, marital
    /// status and income label; every other cell is a fixed value.
    pub fn line(age: f32, education: &str, marital: &str, income: &str) -> String {
        let cells: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| match (i, kind) {
                (0, _) => age.to_string(),
                (4, _) => education.to_string(),
                (7, _) => marital.to_string(),
                (41, _) => income.to_string(),
                (_, Column::Categorical) => format!("c{}", i % 3),
                _ => "1".to_string(),
            })
            .collect();
        cells.join(", ")
    }

    fn paths() -> [&'static Path; 2] {
        [Path::new("train.csv"), Path::new("test.csv")]
    }

    #[test]
    fn ids_come_from_the_training_file_and_unseen_test_values_get_zero() {
        let train = [
            line(30.0, "Bachelors", "Never married", "- 50000."),
            line(40.0, "Children", "Divorced", "50000+."),
        ]
        .join("\n");
        let test = line(50.0, "Doctorate", "Divorced", "50000+.");
        let p = parse(train.as_bytes(), test.as_bytes(), paths()).unwrap();
        assert_eq!((p.train.rows, p.test.rows), (2, 1));
        let education = super::super::columns::categorical_index(4);
        assert_eq!(p.vocab[education], [UNSEEN, "Bachelors", "Children"]);
        assert_eq!(p.train.codes[CATEGORICAL + education], 2);
        assert_eq!(
            p.test.codes[education], 0,
            "Doctorate is not in the training file"
        );
        assert_eq!(p.test.numeric[0], 50.0);
    }

    #[test]
    fn a_short_row_or_a_bad_number_names_file_row_and_column() {
        let good = line(30.0, "B", "M", "- 50000.");
        let short = format!("{good}\n{}", &good[..good.len() / 2]);
        let e = parse(short.as_bytes(), good.as_bytes(), paths())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("train.csv: row 2 has")
                && e.contains("expected 42")
                && e.contains("make census"),
            "{e}"
        );
        let bad = good.replacen("30", "thirty", 1);
        let e = parse(good.as_bytes(), bad.as_bytes(), paths())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "test.csv: row 1, column `age`: `thirty` is not a number");
        let e = parse(b"", good.as_bytes(), paths())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rows"), "{e}");
    }
}
