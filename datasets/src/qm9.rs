//! `qm9`: the QM9 molecules (Ramakrishnan et al., "Quantum chemistry structures
//! and properties of 134 kilo molecules", Scientific Data 2014) as the CSV files
//! of the PyPI package `qm9pack==1.0.3` (`make qm9` downloads them into
//! `data/qm9/`): `qm9_part1.csv`, `qm9_part2.csv`, `qm9_part3.csv`, 130,831
//! molecules of up to 29 atoms (H, C, N, O, F) with DFT (B3LYP/6-31G(2df,p))
//! geometries and properties.
//!
//! One regression task per target; the default is the 11 targets of the
//! multi-task learning literature (Nash-MTL, FAMO; `gap` is also available).
//! Targets keep the file's units, so metrics (MAE, MSE) come out in them:
//!
//! | target | column | unit |
//! |---|---|---|
//! | `mu` | `Dipole_debye` | Debye |
//! | `alpha` | `Polarizability_bohr3` | Bohr³ |
//! | `homo` | `HOMO_au` | Hartree |
//! | `lumo` | `LUMO_au` | Hartree |
//! | `gap` | `HOMO_LUMO_gap_au` | Hartree |
//! | `r2` | `R2_bohr2` | Bohr² |
//! | `zpve` | `ZPVE_au` | Hartree |
//! | `u0` | `InternalEnergy_0K_au` | Hartree |
//! | `u298` | `InternalEnergy_298K_au` | Hartree |
//! | `h298` | `Enthalphy_298K_au` | Hartree |
//! | `g298` | `GibbsFreeEnergy_298K_au` | Hartree |
//! | `cv` | `Heatcapacity_Cv_cal_mol_K` | cal/(mol·K) |
//!
//! (The literature's tables, through PyTorch Geometric, report the energies in
//! eV: 1 Hartree = 27.211386 eV.)
//!
//! Featurisation (34 inputs per molecule), from the columns `Elements` and
//! `XYZ_Ang` only:
//!
//! - 29 eigenvalues of the Coulomb matrix (Rupp et al., "Fast and accurate
//!   modeling of molecular atomization energies with machine learning", PRL
//!   2012): with nuclear charges Z (H 1, C 6, N 7, O 8, F 9) and positions R in
//!   Bohr (the file's Ångström × 1.8897261246), C_ii = 0.5·Z_i^2.4 and
//!   C_ij = Z_i·Z_j / |R_i − R_j|, zero-padded to 29 × 29; its eigenvalues
//!   (float64, `linalg.eigvalsh`) sorted by decreasing absolute value (the
//!   padding contributes zeros at the end). They are invariant to atom order,
//!   rotation and translation.
//! - the numbers of H, C, N, O and F atoms.
//!
//! A seeded shuffle of all molecules picks `subset` of them and splits those by
//! the `split` fractions. With `atom_reference` (the default), each target first
//! loses its least-squares fit on the atom counts plus a constant, fitted on the
//! training split: the extensive properties (energies, ZPVE, heat capacity,
//! polarisability) are then learned relative to per-element reference values,
//! as chemists report atomization energies. The offset cancels in prediction
//! errors, so MAEs stay in the file's units. Inputs and targets are standardised
//! with training statistics (targets in float64 before rounding to float32, so the energies
//! keep their precision); each task is trained with MSE on standardised
//! targets, and its primary metric (Δm) is the MAE in original units.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::schemars::{json_schema, Schema, SchemaGenerator};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::io_reason;
use taskweave_plugin_api::rng::SplitMix;
use tch::{Kind, Tensor};

use crate::dataset::standardize;
use crate::error::{Error, Result};
use crate::split::Fractions;
use crate::{DataKind, Dataset, InputSpec, RegressionLoss, Source, Split, Task, TaskType};

/// The data files, in order.
const FILES: [&str; 3] = ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"];
/// The largest QM9 molecule; Coulomb matrices are padded to it.
pub const MAX_ATOMS: usize = 29;
/// Bohr per Ångström (CODATA 2018).
pub const BOHR_PER_ANGSTROM: f64 = 1.8897261246;
/// Elements in feature order with their nuclear charge.
const ELEMENTS: [(&str, f64); 5] = [("H", 1.0), ("C", 6.0), ("N", 7.0), ("O", 8.0), ("F", 9.0)];
/// Number of input features: eigenvalues plus element counts.
const FEATURES: usize = MAX_ATOMS + ELEMENTS.len();
/// Every target: name, column in the files.
const TARGETS: [(&str, &str); 12] = [
    ("mu", "Dipole_debye"),
    ("alpha", "Polarizability_bohr3"),
    ("homo", "HOMO_au"),
    ("lumo", "LUMO_au"),
    ("gap", "HOMO_LUMO_gap_au"),
    ("r2", "R2_bohr2"),
    ("zpve", "ZPVE_au"),
    ("u0", "InternalEnergy_0K_au"),
    ("u298", "InternalEnergy_298K_au"),
    ("h298", "Enthalphy_298K_au"),
    ("g298", "GibbsFreeEnergy_298K_au"),
    ("cv", "Heatcapacity_Cv_cal_mol_K"),
];
/// The 11 targets of Nash-MTL and FAMO.
const DEFAULT_TARGETS: [&str; 11] = [
    "mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u298", "h298", "g298", "cv",
];
/// Molecules per batched eigenvalue call (bounds memory: 8192 × 29 × 29 × 8 B = 55 MB).
const CHUNK: usize = 8192;

/// `[data] kind = "qm9"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Qm9Config {
    /// Folder holding qm9_part1.csv .. qm9_part3.csv (from `make qm9`), relative to the pipeline file.
    pub dir: String,
    /// Number of molecules used, picked by a seeded shuffle (0: all 130,831).
    pub subset: u64,
    /// One regression task per target, in this order.
    #[schemars(length(min = 1))]
    pub targets: Vec<TargetName>,
    /// Fractions of the molecules for each split (after the shuffle).
    pub split: Fractions,
    /// Shuffle seed for the subset and the split (independent of run.seed).
    pub seed: u64,
    /// Learn each target relative to its least-squares fit on the atom counts (training split).
    pub atom_reference: bool,
    /// A low-resource transfer setting (Meta-RTL): the target keeps `labelled`
    /// training labels, the other targets are its sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_resource: Option<LowResource>,
}

