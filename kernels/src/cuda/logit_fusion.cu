// Dynamic logit fusion (METHODS.md §5): per row, choose the one active expert
// t and weight a on the grid that minimise
//   obj(t, a) = sum_t' (KL(P~ || P) - KL(Q_t' || Q))^2 + (KL(P || P~) - KL(Q || Q_t'))^2
// with P = softmax(L), Q = softmax(S), Q_t = softmax(E_t), P~ = softmax(L + a D_t),
// D_t = E_t - S; then output log P~ of the best candidate.
//
// Single-pass math. Write lse(x) = log sum_i exp(x_i), E_R[f] = sum_i R_i f_i.
// Since log P~ = L + a D_t - lse(L + a D_t) and log P = L - lse(L):
//   KL(P~ || P)   =  a E_P~[D_t] - lse_{t,a} + lse(L)
//   KL(P  || P~)  = -a E_P[D_t]  + lse_{t,a} - lse(L)
//   KL(Q_t || Q)  =  E_Q_t[D_t]  - lse(E_t) + lse(S)
//   KL(Q || Q_t)  = -E_Q[D_t]    + lse(E_t) - lse(S)
// So one read of L, S and every E_t suffices if, per row, we accumulate
//   lse(L), lse(S), and per expert lse(E_t), E_Q_t[D_t], E_Q[D_t], E_P[D_t],
//   and per candidate (t, a): lse_{t,a} = lse(L + a D_t) and E_P~[D_t],
// each as a (reference m, sum of exp(x - m), sum of exp(x - m) * D) triple,
// which merge across chunks like an online log-sum-exp:
//   m = max(m1, m2), s = s1 e^(m1-m) + s2 e^(m2-m), u = u1 e^(m1-m) + u2 e^(m2-m).
// Everything runs in base 2 (x * log2 e, exp2) to use the hardware exp2.
//
// Cost. A naive candidate loop needs one exp per element and candidate: for
// B = 64, V = 128256, 8 experts and 21 weights that is 1.4 G exps, more time
// than the byte floor allows. On a uniform grid a_k = a_0 + k h,
//   exp2(L + a_k D - r_k) = exp2(L + a_j D - M_j) * rho^(k - j),
//   rho = exp2(h (D - Dmax)) <= 1,  r_k = M_j + (k - j) h Dmax,
// where j starts a window, M_j = max over the chunk of L + a_j D and Dmax =
// max D in the chunk. Inside a window each candidate costs one multiply per
// element instead of an exp. r_k is an upper bound of the true maximum, too
// high by at most (k - j) h (Dmax - Dmin); windows are cut so that this stays
// below TW_FUSION_GAP (in log2 units: sums keep full f32 precision, nothing
// underflows) and shorter than TW_FUSION_MAX_WINDOW (bounds the chained
// rounding). A non-uniform grid gets windows of length 1: exact exps.
//
// Launches: fusion_partials (grid = chunks x rows) writes one record per
// (row, chunk); fusion_select (one block per row) merges them, evaluates
// every candidate and picks the best; fusion_apply writes log P~ for it.
// Ties (equal objectives in the arithmetic above) go to the earliest value of
// the grid (the smallest a when the grid is sorted), then the smallest t;
// a = 0 gives P~ = P exactly, so its two KL terms are exactly 0 for every t.
// NaN objectives (from non-finite logits) count as +inf.
//
// Masked vocabulary: a token that is -inf in both E_t and S has D_t = 0
// (both models rule it out; -inf - -inf would be NaN), so with 0 log 0 = 0 it
// adds nothing to any sum, and a row with masked tokens scores as the same
// row without them.

#define TW_FUSION_CHUNK (TW_FUSION_BLOCK * TW_FUSION_PER_THREAD)
#define TW_FUSION_WARPS (TW_FUSION_BLOCK / 32)
#define TW_FUSION_GAP 64.0f
#define TW_FUSION_MAX_WINDOW 8

// D = E - S with -inf - -inf = 0: a token both models rule out (see the header).
__device__ __forceinline__ float tw_fusion_delta(float e, float s) { return e == s ? 0.f : e - s; }

