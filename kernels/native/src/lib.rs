//! Native artifacts of `taskweave-kernels`, produced by this crate's build
//! script: the bytes of the c10 shim library and, where `nvcc` was found at
//! build time, PTX for every kernel module. Only `taskweave-kernels` uses it.
//!
//! The shim is embedded rather than installed next to a binary because
//! taskweave binaries (CLI, tests, benches) are built on one machine and run
//! on another (shared/GPU.md): an `OUT_DIR` path would not exist there, and an
//! install step per binary is easy to forget. The kernels crate writes the
//! bytes once to its cache directory and dlopens them from there.
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/native.rs"));