/// `low_resource = { target = "gap", labelled = 64, shuffled = "homo" }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LowResource {
    /// The target property (one of `targets`).
    pub target: TargetName,
    /// Training molecules that keep the target's label, drawn with `seed`;
    /// the rest are unlabelled for it (validation and test keep theirs).
    #[schemars(range(min = 1))]
    pub labelled: u64,
    /// A source (one of `targets`, not the target) whose labels, shuffled
    /// within each split, become one more task `<name>-shuffled`: a harmful
    /// source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffled: Option<TargetName>,
}

impl Default for Qm9Config {
    fn default() -> Qm9Config {
        Qm9Config {
            dir: "../data/qm9".into(),
            subset: 20000,
            targets: DEFAULT_TARGETS
                .iter()
                .map(|t| TargetName(t.to_string()))
                .collect(),
            split: Fractions::default(),
            seed: 0,
            atom_reference: true,
            low_resource: None,
        }
    }
}

/// A target's name, one of [`TARGETS`]' (the schema lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetName(pub String);

impl JsonSchema for TargetName {
    fn schema_name() -> Cow<'static, str> {
        "TargetName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
        json_schema!({"type": "string", "enum": names})
    }
}

/// The `qm9` data kind.
pub struct Qm9;

inventory::submit! { DataKind::of::<Qm9>() }

/// Replaces every target by its residual after the least-squares fit
/// `y ≈ c·counts + b` on the first `n_train` molecules (the training split),
/// one fit per target, solved in float64 with a tiny ridge so that an element
/// absent from the training split does not make the system singular.
fn subtract_atom_reference(
    molecules: &[Molecule],
    targets: &mut [Vec<f64>],
    n_train: usize,
) -> Result<()> {
    let design: Vec<f64> = molecules
        .iter()
        .flat_map(|m| {
            let mut row = m.counts().to_vec();
            row.push(1.0);
            row
        })
        .collect();
    let k = ELEMENTS.len() as i64 + 1;
    let x = Tensor::from_slice(&design).f_reshape([molecules.len() as i64, k])?;
    let x_train = x.f_narrow(0, 0, n_train as i64)?;
    let tasks = targets.first().map_or(0, Vec::len) as i64;
    let flat: Vec<f64> = targets.iter().flatten().copied().collect();
    let y = Tensor::from_slice(&flat).f_reshape([molecules.len() as i64, tasks])?;
    let gram = x_train
        .f_tr()?
        .f_matmul(&x_train)?
        .f_add(&Tensor::f_eye(k, (Kind::Double, tch::Device::Cpu))?.f_mul_scalar(1e-9)?)?;
    let coef = Tensor::f_linalg_solve(
        &gram,
        &x_train
            .f_tr()?
            .f_matmul(&y.f_narrow(0, 0, n_train as i64)?)?,
        true,
    )?;
    let residual = y.f_sub(&x.f_matmul(&coef)?)?;
    let values = Vec::<f64>::try_from(residual.f_reshape([-1])?)?;
    for (row, chunk) in targets.iter_mut().zip(values.chunks(tasks as usize)) {
        row.copy_from_slice(chunk);
    }
    Ok(())
}

/// One molecule: element indices into `ELEMENTS` and positions in Ångström.
#[derive(Clone, Debug, PartialEq)]
pub struct Molecule {
    pub elements: Vec<usize>,
    pub positions: Vec<[f64; 3]>,
}

impl Molecule {
    /// The Coulomb matrix zero-padded to 29 × 29 (row-major, 841 values).
    #[cfg(test)]
    fn coulomb(&self) -> Vec<f64> {
        let mut c = Vec::with_capacity(MAX_ATOMS * MAX_ATOMS);
        self.coulomb_into(MAX_ATOMS, &mut c);
        c
    }

    /// Appends the Coulomb matrix zero-padded to `size` × `size` (at least the
    /// number of atoms) to `out`, row-major.
    fn coulomb_into(&self, size: usize, out: &mut Vec<f64>) {
        let start = out.len();
        out.resize(start + size * size, 0.0);
        let c = &mut out[start..];
        let z: Vec<f64> = self.elements.iter().map(|&e| ELEMENTS[e].1).collect();
        for i in 0..z.len().min(size) {
            c[i * size + i] = 0.5 * z[i].powf(2.4);
            for j in 0..i {
                let d = distance(&self.positions[i], &self.positions[j]) * BOHR_PER_ANGSTROM;
                let v = z[i] * z[j] / d;
                c[i * size + j] = v;
                c[j * size + i] = v;
            }
        }
    }

    /// Atoms of H, C, N, O, F.
    pub fn counts(&self) -> [f64; 5] {
        let mut n = [0.0; 5];
        for &e in &self.elements {
            n[e] += 1.0;
        }
        n
    }
}

fn distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The features of `molecules`: float64 `[N, 34]`, the Coulomb eigenvalues by
/// decreasing absolute value, then the element counts.
///
/// The eigenvalues of a zero-padded matrix are those of its atoms' block plus
/// zeros, so molecules are grouped by atom count and each group is one batched
/// `eigvalsh` on its own size (a third of the work of padding all to 29), then
/// padded with exact zeros.
pub fn features(molecules: &[Molecule]) -> Result<Tensor> {
    let mut by_size: Vec<Vec<usize>> = vec![Vec::new(); MAX_ATOMS + 1];
    for (i, m) in molecules.iter().enumerate() {
        let atoms = m.elements.len();
        if atoms == 0 || atoms > MAX_ATOMS || m.positions.len() != atoms {
            return Err(Error::config(
                "dir",
                format!(
                    "molecule {i}: {atoms} elements and {} positions; QM9 molecules have 1 to {MAX_ATOMS} atoms",
                    m.positions.len()
                ),
            ));
        }
        by_size[atoms].push(i);
    }
    let n = molecules.len() as i64;
    let width = MAX_ATOMS as i64;
    let mut eig = Tensor::f_zeros([n, width], (Kind::Double, tch::Device::Cpu))?;
    for (size, rows) in by_size.iter().enumerate() {
        for chunk in rows.chunks(CHUNK) {
            let mut flat = Vec::with_capacity(chunk.len() * size * size);
            for &i in chunk {
                molecules[i].coulomb_into(size, &mut flat);
            }
            let (k, s) = (chunk.len() as i64, size as i64);
            let e = Tensor::from_slice(&flat)
                .f_reshape([k, s, s])?
                .f_linalg_eigvalsh("L")?;
            let order = e.f_abs()?.f_argsort_stable(true, -1, true)?;
            let e = e
                .f_gather(-1, &order, false)?
                .f_constant_pad_nd([0, width - s])?;
            let index: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let _ = eig.f_index_copy_(0, &Tensor::from_slice(&index), &e)?;
        }
    }
    let counts: Vec<f64> = molecules.iter().flat_map(|m| m.counts()).collect();
    let counts = Tensor::from_slice(&counts).f_reshape([n, ELEMENTS.len() as i64])?;
    Ok(Tensor::f_cat(&[eig, counts], 1)?)
}

