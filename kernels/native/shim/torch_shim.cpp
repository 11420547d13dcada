// Thin C ABI over the parts of c10's CUDA runtime that tch does not expose:
// the current stream of a device, the caching allocator's statistics and
// its settings.
// Built as its own shared library (see ../build.rs) and dlopen'ed only when
// CUDA is in use, so CPU-only processes never load libc10_cuda/libcudart.
//
// Every function returns 0 on success and a non-zero code on failure; the
// message of the last failure on this thread is available through
// taskweave_shim_last_error(). No C++ exception crosses this boundary.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}
}  // namespace

extern "C" {

// Bumped whenever a signature below changes; checked by the Rust side.
int32_t taskweave_shim_abi_version() { return 2; }

const char* taskweave_shim_last_error() { return last_error.c_str(); }

// The cudaStream_t that libtorch's current stream for `device` wraps.
int taskweave_shim_current_stream(int32_t device, void** stream) {
  return guarded([&] {
    *stream = static_cast<void*>(
        c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream());
  });
}

// Caching-allocator statistics of `device`, aggregated over all pools.
int taskweave_shim_memory_stats(int32_t device, int64_t* allocated, int64_t* reserved,
                                int64_t* peak_allocated, int64_t* peak_reserved) {
  return guarded([&] {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[agg].current;
    *reserved = stats.reserved_bytes[agg].current;
    *peak_allocated = stats.allocated_bytes[agg].peak;
    *peak_reserved = stats.reserved_bytes[agg].peak;
  });
}

int taskweave_shim_reset_peak(int32_t device) {
  return guarded([&] {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

int taskweave_shim_set_memory_fraction(int32_t device, double fraction) {
  return guarded([&] {
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction,
                                                       static_cast<c10::DeviceIndex>(device));
  });
}

// What torch.cuda.memory._set_allocator_settings does: parse `settings`
// (PYTORCH_CUDA_ALLOC_CONF syntax) into the allocator's live configuration.
// Unlike setting the environment variable it is safe while other threads run,
// reports unknown keys, and takes effect even after the first allocation.
int taskweave_shim_set_allocator_settings(const char* settings) {
  return guarded([&] { c10::CachingAllocator::setAllocatorSettings(std::string(settings)); });
}

int taskweave_shim_empty_cache() {
  return guarded([&] { c10::cuda::CUDACachingAllocator::emptyCache(); });
}

}  // extern "C"
