//! A plugin file that crashes the process while it loads: damaged past what
//! [`elf::check`](super::elf::check) reads (a full-size copy with zeroed or
//! flipped pages), so that the dynamic loader faults relocating it, or a
//! library whose initialisers fault. The process cannot go on after a fault
//! inside `dlopen` (the loader holds its lock), but it can say which file did
//! it and what to do, and exit 2 like any bad input, instead of dying of a
//! bare SIGSEGV that names nothing.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicUsize, Ordering};

/// The thread loading a plugin (0: none).
static LOADING: AtomicI64 = AtomicI64::new(0);
/// What to print if it faults, with its length.
static MESSAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MESSAGE_LEN: AtomicUsize = AtomicUsize::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL];

fn thread_id() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

extern "C" fn on_fault(signal: libc::c_int) {
    // Only async-signal-safe calls: atomic loads, write, _exit, signal, raise.
    if LOADING.load(Ordering::SeqCst) == thread_id() {
        let (message, len) = (
            MESSAGE.load(Ordering::SeqCst),
            MESSAGE_LEN.load(Ordering::SeqCst),
        );
        unsafe {
            libc::write(2, message.cast(), len);
            libc::_exit(2);
        }
    }
    // Another thread's fault: what it would have been without this handler.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// While it lives, a fault of this thread is reported as `path` crashing
/// the process as it loaded, and the process exits 2. Plugins load one at a
/// time (under the loader's cache lock).
pub struct Guard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
    message: *mut [u8],
}

impl Guard {
    pub fn new(path: &Path) -> Guard {
        let message: Box<[u8]> = format!(
            "error: {}: the process crashed loading this plugin (a fault in the dynamic loader or \
             the library's initialisers): the file is damaged, or was not built for this system; \
             rebuild or copy it again, or move it out of the plugin directory\n",
            path.display()
        )
        .into_bytes()
        .into_boxed_slice();
        let len = message.len();
        let message = Box::into_raw(message);
        MESSAGE.store(message.cast(), Ordering::SeqCst);
        MESSAGE_LEN.store(len, Ordering::SeqCst);
        LOADING.store(thread_id(), Ordering::SeqCst);
        let previous = SIGNALS
            .iter()
            .map(|&signal| {
                // SAFETY: sigaction structs are plain data; the handler only
                // makes async-signal-safe calls, on the thread's alternate
                // stack where it has one (the standard library gives threads one).
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_fault as extern "C" fn(libc::c_int) as usize;
                    action.sa_flags = libc::SA_ONSTACK;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(signal, &action, &mut old);
                    (signal, old)
                }
            })
            .collect();
        Guard { previous, message }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: puts back the action this guard replaced.
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
        LOADING.store(0, Ordering::SeqCst);
        MESSAGE.store(std::ptr::null_mut(), Ordering::SeqCst);
        MESSAGE_LEN.store(0, Ordering::SeqCst);
        // SAFETY: made by Box::into_raw in `new`, no longer reachable from the handler.
        drop(unsafe { Box::from_raw(self.message) });
    }
}
