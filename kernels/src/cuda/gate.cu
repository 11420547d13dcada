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
      for (long long k = 4 * (long long)lane; k < d; k += 4 * 32) {
        tw_f4 acc[TW_GATE_MAX_TASKS];
#pragma unroll
        for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) acc[t] = tw_zero4();
        for (int j = 0; j < n; ++j) {
          const tw_f4 x = tw_load4(experts, (r * n + j) * d + k);
#pragma unroll
          for (int t = 0; t < TW_GATE_MAX_TASKS; ++t)
            if (t < nt) acc[t] = tw_fma4(w[t * s + j], x, acc[t]);
        }
#pragma unroll
        for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) {
          if (t < nt) {
            const long long o = ((long long)t * rows + r) * d + k;
            if (mem) acc[t] = tw_fma4(w[t * s + n], tw_load4(memory, o), acc[t]);
            tw_store4(out, o, acc[t]);
          }
        }
      }
    } else {
      for (long long k = lane; k < d; k += 32) {
        float acc[TW_GATE_MAX_TASKS];
#pragma unroll
        for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) acc[t] = 0.f;
        for (int j = 0; j < n; ++j) {
          const float x = tw_load(experts, (r * n + j) * d + k);
#pragma unroll
          for (int t = 0; t < TW_GATE_MAX_TASKS; ++t)
            if (t < nt) acc[t] = fmaf(w[t * s + j], x, acc[t]);
        }
#pragma unroll
        for (int t = 0; t < TW_GATE_MAX_TASKS; ++t) {
          if (t < nt) {
            const long long o = ((long long)t * rows + r) * d + k;
            if (mem) acc[t] = fmaf(w[t * s + n], tw_load(memory, o), acc[t]);
            tw_store(out, o, acc[t]);
          }
        }
      }
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
