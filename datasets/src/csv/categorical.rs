//! The id columns of a `csv` table: categorical `fields` (one value per cell)
//! and behaviour `sequences` (a delimiter-separated list of values per cell,
//! oldest first). Values are tokens, not numbers: each vocabulary numbers the
//! values of the training rows 1, 2, … in order of first appearance, and 0
//! stands for padding and for any value training never saw, so validation
//! and test rows cannot leak new ids into the model. Unseen sequence items
//! are masked out like padding; an unseen field value keeps id 0, whose
//! vector no training row updates.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use taskweave_plugin_api::config::JsonSchema;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::{InputSpec, FIELDS};

/// A split's inputs, by name.
type NamedInputs = Vec<(String, Tensor)>;

/// One behaviour sequence column: `sequences.<name> = { ... }` becomes the
/// inputs `seq.<name>` (int64 `[length]`, padded at the end with 0) and
/// `seq.<name>.mask` (bool, false at padding).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// The column holding the list (default: the sequence's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The entry of `fields` whose ids the items share (the candidate item's
    /// column, so that a model can compare them); absent: the sequence
    /// numbers its items itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How many of the most recent items are kept.
    #[schemars(range(min = 1, max = MAX_LENGTH))]
    pub length: u32,
    /// What separates the items inside a cell.
    #[serde(default = "bar")]
    #[schemars(length(min = 1))]
    pub separator: String,
}

/// The longest sequence kept.
const MAX_LENGTH: u32 = 65536;

fn bar() -> String {
    "|".into()
}

/// Values to ids: 1..=n in order of first appearance, 0 for the rest.
#[derive(Default)]
struct Vocabulary(HashMap<String, i64>);

impl Vocabulary {
    fn add(&mut self, value: &str) {
        let next = self.0.len() as i64 + 1;
        self.0.entry(value.to_string()).or_insert(next);
    }

    fn id(&self, value: &str) -> i64 {
        self.0.get(value).copied().unwrap_or(0)
    }

    /// Ids in use, padding included.
    fn size(&self) -> usize {
        self.0.len() + 1
    }
}

/// One sequence column, resolved against the header.
pub(super) struct SequenceColumn {
    /// The behaviour's name (`seq.<name>`).
    pub name: String,
    /// Its column in the file.
    pub column: usize,
    length: usize,
    separator: String,
    /// The entry of `fields` whose vocabulary the items share.
    field: Option<usize>,
}

impl SequenceColumn {
    /// Resolves `spec` of sequence `name`, whose column is `column`, against
    /// the field names `fields`.
    pub fn new(name: &str, spec: &SequenceSpec, column: usize, fields: &[String]) -> Result<Self> {
        // The schema's limits, for callers that load without validating.
        if !(1..=MAX_LENGTH).contains(&spec.length) {
            return Err(Error::config(
                format!("sequences.{name}.length"),
                format!("{} items: keep between 1 and {MAX_LENGTH}", spec.length),
            ));
        }
        if spec.separator.is_empty() {
            return Err(Error::config(
                format!("sequences.{name}.separator"),
                "is empty; give the text between two items, such as \"|\"",
            ));
        }
        let field = match &spec.field {
            Some(field) => Some(fields.iter().position(|f| f == field).ok_or_else(|| {
                Error::config(
                    format!("sequences.{name}.field"),
                    format!(
                        "`{field}` is not one of `fields` ({}); name the column of the items the sequence lists",
                        fields.join(", ")
                    ),
                )
            })?),
            None => None,
        };
        Ok(SequenceColumn {
            name: name.to_string(),
            column,
            length: spec.length as usize,
            separator: spec.separator.clone(),
            field,
        })
    }

    /// The items of one cell, oldest first.
    fn items<'a>(&self, cell: &'a str) -> Vec<&'a str> {
        cell.split(self.separator.as_str())
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    }
}

/// The raw id cells of every row, kept until the split is known.
pub(super) struct IdColumns {
    fields: usize,
    sequences: Vec<SequenceColumn>,
    /// Per sequence, its vocabulary: its field's, or its own after the fields'.
    vocabulary_of: Vec<usize>,
    /// `fields` values per row, row-major.
    field_values: Vec<String>,
    /// Per sequence, per row, its items.
    items: Vec<Vec<Vec<String>>>,
}

