"""make bench: the gradient weightings in plain eager PyTorch against taskweave.

Reads what `cargo bench --bench weightings` wrote under
target/bench/weightings/ (the QM9-shaped input, T = 11 tasks x P = 74,752
shared parameters, and taskweave's update for each method), computes the same
updates here, reports the relative error, and times both: this script runs the
taskweave bench executable (`--time-only`) and its own timing loop in
alternating rounds, so both frameworks see the same machine load, and reports
the median per-call time over the rounds in which other processes used less
than 0.1 core (measured from /proc/stat; over all rounds, flagged, when none
was that quiet).

The PyTorch side is written the way these methods are commonly written, with
float32 inputs and float64 where taskweave uses it (the T x T solver math and
the Gramian), and its own solvers (no NumPy/SciPy here):

- ew: the sum of the gradients (weights 1).
- pcgrad: the P-space loop of the official code (Yu et al.): for each task a
  clone of g_i, projected off every g_j it conflicts with, against the original
  g_j, in float32, then summed. The visiting order is random in both; here it is
  taskweave's order for (seed 0, step s), reproduced with a Python SplitMix64,
  so the check is exact for T = 11 (also shown: the check with T = 2, where the
  order cannot matter, and the error with an order from Python's `random`).
  Orders are drawn outside the timed call.
- cagrad (c = 0.4, rescale = 1): Gramian in f64, the dual
  min_{w in simplex} w.b + c|g0| sqrt(w'Mw) by accelerated projected gradient
  (FISTA, backtracking, restart) until a step moves < 1e-12 or
  gives no descent, d = g0 + c|g0|/|g_w| g_w,
  divided by 1 + c^2.
- mgda (normalization none): min-norm point by Frank-Wolfe on the Gramian with
  exact line search, started from the best pair (Sener & Koltun's
  MinNormSolver), stopped at a relative duality gap of 1e-5 or 250 iterations
  (their constants); the update combines the original gradients.
- imtl-g: LibMTL's closed form alpha_{2..T} = g_1 U'(D U')^-1 in P-space, f64.
- nash-mtl (max_norm 1): Gramian / Frobenius norm, M a = 1/a by damped Newton
  (as taskweave: start 1/|g_i| on the first call, the previous a after, rescaled
  to its best point on the ray, ridge 1e-12, at most 20 steps), update clipped
  as clip_grad_norm_ does. "nash-mtl" keeps a across calls (warm start, as in
  training), "nash-mtl (cold)" starts afresh each call.

Usage: .venv/bin/python bench/weightings_torch.py [taskweave.json]
Environment: BENCH_ROUNDS (3), BENCH_BUDGET_MS per method and round (1000),
BENCH_THREADS (intra-op threads of both frameworks; default: libtorch's).
"""

import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
from quiet import QUIET, cpu_snapshot, foreign_load  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/bench/weightings/taskweave.json")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BUDGET_MS = float(os.environ.get("BENCH_BUDGET_MS", "1000"))
WARMUP, MIN_SAMPLES, MAX_SAMPLES = 10, 25, 2000
F64 = torch.float64
if os.environ.get("BENCH_THREADS"):  # the taskweave executable reads it too
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))


# --- taskweave's PCGrad order: SplitMix64 as in plugin-api/src/rng.rs ----------
MASK = (1 << 64) - 1


class SplitMix:
    def __init__(self, state):
        self.state = state

    @staticmethod
    def at(seed, stream):
        mixer = SplitMix((seed ^ (stream * 0xD1B54A32D192ED03)) & MASK)
        return SplitMix(mixer.next_u64())

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def pcgrad_orders(seed, step, t):
    rng = SplitMix.at(seed, step)
    orders = []
    for i in range(t):
        others = [j for j in range(t) if j != i]
        rng.shuffle(others)
        orders.append(others)
    return orders


# --- the methods ---------------------------------------------------------------
def gram(G):
    D = G.double()
    M = D @ D.T
    return 0.5 * (M + M.T)


def ew(G):
    return torch.ones(G.shape[0], dtype=G.dtype) @ G


def pcgrad(G, orders):
    pc_grads = [g.clone() for g in G]
    for g_i, order in zip(pc_grads, orders):
        for j in order:
            g_j = G[j]
            g_i_g_j = torch.dot(g_i, g_j)
            if g_i_g_j < 0:
                g_i -= g_i_g_j * g_j / (g_j.norm() ** 2)
    return torch.stack(pc_grads).sum(0)


def project_simplex(v):
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1.0
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / k > 0)[-1])
    return (v - css[rho] / (rho + 1)).clamp(min=0.0)