/// One data file, read, with the position of every row.
struct Table {
    path: PathBuf,
    bytes: Vec<u8>,
    rows: Vec<csv::Position>,
    elements: usize,
    xyz: usize,
    targets: Vec<(usize, &'static str)>,
}

/// One parsed row: its rank in the shuffled order, the molecule and its targets.
type Row = (usize, Molecule, Vec<f64>);

fn missing(dir: &Path, what: &str) -> String {
    format!(
        "QM9 data not found: {what} (in {}). Run `make qm9` in the repository root to download it \
         (qm9pack 1.0.3 from PyPI, 104 MB), or set data.dir to the folder holding {} (relative to the pipeline file)",
        dir.display(),
        FILES.join(", ")
    )
}

/// Reads `path` and indexes its rows; `columns` are the target columns.
fn scan(path: &Path, columns: &[&'static str]) -> Result<Table> {
    let file_error = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::Unreadable {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    })?;
    let mut reader = csv::ReaderBuilder::new().from_reader(Cursor::new(bytes.as_slice()));
    let header = reader
        .byte_headers()
        .map_err(|e| file_error(format!("cannot read the header row: {e}")))?
        .clone();
    let column = |name: &str| -> Result<usize> {
        header.iter().position(|h| h == name.as_bytes()).ok_or_else(|| {
            file_error(format!(
                "no column `{name}`; this is not a qm9pack 1.0.3 file (delete data/qm9 and run `make qm9` again)"
            ))
        })
    };
    let (elements, xyz) = (column("Elements")?, column("XYZ_Ang")?);
    let targets = columns
        .iter()
        .map(|&c| Ok((column(c)?, c)))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let position = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(true) => rows.push(position),
            Ok(false) => break,
            Err(e) => {
                let why = match e.kind() {
                    csv::ErrorKind::UnequalLengths { pos, len, .. } => {
                        let line = pos.as_ref().map_or(0, |p| p.line());
                        format!(
                            "row {line} has {len} fields, but the header has {}",
                            header.len()
                        )
                    }
                    _ => e.to_string(),
                };
                return Err(file_error(why));
            }
        }
    }
    drop(reader);
    Ok(Table {
        path: path.to_path_buf(),
        bytes,
        rows,
        elements,
        xyz,
        targets,
    })
}

