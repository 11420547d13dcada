//! glibc's allocator, set for training loops.
//!
//! A training step on the CPU allocates and frees the same large tensors
//! (activations, gradients of a few MB each) every step. With glibc's defaults
//! the freed memory at the top of the heap goes back to the kernel and comes
//! back as fresh zeroed pages on the next step, and blocks above the adaptive
//! mmap threshold are mapped and unmapped each time: page faults and page
//! clearing were about 17 % of a Multi-Fashion SAM-MTL run's `perf` samples.
//! [`tune`] keeps that memory in the process instead, as PyTorch's CUDA caching
//! allocator does on the GPU (measured in
//! bench/results/2026-12-05-speed-ceilings.md: a standard Multi-Fashion step
//! 1.4×, SAM-MTL 1.5–1.7× faster). The cost: a process holds on to up to
//! [`TRIM_THRESHOLD`] of freed memory after its peak.

/// Blocks below this come from the heap rather than their own mapping:
/// glibc's largest allowed value on 64-bit targets.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Freed memory at the top of the heap is given back to the kernel only
/// above this.
pub const TRIM_THRESHOLD: usize = 1 << 30;
/// The heap grows by this much more than asked, so that growing is rare.
pub const TOP_PAD: usize = 256 << 20;

/// Sets glibc's allocator for a training process (the `taskweave` command
/// does, before running the command; an embedding program may call it too) unless the user
/// set it already through `MALLOC_*` variables or `GLIBC_TUNABLES`, which then
/// stand. Returns whether it changed anything: false there, and on targets
/// without glibc.
pub fn tune() -> bool {
    if let Some(name) = user_setting(std::env::vars_os().map(|(k, _)| k)) {
        tracing::debug!("{name} is set: glibc's allocator is left as the user set it");
        return false;
    }
    set()
}

/// The first environment variable among `names` through which a user sets
/// glibc's allocator.
fn user_setting(names: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    names
        .filter_map(|n| n.into_string().ok())
        .find(|n| n.starts_with("MALLOC_") || n == "GLIBC_TUNABLES")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> bool {
    let settings = [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_TOP_PAD, TOP_PAD),
    ];
    // mallopt returns 1 on success; a refused value leaves glibc's default.
    settings
        .iter()
        .all(|&(param, value)| unsafe { libc::mallopt(param, value as libc::c_int) } == 1)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        list.iter()
            .map(|s| std::ffi::OsString::from(*s))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_users_own_allocator_setting_stands() {
        assert_eq!(user_setting(names(&["PATH", "HOME"])), None);
        assert_eq!(
            user_setting(names(&["PATH", "MALLOC_ARENA_MAX"])).as_deref(),
            Some("MALLOC_ARENA_MAX")
        );
        assert_eq!(
            user_setting(names(&["GLIBC_TUNABLES"])).as_deref(),
            Some("GLIBC_TUNABLES")
        );
        assert_eq!(user_setting(names(&["MY_MALLOC_"])), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_every_setting() {
        // Process-wide, and harmless to the other tests: it is what the CLI does.
        assert!(set(), "mallopt refused one of the settings");
    }
}