def cagrad_dual(M, b, k, tol=1e-12, max_iter=5000):
    """argmin over the simplex of F(w) = w.b + k sqrt(w'Mw), FISTA with backtracking."""
    t = M.shape[0]

    def value_and_grad(w):
        Mw = M @ w
        norm = torch.sqrt((w @ Mw).clamp(min=1e-300))
        return float(w @ b + k * norm), b + (k / norm) * Mw

    x = torch.full((t,), 1.0 / t, dtype=F64)
    y, momentum, lipschitz = x.clone(), 1.0, float(k * M.diagonal().max() / math.sqrt(float(x @ M @ x)))
    fx = value_and_grad(x)[0]
    for _ in range(max_iter):
        fy, gy = value_and_grad(y)
        while True:
            x_new = project_simplex(y - gy / lipschitz)
            step = x_new - y
            f_new = value_and_grad(x_new)[0]
            if f_new <= fy + float(gy @ step) + 0.5 * lipschitz * float(step @ step) + 1e-15 * abs(fy):
                break
            lipschitz *= 2.0
        if f_new > fx:  # adaptive restart; from x itself, no descent left: converged
            if momentum == 1.0:
                break
            y, momentum = x.clone(), 1.0
            continue
        moved = float((x_new - x).abs().max())
        next_momentum = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum * momentum))
        y = x_new + ((momentum - 1.0) / next_momentum) * (x_new - x)
        x, fx, momentum = x_new, f_new, next_momentum
        lipschitz *= 0.9
        if moved < tol:
            break
    return x


def cagrad(G, c=0.4):
    M = gram(G)
    t = M.shape[0]
    b = M.mean(1)
    g0_norm = math.sqrt(max(float(b.mean()), 0.0))
    k = c * g0_norm
    coef = torch.full((t,), 1.0 / t, dtype=F64)
    if k > 0:
        w = cagrad_dual(M, b, k)
        gw_norm = math.sqrt(max(float(w @ M @ w), 0.0))
        if gw_norm > 0:
            coef = coef + (k / gw_norm) * w
    return (coef / (1.0 + c * c)).to(G.dtype) @ G


def min_norm_from2(v1v1, v1v2, v2v2):
    """Weight on v1 of the min-norm point of the segment [v1, v2] (Sener & Koltun)."""
    if v1v2 >= v1v1:
        return 0.999, v1v1
    if v1v2 >= v2v2:
        return 0.001, v2v2
    gamma = -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
    return gamma, v2v2 + gamma * (v1v2 - v2v2)


def mgda(G, stop=1e-5, max_iter=250):
    M = gram(G)
    t = M.shape[0]
    dps = M.tolist()
    best = (math.inf, 0, 1, 1.0)
    for i in range(t):
        for j in range(i + 1, t):
            c, d = min_norm_from2(dps[i][i], dps[i][j], dps[j][j])
            if d < best[0]:
                best = (d, i, j, c)
    w = torch.zeros(t, dtype=F64)
    w[best[1]], w[best[2]] = best[3], 1.0 - best[3]
    scale = float(M.diagonal().max())
    for _ in range(max_iter):
        Mw = M @ w
        toward = int(torch.argmin(Mw))
        v1v1, v1v2, v2v2 = float(w @ Mw), float(Mw[toward]), dps[toward][toward]
        if v1v1 - v1v2 <= stop * scale:  # Frank-Wolfe duality gap
            break
        gamma = min(max((v1v1 - v1v2) / (v1v1 + v2v2 - 2.0 * v1v2), 0.0), 1.0)
        w = (1.0 - gamma) * w
        w[toward] += gamma
    return w.to(G.dtype) @ G


def imtl_g(G):
    D = G.double()
    unit = D / D.norm(dim=1, keepdim=True)
    diff = D[0:1] - D[1:]
    diff_unit = unit[0:1] - unit[1:]
    alpha = (D[0] @ diff_unit.T) @ torch.linalg.inv(diff @ diff_unit.T)
    alpha = torch.cat([(1.0 - alpha.sum()).unsqueeze(0), alpha])
    return alpha.to(G.dtype) @ G


class NashMtl:
    def __init__(self, max_norm=1.0, optim_niter=20):
        self.max_norm, self.optim_niter, self.alpha = max_norm, optim_niter, None

    def __call__(self, G):
        M = gram(G)
        t = M.shape[0]
        start = self.alpha if self.alpha is not None else 1.0 / M.diagonal().sqrt()
        A = M / torch.linalg.matrix_norm(M) + 1e-12 * torch.eye(t, dtype=F64)
        alpha = start * math.sqrt(t / float(start @ A @ start))
        for _ in range(self.optim_niter):
            residual = A @ alpha - 1.0 / alpha
            step = torch.linalg.solve(A + torch.diag(1.0 / alpha**2), -residual)
            decrement = -float(residual @ step)
            if not decrement > 1e-24:
                break
            alpha = alpha + (1.0 if decrement < 1.0 / 16.0 else 1.0 / (1.0 + math.sqrt(decrement))) * step
        self.alpha = alpha
        d = alpha.to(G.dtype) @ G
        clip = self.max_norm / (float(d.norm()) + 1e-6)  # torch.nn.utils.clip_grad_norm_
        return d * clip if clip < 1.0 else d