struct TwFusionArgs {
  tw_u64 large;                             // [B, V]
  tw_u64 small;                             // [B, V]
  tw_u64 experts[TW_FUSION_MAX_EXPERTS];    // each [B, V]
  float alphas[TW_FUSION_MAX_ALPHAS];
  int n_experts;
  int n_alphas;
  long long vocab;
  int n_chunks;
  float step;  // h of a uniform grid, 0 when the grid is not uniform
};
static_assert(sizeof(TwFusionArgs) == 424, "TwFusionArgs layout is mirrored in src/ops/fusion.rs");

// Record of one (row, chunk), in floats:
//   [0..4)                  mL, sL, mS, sS
//   [4 + 5t .. 4 + 5t + 5)  mE, sE, uE, uQ, uP   (uQ has reference mS, uP has mL)
//   [4 + 5T + 3(t A + k))   ref, s, u             for candidate (t, a_k)
__device__ __forceinline__ long long tw_fusion_record(int t, int a) { return 4 + 5LL * t + 3LL * t * a; }

template <typename T>
__device__ void tw_fusion_partials(const TwFusionArgs& args, float* ws) {
  __shared__ float s_l[TW_FUSION_CHUNK];   // L * log2 e
  __shared__ float s_s[TW_FUSION_CHUNK];   // S * log2 e
  __shared__ float s_el[TW_FUSION_CHUNK];  // exp2(L2 - mL)
  __shared__ float s_es[TW_FUSION_CHUNK];  // exp2(S2 - mS)
  __shared__ float s_red[32];
  __shared__ float s_win[TW_FUSION_WARPS][TW_FUSION_MAX_ALPHAS];
  __shared__ float s_su[2][TW_FUSION_WARPS][TW_FUSION_MAX_ALPHAS];
  __shared__ float s_m[TW_FUSION_MAX_ALPHAS];

  const int row = blockIdx.y, chunk = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nt = args.n_experts, na = args.n_alphas;
  const long long v0 = (long long)chunk * TW_FUSION_CHUNK;
  const int valid = (int)min((long long)TW_FUSION_CHUNK, args.vocab - v0);
  const long long base = (long long)row * args.vocab + v0;
  float* rec = ws + ((long long)row * args.n_chunks + chunk) * (4 + 5LL * nt + 3LL * nt * na);

  const T* lp = reinterpret_cast<const T*>(args.large);
  const T* sp = reinterpret_cast<const T*>(args.small);
  float ml = TW_NEG_INF, ms = TW_NEG_INF;
#pragma unroll
  for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
    const int i = tid + j * TW_FUSION_BLOCK;
    if (i < valid) {
      const float l = tw_load(lp, base + i) * TW_LOG2E, s = tw_load(sp, base + i) * TW_LOG2E;
      s_l[i] = l; s_s[i] = s;
      ml = fmaxf(ml, l); ms = fmaxf(ms, s);
    }
  }
  ml = tw_block_max(ml, s_red);
  ms = tw_block_max(ms, s_red);
  // An all -inf chunk would give exp2(-inf - -inf) = NaN; subtract 0 instead.
  const float ml0 = ml == TW_NEG_INF ? 0.f : ml, ms0 = ms == TW_NEG_INF ? 0.f : ms;
  float sl = 0.f, ss = 0.f;
#pragma unroll
  for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
    const int i = tid + j * TW_FUSION_BLOCK;
    if (i < valid) {
      const float el = exp2f(s_l[i] - ml0), es = exp2f(s_s[i] - ms0);
      s_el[i] = el; s_es[i] = es;
      sl += el; ss += es;
    }
  }
  sl = tw_block_sum(sl, s_red);
  ss = tw_block_sum(ss, s_red);
  if (tid == 0) { rec[0] = ml; rec[1] = sl; rec[2] = ms; rec[3] = ss; }

  for (int t = 0; t < nt; ++t) {
    const T* ep = reinterpret_cast<const T*>(args.experts[t]);
    float e2[TW_FUSION_PER_THREAD], d[TW_FUSION_PER_THREAD];
    float me = TW_NEG_INF, dmax = TW_NEG_INF, dmin_neg = TW_NEG_INF;
#pragma unroll
    for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
      const int i = tid + j * TW_FUSION_BLOCK;
      if (i < valid) {
        e2[j] = tw_load(ep, base + i) * TW_LOG2E;
        d[j] = tw_fusion_delta(e2[j], s_s[i]);
        me = fmaxf(me, e2[j]); dmax = fmaxf(dmax, d[j]); dmin_neg = fmaxf(dmin_neg, -d[j]);
      } else {
        e2[j] = TW_NEG_INF; d[j] = 0.f;
      }
    }
    me = tw_block_max(me, s_red);
    dmax = tw_block_max(dmax, s_red);
    const float dmin = -tw_block_max(dmin_neg, s_red);
    const float me0 = me == TW_NEG_INF ? 0.f : me;

    // Per-expert sums: Q_t's lse and E_Q_t[D], and E_Q[D], E_P[D].
    float se = 0.f, ue = 0.f, uq = 0.f, up = 0.f;
