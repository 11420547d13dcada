//! Integration tests, one binary (linking libtorch once), one module per area:
//! - `reference`: every CPU reference against a naive definition;
//! - `nvrtc`: every .cu module compiles to PTX (skipped, saying why, only when
//!   NVRTC cannot be loaded) and the disk cache;
//! - `no_gpu`: what a machine without CUDA reports;
//! - `gpu`: kernels against references; each test returns early, saying
//!   why, when there is no CUDA device.
mod common;
mod gpu;
mod no_gpu;
mod nvrtc;
mod reference;
