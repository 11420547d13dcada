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