#pragma unroll
    for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
      const int i = tid + j * TW_FUSION_BLOCK;
      if (i < valid) {
        const float ee = exp2f(e2[j] - me0);
        se += ee; ue = fmaf(ee, d[j], ue);
        uq = fmaf(s_es[i], d[j], uq); up = fmaf(s_el[i], d[j], up);
      }
    }
    se = tw_block_sum(se, s_red); ue = tw_block_sum(ue, s_red);
    uq = tw_block_sum(uq, s_red); up = tw_block_sum(up, s_red);
    if (tid == 0) {
      float* r = rec + 4 + 5 * t;
      r[0] = me; r[1] = se; r[2] = ue; r[3] = uq; r[4] = up;
    }

    // Window length: the largest that keeps r_k within TW_FUSION_GAP of the
    // true maximum (see the header).
    int win = 1;
    const float h = args.step;
    if (h > 0.f) {
      const float spread = h * fmaxf(dmax - dmin, 0.f);
      win = spread * (TW_FUSION_MAX_WINDOW - 1) <= TW_FUSION_GAP ? TW_FUSION_MAX_WINDOW
                                                                : max(1, (int)(TW_FUSION_GAP / spread) + 1);
      win = min(win, TW_FUSION_MAX_WINDOW);
    }
    const int n_win = (na + win - 1) / win;
    // Window maxima M_j = max_i L2_i + a_j D_i.
    for (int w = 0; w < n_win; ++w) {
      const float a = args.alphas[w * win];
      float m = TW_NEG_INF;
#pragma unroll
      for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
        const int i = tid + j * TW_FUSION_BLOCK;
        if (i < valid) m = fmaxf(m, fmaf(a, d[j], s_l[i]));
      }
      m = tw_warp_max(m);
      if (lane == 0) s_win[warp][w] = m;
    }
    __syncthreads();
    for (int w = tid; w < n_win; w += TW_FUSION_BLOCK) {
      float m = TW_NEG_INF;
      for (int q = 0; q < TW_FUSION_WARPS; ++q) m = fmaxf(m, s_win[q][w]);
      s_m[w] = m;
    }
    __syncthreads();

    float e[TW_FUSION_PER_THREAD], rho[TW_FUSION_PER_THREAD];
    if (win > 1) {
#pragma unroll
      for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) rho[j] = exp2f(h * (d[j] - dmax));
    }
    for (int k = 0; k < na; ++k) {
      if (k % win == 0) {
        const float a = args.alphas[k], m = s_m[k / win];
        const float m0 = m == TW_NEG_INF ? 0.f : m;
#pragma unroll
        for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) {
          const int i = tid + j * TW_FUSION_BLOCK;
          e[j] = i < valid ? exp2f(fmaf(a, d[j], s_l[i]) - m0) : 0.f;
        }
      } else {
#pragma unroll
        for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) e[j] *= rho[j];
      }
      float s = 0.f, u = 0.f;
#pragma unroll
      for (int j = 0; j < TW_FUSION_PER_THREAD; ++j) { s += e[j]; u = fmaf(e[j], d[j], u); }
      s = tw_warp_sum(s); u = tw_warp_sum(u);
      if (lane == 0) { s_su[0][warp][k] = s; s_su[1][warp][k] = u; }
    }
    __syncthreads();
    for (int k = tid; k < na; k += TW_FUSION_BLOCK) {
      float s = 0.f, u = 0.f;
      for (int q = 0; q < TW_FUSION_WARPS; ++q) { s += s_su[0][q][k]; u += s_su[1][q][k]; }
      const int j = k - k % win;
      const float m = s_m[j / win];
      float* r = rec + tw_fusion_record(nt, 0) + 3LL * (t * na + k);
      r[0] = m == TW_NEG_INF ? m : m + (float)(k - j) * h * dmax;
      r[1] = s;
      r[2] = u;
    }
    __syncthreads();  // s_win, s_m and s_su are reused by the next expert
  }
}

