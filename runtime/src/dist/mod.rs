//! Data-parallel training over MPI: which rank this process is, and the few
//! collective operations the trainer needs.
//!
//! A process started by `mpirun -np N` (N > 1) is one of N ranks; any other
//! process is the only rank, and every operation here is then the identity
//! without touching MPI. Every rank holds the whole model and takes the same
//! steps: it reads its own shard of every global batch ([`World::shard`]),
//! and the gradients computed from the shards are averaged
//! ([`World::mean_`]) before any method reads them, so each rank runs the same
//! weighting on the same numbers.
//!
//! MPI comes from the system's Open MPI through the `mpi` crate, behind the
//! cargo feature `mpi` (the Makefile enables it where `mpicc` exists). On
//! GPUs, one per rank, the sums go through NCCL (`taskweave_kernels::nccl`,
//! its id broadcast over MPI) on libtorch's current stream; where NCCL cannot
//! be used on every rank (not loadable, or more ranks than GPUs on a
//! machine), CUDA tensors travel through host memory: correct, not fast.
//!
//! Every collective is called by every rank in the same order. A rank that
//! fails ends the whole job ([`abort`]) rather than leaving the others
//! waiting in a collective.

#[cfg(feature = "mpi")]
mod mpi;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use taskweave_kernels::nccl::{self, Communicator};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Whether this build can join an MPI job (the cargo feature `mpi`).
pub const WITH_MPI: bool = cfg!(feature = "mpi");

/// This process's place among the ranks of a data-parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    rank: usize,
    size: usize,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// Bytes this rank has handed to collective operations.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes this rank has handed to collective operations so far: what
/// data-parallel training costs in communication.
pub fn bytes_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

