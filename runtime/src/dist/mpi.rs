//! The MPI calls behind [`super::World`]: always on `MPI_COMM_WORLD`, from the
//! thread that initialised MPI (libtorch's own threads never call MPI).

use ::mpi::datatype::PartitionMut;
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};
use ::mpi::Count;
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// MPI initialised; finalised on drop.
pub struct Session {
    _universe: Universe,
}

impl Session {
    /// Initialises MPI: the session, this rank and the number of ranks.
    pub fn start() -> Result<(Session, usize, usize)> {
        let (universe, _) = ::mpi::initialize_with_threading(::mpi::Threading::Funneled)
            .ok_or_else(|| Error::Run("MPI was initialised twice".into()))?;
        let world = universe.world();
        Ok((
            Session {
                _universe: universe,
            },
            world.rank() as usize,
            world.size() as usize,
        ))
    }
}

pub fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

/// The element-wise sum over the ranks (`MPI_Allreduce`, which hands every
/// rank the same result).
pub fn all_sum<T: Equivalence + Copy>(values: &[T]) -> Vec<T> {
    let mut out = values.to_vec();
    SimpleCommunicator::world().all_reduce_into(
        values,
        &mut out[..],
        ::mpi::collective::SystemOperation::sum(),
    );
    out
}

/// Every rank's `values`, concatenated in rank order.
pub fn all_gather<T: Equivalence + Copy + Default>(values: &[T]) -> Vec<T> {
    let world = SimpleCommunicator::world();
    let mut out = vec![T::default(); values.len() * world.size() as usize];
    world.all_gather_into(values, &mut out[..]);
    out
}

/// Rank 0's bytes of `t` (a contiguous CPU tensor of one shape on every rank).
pub fn broadcast_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, t.numel())?;
    SimpleCommunicator::world()
        .process_at_rank(0)
        .broadcast_into(&mut bytes[..]);
    Ok(bytes)
}

/// See [`World::gather_rows`]: the parts travel as bytes, so any kind does.
pub fn gather_rows(part: &Tensor) -> Result<Tensor> {
    let device = part.device();
    let part = part.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let mut shape = part.size();
    let rows = shape.first().copied().unwrap_or(1).max(0) as usize;
    let mut bytes = vec![0u8; part.numel() * part.kind().elt_size_in_bytes()];
    part.f_copy_data_u8(&mut bytes, part.numel())?;
    // Bytes per row, from the shape (a part of zero rows has no bytes to divide).
    let row_bytes =
        shape.iter().skip(1).product::<i64>() as usize * part.kind().elt_size_in_bytes();
    let counts: Vec<Count> = all_gather(&[rows as u64])
        .iter()
        .map(|&r| Count::try_from(r as usize * row_bytes))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::Run("a rank's part is over 2 GiB, more than one MPI message holds".into())
        })?;
    let mut displs = Vec::with_capacity(counts.len());
    let mut at: Count = 0;
    for &c in &counts {
        displs.push(at);
        at = at.checked_add(c).ok_or_else(|| {
            Error::Run(
                "the ranks' parts add up to over 2 GiB, more than one MPI message holds".into(),
            )
        })?;
    }
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    let mut all = vec![0u8; total];
    SimpleCommunicator::world().all_gather_varcount_into(
        &bytes[..],
        &mut PartitionMut::new(&mut all[..], counts, displs),
    );
    if let Some(first) = shape.first_mut() {
        *first = (total / row_bytes.max(1)) as i64;
    }
    Ok(Tensor::f_from_data_size(&all, &shape, part.kind())?.f_to_device(device)?)
}
