//! A binary copy of the parsed files beside them, so a load after the first
//! skips parsing. It is keyed by a hash of both files' bytes: edited or
//! replaced files are parsed again and the copy rewritten. A copy that cannot
//! be read or written only costs the parse (logged), never the load.

use std::path::{Path, PathBuf};

use super::columns::{CATEGORICAL, NUMERIC};
use super::parse::{Parsed, Table};

const MAGIC: &[u8; 8] = b"TWCENSUS";
const FORMAT: u32 = 1;
/// The copy's file name, in the data folder.
pub const FILE: &str = "census-income.cache";

/// The key of the two files' contents.
pub fn key(train: &[u8], test: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(train.len() as u64).to_le_bytes());
    hasher.update(train);
    hasher.update(test);
    hasher.digest()
}

/// The parsed files stored under `key` in `dir`, if there is a readable copy.
pub fn read(dir: &Path, key: u64) -> Option<Parsed> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    let parsed = decode(&bytes, key);
    if parsed.is_none() {
        tracing::info!(
            "{}: stale or unreadable, parsing the files again",
            dir.join(FILE).display()
        );
    }
    parsed
}

/// Stores `parsed` under `key` in `dir` (written whole, then renamed).
pub fn write(dir: &Path, key: u64, parsed: &Parsed) {
    let path = dir.join(FILE);
    let tmp: PathBuf = dir.join(format!("{FILE}.tmp{}", std::process::id()));
    let result =
        std::fs::write(&tmp, encode(parsed, key)).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(
            "cannot write {}: {}; the next load parses the files again",
            path.display(),
            taskweave_plugin_api::io_reason(&e)
        );
    }
}

fn encode(parsed: &Parsed, key: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&key.to_le_bytes());
    for values in &parsed.vocab {
        out.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for v in values {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
    for table in [&parsed.train, &parsed.test] {
        out.extend_from_slice(&(table.rows as u64).to_le_bytes());
        out.extend(table.numeric.iter().flat_map(|v| v.to_le_bytes()));
        out.extend(table.codes.iter().flat_map(|v| v.to_le_bytes()));
    }
    out
}

/// Reads little-endian values off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn table(&mut self) -> Option<Table> {
        let rows = usize::try_from(self.u64()?).ok()?;
        let numeric = self
            .take(rows.checked_mul(NUMERIC * 4)?)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4")))
            .collect();
        let codes = self
            .take(rows.checked_mul(CATEGORICAL * 2)?)?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes(b.try_into().expect("chunks of 2")))
            .collect();
        Some(Table {
            rows,
            numeric,
            codes,
        })
    }
}

fn decode(bytes: &[u8], key: u64) -> Option<Parsed> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC || r.u32()? != FORMAT || r.u64()? != key {
        return None;
    }
    let mut vocab = Vec::with_capacity(CATEGORICAL);
    for _ in 0..CATEGORICAL {
        let n = r.u32()? as usize;
        let mut values = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = r.u32()? as usize;
            values.push(String::from_utf8(r.take(len)?.to_vec()).ok()?);
        }
        vocab.push(values);
    }
    let (train, test) = (r.table()?, r.table()?);
    // Every id must index its vocabulary, and nothing may follow.
    let fits = |t: &Table| {
        t.codes.chunks(CATEGORICAL).all(|row| {
            row.iter()
                .zip(&vocab)
                .all(|(&id, v)| (id as usize) < v.len())
        })
    };
    (r.0.is_empty() && fits(&train) && fits(&test)).then_some(Parsed { vocab, train, test })
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, tests::line};
    use super::*;

    fn parsed() -> Parsed {
        let train = [
            line(30.0, "B", "Never married", "- 50000."),
            line(41.5, "C", "Divorced", "50000+."),
        ]
        .join("\n");
        let test = line(50.0, "D", "Divorced", "50000+.");
        parse(
            train.as_bytes(),
            test.as_bytes(),
            [Path::new("a"), Path::new("b")],
        )
        .unwrap()
    }

    #[test]
    fn a_copy_reads_back_equal_under_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = parsed();
        write(dir.path(), 7, &p);
        assert_eq!(read(dir.path(), 7), Some(parsed()));
        assert_eq!(read(dir.path(), 8), None, "another key: the files changed");
    }

    #[test]
    fn a_damaged_copy_is_ignored_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 7, &parsed());
        let path = dir.path().join(FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(read(dir.path(), 7), None, "truncated");
        let mut bad = bytes.clone();
        let last = bad.len() - 2;
        bad[last] = 0xff;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read(dir.path(), 7), None, "an id outside its vocabulary");
    }
}