/// Parses the rows `wanted` (rank, row index) of `table`.
fn parse(table: &Table, wanted: &[(usize, usize)]) -> Result<Vec<Row>> {
    let file_error = |message: String| Error::File {
        path: table.path.clone(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(Cursor::new(table.bytes.as_slice()));
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::with_capacity(wanted.len());
    for &(rank, row) in wanted {
        let position = &table.rows[row];
        let line = position.line();
        let bad = |column: &str, why: String| Error::Cell {
            path: table.path.clone(),
            row: line,
            column: column.to_string(),
            message: why,
        };
        let read = reader
            .seek(position.clone())
            .and_then(|_| reader.read_byte_record(&mut record))
            .map_err(|e| file_error(format!("row {line}: {e}")))?;
        if !read {
            return Err(file_error(format!(
                "row {line} is missing (did the file change while loading?)"
            )));
        }
        let field = |i: usize| std::str::from_utf8(record.get(i).unwrap_or_default()).unwrap_or("");
        let elements = parse_elements(field(table.elements)).map_err(|why| bad("Elements", why))?;
        let positions =
            parse_positions(field(table.xyz), elements.len()).map_err(|why| bad("XYZ_Ang", why))?;
        let molecule = Molecule {
            elements,
            positions,
        };
        let mut targets = Vec::with_capacity(table.targets.len());
        for &(col, name) in &table.targets {
            let raw = field(col);
            targets.push(crate::float32(raw.trim()).map_err(|why| bad(name, why))?);
        }
        out.push((rank, molecule, targets));
    }
    Ok(out)
}

/// `['C','H','H']` → element indices.
fn parse_elements(raw: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = raw
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("`{raw}` is not a list like ['C','H']"))?;
    let elements = inner
        .split(',')
        .map(|s| {
            let s = s.trim().trim_matches(|c| c == '\'' || c == '"');
            ELEMENTS
                .iter()
                .position(|e| e.0 == s)
                .ok_or_else(|| format!("unknown element `{s}` (QM9 has H, C, N, O, F)"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if elements.is_empty() || elements.len() > MAX_ATOMS {
        return Err(format!(
            "{} atoms; QM9 molecules have 1 to {MAX_ATOMS}",
            elements.len()
        ));
    }
    Ok(elements)
}

/// `[[x,y,z],...]` (Ångström) → `atoms` positions; no two may coincide.
fn parse_positions(raw: &str, atoms: usize) -> std::result::Result<Vec<[f64; 3]>, String> {
    let numbers = raw
        .split(',')
        .map(|s| {
            let s = s.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace());
            crate::float32(s)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if numbers.len() != 3 * atoms {
        return Err(format!(
            "{} coordinates for {atoms} atoms (Elements); expected {}",
            numbers.len(),
            3 * atoms
        ));
    }
    let positions: Vec<[f64; 3]> = numbers
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    for i in 0..atoms {
        for j in 0..i {
            if distance(&positions[i], &positions[j]) < 1e-6 {
                return Err(format!(
                    "atoms {} and {} are at the same position",
                    j + 1,
                    i + 1
                ));
            }
        }
    }
    Ok(positions)
}

fn root(config: &Qm9Config, dir: &Path) -> PathBuf {
    dir.join(&config.dir)
}

impl Source for Qm9 {
    const NAME: &'static str = "qm9";
    type Config = Qm9Config;

    fn check(config: &Qm9Config, dir: &Path) -> Result<()> {
        config.split.check()?;
        columns(config)?;
        let root = root(config, dir);
        if !root.is_dir() {
            return Err(Error::config(
                "dir",
                missing(
                    &root,
                    match root.exists() {
                        true => "it is a file; data.dir names the folder that holds the files",
                        false => "the folder does not exist",
                    },
                ),
            ));
        }
        match FILES.iter().find(|f| !root.join(f).is_file()) {
            Some(absent) => Err(Error::config(
                "dir",
                missing(&root, &format!("{absent} does not exist")),
            )),
            None => Ok(()),
        }
    }

    fn load(config: &Qm9Config, dir: &Path) -> Result<Dataset> {
        Qm9::check(config, dir)?;
        load(config, &root(config, dir))
    }
}

/// The file column of each target, each named at most once, and the
/// low-resource setting checked against them: what `check` can refuse
/// before any file is read.
fn columns(config: &Qm9Config) -> Result<Vec<&'static str>> {
    let names: Vec<&str> = config.targets.iter().map(|t| t.0.as_str()).collect();
    let mut columns = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(&(_, column)) = TARGETS.iter().find(|t| t.0 == *name) else {
            let valid: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
            return Err(Error::config(
                "targets",
                format!("unknown target `{name}`; valid: {}", valid.join(", ")),
            ));
        };
        if names[..i].contains(name) {
            return Err(Error::config(
                "targets",
                format!("`{name}` is listed twice; give each target once"),
            ));
        }
        columns.push(column);
    }
    if columns.is_empty() {
        return Err(Error::config("targets", "empty: name at least one target"));
    }
    if let Some(low) = &config.low_resource {
        check_low_resource(low, &names, config.atom_reference)?;
    }
    Ok(columns)
}

fn load(config: &Qm9Config, root: &Path) -> Result<Dataset> {
    let columns = columns(config)?;
    let names: Vec<&str> = config.targets.iter().map(|t| t.0.as_str()).collect();

    // Index every row of the three files (one thread each), then pick the subset.
    let clock = std::time::Instant::now();
    let tables: Vec<Table> = std::thread::scope(|s| {
        let handles: Vec<_> = FILES
            .iter()
            .map(|f| {
                let (path, columns) = (root.join(f), &columns);
                s.spawn(move || scan(&path, columns))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Torch("reading the QM9 files panicked".to_string()))
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let total: usize = tables.iter().map(|t| t.rows.len()).sum();
    let subset = match config.subset as usize {
        0 => total,
        n if n > total => {
            return Err(Error::config(
                "subset",
                format!(
                    "{n}, but {} holds {total} molecules; use at most {total} (or 0 for all)",
                    root.display()
                ),
            ))
        }
        n => n,
    };
    let mut order: Vec<usize> = (0..total).collect();
    SplitMix::at(config.seed, 0).shuffle(&mut order);
    order.truncate(subset);

    // Parse the chosen rows, each file's in file order (one thread each).
    let mut wanted: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tables.len()];
    for (rank, &global) in order.iter().enumerate() {
        let mut row = global;
        for (f, table) in tables.iter().enumerate() {
            if row < table.rows.len() {
                wanted[f].push((rank, row));
                break;
            }
            row -= table.rows.len();
        }
    }
    wanted
        .iter_mut()
        .for_each(|w| w.sort_unstable_by_key(|&(_, row)| row));
    let parsed: Vec<Vec<Row>> = std::thread::scope(|s| {
        let handles: Vec<_> = tables
            .iter()
            .zip(&wanted)
            .map(|(t, w)| s.spawn(move || parse(t, w)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Torch("parsing the QM9 files panicked".to_string()))
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    drop(tables);
    let mut rows: Vec<Option<(Molecule, Vec<f64>)>> = (0..subset).map(|_| None).collect();
    for (rank, molecule, targets) in parsed.into_iter().flatten() {
        rows[rank] = Some((molecule, targets));
    }
    let (molecules, targets): (Vec<Molecule>, Vec<Vec<f64>>) = rows.into_iter().flatten().unzip();
    let n = molecules.len();
    let parsed_in = clock.elapsed().as_secs_f64();

    // Features for all at once, then the splits in shuffled order.
    let x = features(&molecules)?.f_to_kind(Kind::Float)?;
    let [n_train, n_val, _] = config.split.counts(n)?;
    let bounds = [
        (0, n_train),
        (n_train, n_val),
        (n_train + n_val, n - n_train - n_val),
    ];
    let [x_train, x_val, x_test] =
        bounds.map(|(start, len)| x.f_narrow(0, start as i64, len as i64));
    let (mut x_train, mut x_val, mut x_test) = (x_train?, x_val?, x_test?);
    if n_train > 0 {
        standardize([&mut x_train, &mut x_val, &mut x_test])?;
    }
    let mut targets = targets;
    if config.atom_reference && n_train > 0 {
        subtract_atom_reference(&molecules, &mut targets, n_train)?;
    }
    let mut tasks = Vec::with_capacity(names.len());
    let mut y: [Vec<Tensor>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (t, name) in names.iter().enumerate() {
        let train = &targets[..n_train];
        let mean = train.iter().map(|r| r[t]).sum::<f64>() / n_train.max(1) as f64;
        let var = train.iter().map(|r| (r[t] - mean).powi(2)).sum::<f64>() / n_train.max(1) as f64;
        let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        for (split, (start, len)) in y.iter_mut().zip(bounds) {
            let values: Vec<f32> = targets[start..start + len]
                .iter()
                .map(|r| ((r[t] - mean) / std) as f32)
                .collect();
            split.push(Tensor::from_slice(&values));
        }
        tasks.push(Task {
            name: name.to_string(),
            kind: TaskType::Regression,
            loss: RegressionLoss::Mse,
            scale: Some((mean, std)),
            primary: "mae",
        });
    }
    let [mut y_train, mut y_val, mut y_test] = y;
    let mut masks: Vec<Option<Tensor>> = tasks.iter().map(|_| None).collect();
    if let Some(low) = &config.low_resource {
        let target = names.iter().position(|n| *n == low.target.0).unwrap_or(0);
        if low.labelled as usize > n_train {
            return Err(Error::config(
                "low_resource.labelled",
                format!(
                    "{} labelled molecules, but the training split has {n_train}",
                    low.labelled
                ),
            ));
        }
        // The target's labelled rows, and its scale from those rows only.
        let mut rows: Vec<usize> = (0..n_train).collect();
        SplitMix::at(config.seed, 1).shuffle(&mut rows);
        let mut keep = vec![false; n_train];
        for &r in &rows[..low.labelled as usize] {
            keep[r] = true;
        }
        let raw: Vec<f64> = (0..n_train)
            .filter(|&r| keep[r])
            .map(|r| targets[r][target])
            .collect();
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        let var = raw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / raw.len() as f64;
        let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        for (split, (start, len)) in [&mut y_train, &mut y_val, &mut y_test]
            .into_iter()
            .zip(bounds)
        {
            let values: Vec<f32> = targets[start..start + len]
                .iter()
                .map(|r| ((r[target] - mean) / std) as f32)
                .collect();
            split[target] = Tensor::from_slice(&values);
        }
        tasks[target].scale = Some((mean, std));
        if names.len() == 1 {
            // The target alone: the training split is its labelled molecules.
            let rows: Vec<i64> = (0..n_train as i64).filter(|&r| keep[r as usize]).collect();
            let rows = Tensor::from_slice(&rows);
            x_train = x_train.f_index_select(0, &rows)?;
            y_train[target] = y_train[target].f_index_select(0, &rows)?;
        } else {
            masks[target] = Some(Tensor::from_slice(&keep));
        }
        if let Some(source) = &low.shuffled {
            let s = names.iter().position(|n| *n == source.0).unwrap_or(0);
            for (k, split) in [&mut y_train, &mut y_val, &mut y_test]
                .into_iter()
                .enumerate()
            {
                let mut order: Vec<i64> = (0..split[s].size()[0]).collect();
                SplitMix::at(config.seed, 2 + k as u64).shuffle(&mut order);
                let shuffled = split[s].f_index_select(0, &Tensor::from_slice(&order))?;
                split.push(shuffled);
            }
            let mut task = tasks[s].clone();
            task.name = format!("{}-shuffled", source.0);
            tasks.push(task);
            masks.push(None);
        }
    }
    tracing::debug!(
        "qm9: {n} of {total} molecules from {} in {:.2}s (reading and parsing {parsed_in:.2}s)",
        root.display(),
        clock.elapsed().as_secs_f64()
    );
    let split = |x: Tensor, targets: Vec<Tensor>, masks: Vec<Option<Tensor>>| Split {
        inputs: vec![(crate::FEATURES.to_string(), x)],
        masks,
        targets,
    };
    let unmasked = || tasks.iter().map(|_| None).collect::<Vec<_>>();
    Ok(Dataset {
        inputs: vec![InputSpec::float(crate::FEATURES, vec![FEATURES])],
        train: split(x_train, y_train, masks),
        val: split(x_val, y_val, unmasked()),
        test: split(x_test, y_test, unmasked()),
        tasks,
    })
}

/// The low-resource setting names a target among `targets` (alone: the
/// target-only baseline and the fine-tuning run), a harmful source among the
/// others, and no atom-count fit (which would use every training label of
/// the target). The labelled rows depend only on `seed` and the split, so
/// every run of one setting sees the same ones.
fn check_low_resource(low: &LowResource, names: &[&str], atom_reference: bool) -> Result<()> {
    if !names.contains(&low.target.0.as_str()) {
        return Err(Error::config(
            "low_resource.target",
            format!(
                "`{}` is not one of the targets ({})",
                low.target.0,
                names.join(", ")
            ),
        ));
    }
    if let Some(source) = &low.shuffled {
        if source == &low.target || !names.contains(&source.0.as_str()) {
            return Err(Error::config(
                "low_resource.shuffled",
                format!(
                    "`{}` must be one of the targets other than the target `{}`",
                    source.0, low.target.0
                ),
            ));
        }
    }
    if atom_reference {
        return Err(Error::config(
            "low_resource",
            "set atom_reference = false: the atom-count fit would use every training label of the target",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const HEADER: &str = "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,Harmonic_Freq_cmi,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,LUMO_au,HOMO_LUMO_gap_au,R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,Enthalphy_298K_au,GibbsFreeEnergy_298K_au,Heatcapacity_Cv_cal_mol_K";
    /// The first six molecules of qm9_part1.csv, verbatim.
    const ROWS: [&str; 6] = [
        r#""dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]","['C','H','H','H','H']","[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],[-0.5238136345,1.4379326443,0.9063972942]]","[-0.535689,0.133921,0.133922,0.133923,0.133923]","[1341.307,1341.3284,1341.365,1562.6731,1562.7453,3038.3205,3151.6034,3151.6788,3151.7078]",157.7118,157.70997,157.70699,0.,13.21,-0.3877,0.1171,0.5048,35.3641,0.044749,-40.47893,-40.476062,-40.475117,-40.498597,6.469"#,
        r#""dsgdb9nsd_000002.xyz",2,"N","InChI=1S/H3N/h1H3",4,"[3,0,1,0,0]","['N','H','H','H']","[[-0.0404260543,1.0241077531,0.0625637998],[0.0172574639,0.0125452063,-0.0273771593],[0.9157893661,1.3587451948,-0.0287577581],[-0.5202777357,1.3435321258,-0.7755426124]]","[-0.707143,0.235712,0.235712,0.23572]","[1103.8733,1684.1158,1684.3072,3458.7145,3575.2414,3575.3343]",293.60975,293.54111,191.39397,1.6256,9.46,-0.257,0.0829,0.3399,26.1563,0.034358,-56.525887,-56.523026,-56.522082,-56.544961,6.316"#,
        r#""dsgdb9nsd_000003.xyz",3,"O","InChI=1S/H2O/h1H2",3,"[2,0,0,1,0]","['O','H','H']","[[-0.0343604951,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,0.0015346341],[0.8717903737,1.3007924048,0.0006931336]]","[-0.589706,0.294853,0.294853]","[1671.4222,3803.6305,3907.698]",799.58812,437.90386,282.94545,1.8511,6.31,-0.2928,0.0687,0.3615,19.0002,0.021375,-76.404702,-76.401867,-76.400922,-76.422349,6.002"#,
        r#""dsgdb9nsd_000004.xyz",4,"C#C","InChI=1S/C2H2/c1-2/h1-2H",4,"[2,2,0,0,0]","['C','C','H','H']","[[0.5995394918,0.,1.],[-0.5995394918,0.,1.],[-1.6616385861,0.,1.],[1.6616385861,0.,1.]]","[-0.207019,-0.207019,0.207019,0.207019]","[549.7648,549.7648,795.2713,795.2713,2078.1131,3455.8096,3557.8599]",0.,35.6100361,35.6100361,0.,16.28,-0.2845,0.0506,0.3351,59.5248,0.026841,-77.308427,-77.305527,-77.304583,-77.327429,8.574"#,
        r#""dsgdb9nsd_000005.xyz",5,"C#N","InChI=1S/CHN/c1-2/h1H",3,"[1,1,1,0,0]","['C','N','H']","[[-0.0133239314,1.1324657151,0.0082758861],[0.0023107217,-0.0191585871,0.0019287305],[-0.0278026991,2.1989492963,0.0141537903]]","[-0.049656,-0.188473,0.238128]","[799.0101,799.0101,2198.4393,3490.3686]",0.,44.593883,44.593883,2.8937,12.99,-0.3604,0.0191,0.3796,48.7476,0.016601,-93.411888,-93.40937,-93.408425,-93.431246,6.278"#,
        r#""dsgdb9nsd_000006.xyz",6,"C=O","InChI=1S/CH2O/c1-2/h1H2",4,"[2,1,0,1,0]","['C','O','H','H']","[[-0.0139776956,1.1802114286,0.0077524981],[0.0023139861,-0.0196636557,0.0021610727],[0.9149602868,1.789511172,0.0039565555],[-0.9591097173,1.7640179751,0.0171828436]]","[-0.031232,-0.165864,0.098548,0.098548]","[1201.9838,1272.5136,1544.4691,1846.4364,2882.3231,2929.819]",285.48839,38.9823,34.29892,2.1089,14.18,-0.267,-0.0406,0.2263,59.9891,0.026603,-114.483613,-114.480746,-114.479802,-114.505268,6.413"#,
    ];

    fn water() -> Molecule {
        let positions = vec![
            [-0.0343604951, 0.9775395708, 0.0076015923],
            [0.0647664923, 0.0205721989, 0.0015346341],
            [0.8717903737, 1.3007924048, 0.0006931336],
        ];
        Molecule {
            elements: vec![3, 0, 0],
            positions,
        }
    }

    fn eigenvalues(molecule: &Molecule) -> Vec<f64> {
        let f = Vec::<f64>::try_from(features(std::slice::from_ref(molecule)).unwrap().view(-1))
            .unwrap();
        f[..MAX_ATOMS].to_vec()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn coulomb_matrix_and_eigenvalues_of_h2_and_water() {
        // H2 at 0.74 Å: C = [[0.5, 1/d], [1/d, 0.5]] with d in Bohr, eigenvalues 0.5 ± 1/d.
        let h2 = Molecule {
            elements: vec![0, 0],
            positions: vec![[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]],
        };
        let off = 1.0 / (0.74 * 1.8897261246);
        assert!(close(off, 0.715104339, 1e-8));
        let c = h2.coulomb();
        assert_eq!((c[0], c[MAX_ATOMS + 1]), (0.5, 0.5));
        assert!(close(c[1], off, 1e-12) && close(c[MAX_ATOMS], off, 1e-12));
        assert!(
            c[2..MAX_ATOMS]
                .iter()
                .chain(&c[2 * MAX_ATOMS..])
                .all(|v| *v == 0.0),
            "zero padding"
        );
        let e = eigenvalues(&h2);
        assert!(
            close(e[0], 1.215104339, 1e-8) && close(e[1], -0.215104339, 1e-8),
            "{e:?}"
        );
        assert!(
            e[2..].iter().all(|v| v.abs() < 1e-12),
            "padding gives zero eigenvalues: {e:?}"
        );

        // Water (QM9 molecule 3): C_OO = 0.5·8^2.4, C_OH = 8/|R_O − R_H|, C_HH = 1/|R_H − R_H|.
        let c = water().coulomb();
        assert!(close(c[0], 73.51669472, 1e-7), "{}", c[0]);
        assert!(close(c[1], 4.40015353, 1e-7) && close(c[2], 4.40015353, 1e-7));
        assert!(close(c[MAX_ATOMS + 2], 0.34967090, 1e-7));
        // (0, 1, −1)/√2 is an eigenvector with eigenvalue C_HH_diag − C_HH = 0.5 − 0.3496709;
        // the other two are those of the 2×2 block, and all three sum to the trace.
        let e = eigenvalues(&water());
        let want = [74.04572192, 0.32064370, 0.5 - 0.34967090];
        assert!(e.iter().zip(want).all(|(a, b)| close(*a, b, 1e-7)), "{e:?}");
        assert!(close(e.iter().sum::<f64>(), 73.51669472 + 1.0, 1e-7));
    }

    #[test]
    fn element_counts() {
        assert_eq!(water().counts(), [2.0, 0.0, 0.0, 1.0, 0.0]);
        let f = Vec::<f64>::try_from(features(&[water()]).unwrap().view(-1)).unwrap();
        assert_eq!(f.len(), FEATURES);
        assert_eq!(&f[MAX_ATOMS..], &[2.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(
            parse_elements("['C','N','O','F','H','H']").unwrap(),
            vec![1, 2, 3, 4, 0, 0]
        );
        assert!(parse_elements("['C','Cl']")
            .unwrap_err()
            .contains("unknown element `Cl`"));
    }

    #[test]
    fn features_are_invariant_to_atom_order_rotation_and_translation() {
        // Formaldehyde (QM9 molecule 6), from its row.
        let row: Vec<&str> = ROWS[5].split("\",\"").collect();
        let elements = parse_elements(row[2]).unwrap();
        let positions = parse_positions(row[3], elements.len()).unwrap();
        let molecule = Molecule {
            elements,
            positions,
        };
        assert_eq!(molecule.counts(), [2.0, 1.0, 0.0, 1.0, 0.0]);

        let order = [2, 0, 3, 1];
        let (a, b) = (0.7_f64, -1.3_f64);
        // A rotation about z by a, then about x by b, then a translation.
        let moved = |p: &[f64; 3]| {
            let (x, y, z) = (
                a.cos() * p[0] - a.sin() * p[1],
                a.sin() * p[0] + a.cos() * p[1],
                p[2],
            );
            [
                x + 3.0,
                b.cos() * y - b.sin() * z - 1.5,
                b.sin() * y + b.cos() * z + 0.25,
            ]
        };
        let other = Molecule {
            elements: order.iter().map(|&i| molecule.elements[i]).collect(),
            positions: order
                .iter()
                .map(|&i| moved(&molecule.positions[i]))
                .collect(),
        };
        let both = Vec::<f64>::try_from(features(&[molecule, other]).unwrap().view(-1)).unwrap();
        let (f, g) = both.split_at(FEATURES);
        assert!(
            f.iter().zip(g).all(|(x, y)| close(*x, *y, 1e-9)),
            "{f:?}\n{g:?}"
        );
        assert!(
            f[0] > f[1] && f[1].abs() >= f[2].abs(),
            "sorted by decreasing |λ|: {f:?}"
        );
    }

    #[test]
    fn grouped_eigenvalues_equal_those_of_the_padded_matrices() {
        let h2 = Molecule {
            elements: vec![0, 0],
            positions: vec![[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]],
        };
        let molecules = [water(), h2, water()];
        let flat: Vec<f64> = molecules.iter().flat_map(Molecule::coulomb).collect();
        let padded = Tensor::from_slice(&flat)
            .view([3, 29, 29])
            .linalg_eigvalsh("L");
        let padded = padded.gather(-1, &padded.abs().argsort(-1, true), false);
        let grouped = features(&molecules).unwrap().narrow(1, 0, 29);
        let diff = (grouped - padded).abs().max().double_value(&[]);
        assert!(diff < 1e-10, "{diff}");
        let e = features(&[Molecule {
            elements: vec![0],
            positions: vec![],
        }])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("1 elements and 0 positions"), "{e}");
    }

    fn write(dir: &Path, rows: [&[&str]; 3]) {
        for (file, part) in FILES.iter().zip(rows) {
            let text: String = std::iter::once(HEADER)
                .chain(part.iter().copied())
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(dir.join(file), text).unwrap();
        }
    }

    fn config(extra: Value) -> Value {
        let mut c = json!({"dir": "qm9", "subset": 0, "targets": DEFAULT_TARGETS,
                           "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 0});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// What the runtime does with a validated `[data]` table.
    fn load(config: &Value, dir: &Path) -> Result<Dataset> {
        let typed: Qm9Config = taskweave_plugin_api::config::typed(config).unwrap();
        Qm9::load(&typed, dir)
    }

    fn error(rows: [&[&str]; 3], extra: Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qm9")).unwrap();
        write(&dir.path().join("qm9"), rows);
        match load(&config(extra), dir.path()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_directory_or_file_says_make_qm9() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&config(json!({})), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("QM9 data not found: the folder does not exist") && e.contains("make qm9"),
            "{e}"
        );
        assert!(e.contains("data.dir"), "{e}");
        // data.dir naming one of the files.
        std::fs::write(dir.path().join("qm9"), HEADER).unwrap();
        let e = load(&config(json!({})), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("it is a file; data.dir names the folder"), "{e}");
        std::fs::remove_file(dir.path().join("qm9")).unwrap();
        std::fs::create_dir(dir.path().join("qm9")).unwrap();
        std::fs::write(dir.path().join("qm9/qm9_part1.csv"), HEADER).unwrap();
        let e = load(&config(json!({})), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("qm9_part2.csv does not exist") && e.contains("make qm9"),
            "{e}"
        );
    }

    #[test]
    fn loads_a_tiny_copy_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qm9")).unwrap();
        write(
            &dir.path().join("qm9"),
            [&ROWS[..2], &ROWS[2..4], &ROWS[4..]],
        );
        let d = load(&config(json!({"atom_reference": false})), dir.path()).unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (3, 2, 1));
        assert_eq!(d.inputs[0].shape, [FEATURES]);
        let names: Vec<&str> = d.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, DEFAULT_TARGETS);
        assert!(d
            .tasks
            .iter()
            .all(|t| t.primary == "mae" && t.loss == RegressionLoss::Mse));
        let means =
            Vec::<f32>::try_from(d.train.inputs[0].1.mean_dim(0, false, Kind::Float)).unwrap();
        assert!(
            means.iter().all(|m| m.abs() < 1e-5),
            "standardised inputs: {means:?}"
        );
        // Undoing the scale gives back the file's u0 values (Hartree) of all six molecules.
        let u0 = names.iter().position(|n| *n == "u0").unwrap();
        let (mean, std) = d.tasks[u0].scale.unwrap();
        let mut got: Vec<f64> = [&d.train, &d.val, &d.test]
            .iter()
            .flat_map(|s| Vec::<f32>::try_from(&s.targets[u0]).unwrap())
            .map(|v| v as f64 * std + mean)
            .collect();
        got.sort_by(f64::total_cmp);
        let want = [
            -114.483613,
            -93.411888,
            -77.308427,
            -76.404702,
            -56.525887,
            -40.47893,
        ];
        assert!(
            got.iter().zip(want).all(|(a, b)| close(*a, b, 1e-5)),
            "{got:?}"
        );

        // Relative to the atom-count fit, u0's spread shrinks by orders of
        // magnitude (energies are nearly additive over atoms).
        let referenced = load(&config(json!({})), dir.path()).unwrap();
        let (_, std_ref) = referenced.tasks[u0].scale.unwrap();
        assert!(
            std_ref < 0.01 * std,
            "residual std {std_ref} vs raw std {std}"
        );

        // A subset and another seed; `gap` as the only target.
        let small = json!({"subset": 4, "seed": 7, "targets": ["gap"]});
        let d = load(&config(small), dir.path()).unwrap();
        assert_eq!(
            (d.train.len(), d.val.len(), d.test.len(), d.tasks.len()),
            (2, 1, 1, 1)
        );
        assert_eq!(d.tasks[0].name, "gap");
    }

    #[test]
    fn a_low_resource_target_keeps_n_labels_and_a_shuffled_source_is_added() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qm9")).unwrap();
        write(
            &dir.path().join("qm9"),
            [&ROWS[..2], &ROWS[2..4], &ROWS[4..]],
        );
        let low = |extra: Value| {
            let mut c = json!({"atom_reference": false, "targets": ["homo", "lumo", "gap"],
                               "low_resource": {"target": "gap", "labelled": 2, "shuffled": "homo"}});
            for (k, v) in extra.as_object().unwrap() {
                c["low_resource"][k] = v.clone();
            }
            load(&config(c), dir.path())
        };
        let d = low(json!({})).unwrap();
        let names: Vec<&str> = d.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["homo", "lumo", "gap", "homo-shuffled"]);
        let mask = Vec::<bool>::try_from(d.train.masks[2].as_ref().unwrap()).unwrap();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 2);
        assert!(
            d.test.masks.iter().all(Option::is_none),
            "the target's test labels stay"
        );
        let sorted = |t: &Tensor| {
            let mut v = Vec::<f32>::try_from(t).unwrap();
            v.sort_by(f32::total_cmp);
            v
        };
        assert_eq!(
            sorted(&d.train.targets[3]),
            sorted(&d.train.targets[0]),
            "a permutation of homo"
        );
        d.check("qm9").unwrap();
        let e = |extra: Value| low(extra).err().unwrap().to_string();
        assert_eq!(
            e(json!({"labelled": 5})),
            "data.low_resource.labelled: 5 labelled molecules, but the training split has 3"
        );
        assert!(e(json!({"target": "u0"}))
            .starts_with("data.low_resource.target: `u0` is not one of the targets"));
        assert!(e(json!({"shuffled": "gap"})).starts_with("data.low_resource.shuffled:"));
        // The target alone: its training split is the labelled molecules,
        // the same ones as with sources.
        let alone = load(
            &config(json!({"atom_reference": false, "targets": ["gap"],
                           "low_resource": {"target": "gap", "labelled": 2}})),
            dir.path(),
        )
        .unwrap();
        assert_eq!(alone.train.len(), 2);
        assert!(alone.train.masks[0].is_none());
        let kept = d.train.masks[2].as_ref().unwrap().nonzero().squeeze_dim(1);
        assert!(alone.train.inputs[0]
            .1
            .equal(&d.train.inputs[0].1.index_select(0, &kept)));
        let atom = load(
            &config(
                json!({"targets": ["homo", "gap"], "low_resource": {"target": "gap", "labelled": 2}}),
            ),
            dir.path(),
        );
        assert!(atom
            .err()
            .unwrap()
            .to_string()
            .contains("atom_reference = false"));
    }

    #[test]
    fn bad_rows_and_bad_settings_are_named() {
        let good: &[&str] = &ROWS[..2];
        let broken = ROWS[2].replace("[0.0647664923,", "[0.0647664923x,");
        let e = error([good, &[&broken], good], json!({}));
        assert!(
            e.contains(
                "qm9_part2.csv: row 2, column `XYZ_Ang`: `0.0647664923x` is not a finite number"
            ),
            "{e}"
        );
        let broken = ROWS[2].replace("-76.404702", "nan");
        let e = error([good, good, &[ROWS[3], &broken]], json!({}));
        assert!(
            e.contains(
                "qm9_part3.csv: row 3, column `InternalEnergy_0K_au`: `nan` is not a finite number"
            ),
            "{e}"
        );
        let broken = ROWS[2].replace("-76.404702", "1e39");
        let e = error([good, good, &[ROWS[3], &broken]], json!({}));
        assert!(
            e.contains("column `InternalEnergy_0K_au`: `1e39` is outside the float32 range"),
            "{e}"
        );
        let e = error([good, &["\"x\",1"], good], json!({}));
        assert!(
            e.contains("qm9_part2.csv: row 2 has 2 fields, but the header has 25"),
            "{e}"
        );
        let e = error([good, good, good], json!({"targets": ["u0", "energy"]}));
        assert!(
            e.contains("unknown target `energy`; valid: mu, alpha, homo, lumo, gap, r2"),
            "{e}"
        );
        let e = error([good, good, good], json!({"targets": ["u0", "u0"]}));
        assert!(e.contains("data.targets: `u0` is listed twice"), "{e}");
        // `validate` refuses the targets before any file exists.
        let twice: Qm9Config = taskweave_plugin_api::config::typed(&config(
            json!({"targets": ["u0", "u0"], "dir": "absent"}),
        ))
        .unwrap();
        let e = Qm9::check(&twice, Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("data.targets: `u0` is listed twice"), "{e}");
        let e = error([good, good, good], json!({"subset": 7}));
        assert!(
            e.contains("data.subset: 7, but") && e.contains("holds 6 molecules"),
            "{e}"
        );
    }

    #[test]
    fn schema_defaults_and_target_enum() {
        let s = taskweave_plugin_api::config::schema_for::<Qm9Config>();
        assert_eq!(
            s["properties"]["targets"]["default"]
                .as_array()
                .unwrap()
                .len(),
            11
        );
        assert_eq!(
            s["properties"]["targets"]["items"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            12
        );
        assert_eq!(s["properties"]["subset"]["default"], 20000);
        assert_eq!(s["properties"]["dir"]["default"], "../data/qm9");
    }
}
