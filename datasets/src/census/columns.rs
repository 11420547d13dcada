//! The 42 columns of UCI Census-Income (KDD), in file order, as the data
//! set's description (`census-income.names`) lists them.

/// How a column is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// A number, standardised into `features`.
    Numeric,
    /// A category (some are written as numeric codes), an id in `fields`.
    Categorical,
    /// The survey's instance weight, which the description says not to use
    /// for classification: skipped.
    Weight,
}

use Column::{Categorical as C, Numeric as N, Weight as W};

/// Every column: name and how it is read.
pub const COLUMNS: [(&str, Column); 42] = [
    ("age", N),
    ("class of worker", C),
    ("detailed industry recode", C),
    ("detailed occupation recode", C),
    ("education", C),
    ("wage per hour", N),
    ("enroll in edu inst last wk", C),
    ("marital stat", C),
    ("major industry code", C),
    ("major occupation code", C),
    ("race", C),
    ("hispanic origin", C),
    ("sex", C),
    ("member of a labor union", C),
    ("reason for unemployment", C),
    ("full or part time employment stat", C),
    ("capital gains", N),
    ("capital losses", N),
    ("dividends from stocks", N),
    ("tax filer stat", C),
    ("region of previous residence", C),
    ("state of previous residence", C),
    ("detailed household and family stat", C),
    ("detailed household summary in household", C),
    ("instance weight", W),
    ("migration code-change in msa", C),
    ("migration code-change in reg", C),
    ("migration code-move within reg", C),
    ("live in this house 1 year ago", C),
    ("migration prev res in sunbelt", C),
    ("num persons worked for employer", N),
    ("family members under 18", C),
    ("country of birth father", C),
    ("country of birth mother", C),
    ("country of birth self", C),
    ("citizenship", C),
    ("own business or self employed", C),
    ("fill inc questionnaire for veteran's admin", C),
    ("veterans benefits", C),
    ("weeks worked in year", N),
    ("year", C),
    ("income", C),
];

/// The index among the categorical columns of file column `column`.
pub fn categorical_index(column: usize) -> usize {
    COLUMNS[..column].iter().filter(|(_, c)| *c == C).count()
}

/// Number of numeric columns.
pub const NUMERIC: usize = 7;
/// Number of categorical columns (the income label among them).
pub const CATEGORICAL: usize = 34;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_table() {
        let count = |kind| COLUMNS.iter().filter(|(_, c)| *c == kind).count();
        assert_eq!((count(N), count(C), count(W)), (NUMERIC, CATEGORICAL, 1));
        assert_eq!(categorical_index(41), CATEGORICAL - 1);
        assert_eq!(
            categorical_index(4),
            3,
            "education follows three categoricals"
        );
    }
}