fn count(bytes: usize) {
    SENT.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// The ranks this process belongs to: set by [`init`], else this process alone.
pub fn world() -> World {
    *WORLD.get_or_init(|| World { rank: 0, size: 1 })
}

/// The number of ranks the launcher started, read from its environment
/// (Open MPI's `OMPI_COMM_WORLD_SIZE`, else the PMI variable of MPICH and
/// others); `None` outside a launcher.
fn launched_size() -> Option<usize> {
    launcher_number(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
}

/// The first of the launcher's environment variables `names` that is set to
/// a number.
fn launcher_number(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The CUDA device of this rank when `run.device` asks for "the" GPU
/// (`cuda` or `auto`) and `count` exist: one per rank on each machine, in
/// the order of the launcher's local rank (Open MPI's
/// `OMPI_COMM_WORLD_LOCAL_RANK`, else MPICH's `MPI_LOCALRANKID`; 0 outside
/// a launcher), wrapping around when the ranks outnumber the GPUs.
pub fn rank_device(count: usize) -> usize {
    let local = launcher_number(&["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]).unwrap_or(0);
    local % count.max(1)
}

/// The device this process trains on ([`train_on`]).
static DEVICE: OnceLock<Device> = OnceLock::new();

/// Records the device this process trains on, before its first sum over the
/// ranks (the first call counts): the ranks decide together from it whether
/// their GPU tensors are summed through NCCL.
pub fn train_on(device: Device) {
    let _ = DEVICE.set(device);
}

/// A hash of this machine's name, to tell the ranks' machines apart.
fn host_id() -> u64 {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(name.trim().as_bytes())
}

/// One rank's say on NCCL: whether it trains on a GPU, on which machine and
/// device, and whether it can load NCCL.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Vote {
    cuda: bool,
    host: u64,
    ordinal: usize,
    nccl: bool,
}

impl Vote {
    fn encode(&self) -> [u64; 4] {
        [
            u64::from(self.cuda),
            self.host,
            self.ordinal as u64,
            u64::from(self.nccl),
        ]
    }

    fn decode(v: &[u64]) -> Vote {
        Vote {
            cuda: v[0] == 1,
            host: v[1],
            ordinal: v[2] as usize,
            nccl: v[3] == 1,
        }
    }
}

/// Why the ranks that cast `votes` cannot sum through NCCL, if they cannot:
/// it needs every rank on a GPU of its own, and the library on every rank.
fn nccl_obstacle(votes: &[Vote]) -> Option<String> {
    if votes.iter().any(|v| !v.cuda) {
        return Some("not every rank trains on a GPU".into());
    }
    if votes.iter().any(|v| !v.nccl) {
        return Some("the NCCL library cannot be loaded on every rank".into());
    }
    let mut devices: Vec<(u64, usize)> = votes.iter().map(|v| (v.host, v.ordinal)).collect();
    devices.sort_unstable();
    let before = devices.len();
    devices.dedup();
    (devices.len() < before).then(|| {
        "two ranks share a GPU (run.device names one, or the launcher does not say each rank's \
         place on its machine), and NCCL needs a GPU per rank"
            .into()
    })
}

/// Holds MPI initialised; dropping it finalises MPI (after the last collective).
pub struct Session {
    #[cfg(feature = "mpi")]
    _mpi: Option<mpi::Session>,
}

/// Joins the job the launcher started, if any: must be called once, before
/// any training, and the [`Session`] kept until the process is done.
pub fn init() -> Result<Session> {
    let size = launched_size().unwrap_or(1);
    if size <= 1 {
        WORLD.get_or_init(|| World { rank: 0, size: 1 });
        return Ok(Session {
            #[cfg(feature = "mpi")]
            _mpi: None,
        });
    }
    #[cfg(feature = "mpi")]
    {
        let (session, rank, size) = mpi::Session::start()?;
        WORLD
            .set(World { rank, size })
            .map_err(|_| Error::Run("the MPI world was set up twice".into()))?;
        Ok(Session {
            _mpi: Some(session),
        })
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::Input(format!(
        "this process is one of {size} ranks started by an MPI launcher, but this taskweave was built \
         without MPI: install Open MPI and libclang (Debian: openmpi-bin libopenmpi-dev libclang-dev) \
         and rebuild with `make build`, which then enables the `mpi` feature"
    )))
}

/// Ends every rank of the job with exit status `code`: what a rank does when
/// it fails, so that the others do not wait for it forever.
pub fn abort(code: i32) -> ! {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        mpi::abort(code);
    }
    std::process::exit(code)
}

impl World {
    /// This rank, 0-based.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that writes the run directory.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether more than one rank trains.
    pub fn is_parallel(&self) -> bool {
        self.size > 1
    }

    /// This rank's contiguous part of `n` items; the parts of all ranks, in
    /// rank order, are the items in order.
    pub fn shard(&self, n: usize) -> Range<usize> {
        self.rank * n / self.size..(self.rank + 1) * n / self.size
    }

    /// Replaces the float tensor `t` (float32 or float64, any device) in
    /// place by its mean over the ranks. Every rank receives the same bits.
    pub fn mean_(&self, t: &Tensor) -> Result<()> {
        if self.size > 1 {
            self.sum_(t)?;
            let _ = tch::no_grad(|| t.shallow_clone().f_div_scalar_(self.size as f64))?;
        }
        Ok(())
    }

    /// Replaces `t` (float32, float64 or int64, any device) in place by its
    /// element-wise sum over the ranks. Every rank receives the same bits
    /// (MPI's all-reduce, or NCCL's, which reduces each element once and
    /// hands every rank that result).
    pub fn sum_(&self, t: &Tensor) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        // `nccl()` first, on every rank and every call: its first call decides.
        if let (Some(comm), Device::Cuda(_)) = (self.nccl()?, t.device()) {
            count(t.numel() * t.kind().elt_size_in_bytes());
            let mut comm = comm.lock().unwrap_or_else(|p| p.into_inner());
            return comm
                .all_sum_(t)
                .map_err(|e| Error::Run(format!("summing over the ranks: {e}")));
        }
        let flat = t.f_detach()?.f_reshape([-1])?.f_to_device(Device::Cpu)?;
        let summed = match t.kind() {
            Kind::Float => Tensor::from_slice(&self.sum(Vec::<f32>::try_from(&flat)?)?),
            Kind::Double => Tensor::from_slice(&self.sum(Vec::<f64>::try_from(&flat)?)?),
            Kind::Int64 => Tensor::from_slice(&self.sum(Vec::<i64>::try_from(&flat)?)?),
            kind => {
                return Err(Error::Run(format!(
                    "cannot sum a {kind:?} tensor over the ranks"
                )))
            }
        };
        let summed = summed
            .f_view(t.size().as_slice())?
            .f_to_device(t.device())?;
        tch::no_grad(|| t.shallow_clone().f_copy_(&summed))?;
        Ok(())
    }

    /// Replaces `t` (any kind, any device; one shape on every rank) in place
    /// by rank 0's values.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn broadcast_(&self, t: &Tensor) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        count(t.numel() * t.kind().elt_size_in_bytes());
        #[cfg(feature = "mpi")]
        {
            let values =
                mpi::broadcast_bytes(&t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?)?;
            let values = Tensor::f_from_data_size(&values, &t.size(), t.kind())?;
            tch::no_grad(|| t.shallow_clone().f_copy_(&values))?;
            Ok(())
        }
        #[cfg(not(feature = "mpi"))]
        needs_mpi()
    }

    /// Sums `values` over the ranks, in place, and hands every rank rank 0's
    /// result: the runs branch on these sums (which step scored best), so
    /// they must agree bit for bit even where MPI's reduction would not.
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.size > 1 {
            let summed = Tensor::from_slice(&self.sum(values.to_vec())?);
            self.broadcast_(&summed)?;
            values.copy_from_slice(&Vec::<f64>::try_from(&summed)?);
        }
        Ok(())
    }

    /// Every rank's `values` (all of one length), in rank order.
    pub fn gather_u64(&self, values: &[u64]) -> Result<Vec<Vec<u64>>> {
        if self.size == 1 {
            return Ok(vec![values.to_vec()]);
        }
        count(std::mem::size_of_val(values));
        #[cfg(feature = "mpi")]
        return Ok(mpi::all_gather(values)
            .chunks(values.len().max(1))
            .map(<[u64]>::to_vec)
            .collect());
        #[cfg(not(feature = "mpi"))]
        needs_mpi()
    }

    /// Every rank's `part` (any kind, on any device; the same shape but for
    /// the first dimension) concatenated along the first dimension in rank
    /// order, on `part`'s device.
    pub fn gather_rows(&self, part: &Tensor) -> Result<Tensor> {
        if self.size == 1 {
            return Ok(part.shallow_clone());
        }
        count(part.numel() * part.kind().elt_size_in_bytes());
        #[cfg(feature = "mpi")]
        return mpi::gather_rows(part);
        #[cfg(not(feature = "mpi"))]
        needs_mpi()
    }

    /// The NCCL communicator of the ranks' GPUs, or `None`: decided at the
    /// first sum over the ranks (every rank makes that call at the same
    /// point, whatever its tensor's device) from every rank's vote, so that
    /// all decide alike and none waits in a collective the others skip.
    fn nccl(&self) -> Result<Option<&'static Mutex<Communicator>>> {
        static COMM: OnceLock<Option<Mutex<Communicator>>> = OnceLock::new();
        if let Some(comm) = COMM.get() {
            return Ok(comm.as_ref());
        }
        let ordinal = match DEVICE.get() {
            Some(Device::Cuda(ordinal)) => Some(*ordinal),
            _ => None,
        };
        let vote = Vote {
            cuda: ordinal.is_some(),
            host: host_id(),
            ordinal: ordinal.unwrap_or(0),
            nccl: ordinal.is_some() && nccl::nccl_version().is_ok(),
        };
        let votes: Vec<Vote> = self
            .gather_u64(&vote.encode())?
            .iter()
            .map(|v| Vote::decode(v))
            .collect();
        let comm = match (ordinal, nccl_obstacle(&votes)) {
            (Some(ordinal), None) => {
                // Rank 0 makes the id; the others receive it over MPI.
                let mine = match self.is_root() {
                    true => nccl::unique_id().map_err(|e| Error::Run(e.to_string()))?,
                    false => [0; 128],
                };
                let shared = Tensor::from_slice(&mine);
                self.broadcast_(&shared)?;
                let id: nccl::UniqueId = Vec::<u8>::try_from(&shared)?
                    .try_into()
                    .map_err(|_| Error::Run("the NCCL id arrived truncated".into()))?;
                let comm = Communicator::join(&id, self.rank, self.size, ordinal).map_err(|e| {
                    Error::Run(format!("joining the ranks' NCCL communicator: {e}"))
                })?;
                tracing::info!("sums over the ranks go through NCCL");
                Some(Mutex::new(comm))
            }
            (_, why_not) => {
                if let (true, Some(why)) = (votes.iter().any(|v| v.cuda), why_not) {
                    tracing::warn!(
                        "sums of GPU tensors over the ranks go through host memory (slow): {why}"
                    );
                }
                None
            }
        };
        Ok(COMM.get_or_init(|| comm).as_ref())
    }

    /// The element-wise sum of `values` over the ranks.
    fn sum<T: Summable>(&self, values: Vec<T>) -> Result<Vec<T>> {
        if self.size == 1 {
            return Ok(values);
        }
        count(std::mem::size_of_val(values.as_slice()));
        #[cfg(feature = "mpi")]
        return Ok(mpi::all_sum(&values));
        #[cfg(not(feature = "mpi"))]
        needs_mpi()
    }
}

