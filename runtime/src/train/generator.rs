//! libtorch keeps one default random generator per device per process, and tch
//! exposes no other. A run re-seeds it (when it builds its model, at every
//! step) so that its draws are a function of (seed, step); runs sharing a
//! process through the embedding API take turns on it, each holding the guard
//! of [`seeded`] from the re-seed until its last draw. Without the turns,
//! concurrent runs interleave their draws and lose reproducibility.

use std::sync::{Mutex, MutexGuard, PoisonError};

use taskweave_plugin_api::rng::SplitMix;

static GENERATOR: Mutex<()> = Mutex::new(());

/// Waits for libtorch's generators, seeds them (CPU and every CUDA device)
/// with `seed`, and holds them until the guard drops.
pub(crate) fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    // A panic while held (plugin panics are caught before they get here) leaves
    // nothing half-done: the next holder re-seeds.
    let guard = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed);
    guard
}

/// The libtorch seed for the `k`-th re-seed of a stream seeded with `seed`
/// (step `k` of a run, sample `k` of a measurement).
pub(crate) fn step_seed(seed: u64, k: u64) -> i64 {
    (SplitMix::at(seed, k).next_u64() >> 1) as i64
}

/// Under data-parallel training, the libtorch seed for the `k`-th forward
/// pass of step `step` on rank `rank`, or (`None`) for what follows it on
/// every rank: each rank draws its own dropout masks, as one process draws
/// one per row, and all return to one stream for a method's later draws.
pub(crate) fn forward_seed(seed: u64, step: u64, k: u64, rank: Option<usize>) -> i64 {
    let stream = rank.map_or(0, |r| r as u64 + 1);
    let key = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (SplitMix::at(key, (step << 16) | (k & 0xffff)).next_u64() >> 1) as i64
}