impl IdColumns {
    /// Holds `fields` field values and `sequences` per row.
    pub fn new(fields: usize, sequences: Vec<SequenceColumn>) -> IdColumns {
        let items = sequences.iter().map(|_| Vec::new()).collect();
        let mut next = fields;
        let vocabulary_of = sequences
            .iter()
            .map(|s| {
                s.field.unwrap_or_else(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        IdColumns {
            fields,
            sequences,
            vocabulary_of,
            field_values: Vec::new(),
            items,
        }
    }

    /// Whether the table has no id column at all.
    pub fn is_empty(&self) -> bool {
        self.fields == 0 && self.sequences.is_empty()
    }

    /// The sequence columns.
    pub fn sequences(&self) -> &[SequenceColumn] {
        &self.sequences
    }

    /// Appends one row: its field cells, then its sequence cells.
    pub fn push(&mut self, field_cells: Vec<String>, sequence_cells: Vec<&str>) {
        self.field_values.extend(field_cells);
        for ((items, sequence), cell) in self
            .items
            .iter_mut()
            .zip(&self.sequences)
            .zip(sequence_cells)
        {
            items.push(
                sequence
                    .items(cell)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            );
        }
    }

    /// The vocabularies of the training rows `train`: one per field, then
    /// one per sequence that shares none.
    fn vocabularies(&self, train: &[usize]) -> Result<Vec<Vocabulary>> {
        let count = self
            .vocabulary_of
            .iter()
            .map(|&v| v + 1)
            .fold(self.fields, usize::max);
        let mut vocabularies: Vec<Vocabulary> = (0..count).map(|_| Vocabulary::default()).collect();
        for &r in train {
            for (f, vocabulary) in vocabularies.iter_mut().take(self.fields).enumerate() {
                vocabulary.add(&self.field_values[r * self.fields + f]);
            }
            for (&v, items) in self.vocabulary_of.iter().zip(&self.items) {
                let vocabulary = &mut vocabularies[v];
                for item in &items[r] {
                    vocabulary.add(item);
                }
            }
        }
        for (sequence, items) in self.sequences.iter().zip(&self.items) {
            // An empty training split is refused later, naming the split.
            if !train.is_empty() && train.iter().all(|&r| items[r].is_empty()) {
                return Err(Error::config(
                    format!("sequences.{}", sequence.name),
                    "the sequence is empty in every training row: nothing to learn from; check the column and `separator`",
                ));
            }
        }
        Ok(vocabularies)
    }

    /// The inputs of each split (`rows[s]`: its rows, train first) and their
    /// specs.
    pub fn inputs(&self, rows: [&[usize]; 3]) -> Result<(Vec<InputSpec>, [NamedInputs; 3])> {
        let vocabularies = self.vocabularies(rows[0])?;
        let mut specs = Vec::new();
        if self.fields > 0 {
            let sizes = vocabularies[..self.fields]
                .iter()
                .map(Vocabulary::size)
                .collect();
            specs.push(InputSpec::index(FIELDS, vec![self.fields], sizes));
        }
        for (sequence, &v) in self.sequences.iter().zip(&self.vocabulary_of) {
            let size = vocabularies[v].size();
            let name = format!("seq.{}", sequence.name);
            specs.push(InputSpec::index(
                name.clone(),
                vec![sequence.length],
                vec![size],
            ));
            specs.push(InputSpec::mask(
                format!("{name}.mask"),
                vec![sequence.length],
            ));
        }
        let split = |rows: &[usize]| -> Result<NamedInputs> {
            let n = rows.len() as i64;
            let mut inputs = Vec::new();
            if self.fields > 0 {
                let ids: Vec<i64> = rows
                    .iter()
                    .flat_map(|&r| (0..self.fields).map(move |f| (r, f)))
                    .map(|(r, f)| vocabularies[f].id(&self.field_values[r * self.fields + f]))
                    .collect();
                inputs.push((
                    FIELDS.to_string(),
                    Tensor::f_from_slice(&ids)?.f_view([n, self.fields as i64])?,
                ));
            }
            for ((sequence, items), &v) in self
                .sequences
                .iter()
                .zip(&self.items)
                .zip(&self.vocabulary_of)
            {
                let vocabulary = &vocabularies[v];
                let length = sequence.length;
                let mut ids = Vec::with_capacity(rows.len() * length);
                let mut mask = Vec::with_capacity(rows.len() * length);
                for &r in rows {
                    // The most recent `length` items, oldest first.
                    let kept = &items[r][items[r].len().saturating_sub(length)..];
                    // An item training never saw (id 0) is left out like padding:
                    // its vector was never trained.
                    let known: Vec<i64> = kept.iter().map(|item| vocabulary.id(item)).collect();
                    mask.extend(known.iter().map(|&id| id != 0));
                    mask.extend(std::iter::repeat_n(false, length - kept.len()));
                    ids.extend(known);
                    ids.extend(std::iter::repeat_n(0, length - kept.len()));
                }
                let name = format!("seq.{}", sequence.name);
                inputs.push((
                    name.clone(),
                    Tensor::f_from_slice(&ids)?.f_view([n, length as i64])?,
                ));
                inputs.push((
                    format!("{name}.mask"),
                    Tensor::f_from_slice(&mask)?.f_view([n, length as i64])?,
                ));
            }
            Ok(inputs)
        };
        Ok((specs, [split(rows[0])?, split(rows[1])?, split(rows[2])?]))
    }
}
