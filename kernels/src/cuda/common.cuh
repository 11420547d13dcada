// Helpers shared by every module. Each module is compiled as this file
// followed by its own .cu file, so sources need no #include and NVRTC needs
// no headers (not even cuda_bf16.h: bf16 is handled as raw bits below).

typedef unsigned long long tw_u64;
typedef unsigned short tw_bf16;

// ---- launch sizes and limits: the one source of these numbers ----
// The Rust side reads them from this file at compile time (compile.rs,
// `define`) for its launches and argument structs, so a kernel and its
// launch cannot disagree. Keep each as `#define NAME <decimal>`.
#define TW_SAM_MAX_TENSORS 256
#define TW_SAM_BLOCK 256
#define TW_SAM_CHUNK 4096
#define TW_GRAM_BLOCK 256
#define TW_GRAM_MAX_T 16
#define TW_COMBINE_BLOCK 256
#define TW_COMBINE_MAX_K 8
#define TW_COMBINE_MAX_T 64
#define TW_FUSION_MAX_EXPERTS 16
#define TW_FUSION_MAX_ALPHAS 64
#define TW_FUSION_BLOCK 128
#define TW_FUSION_PER_THREAD 20
#define TW_FUSION_SELECT_BLOCK 256
#define TW_FUSION_APPLY_BLOCK 256
#define TW_GATE_BLOCK 128
#define TW_GATE_MAX_TASKS 8
#define TW_GATE_MAX_SLOTS 32

#define TW_FULL_MASK 0xffffffffu
#define TW_LOG2E 1.4426950408889634f
#define TW_LN2 0.6931471805599453
// math.h is not available under NVRTC without headers.
#define TW_NEG_INF (__int_as_float(0xff800000))
#define TW_POS_INF (__int_as_float(0x7f800000))
#define TW_NEG_INF_D (__longlong_as_double(0xfff0000000000000ULL))
#define TW_POS_INF_D (__longlong_as_double(0x7ff0000000000000ULL))

// ---- element access: compute in f32 whatever the storage type ----

__device__ __forceinline__ float tw_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float tw_load(const tw_bf16* p, long long i) {
  return __uint_as_float(((unsigned)p[i]) << 16);
}
__device__ __forceinline__ void tw_store(float* p, long long i, float v) { p[i] = v; }
// Round to nearest even, as c10::BFloat16 does; NaN stays a quiet NaN.
__device__ __forceinline__ tw_bf16 tw_to_bf16(float v) {
  unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (tw_bf16)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (tw_bf16)(u >> 16);
}
__device__ __forceinline__ void tw_store(tw_bf16* p, long long i, float v) { p[i] = tw_to_bf16(v); }

// Four consecutive elements; callers guarantee 4-element alignment.
struct tw_f4 { float x, y, z, w; };
__device__ __forceinline__ tw_f4 tw_load4(const float* p, long long i) {
  float4 v = *reinterpret_cast<const float4*>(p + i);
  tw_f4 r = {v.x, v.y, v.z, v.w};
  return r;
}
__device__ __forceinline__ tw_f4 tw_load4(const tw_bf16* p, long long i) {
  uint2 v = *reinterpret_cast<const uint2*>(p + i);
  tw_f4 r = {__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
             __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u)};
  return r;
}
__device__ __forceinline__ void tw_store4(float* p, long long i, tw_f4 v) {
  *reinterpret_cast<float4*>(p + i) = make_float4(v.x, v.y, v.z, v.w);
}
__device__ __forceinline__ void tw_store4(tw_bf16* p, long long i, tw_f4 v) {
  uint2 u;
  u.x = (unsigned)tw_to_bf16(v.x) | ((unsigned)tw_to_bf16(v.y) << 16);
  u.y = (unsigned)tw_to_bf16(v.z) | ((unsigned)tw_to_bf16(v.w) << 16);
  *reinterpret_cast<uint2*>(p + i) = u;
}
__device__ __forceinline__ tw_f4 tw_zero4() {
  tw_f4 r = {0.f, 0.f, 0.f, 0.f};
  return r;
}
// acc + q * x, element by element.
__device__ __forceinline__ tw_f4 tw_fma4(float q, tw_f4 x, tw_f4 acc) {
  tw_f4 r = {fmaf(q, x.x, acc.x), fmaf(q, x.y, acc.y), fmaf(q, x.z, acc.z), fmaf(q, x.w, acc.w)};
  return r;
}
// W consecutive elements per thread (1, or 4 on a kernel's `vec4` path), so
// one loop body serves both widths: `tw_lane<W>::v` is float or tw_f4.
template <int W> struct tw_lane;
template <> struct tw_lane<1> {
  typedef float v;
  template <typename T>
  static __device__ __forceinline__ float load(const T* p, long long i) { return tw_load(p, i); }
  template <typename T>
  static __device__ __forceinline__ void store(T* p, long long i, float x) { tw_store(p, i, x); }
  static __device__ __forceinline__ float zero() { return 0.f; }
  static __device__ __forceinline__ float fma(float q, float x, float acc) { return fmaf(q, x, acc); }
};
template <> struct tw_lane<4> {
  typedef tw_f4 v;
  template <typename T>
  static __device__ __forceinline__ tw_f4 load(const T* p, long long i) { return tw_load4(p, i); }
  template <typename T>
  static __device__ __forceinline__ void store(T* p, long long i, tw_f4 x) { tw_store4(p, i, x); }
  static __device__ __forceinline__ tw_f4 zero() { return tw_zero4(); }
  static __device__ __forceinline__ tw_f4 fma(float q, tw_f4 x, tw_f4 acc) { return tw_fma4(q, x, acc); }
};
// Copies four elements bit for bit (backup/restore must be exact).
__device__ __forceinline__ void tw_copy4(float* dst, const float* src, long long i) {
  *reinterpret_cast<float4*>(dst + i) = *reinterpret_cast<const float4*>(src + i);
}
__device__ __forceinline__ void tw_copy4(tw_bf16* dst, const tw_bf16* src, long long i) {
  *reinterpret_cast<uint2*>(dst + i) = *reinterpret_cast<const uint2*>(src + i);
}

// ---- reductions (fixed shapes, hence deterministic for a fixed launch) ----

template <typename T>
__device__ __forceinline__ T tw_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TW_FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float tw_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(TW_FULL_MASK, v, o));
  return v;
}

// Sum over the block; the result is valid in every thread. `scratch` holds
// one value per warp (32 entries).
template <typename T>
__device__ T tw_block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = tw_warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < warps ? scratch[lane] : (T)0;
  return tw_warp_sum(r);
}

__device__ float tw_block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = tw_warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : TW_NEG_INF;
  return tw_warp_max(r);
}

// True in every thread of the block that arrives last among `total` blocks
// (possibly spread over several launches on one stream). The last block then
// reads everyone's partial results and resets the counter for the next call,
// which saves a separate finishing launch.
__device__ bool tw_last_block(unsigned* counter, unsigned total) {
  __shared__ bool last;
  __threadfence();  // publish this block's partials before counting it
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == total - 1;
  __syncthreads();
  if (last) __threadfence();
  return last;
}
