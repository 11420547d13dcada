//! NCCL collectives on libtorch's CUDA tensors, for data-parallel training
//! with one GPU per rank.
//!
//! The library is the one libtorch's CUDA build links (`libnccl.so.2` of the
//! `nvidia-nccl` wheel, found through libtorch_cuda's RUNPATH once
//! [`crate::load_libtorch_cuda`] ran). It is opened here by that name rather
//! than through cudarc's NCCL bindings: cudarc's loader tries `libnccl.so`
//! and `libnccl.so.<CUDA major>` but never `libnccl.so.2`, the only name the
//! wheel ships. A process without it gets [`Error::NoCuda`], and the caller
//! falls back to its host-memory path; a failing NCCL call is [`Error::Nccl`].
//!
//! Ranks meet through a [`UniqueId`] that one rank makes and hands to the
//! others by any means (taskweave broadcasts it over MPI). Collectives are
//! enqueued on libtorch's current stream of the tensor's device, so they are
//! ordered with the work that produced the tensor and with what reads it
//! after, without synchronising the host.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use crate::device::device;
use crate::error::{Error, Result};

const OP: &str = "nccl";

/// The bytes that name one communicator (NCCL's `ncclUniqueId`).
pub type UniqueId = [u8; 128];

/// `ncclUniqueId`, passed by value to `ncclCommInitRank`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawId {
    internal: [c_char; 128],
}

type Comm = *mut c_void;
// nccl.h's enums are C ints.
const SUM: c_int = 0;
const INT64: c_int = 4;
const FLOAT16: c_int = 6;
const FLOAT32: c_int = 7;
const FLOAT64: c_int = 8;
const BFLOAT16: c_int = 9;

type FnVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type FnUniqueId = unsafe extern "C" fn(*mut RawId) -> c_int;
type FnInitRank = unsafe extern "C" fn(*mut Comm, c_int, RawId, c_int) -> c_int;
type FnAllReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    Comm,
    *mut c_void,
) -> c_int;
type FnBroadcast = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    Comm,
    *mut c_void,
) -> c_int;
type FnDestroy = unsafe extern "C" fn(Comm) -> c_int;
type FnErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

struct Nccl {
    // Keeps the function pointers below valid; never unloaded.
    _lib: libloading::Library,
    version: FnVersion,
    unique_id: FnUniqueId,
    init_rank: FnInitRank,
    all_reduce: FnAllReduce,
    broadcast: FnBroadcast,
    destroy: FnDestroy,
    error_string: FnErrorString,
}

/// The NCCL library, loaded on first need.
fn nccl() -> Result<&'static Nccl> {
    static NCCL: OnceLock<Result<Nccl, String>> = OnceLock::new();
    NCCL.get_or_init(|| {
        // libtorch_cuda's RUNPATH is what finds the wheel's copy.
        let _ = crate::load_libtorch_cuda();
        let mut errors = Vec::new();
        for name in ["libnccl.so.2", "libnccl.so"] {
            // SAFETY: NCCL's initialisers have no preconditions.
            match unsafe { libloading::Library::new(name) } {
                // SAFETY: the symbols have these signatures in nccl.h (2.x).
                Ok(lib) => return unsafe { Nccl::bind(lib) }.map_err(|e| e.to_string()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!(
            "the NCCL library cannot be loaded: {}",
            errors.join("; ")
        ))
    })
    .as_ref()
    .map_err(|reason| Error::NoCuda {
        reason: reason.clone(),
    })
}

impl Nccl {
    unsafe fn bind(lib: libloading::Library) -> std::result::Result<Nccl, libloading::Error> {
        Ok(Nccl {
            version: *lib.get(b"ncclGetVersion\0")?,
            unique_id: *lib.get(b"ncclGetUniqueId\0")?,
            init_rank: *lib.get(b"ncclCommInitRank\0")?,
            all_reduce: *lib.get(b"ncclAllReduce\0")?,
            broadcast: *lib.get(b"ncclBroadcast\0")?,
            destroy: *lib.get(b"ncclCommDestroy\0")?,
            error_string: *lib.get(b"ncclGetErrorString\0")?,
            _lib: lib,
        })
    }

    /// `Ok` for ncclSuccess, else the error with NCCL's message.
    fn check(&self, what: &str, code: c_int) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for every code.
        let message = unsafe { CStr::from_ptr((self.error_string)(code)) };
        Err(Error::Nccl(format!(
            "{what}: {} (code {code})",
            message.to_string_lossy()
        )))
    }
}

/// The version of the NCCL library this process loads (2.28.9 is 22809), or
/// why it cannot be loaded.
pub fn nccl_version() -> Result<i32> {
    let nccl = nccl()?;
    let mut version = 0;
    // SAFETY: one integer out-pointer.
    nccl.check("reading the version", unsafe {
        (nccl.version)(&mut version)
    })?;
    Ok(version)
}