# --- timing --------------------------------------------------------------------
def time_calls(setup, call):
    """Per-call µs: warm-up, then calls until the budget is spent; setup() is untimed."""
    for step in range(1, WARMUP + 1):
        call(setup(step), step)
    samples, step, started = [], WARMUP, time.perf_counter()
    while len(samples) < MIN_SAMPLES or (
        len(samples) < MAX_SAMPLES and (time.perf_counter() - started) * 1e3 < BUDGET_MS
    ):
        step += 1
        state = setup(step)
        t0 = time.perf_counter_ns()
        call(state, step)
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return samples


def torch_methods(G, t):
    warm = NashMtl()
    return {
        "ew": (lambda s: None, lambda _, s: ew(G)),
        "pcgrad": (lambda s: pcgrad_orders(0, s, t), lambda orders, s: pcgrad(G, orders)),
        "cagrad": (lambda s: None, lambda _, s: cagrad(G)),
        "mgda": (lambda s: None, lambda _, s: mgda(G)),
        "mgda (FW, gap 1e-10)": (lambda s: None, lambda _, s: mgda(G, 1e-10, 10**6)),
        "imtl-g": (lambda s: None, lambda _, s: imtl_g(G)),
        "nash-mtl": (lambda s: None, lambda _, s: warm(G)),
        "nash-mtl (cold)": (lambda s: NashMtl(), lambda nash, s: nash(G)),
        "(f64 Gramian alone)": (lambda s: None, lambda _, s: gram(G)),
    }


def rel_error(ours, theirs):
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm())


def main():
    with open(REPORT) as f:
        report = json.load(f)
    inputs = load_file(report["inputs"])
    updates = load_file(report["updates"])
    G, t = inputs["grads"], inputs["grads"].shape[0]
    seed = report["run_seed"]

    # Each method's first call (step 0, fresh state), against taskweave's.
    first = {
        "ew": ew(G),
        "pcgrad": pcgrad(G, pcgrad_orders(seed, 0, t)),
        "cagrad": cagrad(G),
        "mgda": mgda(G),
        "imtl-g": imtl_g(G),
        "nash-mtl": NashMtl()(G),
    }
    errors = {name: rel_error(u, updates[f"update/{name}"]) for name, u in first.items()}
    errors["nash-mtl (cold)"] = errors["nash-mtl"]
    errors["mgda (FW, gap 1e-10)"] = rel_error(mgda(G, 1e-10, 10**6), updates["update/mgda"])
    t2 = rel_error(pcgrad(G[:2], [[1], [0]]), updates["update/pcgrad-t2"])
    other_order = [random.Random(1).sample([j for j in range(t) if j != i], t - 1) for i in range(t)]
    shuffled = rel_error(pcgrad(G, other_order), updates["update/pcgrad"])

    # Timing: taskweave and PyTorch in alternating rounds.
    # Timing: taskweave and PyTorch in alternating rounds; each round's foreign CPU load is measured.
    rounds = []
    methods = torch_methods(G, t)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            out = os.path.join(tmp, f"round{r}.json")
            before = cpu_snapshot()
            subprocess.run([report["exe"], "--time-only", "--out", out, "--budget-ms", str(BUDGET_MS)], check=True)
            with open(out) as f:
                timed = json.load(f)
            threads = timed["threads"]
            ours = {name: m["samples_us"] for name, m in timed["methods"].items()}
            theirs = {name: time_calls(setup, call) for name, (setup, call) in methods.items()}
            rounds.append((foreign_load(before, cpu_snapshot()), ours, theirs))
    used = [r for r in rounds if r[0] < QUIET] or rounds
    ours = {name: [x for r in used for x in r[1][name]] for name in rounds[0][1]}
    theirs = {name: [x for r in used for x in r[2][name]] for name in methods}

    print(
        f"gradient weightings, one call, T = {t}, P = {G.shape[1]:,}, CPU, threads: "
        f"taskweave {threads}, PyTorch {torch.get_num_threads()} (torch {torch.__version__}, eager); "
        f"median per call over {len(used)} of {ROUNDS} alternating rounds"
    )
    print(f"{'method':22}{'taskweave µs':>14}{'PyTorch µs':>14}{'PyTorch/taskweave':>19}{'rel. error':>12}")
    for name in methods:
        py = statistics.median(theirs[name])
        tw_name = "mgda" if name.startswith("mgda") else name
        if tw_name in ours:
            tw = statistics.median(ours[tw_name])
            print(f"{name:22}{tw:>14.1f}{py:>14.1f}{py / tw:>18.2f}x{errors[name]:>12.1e}")
        else:
            print(f"{name:22}{'':>14}{py:>14.1f}")
    print(
        "rel. error = |u_PyTorch - u_taskweave| / |u_taskweave| of the first call (step 0, fresh state). "
        f"PCGrad with taskweave's order for T = 11; with T = 2 (order-free): {t2:.1e}; "
        f"with another order: {shuffled:.1e}."
    )
    loads = ", ".join(f"{r[0]:.2f}" for r in rounds)
    if len(used) < len(rounds) or used[0][0] < QUIET:
        print(f"other processes' CPU use per round (cores): {loads}; used the rounds below {QUIET}")
    else:
        print(f"other processes' CPU use per round (cores): {loads}; NO QUIET ROUND (all above {QUIET}): noisy")


if __name__ == "__main__":
    main()
