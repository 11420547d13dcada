//! The layout the recommendation data kinds (`multi-behaviour-synthetic`,
//! `movielens`) share: categorical `fields` (int64 `[F]`), two behaviour
//! sequences `seq.liked` and `seq.other` (item ids `[L]`, oldest first,
//! padded at the end with id 0) with their masks `seq.<b>.mask`, and the
//! binary tasks `watch` and `like`.

use tch::Tensor;

use crate::error::Result;
use crate::{Dataset, InputSpec, Split, Task, TaskType, FIELDS};

/// The behaviour types, in the order of their inputs.
pub(crate) const BEHAVIOURS: [&str; 2] = ["liked", "other"];

/// One split's samples, built up row by row.
#[derive(Default)]
pub(crate) struct Rows {
    /// `F` ids per row.
    pub fields: Vec<i64>,
    sequences: [Vec<i64>; 2],
    masks: [Vec<bool>; 2],
    /// `watch` labels.
    pub watch: Vec<f32>,
    /// `like` labels.
    pub like: Vec<f32>,
    /// Per row, whether `like` has a label (`None`: every row has).
    pub rated: Option<Vec<bool>>,
}

impl Rows {
    /// Appends behaviour `b`'s sequence `items` (at most `length`), padded.
    pub fn push_sequence(&mut self, b: usize, items: &[i64], length: usize) {
        self.sequences[b].extend(
            items
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, length - items.len())),
        );
        self.masks[b].extend((0..length).map(|p| p < items.len()));
    }

    /// The split of these rows, `F` fields and sequences of `length`.
    fn split(self, fields: usize, length: usize) -> Result<Split> {
        let rows = self.watch.len() as i64;
        let [liked, other] = self.sequences;
        let [liked_mask, other_mask] = self.masks;
        let ids = |v: Vec<i64>, cols: usize| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(&v)?.f_view([rows, cols as i64])?)
        };
        let flags = |v: Vec<bool>| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(&v)?.f_view([rows, length as i64])?)
        };
        let rated = self.rated.map(|r| Tensor::f_from_slice(&r)).transpose()?;
        Ok(Split {
            inputs: vec![
                (FIELDS.to_string(), ids(self.fields, fields)?),
                ("seq.liked".into(), ids(liked, length)?),
                ("seq.liked.mask".into(), flags(liked_mask)?),
                ("seq.other".into(), ids(other, length)?),
                ("seq.other.mask".into(), flags(other_mask)?),
            ],
            targets: vec![
                Tensor::f_from_slice(&self.watch)?,
                Tensor::f_from_slice(&self.like)?,
            ],
            masks: vec![None, rated],
        })
    }
}

/// The data set of the splits `[train, val, test]`: fields of vocabularies
/// `field_vocab`, sequences of `length` ids below `items`.
pub(crate) fn dataset(
    field_vocab: Vec<usize>,
    items: usize,
    length: usize,
    splits: [Rows; 3],
) -> Result<Dataset> {
    let fields = field_vocab.len();
    let mut inputs = vec![InputSpec::index(FIELDS, vec![fields], field_vocab)];
    for b in BEHAVIOURS {
        inputs.push(InputSpec::index(
            format!("seq.{b}"),
            vec![length],
            vec![items],
        ));
        inputs.push(InputSpec::mask(format!("seq.{b}.mask"), vec![length]));
    }
    let [train, val, test] = splits;
    Ok(Dataset {
        tasks: vec![
            Task::new("watch", TaskType::Binary),
            Task::new("like", TaskType::Binary),
        ],
        inputs,
        train: train.split(fields, length)?,
        val: val.split(fields, length)?,
        test: test.split(fields, length)?,
    })
}
