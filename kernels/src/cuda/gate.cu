// TaskExpert's gate (METHODS.md §4) for up to TW_GATE_MAX_TASKS tasks at once:
// per token r and task t, w = softmax(logits[t, r, :]) over S slots, then
//   out[t, r, :] = sum_{j<n} w[j] * experts[r, j, :] + w[n] * memory[t, r, :]
// where slot n (present when S = n + 1) is the task's memory, zeros when
// `memory` is null (the first selected block). The libtorch reference
// materialises the [T, R, n, d] products before summing them; here the
// experts are read once for every task and nothing is materialised.
//
// One warp per token (grid-stride over the block's warps): the warp computes
// each task's softmax into its own slice of shared memory, then its lanes
// sweep the feature dimension, four elements each where `vec4` says every row
// is 16-byte aligned. Warps never wait for one another (no block barrier); at
// C = 384 all 32 lanes are busy (96 four-wide columns, three sweeps each),
// where one 128-thread block per token left a quarter idle and stalled twice
// per token (39 % / 22 % of the H200's bandwidth, f32 / bf16).

// One lane's share of token r's mixture, W features at a time, with the
// tasks' weights `w` (slots of S floats per task) in shared memory.
template <int W, typename T>
__device__ __forceinline__ void tw_gate_sweep(const T* __restrict__ experts,
                                              const T* __restrict__ memory, const float* w,
                                              long long r, long long rows, int nt, int n, int s,
                                              long long d, bool mem, int lane,
                                              T* __restrict__ out) {
  typedef tw_lane<W> L;
  for (long long k = W * (long long)lane; k < d; k += W * 32) {
    typename L::v acc[TW_GATE_MAX_TASKS];
#pragma unroll
    for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) acc[t] = L::zero();
    for (int j = 0; j < n; ++j) {
      const typename L::v x = L::load(experts, (r * n + j) * d + k);
#pragma unroll
      for (int t = 0; t < TW_GATE_MAX_TASKS; ++t)
        if (t < nt) acc[t] = L::fma(w[t * s + j], x, acc[t]);
    }
#pragma unroll
    for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) {
      if (t < nt) {
        const long long o = ((long long)t * rows + r) * d + k;
        if (mem) acc[t] = L::fma(w[t * s + n], L::load(memory, o), acc[t]);
        L::store(out, o, acc[t]);
      }
    }
  }
}

template <typename T>
__device__ void tw_gate_mix(const T* __restrict__ logits, const T* __restrict__ experts,
                            const T* __restrict__ memory, long long rows, int nt, int n, int s,
                            long long d, int vec4, T* __restrict__ out,
                            float* __restrict__ weights) {
  __shared__ float slices[TW_GATE_BLOCK / 32][TW_GATE_MAX_TASKS * TW_GATE_MAX_SLOTS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* w = slices[warp];
  const bool mem = s > n && memory != 0;
  const long long step = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + warp; r < rows; r += step) {
    for (int t = 0; t < nt; ++t) {
      const long long at = ((long long)t * rows + r) * s;
      const float v = lane < s ? tw_load(logits, at + lane) : TW_NEG_INF;
      const float m = tw_warp_max(v);
      const float e = lane < s ? expf(v - m) : 0.f;
      const float p = e / tw_warp_sum(e);
      if (lane < s) {
        w[t * s + lane] = p;
        weights[at + lane] = p;
      }
    }
    __syncwarp();
    if (vec4) {
      tw_gate_sweep<4>(experts, memory, w, r, rows, nt, n, s, d, mem, lane, out);
    } else {
      tw_gate_sweep<1>(experts, memory, w, r, rows, nt, n, s, d, mem, lane, out);
    }
    __syncwarp();  // w is rewritten for the next token
  }
}

#define TW_GATE_KERNEL(SUFFIX, T)                                                              \
  extern "C" __global__ void __launch_bounds__(TW_GATE_BLOCK)                                  \
      gate_mix_##SUFFIX(const T* logits, const T* experts, const T* memory, long long rows,    \
                        int nt, int n, int s, long long d, int vec4, T* out, float* weights) { \
    tw_gate_mix<T>(logits, experts, memory, rows, nt, n, s, d, vec4, out, weights);            \
  }

TW_GATE_KERNEL(f32, float)
TW_GATE_KERNEL(bf16, tw_bf16)