// Merges one (m, s, u) triple over every chunk of a row (stride between
// chunks: `rec` floats). Returns lse in base 2 and u / s.
__device__ void tw_fusion_merge(const float* first, long long rec, int n_chunks, int m_off,
                                int s_off, int u_off, double* lse2, double* mean) {
  double m = TW_NEG_INF_D;
  for (int c = 0; c < n_chunks; ++c) m = fmax(m, (double)first[c * rec + m_off]);
  const double m0 = m == TW_NEG_INF_D ? 0.0 : m;
  double s = 0.0, u = 0.0;
  for (int c = 0; c < n_chunks; ++c) {
    const double f = exp2((double)first[c * rec + m_off] - m0);
    s += (double)first[c * rec + s_off] * f;
    if (u_off >= 0) u += (double)first[c * rec + u_off] * f;
  }
  *lse2 = m0 + log2(s);
  *mean = u / s;
}

// One block per row: merge the chunk records, evaluate every candidate, keep
// the best. sel[row] = (t, a, lse) of the winner, for fusion_apply.
extern "C" __global__ void __launch_bounds__(TW_FUSION_SELECT_BLOCK)
    fusion_select(const TwFusionArgs args, const float* ws, float* out_alpha, float* out_obj,
                  float* sel) {
  __shared__ double s_lse_l, s_lse_s;
  __shared__ double s_klq[TW_FUSION_MAX_EXPERTS], s_klqr[TW_FUSION_MAX_EXPERTS];
  __shared__ double s_ep[TW_FUSION_MAX_EXPERTS];
  __shared__ double s_best_obj[TW_FUSION_SELECT_BLOCK];
  __shared__ int s_best_c[TW_FUSION_SELECT_BLOCK];
  __shared__ double s_best_lse[TW_FUSION_SELECT_BLOCK];

  const int row = blockIdx.x, tid = threadIdx.x;
  const int nt = args.n_experts, na = args.n_alphas;
  const long long rec = 4 + 5LL * nt + 3LL * nt * na;
  const float* first = ws + (long long)row * args.n_chunks * rec;
  double unused;
  if (tid == 0) {
    double l2, s2;
    tw_fusion_merge(first, rec, args.n_chunks, 0, 1, -1, &l2, &unused);
    tw_fusion_merge(first, rec, args.n_chunks, 2, 3, -1, &s2, &unused);
    s_lse_l = l2 * TW_LN2;
    s_lse_s = s2 * TW_LN2;
  }
  __syncthreads();
  for (int t = tid; t < nt; t += blockDim.x) {
    const int o = 4 + 5 * t;
    double lse_e2, mean_eqt, mean_eq, mean_ep;
    tw_fusion_merge(first, rec, args.n_chunks, o, o + 1, o + 2, &lse_e2, &mean_eqt);
    // uQ and uP share their chunk references with sS and sL.
    double num_q = 0.0, den_q = 0.0, num_p = 0.0, den_p = 0.0, mq = TW_NEG_INF_D, mp = TW_NEG_INF_D;
    for (int c = 0; c < args.n_chunks; ++c) {
      mq = fmax(mq, (double)first[c * rec + 2]);
      mp = fmax(mp, (double)first[c * rec + 0]);
    }
    if (mq == TW_NEG_INF_D) mq = 0.0;
    if (mp == TW_NEG_INF_D) mp = 0.0;
    for (int c = 0; c < args.n_chunks; ++c) {
      const float* r = first + c * rec;
      const double fq = exp2((double)r[2] - mq), fp = exp2((double)r[0] - mp);
      num_q += (double)r[o + 3] * fq; den_q += (double)r[3] * fq;
      num_p += (double)r[o + 4] * fp; den_p += (double)r[1] * fp;
    }
    mean_eq = num_q / den_q;
    mean_ep = num_p / den_p;
    const double lse_e = lse_e2 * TW_LN2;
    // Means of D are in log2 units (D * log2 e): scale back by ln 2.
    s_klq[t] = mean_eqt * TW_LN2 - lse_e + s_lse_s;
    s_klqr[t] = -mean_eq * TW_LN2 + lse_e - s_lse_s;
    s_ep[t] = mean_ep * TW_LN2;
  }
  __syncthreads();

  double best = TW_POS_INF_D, best_lse = 0.0;
  int best_c = 0x7fffffff;
  // Candidate c = k * T + t: increasing c is increasing a, then t.
  for (int c = tid; c < nt * na; c += blockDim.x) {
    const int k = c / nt, t = c % nt;
    const double a = (double)args.alphas[k];
    const int o = tw_fusion_record(nt, 0) + 3 * (t * na + k);
    double lse2, mean;
    tw_fusion_merge(first, rec, args.n_chunks, o, o + 1, o + 2, &lse2, &mean);
    const double lse = lse2 * TW_LN2;
    double kl1 = 0.0, kl2 = 0.0;
    if (a != 0.0) {
      kl1 = a * mean * TW_LN2 - lse + s_lse_l;
      kl2 = -a * s_ep[t] + lse - s_lse_l;
    }
    double obj = 0.0;
    for (int q = 0; q < nt; ++q) {
      const double x = kl1 - s_klq[q], y = kl2 - s_klqr[q];
      obj += x * x + y * y;
    }
    if (obj != obj) obj = TW_POS_INF_D;
    if (obj < best || (obj == best && c < best_c)) { best = obj; best_c = c; best_lse = lse; }
  }
  s_best_obj[tid] = best; s_best_c[tid] = best_c; s_best_lse[tid] = best_lse;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (tid < half) {
      const double o2 = s_best_obj[tid + half];
      const int c2 = s_best_c[tid + half];
      if (o2 < s_best_obj[tid] || (o2 == s_best_obj[tid] && c2 < s_best_c[tid])) {
        s_best_obj[tid] = o2; s_best_c[tid] = c2; s_best_lse[tid] = s_best_lse[tid + half];
      }
    }
    __syncthreads();
  }
  if (tid == 0) {
    int c = s_best_c[0];
    if (c == 0x7fffffff) c = 0;  // every objective was +inf: first candidate
    const int k = c / nt, t = c % nt;
    for (int q = 0; q < nt; ++q) out_alpha[row * nt + q] = q == t ? args.alphas[k] : 0.f;
    out_obj[row] = (float)s_best_obj[0];
    sel[row * 4 + 0] = (float)t;
    sel[row * 4 + 1] = args.alphas[k];
    sel[row * 4 + 2] = (float)s_best_lse[0];
    sel[row * 4 + 3] = 0.f;
  }
}

