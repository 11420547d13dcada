//! taskweave's custom CUDA kernels, each with a CPU/tch reference of the same
//! signature.
//!
//! Three nouns:
//! - [`Kernels`], a cheap handle with one method per operation
//!   ([`Kernels::sam_perturb`], [`Kernels::sam_restore`],
//!   [`Kernels::gramian`], [`Kernels::combine`], [`Kernels::fusion_grid`],
//!   [`Kernels::gate_mix`]).
//!   It dispatches on the tensors' device: CPU tensors go to the reference,
//!   CUDA tensors to the kernel.
//! - [`reference`](mod@reference), the tch implementations: what CPU runs use, what every
//!   kernel is tested against, and the eager baseline it is timed against.
//! - [`Error`], the one error type; nothing here panics on bad input.
//!
//! Design choices:
//! - Kernels are CUDA C in `src/cuda/*.cu`, named `{op}_{dtype}` (f32, bf16).
//!   They are compiled with NVRTC the first time a process needs them (or
//!   taken from PTX built by nvcc at build time, where nvcc exists) and the
//!   PTX is cached on disk keyed by source, architecture and NVRTC version
//!   ([`compile`]).
//! - cudarc drives the primary context, the one libtorch uses, and launches
//!   on libtorch's current stream (obtained through a small C++ shim over
//!   c10, see [`memory`]), so kernels are ordered with libtorch's work and
//!   need no synchronisation. Outputs and workspaces are tensors from
//!   libtorch's caching allocator: one memory pool.
//! - CUDA libraries are loaded lazily and only after
//!   `is_culib_present`-style checks, so CPU-only processes load none of
//!   them and a machine without a GPU gets [`Error::NoCuda`], not a panic.
//!
//! ```no_run
//! use taskweave_kernels::Kernels;
//! use tch::{Device, Kind, Tensor};
//!
//! let kernels = Kernels::new();
//! let grads = Tensor::randn([4, 1000], (Kind::Float, Device::Cpu));
//! let gram = kernels.gramian(&grads)?; // [4, 4]; on CUDA tensors, the kernel
//! let update = kernels.combine(&Tensor::ones([4], (Kind::Float, Device::Cpu)), &grads)?;
//! # Ok::<(), taskweave_kernels::Error>(())
//! ```
#![deny(missing_docs)]

pub mod compile;
mod device;
mod error;
mod kernels;
pub mod nccl;
mod ops;
mod shim;

pub use device::{
    cuda_info, device_count, load_libtorch_cuda, loaded_libtorch, CudaInfo, StreamSource,
    StreamTimer,
};
pub use error::{Error, Result};
pub use kernels::{FusionOutput, GramianBackend, Kernels};

/// The CPU/tch references, one per operation, with the signatures of the
/// [`Kernels`] methods. They run on any device (on CUDA they are the eager
/// libtorch composites the kernels are compared with).
pub mod reference {
    pub use crate::ops::fusion::reference as fusion_grid;
    pub use crate::ops::gate::reference as gate_mix;
    pub use crate::ops::gramian::{reference_combine as combine, reference_gramian as gramian};
    pub use crate::ops::sam::{reference_perturb as sam_perturb, reference_restore as sam_restore};
}

/// libtorch's CUDA caching allocator, through the c10 shim: what the runtime
/// reports per pipeline stage and the knobs it sets. Loads CUDA libraries, so
/// call it only when CUDA is in use.
pub mod memory {
    pub use crate::shim::{
        empty_cache, memory_stats, reset_peak_memory, set_allocator_settings, set_memory_fraction,
        shim_status, MemoryStats,
    };
}

/// Limits of the kernels' arguments.
pub mod limits {
    pub use crate::ops::fusion::{
        MAX_ALPHAS as FUSION_MAX_ALPHAS, MAX_EXPERTS as FUSION_MAX_EXPERTS,
    };
    pub use crate::ops::gate::MAX_SLOTS as GATE_MAX_SLOTS;
}
