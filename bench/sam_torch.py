"""make bench: the SAM-MTL step and the standard step, taskweave against plain PyTorch.

Problem (QM9-shaped, synthetic): 11 regression tasks, 34 inputs, shared MLP
34-256-256 (ReLU after each layer), one linear head 256-1 per task, MSE per
task, batch 256 drawn from a fresh permutation of 10,000 training rows every
epoch, Adam(lr=1e-3). taskweave trains `pipelines/quickstart.toml` with that
model on its `mmoe-synthetic` data (evaluation and checkpoints only at the end,
CPU) and reports steps/s in summary.json; this script trains the same model on
random data of the same shape (the values do not change the cost).

Steps, the same in both:
- standard + EW: forward, the per-task losses read back (NaN/Inf check),
  backward of their sum, Adam step.
- SAM-MTL + EW (rho 2, adaptive, separate shared/head norms; METHODS.md §1):
  forward; per task t, torch.autograd.grad of L_t w.r.t. the shared parameters
  and head t (rows of a T x P matrix G); then per task: save the parameters,
  add eps = rho A^2 g / (|A g| + 1e-12) (A = |theta|, one norm over the shared
  tensors, one over head t), forward (all heads, as taskweave's losses()),
  gradient of L_t there, restore by copy_, head t's gradient := that SAM
  gradient, row t := g_t^SAM - g_t; shared gradient := EW(loss family) +
  EW(flat family) (each the sum of its rows); Adam step.
Both frameworks time the whole training loop, first steps included
(taskweave's steps_per_second covers all steps of the run). The runs alternate
(taskweave standard, PyTorch standard, taskweave SAM, PyTorch SAM) for
BENCH_ROUNDS rounds; each run's foreign CPU load (CPU time of processes other
than this one and its children, from /proc/stat) is measured, and reported is
the median steps/s per cell over the rounds where it stayed below 0.1 core
(over all rounds, flagged, when none did).

Usage: .venv/bin/python bench/sam_torch.py [standard_steps [sam_steps]]
Environment: BENCH_ROUNDS (5), BENCH_THREADS (intra-op threads of both
frameworks; default: libtorch's).
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from quiet import QUIET, cpu_snapshot, foreign_load  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDARD_STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SAM_STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TASKS, INPUTS, HIDDEN, BATCH, TRAIN = 11, 34, 256, 256, 10000
RHO = 2.0
THREADS = int(os.environ.get("BENCH_THREADS", "0"))  # 0: libtorch's default, in both
if THREADS:
    torch.set_num_threads(THREADS)


COMMON = [
    "--set", "run.device=cpu", "--set", "data.kind=mmoe-synthetic", "--set", f"data.tasks={TASKS}",
    "--set", f"data.input_dim={INPUTS}", "--set", f"data.train={TRAIN}",
    "--set", f"model.backbone.hidden=[{HIDDEN},{HIDDEN}]", "--set", "model.head.hidden=[]",
    "--set", f"train.batch={BATCH}", "--set", "train.weighting=ew",
    "--set", "train.optimizer={kind=\"adam\", lr=0.001}",
    "--set", f"run.threads={THREADS}",
]
STRATEGIES = {
    "standard": "train.strategy=standard",
    "sam-mtl": f"train.strategy={{kind=\"sam-mtl\", rho={RHO}, adaptive=true}}",
}


def taskweave_command(strategy, steps):
    return [
        "target/release/taskweave", "-q", "run", "pipelines/quickstart.toml", "--overwrite",
        *COMMON, "--set", STRATEGIES[strategy], "--set", f"run.name=bench-sam-{strategy}",
        "--set", f"train.steps={steps}", "--set", f"eval.every={steps}", "--set", f"train.checkpoint_every={steps}",
    ]


def taskweave_steps_per_second(strategy, steps):
    subprocess.run(taskweave_command(strategy, steps), check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, "runs", f"bench-sam-{strategy}", "summary.json")) as f:
        return json.load(f)["steps_per_second"]


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(INPUTS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(HIDDEN, 1) for _ in range(TASKS))

    def losses(self, x, y):
        features = self.backbone(x)
        return torch.stack([F.mse_loss(h(features).squeeze(-1), y[:, t]) for t, h in enumerate(self.heads)])


def check_finite(losses):
    values = losses.detach().tolist()
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"non-finite loss {values}")


def standard_step(model, opt, x, y):
    losses = model.losses(x, y)
    check_finite(losses)
    opt.zero_grad()
    losses.sum().backward()
    opt.step()


def perturb(params, grads):
    """theta += rho |theta|^2 g / (| |theta| g | + 1e-12), one norm over `params`."""
    scaled = [g * p.abs() for p, g in zip(params, grads)]
    norm = math.sqrt(sum(float(s.square().sum(dtype=torch.float64)) for s in scaled))
    scale = RHO / (norm + 1e-12)
    for p, s in zip(params, scaled):
        p.add_(s * p.abs() * scale)


def sam_step(model, opt, x, y):
    shared = list(model.backbone.parameters())
    heads = [list(h.parameters()) for h in model.heads]
    sizes = [p.numel() for p in shared]
    n = len(shared)

    losses = model.losses(x, y)
    check_finite(losses)
    G = torch.empty(TASKS, sum(sizes))
    head_grads = []
    for t in range(TASKS):
        g = torch.autograd.grad(losses[t], shared + heads[t], retain_graph=t < TASKS - 1)
        torch.cat([v.reshape(-1) for v in g[:n]], out=G[t])
        head_grads.append(g[n:])
    loss_update = torch.ones(TASKS) @ G  # EW over the loss family

    for t in range(TASKS):
        params = shared + heads[t]
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            perturb(shared, [v.view_as(p) for v, p in zip(G[t].split(sizes), shared)])
            perturb(heads[t], head_grads[t])
        perturbed = model.losses(x, y)
        check_finite(perturbed)
        g = torch.autograd.grad(perturbed[t], params)
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        for p, v in zip(heads[t], g[n:]):
            p.grad = v
        G[t] = torch.cat([v.reshape(-1) for v in g[:n]]) - G[t]
    flat_update = torch.ones(TASKS) @ G  # EW over the flat family
    update = loss_update + flat_update
    for p, v in zip(shared, update.split(sizes)):
        p.grad = v.view_as(p)
    opt.step()
    opt.zero_grad()


def pytorch_steps_per_second(strategy, steps):
    torch.manual_seed(0)
    x, y = torch.randn(TRAIN, INPUTS), torch.randn(TRAIN, TASKS)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_fn = standard_step if strategy == "standard" else sam_step
    per_epoch = TRAIN // BATCH
    perm = None
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(TRAIN)
        idx = perm[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
        step_fn(model, opt, x[idx], y[idx])
    return steps / (time.perf_counter() - start)


def main():
    steps = {"standard": STANDARD_STEPS, "sam-mtl": SAM_STEPS}
    cells = [(fw, s) for s in steps for fw in ("taskweave", "PyTorch")]
    runs = {"taskweave": taskweave_steps_per_second, "PyTorch": pytorch_steps_per_second}
    rounds = []  # (the largest foreign CPU load of the round's runs, {cell: steps/s})
    for _ in range(ROUNDS):
        rates, load = {}, 0.0
        for fw, strategy in cells:
            before = cpu_snapshot()
            rates[fw, strategy] = runs[fw](strategy, steps[strategy])
            load = max(load, foreign_load(before, cpu_snapshot()))
        rounds.append((load, rates))
    used = [r for r in rounds if r[0] < QUIET] or rounds
    med = {c: statistics.median(r[1][c] for r in used) for c in cells}

    print(
        f"SAM-MTL step vs the standard step, QM9-shaped synthetic problem: {TASKS} regression tasks, "
        f"MLP {INPUTS}-{HIDDEN}-{HIDDEN} shared, linear heads, batch {BATCH}, Adam; CPU, "
        f"{torch.get_num_threads()} threads (torch {torch.__version__}, eager); "
        f"median of {len(used)} of {ROUNDS} rounds of alternating runs "
        f"({STANDARD_STEPS} standard / {SAM_STEPS} SAM-MTL steps each)"
    )
    print(f"{'steps/s':22}{'taskweave':>12}{'PyTorch':>12}{'taskweave/PyTorch':>20}")
    for strategy, label in (("standard", "standard + EW"), ("sam-mtl", "SAM-MTL + EW (rho 2)")):
        tw, py = med["taskweave", strategy], med["PyTorch", strategy]
        print(f"{label:22}{tw:>12.1f}{py:>12.1f}{tw / py:>19.2f}x")
    cost = {fw: med[fw, "standard"] / med[fw, "sam-mtl"] for fw in ("taskweave", "PyTorch")}
    print(f"{'SAM-MTL cost (x std)':22}{cost['taskweave']:>11.1f}x{cost['PyTorch']:>11.1f}x")
    print(
        f"expected from the passes: SAM-MTL = 1 forward + T per-task backward + T x (forward + backward), "
        f"standard = 1 forward + 1 backward: (1 + 5T)/3 = {(1 + 5 * TASKS) / 3:.1f}x with backward = 2 forwards "
        f"(1 + T = {1 + TASKS}x counting only the T extra passes); less where the once-per-step costs "
        f"(optimizer step, batch) weigh in"
    )
    print("rounds (other processes' CPU use in cores: taskweave std, PyTorch std, taskweave SAM, PyTorch SAM steps/s):")
    for load, rates in rounds:
        flag = "" if load < QUIET else "   (noisy)"
        print(f"  {load:.2f}: " + ", ".join(f"{rates[c]:.1f}" for c in cells) + flag)
    if used[0][0] >= QUIET:
        print(f"NO QUIET ROUND (other processes above {QUIET} cores in every round): the medians are noisy")


if __name__ == "__main__":
    main()
