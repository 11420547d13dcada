//! Integration tests, one binary with a module per area (ripgrep's layout).

mod abi;
mod authoring;
mod batch_threads;
mod cli;
mod defects;
mod dense;
mod diffusion;
mod dtrn;
mod fusion;
mod fuzz;
mod grouping;
mod inputs;
mod lm;
mod parallel;
mod peer;
mod protocol;
mod sam;
mod training;
