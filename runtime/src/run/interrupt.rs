//! Ctrl-C (SIGINT) or SIGTERM (what `kill`, `timeout`, Slurm and Docker send)
//! during training. The first asks the run to stop after the step in progress
//! and checkpoint it, so no step since the last periodic checkpoint is lost;
//! a second stops the process at once. Only the CLI installs the handler, and
//! only for a run in one process (under `mpirun` the launcher owns the
//! signals; a killed rank's run resumes from its last periodic checkpoint).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked for a stop (0: none yet).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap, write, signal, raise.
    if REQUESTED.swap(signal, Ordering::SeqCst) != 0 {
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    }
    let message: &[u8] = match signal {
        libc::SIGTERM => b"\nSIGTERM: stopping after this step and checkpointing it (a second signal stops at once)\n",
        _ => b"\ninterrupted: stopping after this step and checkpointing it (Ctrl-C again stops at once)\n",
    };
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

/// Makes SIGINT and SIGTERM ask a training run to stop at the next step
/// boundary. The request stands until [`reset`]: every run training when
/// it comes, or started later in the process, stops after its step.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

/// Forgets a stop request, so that runs started afterwards train (for a
/// program that goes on after a run stopped for a signal).
pub fn reset() {
    REQUESTED.store(0, Ordering::SeqCst);
}

/// The signal that asked for a stop, if one did.
pub(super) fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
