//! Ctrl-C during training. The first SIGINT asks the run to stop after the
//! step in progress and checkpoint it, so no step since the last periodic
//! checkpoint is lost; a second one stops the process at once. Only the CLI
//! installs the handler, and only for a run in one process (under `mpirun`
//! the launcher owns the signal; a killed rank's run resumes from its last
//! periodic checkpoint).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap, write, signal, raise.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
        return;
    }
    let message =
        b"\ninterrupted: stopping after this step and checkpointing it (Ctrl-C again stops at once)\n";
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

/// Makes SIGINT ask a training run to stop at the next step boundary.
pub fn install() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Whether a stop was asked for.
pub(super) fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
