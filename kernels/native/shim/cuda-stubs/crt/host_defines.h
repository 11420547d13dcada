// Stand-in for the CUDA toolkit's crt/host_defines.h, used only when the CUDA
// headers at hand lack crt/ (the PyPI wheels ship cuda_runtime.h without it).
// Host C++ only: CUDA's qualifiers mean nothing here, alignment does.
#pragma once
#define __host__
#define __device__
#define __global__
#define __shared__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(n) __align__(n)
#define __device_builtin__
#define __device_builtin_texture_type__
#define __device_builtin_surface_type__
#define __cudart_builtin__
#define CUDARTAPI
#define CUDARTAPI_CDECL
