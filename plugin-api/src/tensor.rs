//! Tensors across the plugin boundary: raw libtorch handles, tagged with the
//! tch/libtorch versions so that a plugin built against another libtorch fails
//! the layout check at load instead of corrupting memory at the first call.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;

use abi_stable::{tag, StableAbi};
use tch::Tensor;

/// The ABI tag on every tensor handle; two sides are compatible only if equal.
pub(crate) const LIBTORCH_TAG: &str = concat!(
    "tch ",
    crate::tch_version!(),
    " / libtorch ",
    crate::libtorch_version!()
);

/// A tensor borrowed for the duration of one call.
///
/// The pointee is an `at::Tensor` owned by the other side; reading it through
/// [`TensorRef::get`] shares storage and autograd history (no copy).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
#[sabi(tag = tag!(LIBTORCH_TAG))]
pub struct TensorRef<'a> {
    ptr: *mut c_void,
    _borrow: PhantomData<&'a ()>,
}

// SAFETY: a TensorRef is a shared borrow of a tch::Tensor, which is Send + Sync.
unsafe impl Send for TensorRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for TensorRef<'_> {}

impl<'a> TensorRef<'a> {
    /// Borrows `tensor` for the other side of the boundary.
    pub fn new(tensor: &'a Tensor) -> Self {
        TensorRef {
            ptr: tensor.as_ptr() as *mut c_void,
            _borrow: PhantomData,
        }
    }

    /// A `&Tensor` view of the borrowed handle.
    pub fn get(self) -> BorrowedTensor<'a> {
        // SAFETY: `ptr` came from a live `&'a Tensor` (see `new`); ManuallyDrop
        // keeps this side from freeing the handle the other side owns.
        let tensor = unsafe { Tensor::from_ptr(self.ptr.cast()) };
        BorrowedTensor {
            tensor: ManuallyDrop::new(tensor),
            _borrow: PhantomData,
        }
    }
}

impl<'a> From<&'a Tensor> for TensorRef<'a> {
    fn from(tensor: &'a Tensor) -> Self {
        TensorRef::new(tensor)
    }
}

/// A `Tensor` that does not own its handle: derefs to `&Tensor` and never frees it.
pub struct BorrowedTensor<'a> {
    tensor: ManuallyDrop<Tensor>,
    _borrow: PhantomData<&'a ()>,
}

impl Deref for BorrowedTensor<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.tensor
    }
}

/// A tensor whose ownership moves to the other side of the boundary.
///
/// Dropping it frees the handle (the storage lives on while other handles share it).
#[repr(transparent)]
#[derive(StableAbi)]
#[sabi(tag = tag!(LIBTORCH_TAG))]
pub struct TensorOwned {
    ptr: *mut c_void,
}

// SAFETY: a TensorOwned is a tch::Tensor in transit, which is Send + Sync.
unsafe impl Send for TensorOwned {}
// SAFETY: as above.
unsafe impl Sync for TensorOwned {}

impl TensorOwned {
    /// Takes the handle back as a `Tensor`.
    pub fn into_tensor(self) -> Tensor {
        let this = ManuallyDrop::new(self);
        // SAFETY: `ptr` is an owned handle made by `From<Tensor>`; `this` is not
        // dropped, so ownership moves to the returned Tensor exactly once.
        unsafe { Tensor::from_ptr(this.ptr.cast()) }
    }

    /// Borrows the tensor without taking ownership.
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef {
            ptr: self.ptr,
            _borrow: PhantomData,
        }
    }
}

impl From<Tensor> for TensorOwned {
    fn from(tensor: Tensor) -> Self {
        let mut tensor = ManuallyDrop::new(tensor);
        TensorOwned {
            ptr: tensor.as_mut_ptr().cast(),
        }
    }
}

impl Drop for TensorOwned {
    fn drop(&mut self) {
        // SAFETY: `ptr` is an owned handle; rebuilding the Tensor and dropping it
        // frees the handle once (into_tensor skips this Drop).
        drop(unsafe { Tensor::from_ptr(self.ptr.cast()) });
    }
}

/// A tensor dtype as messages name it: `float32`, `int64`, ...
pub fn kind_name(kind: tch::Kind) -> &'static str {
    use tch::Kind;
    match kind {
        Kind::Uint8 => "uint8",
        Kind::Int8 => "int8",
        Kind::Int16 => "int16",
        Kind::Int => "int32",
        Kind::Int64 => "int64",
        Kind::Half => "float16",
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::BFloat16 => "bfloat16",
        Kind::Bool => "bool",
        _ => "non-numeric",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_round_trip_keeps_values_and_autograd() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let y = x.f_mul_scalar(2.0).unwrap();
        let back = TensorOwned::from(y).into_tensor();
        back.f_sum(None).unwrap().backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), vec![2.0, 2.0, 2.0]);
    }

    #[test]
    fn borrowed_view_does_not_free_the_owner() {
        let x = Tensor::from_slice(&[4.0f64, 5.0]);
        for _ in 0..3 {
            let view = TensorRef::new(&x).get();
            assert_eq!(view.size(), vec![2]);
        }
        assert_eq!(Vec::<f64>::try_from(&x).unwrap(), vec![4.0, 5.0]);
    }
}
