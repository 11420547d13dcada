//! An OpenMP team of the libtorch's own OpenMP runtime, for work that runs
//! side by side on the CPU threads libtorch uses.
//!
//! Why not OS threads of our own: after its last parallel region, an
//! OpenMP worker spins for a while (libgomp's `GOMP_SPINCOUNT`) waiting
//! for the next; the caller's idle team would spin beside our threads and
//! take a core from them (Meta-RTL's inner loops: 40 steps/s beside the
//! spinning team, 53 with `GOMP_SPINCOUNT=10000`). A team of the same
//! runtime is those very threads. Each member sets its own thread count
//! (an OpenMP ICV of its task alone) to 1 before it works: libtorch's and
//! MKL's operations then run on the member's thread, and so do oneDNN's
//! JIT kernels, which size their work by `omp_get_max_threads()` and,
//! told 2 inside a member, waited forever for a second thread that a
//! nested (inactive) region never starts (a TaskExpert step hung so).

use std::ffi::{c_uint, c_void};
use std::sync::OnceLock;

/// `GOMP_parallel` (what `#pragma omp parallel num_threads(n)` compiles to
/// with GCC) and `omp_get_thread_num`, `omp_get_num_threads`.
struct Gomp {
    parallel: unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> i32,
    num_threads: unsafe extern "C" fn() -> i32,
    set_num_threads: unsafe extern "C" fn(i32),
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(|| {
        let this = libloading::os::unix::Library::this();
        // SAFETY: libgomp's (and LLVM libomp's compatible) entry points of
        // these names and C signatures, in the OpenMP runtime libtorch loaded.
        unsafe {
            let get = |name: &[u8]| this.get::<*const ()>(name).ok().map(|s| *s);
            Some(Gomp {
                parallel: std::mem::transmute::<
                    *const (),
                    unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
                >(get(b"GOMP_parallel\0")?),
                thread_num: std::mem::transmute::<*const (), unsafe extern "C" fn() -> i32>(get(
                    b"omp_get_thread_num\0",
                )?),
                num_threads: std::mem::transmute::<*const (), unsafe extern "C" fn() -> i32>(get(
                    b"omp_get_num_threads\0",
                )?),
                set_num_threads: std::mem::transmute::<*const (), unsafe extern "C" fn(i32)>(get(
                    b"omp_set_num_threads\0",
                )?),
            })
        }
    })
    .as_ref()
}

struct Job<'a> {
    gomp: &'static Gomp,
    n: usize,
    work: &'a (dyn Fn(usize) + Sync),
}

extern "C" fn member(data: *mut c_void) {
    // SAFETY: `data` is the `Job` `team` passed, alive until the region ends.
    let job = unsafe { &*(data as *const Job<'_>) };
    // SAFETY: OpenMP's own queries, and a setting of this implicit task's ICV.
    let (me, size) = unsafe {
        (job.gomp.set_num_threads)(1);
        ((job.gomp.thread_num)(), (job.gomp.num_threads)())
    };
    let (me, size) = (me.max(0) as usize, size.max(1) as usize);
    // A smaller team than asked for (thread limits) shares the indices out.
    for i in (me..job.n).step_by(size) {
        (job.work)(i);
    }
}

/// Calls `work(i)` for every i in 0..n, on an OpenMP team of n threads (the
/// caller is one of them) when libtorch's OpenMP runtime is there, else on
/// scoped OS threads. `work` must not unwind.
pub fn team(n: usize, work: &(dyn Fn(usize) + Sync)) {
    match gomp() {
        Some(gomp) => {
            let job = Job { gomp, n, work };
            // SAFETY: `member` reads `job` only during the call, which
            // returns after every member finished.
            unsafe {
                (gomp.parallel)(
                    member,
                    &job as *const Job<'_> as *mut c_void,
                    n as c_uint,
                    0,
                )
            };
        }
        None => std::thread::scope(|scope| {
            for i in 1..n {
                scope.spawn(move || work(i));
            }
            if n > 0 {
                work(0);
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn every_index_runs_once_and_a_team_runs_them_on_as_many_threads() {
        let _ = tch::get_num_threads(); // libtorch (and its OpenMP) loaded
        let runs: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let threads = Mutex::new(HashSet::new());
        super::team(3, &|i| {
            runs[i].fetch_add(1, Ordering::SeqCst);
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
        assert!(super::gomp().is_some(), "libtorch's OpenMP runtime found");
        assert_eq!(threads.into_inner().unwrap().len(), 3);
    }

    #[test]
    fn a_convolution_backward_inside_a_team_member_finishes_and_computes_what_it_does_outside() {
        // oneDNN's JIT kernel of a 1×1 convolution's weight gradient (what
        // TaskExpert's dense heads run) waited forever inside a member for
        // threads a nested region never starts.
        tch::manual_seed(0);
        let x = tch::Tensor::randn([8, 32, 16, 16], (tch::Kind::Float, tch::Device::Cpu));
        let w = tch::Tensor::randn([16, 32, 1, 1], (tch::Kind::Float, tch::Device::Cpu));
        let weight_grad = |x: &tch::Tensor, w: &tch::Tensor| {
            let w = w.detach().set_requires_grad(true);
            let y = x.conv2d(&w, None::<tch::Tensor>, [1, 1], [0, 0], [1, 1], 1);
            tch::Tensor::run_backward(&[y.square().sum(tch::Kind::Float)], &[&w], false, false)
                .remove(0)
        };
        let outside = weight_grad(&x, &w);
        // Each member its own handles (a tensor is Send, not Sync).
        let inputs: Vec<_> = (0..2)
            .map(|_| Mutex::new(Some((x.shallow_clone(), w.shallow_clone()))))
            .collect();
        let inside: Vec<Mutex<Option<tch::Tensor>>> = (0..2).map(|_| Mutex::new(None)).collect();
        super::team(2, &|i| {
            let (x, w) = inputs[i].lock().unwrap().take().unwrap();
            *inside[i].lock().unwrap() = Some(weight_grad(&x, &w));
        });
        for member in inside {
            let got = member.into_inner().unwrap().unwrap();
            assert!(got.allclose(&outside, 1e-4, 1e-3, false));
        }
    }
}
