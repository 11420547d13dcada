// SAM perturb/restore over a whole parameter group (METHODS.md §1):
//   eps = rho * A^2 g / (||A g|| + 1e-12),  A = |theta| (adaptive) or 1,
// with one global norm over every tensor of the group.
//
// Eager libtorch needs several launches per tensor (abs, mul, square-sum,
// copy to backup, mul, add_); here a group of up to TW_SAM_MAX_TENSORS
// tensors costs two launches: the norm pass and the update pass. The tensor
// list travels by value as a kernel parameter (CUDA >= 12.1 allows 32 KiB of
// parameters; this struct is 9 KiB), so there is no host-to-device copy and no
// synchronisation. Each block covers TW_SAM_CHUNK elements of one tensor;
// block_start maps blocks to tensors.


struct TwTensorList {
  tw_u64 ptr0[TW_SAM_MAX_TENSORS];  // parameters
  tw_u64 ptr1[TW_SAM_MAX_TENSORS];  // gradients (norm, perturb) or backups (restore)
  tw_u64 ptr2[TW_SAM_MAX_TENSORS];  // backups (perturb)
  long long numel[TW_SAM_MAX_TENSORS];
  unsigned block_start[TW_SAM_MAX_TENSORS + 1];  // prefix sums of blocks per tensor
  int count;
};
static_assert(sizeof(TwTensorList) == 9224, "TwTensorList layout is mirrored in src/ops/sam.rs");

