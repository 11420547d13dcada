//! Reports of a run: plots.

pub mod plot;
