//! What a machine without CUDA reports: errors, not panics.
use taskweave_kernels::{cuda_info, device_count, memory, Error};

fn has_cuda() -> bool {
    device_count().is_ok()
}

#[test]
fn cuda_info_is_a_clear_no_cuda_error_without_a_gpu() {
    if has_cuda() {
        eprintln!("skipped: this machine has a CUDA device");
        return;
    }
    let e = cuda_info(0).unwrap_err();
    assert!(matches!(e, Error::NoCuda { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("no CUDA device: "), "{msg}");
    eprintln!("{msg}");
}

#[test]
fn the_shim_loads_and_reports_errors_as_values_without_a_gpu() {
    if has_cuda() {
        eprintln!("skipped: this machine has a CUDA device");
        return;
    }
    if let Err(e) = memory::shim_status() {
        // Built without CUDA headers or libc10_cuda: the reason must say so.
        eprintln!("shim unavailable: {e}");
        assert!(matches!(e, Error::Shim(_)), "{e}");
        return;
    }
    for result in [
        memory::memory_stats(0).map(|_| ()),
        memory::reset_peak_memory(0),
    ] {
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Shim(_)), "{e}");
        eprintln!("{e}");
    }
    assert!(matches!(
        memory::set_memory_fraction(0, 1.5).unwrap_err(),
        Error::Argument { .. }
    ));
    // Allocator settings are parsed without a device: good ones apply, a
    // misspelt key is an error that names it.
    memory::set_allocator_settings("max_split_size_mb:256,garbage_collection_threshold:0.8")
        .unwrap();
    let e = memory::set_allocator_settings("expandable_segmets:True").unwrap_err();
    assert!(e.to_string().contains("expandable_segmets"), "{e}");
    eprintln!("{e}");
}

#[test]
fn nccl_loads_with_libtorchs_cuda_build_and_makes_ids_or_says_why() {
    match taskweave_kernels::nccl::nccl_version() {
        // The nvidia-nccl wheel torch 2.11 pins is 2.28.
        Ok(version) => {
            assert!(version >= 22800, "{version}");
            eprintln!("nccl {version}");
            // Making an id needs no GPU (it names a bootstrap socket).
            let ids = [(); 2].map(|_| taskweave_kernels::nccl::unique_id().unwrap());
            assert_ne!(ids[0], ids[1]);
        }
        Err(e) => {
            assert!(matches!(e, Error::NoCuda { .. }), "{e}");
            assert!(e.to_string().contains("NCCL library"), "{e}");
            eprintln!("{e}");
        }
    }
}