// The tensor a block works on: the last i with block_start[i] <= block.
__device__ __forceinline__ int tw_sam_tensor(const TwTensorList& l, unsigned block) {
  int lo = 0, hi = l.count - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (l.block_start[mid] <= block) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Pass 1: sum of (A g)^2. Each block writes its partial sum (f64) at
// partials[block_offset + blockIdx.x]; the last of `total_blocks` blocks (over
// every launch of the group) adds them in index order, so the result does not
// depend on scheduling, and writes out[0] = sum, out[1] = sqrt(sum).
template <typename T>
__device__ void tw_sam_sqnorm(const TwTensorList& l, int adaptive, double* partials,
                              unsigned block_offset, unsigned total_blocks, unsigned* counter,
                              double* out) {
  __shared__ double scratch[32];
  const int ti = tw_sam_tensor(l, blockIdx.x);
  const T* p = reinterpret_cast<const T*>(l.ptr0[ti]);
  const T* g = reinterpret_cast<const T*>(l.ptr1[ti]);
  const long long start = (long long)(blockIdx.x - l.block_start[ti]) * TW_SAM_CHUNK;
  const long long end = min(start + TW_SAM_CHUNK, l.numel[ti]);
  const bool vec = (((l.ptr0[ti] | l.ptr1[ti]) & (4 * sizeof(T) - 1)) == 0);
  const long long nvec = vec ? (end - start) / 4 : 0;
  float acc = 0.f;
  for (long long v = threadIdx.x; v < nvec; v += blockDim.x) {
    const long long i = start + 4 * v;
    tw_f4 gv = tw_load4(g, i);
    if (adaptive) {
      tw_f4 pv = tw_load4(p, i);
      gv.x *= fabsf(pv.x); gv.y *= fabsf(pv.y); gv.z *= fabsf(pv.z); gv.w *= fabsf(pv.w);
    }
    acc = fmaf(gv.x, gv.x, acc); acc = fmaf(gv.y, gv.y, acc);
    acc = fmaf(gv.z, gv.z, acc); acc = fmaf(gv.w, gv.w, acc);
  }
  for (long long i = start + 4 * nvec + threadIdx.x; i < end; i += blockDim.x) {
    float gv = tw_load(g, i);
    if (adaptive) gv *= fabsf(tw_load(p, i));
    acc = fmaf(gv, gv, acc);
  }
  const double s = tw_block_sum((double)acc, scratch);
  if (threadIdx.x == 0) partials[block_offset + blockIdx.x] = s;
  if (tw_last_block(counter, total_blocks)) {
    double t = 0.0;
    for (unsigned i = threadIdx.x; i < total_blocks; i += blockDim.x) t += __ldcg(partials + i);
    t = tw_block_sum(t, scratch);
    if (threadIdx.x == 0) {
      out[0] = t;
      out[1] = sqrt(t);
      *counter = 0u;
    }
  }
}

// Pass 2: backup = theta; theta += scale * (adaptive ? theta^2 : 1) * g with
// scale = rho / (||A g|| + 1e-12), read from pass 1's output on the device.
template <typename T>
__device__ void tw_sam_perturb(const TwTensorList& l, int adaptive, float rho, const double* norm) {
  const int ti = tw_sam_tensor(l, blockIdx.x);
  T* p = reinterpret_cast<T*>(l.ptr0[ti]);
  const T* g = reinterpret_cast<const T*>(l.ptr1[ti]);
  T* b = reinterpret_cast<T*>(l.ptr2[ti]);
  const float scale = (float)((double)rho / (norm[1] + 1e-12));
  const long long start = (long long)(blockIdx.x - l.block_start[ti]) * TW_SAM_CHUNK;
  const long long end = min(start + TW_SAM_CHUNK, l.numel[ti]);
  const bool vec = (((l.ptr0[ti] | l.ptr1[ti] | l.ptr2[ti]) & (4 * sizeof(T) - 1)) == 0);
  const long long nvec = vec ? (end - start) / 4 : 0;
  for (long long v = threadIdx.x; v < nvec; v += blockDim.x) {
    const long long i = start + 4 * v;
    tw_copy4(b, p, i);
    tw_f4 pv = tw_load4(p, i), gv = tw_load4(g, i);
    if (adaptive) {
      pv.x = fmaf(scale * pv.x * pv.x, gv.x, pv.x); pv.y = fmaf(scale * pv.y * pv.y, gv.y, pv.y);
      pv.z = fmaf(scale * pv.z * pv.z, gv.z, pv.z); pv.w = fmaf(scale * pv.w * pv.w, gv.w, pv.w);
    } else {
      pv.x = fmaf(scale, gv.x, pv.x); pv.y = fmaf(scale, gv.y, pv.y);
      pv.z = fmaf(scale, gv.z, pv.z); pv.w = fmaf(scale, gv.w, pv.w);
    }
    tw_store4(p, i, pv);
  }
  for (long long i = start + 4 * nvec + threadIdx.x; i < end; i += blockDim.x) {
    b[i] = p[i];
    const float pv = tw_load(p, i), gv = tw_load(g, i);
    tw_store(p, i, adaptive ? fmaf(scale * pv * pv, gv, pv) : fmaf(scale, gv, pv));
  }
}

// theta = backup, bit for bit.
template <typename T>
__device__ void tw_sam_restore(const TwTensorList& l) {
  const int ti = tw_sam_tensor(l, blockIdx.x);
  T* p = reinterpret_cast<T*>(l.ptr0[ti]);
  const T* b = reinterpret_cast<const T*>(l.ptr1[ti]);
  const long long start = (long long)(blockIdx.x - l.block_start[ti]) * TW_SAM_CHUNK;
  const long long end = min(start + TW_SAM_CHUNK, l.numel[ti]);
  const bool vec = (((l.ptr0[ti] | l.ptr1[ti]) & (4 * sizeof(T) - 1)) == 0);
  const long long nvec = vec ? (end - start) / 4 : 0;
  for (long long v = threadIdx.x; v < nvec; v += blockDim.x) tw_copy4(p, b, start + 4 * v);
  for (long long i = start + 4 * nvec + threadIdx.x; i < end; i += blockDim.x) p[i] = b[i];
}

#define TW_SAM_KERNELS(SUFFIX, T)                                                                  \
  extern "C" __global__ void __launch_bounds__(TW_SAM_BLOCK)                                       \
      sam_sqnorm_##SUFFIX(const TwTensorList l, int adaptive, double* partials,                    \
                          unsigned block_offset, unsigned total_blocks, unsigned* counter,         \
                          double* out) {                                                           \
    tw_sam_sqnorm<T>(l, adaptive, partials, block_offset, total_blocks, counter, out);            \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(TW_SAM_BLOCK)                                       \
      sam_perturb_##SUFFIX(const TwTensorList l, int adaptive, float rho, const double* norm) {    \
    tw_sam_perturb<T>(l, adaptive, rho, norm);                                                     \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(TW_SAM_BLOCK) sam_restore_##SUFFIX(const TwTensorList l) { \
    tw_sam_restore<T>(l);                                                                          \
  }

TW_SAM_KERNELS(f32, float)
TW_SAM_KERNELS(bf16, tw_bf16)