// out = L + a (E_t - S) - lse for the selected (t, a) of each row, in f32.
template <typename T>
__device__ void tw_fusion_apply(const TwFusionArgs& args, const float* sel, float* out) {
  const int row = blockIdx.y;
  const int t = (int)sel[row * 4 + 0];
  const float a = sel[row * 4 + 1], lse = sel[row * 4 + 2];
  const T* lp = reinterpret_cast<const T*>(args.large);
  const T* sp = reinterpret_cast<const T*>(args.small);
  const T* ep = reinterpret_cast<const T*>(args.experts[t]);
  const long long base = (long long)row * args.vocab;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < args.vocab; i += stride) {
    const float l = tw_load(lp, base + i);
    // a = 0 is P itself: skip reading S and E (and their possible infinities).
    out[base + i] = (a == 0.f ? l : fmaf(a, tw_fusion_delta(tw_load(ep, base + i), tw_load(sp, base + i)), l)) - lse;
  }
}

#define TW_FUSION_KERNELS(SUFFIX, T)                                                          \
  extern "C" __global__ void __launch_bounds__(TW_FUSION_BLOCK)                               \
      fusion_partials_##SUFFIX(const TwFusionArgs args, float* ws) {                          \
    tw_fusion_partials<T>(args, ws);                                                          \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(TW_FUSION_APPLY_BLOCK)                         \
      fusion_apply_##SUFFIX(const TwFusionArgs args, const float* sel, float* out) {          \
    tw_fusion_apply<T>(args, sel, out);                                                       \
  }

TW_FUSION_KERNELS(f32, float)
TW_FUSION_KERNELS(bf16, tw_bf16)