/// More than one rank exists only with the `mpi` feature ([`init`] refuses otherwise).
#[cfg(not(feature = "mpi"))]
fn needs_mpi() -> ! {
    unreachable!("more than one rank without the mpi feature")
}

/// The element types summed over the ranks.
#[cfg(feature = "mpi")]
trait Summable: ::mpi::traits::Equivalence + Copy {}
#[cfg(not(feature = "mpi"))]
trait Summable: Copy {}
impl Summable for f32 {}
impl Summable for f64 {}
impl Summable for i64 {}

/// Compares `hashes` (one per item, as many items on every rank) with rank
/// 0's: the first other rank and item that differ, if any.
pub fn first_disagreement(world: World, hashes: &[u64]) -> Result<Option<(usize, usize)>> {
    Ok(first_difference(&world.gather_u64(hashes)?))
}

/// A hash of `t`'s values (any kind, any device), for [`first_disagreement`].
pub fn fingerprint(t: &Tensor) -> Result<u64> {
    let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, t.numel())?;
    Ok(xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// The first (rank, index) whose value differs from rank 0's.
fn first_difference(all: &[Vec<u64>]) -> Option<(usize, usize)> {
    let (first, rest) = all.split_first()?;
    rest.iter().enumerate().find_map(|(r, hashes)| {
        let index = hashes.iter().zip(first).position(|(a, b)| a != b)?;
        Some((r + 1, index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_item_once_in_order() {
        for n in [0, 1, 5, 7, 64] {
            for size in 1..=4 {
                let parts: Vec<usize> = (0..size)
                    .flat_map(|rank| World { rank, size }.shard(n))
                    .collect();
                assert_eq!(parts, (0..n).collect::<Vec<_>>(), "n {n}, {size} ranks");
            }
        }
    }

    #[test]
    fn nccl_needs_every_rank_on_a_gpu_of_its_own_with_the_library() {
        let gpu = |host, ordinal| Vote {
            cuda: true,
            host,
            ordinal,
            nccl: true,
        };
        // One GPU per rank, on one machine or several.
        assert_eq!(nccl_obstacle(&[gpu(1, 0), gpu(1, 1)]), None);
        assert_eq!(nccl_obstacle(&[gpu(1, 0), gpu(2, 0)]), None);
        // Two ranks on one GPU (cuda:0 for all, or no local rank known).
        let shared = nccl_obstacle(&[gpu(1, 0), gpu(2, 0), gpu(1, 0)]).unwrap();
        assert!(shared.contains("share a GPU"), "{shared}");
        // A rank on the CPU, or without the library.
        let cpu = Vote {
            cuda: false,
            ..gpu(3, 0)
        };
        assert!(nccl_obstacle(&[gpu(1, 0), cpu]).unwrap().contains("GPU"));
        let missing = Vote {
            nccl: false,
            ..gpu(3, 0)
        };
        assert!(nccl_obstacle(&[gpu(1, 0), missing])
            .unwrap()
            .contains("library"));
        // Votes travel as four integers.
        let v = gpu(0xdead_beef, 5);
        assert_eq!(Vote::decode(&v.encode()), v);
    }

    #[test]
    fn the_first_difference_names_the_rank_and_the_tensor() {
        let same = vec![vec![1, 2, 3]; 3];
        assert_eq!(first_difference(&same), None);
        let mut other = same.clone();
        other[2][1] = 9;
        other[2][2] = 9;
        assert_eq!(first_difference(&other), Some((2, 1)));
        let single = World { rank: 0, size: 1 };
        assert_eq!(first_disagreement(single, &[1, 2, 3]).unwrap(), None);
    }
}
