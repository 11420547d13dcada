//! What a command produces besides its results: how it fails, and the one
//! table layout every listing uses.

use std::io::Write;

use taskweave::Error;

/// Why a command did not finish.
pub enum Failure {
    /// The runtime refused or failed; its exit code says which.
    Taskweave(Error),
    /// Standard output could not be written (closed pipe, full disk).
    Output(std::io::Error),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        Failure::Taskweave(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::Output(err)
    }
}

/// Columns of text, each as wide as its widest cell; numbers right-aligned.
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles; a title starting with `>` is
    /// right-aligned (the `>` is not shown).
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header
                .iter()
                .map(|h| h.trim_start_matches('>').to_string())
                .collect(),
            right: header.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the header and the rows.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = " ".repeat(widths[c].saturating_sub(cell.chars().count()));
                let last = c + 1 == row.len();
                match (self.right[c], last) {
                    (true, _) => line.push_str(&format!("{pad}{cell}")),
                    (false, true) => line.push_str(cell),
                    (false, false) => line.push_str(&format!("{cell}{pad}")),
                }
                if !last {
                    line.push_str("  ");
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}
