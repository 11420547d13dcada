//! [`Kernels`]: the handle through which everyone calls the kernels.
use std::path::PathBuf;

use tch::{Device, Tensor};

use crate::compile::{self, DiskCache, MODULES};
use crate::device;
use crate::error::Result;
pub use crate::ops::fusion::FusionOutput;
use crate::ops::{cuda_ordinal, fusion, gate, gramian, sam};

/// How [`Kernels::gramian`] computes on CUDA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GramianBackend {
    /// The kernel wherever it exists (T <= 16, f32/bf16 gradients), cuBLAS
    /// (libtorch's matmul) otherwise. Default. From `kernel-bench` on an H200
    /// (bench/results/2026-12-04-gpu-h200.md): the kernel was 3.6–13.7×
    /// faster than cuBLAS in f32 at T = 4, 8, 16 and 3× in bf16 at T = 4, 8;
    /// at bf16 T = 16 it was 0.9×, but only as a bf16 product, whose output
    /// cuBLAS rounds to bf16 (relative error 2.2e-3 measured; the reference
    /// now widens bf16 to f32 first, which costs a copy), where the kernel
    /// reads bf16 and keeps f32.
    #[default]
    Auto,
    /// The kernel wherever it exists, like `Auto`.
    Kernel,
    /// Always libtorch's matmul.
    Cublas,
}

/// A cheap, clonable handle on the kernels.
///
/// Every operation has one signature for CPU and CUDA tensors and dispatches
/// on their device: CPU tensors (and dtypes without a kernel) go to the tch
/// reference in [`crate::reference`], CUDA tensors to the kernel, or to the
/// reference when [`Kernels::prefer_reference`] is set. Compiled modules live
/// in one per-process cache shared by every handle; kernels run on libtorch's
/// current stream of the tensors' device, asynchronously, like libtorch ops.
#[derive(Clone, Debug)]
pub struct Kernels {
    prefer_reference: bool,
    gramian: GramianBackend,
    cache: Option<DiskCache>,
}

impl Default for Kernels {
    fn default() -> Self {
        Self::new()
    }
}

impl Kernels {
    /// Kernels on CUDA, references on CPU, PTX cached in
    /// [`compile::default_cache_dir`]. Touches no CUDA library.
    pub fn new() -> Self {
        Kernels {
            prefer_reference: false,
            gramian: GramianBackend::Auto,
            cache: compile::default_cache_dir().map(DiskCache::new),
        }
    }

    /// Run the references on CUDA too (for benchmarking, or as a way around
    /// a kernel problem). Default: false.
    pub fn prefer_reference(mut self, yes: bool) -> Self {
        self.prefer_reference = yes;
        self
    }

    /// How the Gramian is computed on CUDA. Default: [`GramianBackend::Auto`].
    pub fn gramian_backend(mut self, backend: GramianBackend) -> Self {
        self.gramian = backend;
        self
    }