/// A fresh id for a new communicator: one rank makes it, every rank joins
/// with it.
pub fn unique_id() -> Result<UniqueId> {
    let nccl = nccl()?;
    let mut id = RawId { internal: [0; 128] };
    // SAFETY: a valid out-pointer of the struct's size.
    nccl.check("making a unique id", unsafe { (nccl.unique_id)(&mut id) })?;
    Ok(id.internal.map(|c| c as u8))
}

/// One rank's membership of an NCCL communicator, bound to one CUDA device.
/// Dropping it destroys the communicator. Collectives take `&mut self`:
/// NCCL calls on one communicator must not interleave.
pub struct Communicator {
    comm: Comm,
    ordinal: usize,
    size: usize,
}

// SAFETY: the communicator is an opaque handle NCCL allows to be used from
// any thread, one call at a time (which `&mut self` enforces).
unsafe impl Send for Communicator {}

impl Communicator {
    /// Joins the communicator `id` of `size` ranks as `rank`, on CUDA device
    /// `ordinal`. Every rank must call it (it waits for all of them).
    pub fn join(id: &UniqueId, rank: usize, size: usize, ordinal: usize) -> Result<Communicator> {
        if rank >= size {
            return Err(Error::argument(OP, "rank", format!("below {size}"), rank));
        }
        let nccl = nccl()?;
        bind_device(ordinal)?;
        let id = RawId {
            internal: id.map(|b| b as c_char),
        };
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and id; rank checked above. NCCL binds
        // the communicator to the thread's current device, set just above.
        let code = unsafe { (nccl.init_rank)(&mut comm, size as c_int, id, rank as c_int) };
        nccl.check("joining the communicator", code)?;
        Ok(Communicator {
            comm,
            ordinal,
            size,
        })
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Replaces `t` (a CUDA tensor on this communicator's device: f32, f64,
    /// bf16, f16 or i64) by its element-wise sum over the ranks, in place.
    pub fn all_sum_(&mut self, t: &Tensor) -> Result<()> {
        self.collective(
            t,
            "an all-reduce",
            |nccl, comm, buf, count, kind, stream| {
                // SAFETY: `buf` holds `count` elements of `kind` on this device
                // (see `collective`); in place is allowed.
                unsafe { (nccl.all_reduce)(buf, buf, count, kind, SUM, comm, stream) }
            },
        )
    }

    /// Replaces `t` (as for [`Communicator::all_sum_`]) by rank 0's values.
    pub fn broadcast_(&mut self, t: &Tensor) -> Result<()> {
        self.collective(t, "a broadcast", |nccl, comm, buf, count, kind, stream| {
            // SAFETY: as in `all_sum_`; root 0.
            unsafe { (nccl.broadcast)(buf, buf, count, kind, 0, comm, stream) }
        })
    }

    /// Runs the in-place collective `call` on `t`'s elements, on libtorch's
    /// current stream. A non-contiguous `t` goes through a contiguous copy.
    fn collective(
        &mut self,
        t: &Tensor,
        what: &str,
        call: impl FnOnce(&Nccl, Comm, *mut c_void, usize, c_int, *mut c_void) -> c_int,
    ) -> Result<()> {
        if t.device() != Device::Cuda(self.ordinal) {
            return Err(Error::Device {
                op: OP,
                what: "tensor".into(),
                expected: Device::Cuda(self.ordinal),
                got: t.device(),
            });
        }
        let kind = match t.kind() {
            Kind::Float => FLOAT32,
            Kind::Double => FLOAT64,
            Kind::BFloat16 => BFLOAT16,
            Kind::Half => FLOAT16,
            Kind::Int64 => INT64,
            got => {
                return Err(Error::DType {
                    op: OP,
                    what: "tensor".into(),
                    expected: "Float, Double, BFloat16, Half or Int64".into(),
                    got,
                })
            }
        };
        let nccl = nccl()?;
        let contiguous = t.is_contiguous();
        let buf = if contiguous {
            t.shallow_clone()
        } else {
            t.f_contiguous()?
        };
        let stream = crate::shim::current_stream(self.ordinal)?;
        bind_device(self.ordinal)?;
        // `buf`'s block is safe to drop before the call has run: libtorch's
        // caching allocator hands it out again only to work on this same
        // stream, which runs after the collective.
        let code = call(nccl, self.comm, buf.data_ptr(), buf.numel(), kind, stream);
        nccl.check(what, code)?;
        if !contiguous {
            tch::no_grad(|| t.shallow_clone().f_copy_(&buf))?;
        }
        Ok(())
    }
}

/// Makes device `ordinal`'s primary context (libtorch's) current on this thread.
fn bind_device(ordinal: usize) -> Result<()> {
    device(ordinal)?
        .ctx
        .bind_to_thread()
        .map_err(Error::driver("making the device current"))
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if let Ok(nccl) = nccl() {
            // SAFETY: the handle came from ncclCommInitRank; destroyed once.
            let _ = unsafe { (nccl.destroy)(self.comm) };
        }
    }
}
