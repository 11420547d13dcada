//! `run.precision = "bf16"`: libtorch's autocast around the forward passes.
//!
//! Autocast is libtorch's own mixed precision (what `torch.autocast` turns on):
//! matrix products and convolutions run in bfloat16, reductions and losses in
//! float32, parameters stay float32. It is a thread-local dispatch state of the
//! one libtorch that host and plugins share, so a plugin's modules are cast
//! too, without knowing. tch exposes only the CUDA switch, so the device-typed
//! C++ setters (`at::autocast::set_autocast_enabled(DeviceType, bool)`,
//! `set_autocast_dtype(DeviceType, ScalarType)`) are looked up by their
//! mangled names in the libtorch already loaded.

use std::ffi::c_int;
use std::sync::OnceLock;

use tch::Device;

use crate::error::{Error, Result};

/// `c10::DeviceType`: an `int8_t` enum.
const CPU: i8 = 0;
const CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

struct Api {
    is_enabled: unsafe extern "C" fn(i8) -> bool,
    set_enabled: unsafe extern "C" fn(i8, bool),
    get_dtype: unsafe extern "C" fn(i8) -> i8,
    set_dtype: unsafe extern "C" fn(i8, i8),
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let this = libloading::os::unix::Library::this();
        // SAFETY: each symbol is the libtorch function of that mangled name;
        // its parameters are enums with int8_t underlying types and a bool,
        // passed like i8 and bool by the C++ ABI; none of them throws.
        unsafe {
            let get = |name: &[u8]| {
                this.get::<*const ()>(name).map(|s| *s).map_err(|e| {
                    format!(
                        "libtorch has no {}: {e}",
                        String::from_utf8_lossy(name).trim_end_matches('\0')
                    )
                })
            };
            Ok(Api {
                is_enabled: std::mem::transmute::<*const (), unsafe extern "C" fn(i8) -> bool>(
                    get(b"_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE\0")?,
                ),
                set_enabled: std::mem::transmute::<*const (), unsafe extern "C" fn(i8, bool)>(get(
                    b"_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb\0",
                )?),
                get_dtype: std::mem::transmute::<*const (), unsafe extern "C" fn(i8) -> i8>(get(
                    b"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE\0",
                )?),
                set_dtype: std::mem::transmute::<*const (), unsafe extern "C" fn(i8, i8)>(get(
                    b"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE\0",
                )?),
            })
        }
    })
    .as_ref()
    .map_err(|why| Error::Run(format!("bf16 autocast is unavailable: {why}")))
}

/// bf16 autocast on this thread for one device type, until dropped; the
/// previous state comes back, like leaving a `torch.autocast` block.
pub struct Autocast {
    api: &'static Api,
    device: i8,
    was_enabled: bool,
    old_dtype: i8,
}

impl Autocast {
    /// Turns bf16 autocast on for `device`'s type on this thread.
    pub fn bf16(device: Device) -> Result<Autocast> {
        let api = api()?;
        let device = match device {
            Device::Cuda(_) => CUDA,
            _ => CPU,
        };
        // SAFETY: see `api`; these only touch libtorch's thread-local state.
        let (was_enabled, old_dtype) = unsafe {
            let state = ((api.is_enabled)(device), (api.get_dtype)(device));
            (api.set_enabled)(device, true);
            (api.set_dtype)(device, BFLOAT16);
            torch_sys::at_autocast_increment_nesting();
            state
        };
        Ok(Autocast {
            api,
            device,
            was_enabled,
            old_dtype,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `bf16`; the cast cache is cleared when the outermost
        // block ends, as torch.autocast does.
        unsafe {
            let nesting: c_int = torch_sys::at_autocast_decrement_nesting();
            if nesting == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            (self.api.set_enabled)(self.device, self.was_enabled);
            (self.api.set_dtype)(self.device, self.old_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn products_run_in_bfloat16_inside_and_float32_after() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        {
            let _bf16 = Autocast::bf16(Device::Cpu).unwrap();
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            // Losses stay in float32 under autocast.
            let target = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
            let loss = a.matmul(&b).mse_loss(&target, tch::Reduction::Mean);
            assert_eq!(loss.kind(), Kind::Float);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }
}
