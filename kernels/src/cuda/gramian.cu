// Per-task gradient algebra for gradient weightings (PCGrad, MGDA, CAGrad,
// IMTL-G, Nash-MTL work on the T x T Gramian, then need one combination of
// the T gradients).
//
// gramian: K = G G^T for G = [T, P] with T small (<= 16) and P huge. This is
// memory-bound (T*P elements read once, T(T+1)/2 FMAs per column); a GEMM
// with M = N = T has almost no parallelism outside split-K. Each thread keeps
// the T(T+1)/2 upper-triangle sums of its columns in registers; blocks write
// f64 partials and the last block adds them in order (deterministic).
//
// combine: out[K, P] = W[K, T] G[T, P], reading G once for all K rows (K <= 8),
// e.g. SAM-MTL's two aggregations or PCGrad's projected sum, whose
// coefficients come from the Gramian.


template <typename T, int NT>
__device__ void tw_gramian(const T* g, long long p, double* partials, unsigned* counter, float* out) {
  constexpr int K = NT * (NT + 1) / 2;
  __shared__ double warp_part[TW_GRAM_BLOCK / 32][K];
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.f;
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  // Two columns per iteration: twice the loads in flight per thread.
  for (; j + stride < p; j += 2 * stride) {
    float v[NT], w[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) { v[t] = tw_load(g, t * p + j); w[t] = tw_load(g, t * p + j + stride); }
    int k = 0;
#pragma unroll
    for (int a = 0; a < NT; ++a) {
#pragma unroll
      for (int b = a; b < NT; ++b) { acc[k] = fmaf(v[a], v[b], fmaf(w[a], w[b], acc[k])); ++k; }
    }
  }
  if (j < p) {
    float v[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) v[t] = tw_load(g, t * p + j);
    int k = 0;
#pragma unroll
    for (int a = 0; a < NT; ++a) {
#pragma unroll
      for (int b = a; b < NT; ++b) { acc[k] = fmaf(v[a], v[b], acc[k]); ++k; }
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const double s = tw_warp_sum((double)acc[k]);
    if (lane == 0) warp_part[warp][k] = s;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    double s = 0.0;
    for (int w = 0; w < TW_GRAM_BLOCK / 32; ++w) s += warp_part[w][k];
    partials[(long long)blockIdx.x * K + k] = s;
  }
  if (tw_last_block(counter, gridDim.x)) {
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      double s = 0.0;
      for (unsigned b = 0; b < gridDim.x; ++b) s += __ldcg(partials + (long long)b * K + k);
      // k -> (a, b) in the same upper-triangle order as above.
      int a = 0, rem = k;
      while (rem >= NT - a) { rem -= NT - a; ++a; }
      const int b = a + rem;
      out[a * NT + b] = (float)s;
      out[b * NT + a] = (float)s;
    }
    if (threadIdx.x == 0) *counter = 0u;
  }
}

// This thread's columns of out = ws g, W at a time (grid-stride).
template <int W, typename T>
__device__ __forceinline__ void tw_combine_sweep(const float* ws, const T* g, long long p, int nt,
                                                 int nk, T* out) {
  typedef tw_lane<W> L;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  for (long long j = W * first; j < p; j += W * stride) {
    typename L::v acc[TW_COMBINE_MAX_K];
#pragma unroll
    for (int q = 0; q < TW_COMBINE_MAX_K; ++q) acc[q] = L::zero();
#pragma unroll 4
    for (int t = 0; t < nt; ++t) {
      const typename L::v v = L::load(g, (long long)t * p + j);
#pragma unroll
      for (int q = 0; q < TW_COMBINE_MAX_K; ++q)
        if (q < nk) acc[q] = L::fma(ws[q * nt + t], v, acc[q]);
    }
#pragma unroll
    for (int q = 0; q < TW_COMBINE_MAX_K; ++q)
      if (q < nk) L::store(out, (long long)q * p + j, acc[q]);
  }
}

// out[q, :] = sum_t w[q, t] * g[t, :]. With `vec4` (p a multiple of 4 and
// both bases 16-byte aligned) each thread takes four consecutive columns:
// bf16 rows then load 8 bytes per thread instead of 2.
template <typename T>
__device__ void tw_combine(const float* w, const T* g, long long p, int nt, int nk, int vec4,
                           T* out) {
  __shared__ float ws[TW_COMBINE_MAX_K * TW_COMBINE_MAX_T];
  for (int i = threadIdx.x; i < nk * nt; i += blockDim.x) ws[i] = w[i];
  __syncthreads();
  if (vec4) {
    tw_combine_sweep<4>(ws, g, p, nt, nk, out);
  } else {
    tw_combine_sweep<1>(ws, g, p, nt, nk, out);
  }
}

#define TW_GRAM_KERNEL(SUFFIX, T, N)                                                           \
  extern "C" __global__ void __launch_bounds__(TW_GRAM_BLOCK)                                  \
      gramian_##SUFFIX##_t##N(const T* g, long long p, double* partials, unsigned* counter,    \
                              float* out) {                                                    \
    tw_gramian<T, N>(g, p, partials, counter, out);                                            \
  }
#define TW_GRAM_KERNELS(SUFFIX, T)                                                             \
  TW_GRAM_KERNEL(SUFFIX, T, 1) TW_GRAM_KERNEL(SUFFIX, T, 2) TW_GRAM_KERNEL(SUFFIX, T, 3)       \
  TW_GRAM_KERNEL(SUFFIX, T, 4) TW_GRAM_KERNEL(SUFFIX, T, 5) TW_GRAM_KERNEL(SUFFIX, T, 6)       \
  TW_GRAM_KERNEL(SUFFIX, T, 7) TW_GRAM_KERNEL(SUFFIX, T, 8) TW_GRAM_KERNEL(SUFFIX, T, 9)       \
  TW_GRAM_KERNEL(SUFFIX, T, 10) TW_GRAM_KERNEL(SUFFIX, T, 11) TW_GRAM_KERNEL(SUFFIX, T, 12)    \
  TW_GRAM_KERNEL(SUFFIX, T, 13) TW_GRAM_KERNEL(SUFFIX, T, 14) TW_GRAM_KERNEL(SUFFIX, T, 15)    \
  TW_GRAM_KERNEL(SUFFIX, T, 16)

TW_GRAM_KERNELS(f32, float)
TW_GRAM_KERNELS(bf16, tw_bf16)

#define TW_COMBINE_KERNEL(SUFFIX, T)                                                           \
  extern "C" __global__ void __launch_bounds__(TW_COMBINE_BLOCK)                               \
      combine_##SUFFIX(const float* w, const T* g, long long p, int nt, int nk, int vec4,      \
                       T* out) {                                                               \
    tw_combine<T>(w, g, p, nt, nk, vec4, out);                                                 \
  }

TW_COMBINE_KERNEL(f32, float)
TW_COMBINE_KERNEL(bf16, tw_bf16)
