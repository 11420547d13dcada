//! Integration tests, one binary with a module per area (ripgrep's layout).

mod abi;
mod cli;
mod defects;
mod fuzz;
mod sam;
mod training;