    /// Where compiled PTX is cached; `None` disables the disk cache. Default:
    /// `$XDG_CACHE_HOME/taskweave/kernels` (else `~/.cache/taskweave/kernels`).
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache = dir.map(DiskCache::new);
        self
    }

    fn kernel_device(&self, device: Device) -> Option<usize> {
        cuda_ordinal(device).filter(|_| !self.prefer_reference)
    }

    /// Compiles (or loads from the disk cache) and loads every module for
    /// CUDA device `ordinal`, so that the first training step pays nothing.
    pub fn precompile(&self, ordinal: usize) -> Result<()> {
        let dev = device::device(ordinal)?;
        for m in &MODULES {
            dev.module(m, self.cache.as_ref())?;
        }
        Ok(())
    }

    /// SAM's perturbation of one parameter group (SAM-MTL, Phan et al. 2022):
    /// `backup = θ; θ += ρ · A²g / (‖Ag‖ + 1e-12)` for every tensor, with
    /// A = |θ| when `adaptive` (ASAM), else 1, and one L2 norm over the whole
    /// group. Returns that norm ‖Ag‖ as a 0-d f64 tensor on the group's
    /// device (reading it is a synchronisation the caller may skip).
    ///
    /// `backup` is reused when it already holds tensors of the right shapes,
    /// dtype and device (keep it between steps), else refilled. Parameters
    /// are updated in place without autograd, like `torch.no_grad()`, but the
    /// CUDA kernel does not bump their autograd version counter (the CPU
    /// reference does): a graph built before `sam_perturb` and reused after it
    /// raises libtorch's "modified by an inplace operation" error on CPU and
    /// silently uses the new values on CUDA. Build a new graph after every
    /// perturb and restore (the runtime does: each pass is a new forward). All
    /// tensors share one device and one floating dtype; on CUDA the kernel
    /// takes contiguous f32/bf16 groups in two launches per 256 tensors.
    pub fn sam_perturb(
        &self,
        params: &[Tensor],
        grads: &[Tensor],
        backup: &mut Vec<Tensor>,
        rho: f64,
        adaptive: bool,
    ) -> Result<Tensor> {
        sam::check_rho(rho)?;
        let Some((device, kind)) = sam::check_group("sam_perturb", params, grads, "grads")? else {
            return sam::reference_perturb(params, grads, backup, rho, adaptive);
        };
        match self.kernel_device(device) {
            Some(ordinal) if sam::kernel_supports(params, grads, kind) => {
                let dev = device::device(ordinal)?;
                sam::cuda_perturb(
                    &dev,
                    self.cache.as_ref(),
                    params,
                    grads,
                    backup,
                    rho,
                    adaptive,
                )
            }
            _ => sam::reference_perturb(params, grads, backup, rho, adaptive),
        }
    }

    /// Undoes [`Kernels::sam_perturb`]: `θ = backup`, bit for bit.
    pub fn sam_restore(&self, params: &[Tensor], backup: &[Tensor]) -> Result<()> {
        let Some((device, kind)) = sam::check_group("sam_restore", params, backup, "backup")?
        else {
            return Ok(());
        };
        match self.kernel_device(device) {
            Some(ordinal) if sam::kernel_supports(params, backup, kind) => {
                let dev = device::device(ordinal)?;
                sam::cuda_restore(&dev, self.cache.as_ref(), params, backup, kind)
            }
            _ => sam::reference_restore(params, backup),
        }
    }

    /// The Gramian `G Gᵀ` ([T, T]) of per-task gradients `grads` ([T, P]).
    /// f32 for f32/bf16/f16 gradients, f64 for f64.
    pub fn gramian(&self, grads: &Tensor) -> Result<Tensor> {
        let (t, p, kind) = gramian::check_grads("gramian", grads)?;
        match self.kernel_device(grads.device()) {
            Some(ordinal) if gramian::gramian_kernel_chosen(self.gramian, t, kind) => {
                let dev = device::device(ordinal)?;
                gramian::cuda_gramian(&dev, self.cache.as_ref(), grads, t, p, kind)
            }
            _ => gramian::reference_gramian(grads),
        }
    }

    /// The combination `W G` of per-task gradients `grads` ([T, P]) with
    /// weights `weights` (`[T]` → `[P]`, or `[K, T]` → `[K, P]`), in the gradients'
    /// dtype: the update of EW/UW/MGDA/IMTL-G/..., or PCGrad's projected sum
    /// once its coefficients are worked out on the Gramian. The kernel reads
    /// G once for up to 8 rows of W and 64 tasks.
    pub fn combine(&self, weights: &Tensor, grads: &Tensor) -> Result<Tensor> {
        let (k, t, p, kind) = gramian::check_combine(weights, grads)?;
        match self.kernel_device(grads.device()) {
            Some(ordinal) if gramian::combine_kernel_supports(k, t, kind) => {
                let dev = device::device(ordinal)?;
                gramian::cuda_combine(&dev, self.cache.as_ref(), weights, grads, (k, t, p), kind)
            }
            _ => gramian::reference_combine(weights, grads),
        }
    }

    /// One decoding step of dynamic logit fusion (Fan et al. 2024) for B rows:
    /// `large`, `small` and each of `experts` are [B, V] logits of one dtype.
    /// For every row, every candidate α = a·e_t (a in `alphas`, one expert t
    /// active) is scored by
    /// Σ_t' (KL(P̃‖P) − KL(Q_t'‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t'))²,
    /// P̃ = softmax(M^L + a (M^S_t − M^S)); the best is kept, ties going to
    /// the earliest grid value (the smallest a when `alphas` is sorted), then
    /// the smallest t (a = 0 is P itself for every t, so it resolves to
    /// t = 0). NaN objectives count as +∞. A token that is −∞ in both an
    /// expert and the small model (a masked vocabulary entry) has M^S_t − M^S
    /// = 0 and, with 0 log 0 = 0, adds nothing: a row scores as it would
    /// without its masked tokens. At most 16 experts and 64 grid values.
    pub fn fusion_grid(
        &self,
        large: &Tensor,
        small: &Tensor,
        experts: &[Tensor],
        alphas: &[f64],
    ) -> Result<FusionOutput> {
        let dims = fusion::check(large, small, experts, alphas)?;
        match self.kernel_device(large.device()) {
            Some(ordinal) if fusion::kernel_supports(dims.2) => {
                let dev = device::device(ordinal)?;
                fusion::cuda(
                    &dev,
                    self.cache.as_ref(),
                    large,
                    small,
                    experts,
                    alphas,
                    dims,
                )
            }
            _ => fusion::reference(large, small, experts, alphas),
        }
    }

    /// TaskExpert's gate (Ye & Xu, ICCV 2023) for T tasks over R tokens: per
    /// token and task, `weights = softmax(logits)` over S slots (f32,
    /// `[T, R, S]`), and the mixture `[T, R, d]` = Σ_j weights_j · experts[:, j]
    /// over the n experts (`experts` `[R, n, d]`) plus, when S = n + 1,
    /// the last weight times the task's `memory` (`[T, R, d]`; `None` stands
    /// for zeros, the first selected block). Returns (mixture, weights).
    ///
    /// The kernel reads the experts once for up to 8 tasks and materialises
    /// nothing; it has no backward, so inputs that require gradients (a
    /// training step) take the reference, which autograd differentiates.
    /// At most 32 slots; f32/bf16 on CUDA.
    pub fn gate_mix(
        &self,
        logits: &Tensor,
        experts: &Tensor,
        memory: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (dims, kind) = gate::check(logits, experts, memory)?;
        match self.kernel_device(experts.device()) {
            Some(ordinal)
                if gate::kernel_supports(kind, &[Some(logits), Some(experts), memory]) =>
            {
                let dev = device::device(ordinal)?;
                gate::cuda(
                    &dev,
                    self.cache.as_ref(),
                    logits,
                    experts,
                    memory,
                    (dims, kind),
                )
            }
            _ => gate::reference(logits, experts, memory),
        }
    }
}
