"""make bench: the SAM-MTL step and the standard step, taskweave against plain PyTorch.

Two problems (BENCH_PROBLEM):
- `qm9-shaped` (default; synthetic): 11 regression tasks, 34 inputs, shared
  MLP 34-256-256 (ReLU after each layer), one linear head 256-1 per task, MSE
  per task. taskweave trains `pipelines/quickstart.toml` with that model on its
  `mmoe-synthetic` data.
- `multi-fashion`: `pipelines/multi-fashion.toml` as it is (2 classification
  tasks on 36x36 images; conv 16 and 32 with batch norm, ReLU and max-pool,
  flattened; heads 2592-64-10; cross-entropy), on the `make images` data.
Both: batch 256 drawn from a fresh permutation of 10,000 training rows every
epoch, Adam(lr=1e-3), CPU; taskweave evaluates and checkpoints only at the
end and reports steps/s in summary.json; this script trains the same model on
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
Environment: BENCH_PROBLEM (qm9-shaped), BENCH_ROUNDS (5), BENCH_THREADS
(intra-op threads of both frameworks; default: libtorch's), BENCH_DEVICE
(cpu; `cuda:0` trains both on the GPU with the data resident there),
TASKWEAVE_BIN and TASKWEAVE_PLUGINS (see runs.py).
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
import quiet  # noqa: E402
from runs import BIN, PLUGINS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = os.environ.get("BENCH_PROBLEM", "qm9-shaped")
STANDARD_STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SAM_STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
BATCH, TRAIN = 256, 10000
RHO = 2.0
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
ROUNDS, THREADS = quiet.settings(5)

STRATEGIES = {
    "standard": "train.strategy=standard",
    "sam-mtl": f"train.strategy={{kind=\"sam-mtl\", rho={RHO}, adaptive=true}}",
}


class Mlp:
    """The QM9-shaped problem."""
    tasks, inputs, hidden = 11, 34, 256
    pipeline = "pipelines/quickstart.toml"
    sets = [
        "data.kind=mmoe-synthetic", f"data.tasks={tasks}", f"data.input_dim={inputs}", f"data.train={TRAIN}",
        f"model.backbone.hidden=[{hidden},{hidden}]", "model.head.hidden=[]",
    ]
    label = f"QM9-shaped synthetic problem: {tasks} regression tasks, MLP {inputs}-{hidden}-{hidden} shared, linear heads"

    @classmethod
    def modules(cls):
        backbone = nn.Sequential(nn.Linear(cls.inputs, cls.hidden), nn.ReLU(), nn.Linear(cls.hidden, cls.hidden),
                                 nn.ReLU())
        return backbone, [nn.Linear(cls.hidden, 1) for _ in range(cls.tasks)]

    @classmethod
    def data(cls):
        return torch.randn(TRAIN, cls.inputs), torch.randn(TRAIN, cls.tasks)

    @staticmethod
    def loss(out, y):
        return F.mse_loss(out.squeeze(-1), y)


class Conv:
    """Multi-Fashion as pipelines/multi-fashion.toml has it."""
    tasks, side, classes = 2, 36, 10
    pipeline = "pipelines/multi-fashion.toml"
    sets = ["data.val=256", "data.test=256"]
    label = ("Multi-Fashion: 2 classification tasks, 36x36 images, conv 16-32 (BN, ReLU, max-pool) flattened, "
             "heads 2592-64-10")

    @classmethod
    def modules(cls):
        def stage(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        backbone = nn.Sequential(*stage(1, 16), *stage(16, 32), nn.Flatten())
        width = 32 * (cls.side // 4) ** 2
        return backbone, [nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, cls.classes))
                          for _ in range(cls.tasks)]

    @classmethod
    def data(cls):
        return torch.rand(TRAIN, 1, cls.side, cls.side), torch.randint(0, cls.classes, (TRAIN, cls.tasks))

    @staticmethod
    def loss(out, y):
        return F.cross_entropy(out, y)


PROBLEMS = {"qm9-shaped": Mlp, "multi-fashion": Conv}
if PROBLEM not in PROBLEMS:
    sys.exit(f"BENCH_PROBLEM must be one of {', '.join(PROBLEMS)}, got {PROBLEM!r}")
P = PROBLEMS[PROBLEM]
TASKS = P.tasks


def taskweave_command(strategy, steps):
    sets = [*P.sets, f"run.device={DEVICE}", f"train.batch={BATCH}", "train.weighting=ew",
            "train.optimizer={kind=\"adam\", lr=0.001}", "train.schedule=constant", f"run.threads={THREADS}",
            STRATEGIES[strategy], f"run.name=bench-sam-{strategy}", f"train.steps={steps}", f"eval.every={steps}",
            f"train.checkpoint_every={steps}", f'plugins.dirs=["{PLUGINS or "../plugins"}"]']
    return [BIN, "-q", "run", P.pipeline, "--overwrite",
            *(a for s in sets for a in ("--set", s))]


def taskweave_steps_per_second(strategy, steps):
    subprocess.run(taskweave_command(strategy, steps), check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, "runs", f"bench-sam-{strategy}", "summary.json")) as f:
        return json.load(f)["steps_per_second"]


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        backbone, heads = P.modules()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)

    def losses(self, x, y):
        features = self.backbone(x)
        return torch.stack([P.loss(h(features), y[:, t]) for t, h in enumerate(self.heads)])


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
    # The norm stays a tensor: no host read-back (a device sync on CUDA).
    norm = torch.stack([s.square().sum(dtype=torch.float64) for s in scaled]).sum().sqrt()
    scale = (RHO / (norm + 1e-12)).float()
    for p, s in zip(params, scaled):
        p.add_(s * p.abs() * scale)


def sam_step(model, opt, x, y):
    shared = list(model.backbone.parameters())
    heads = [list(h.parameters()) for h in model.heads]
    sizes = [p.numel() for p in shared]
    n = len(shared)

    losses = model.losses(x, y)
    check_finite(losses)
    G = torch.empty(TASKS, sum(sizes), device=DEVICE)
    head_grads = []
    for t in range(TASKS):
        g = torch.autograd.grad(losses[t], shared + heads[t], retain_graph=t < TASKS - 1)
        torch.cat([v.reshape(-1) for v in g[:n]], out=G[t])
        head_grads.append(g[n:])
    loss_update = torch.ones(TASKS, device=DEVICE) @ G  # EW over the loss family

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
    flat_update = torch.ones(TASKS, device=DEVICE) @ G  # EW over the flat family
    update = loss_update + flat_update
    for p, v in zip(shared, update.split(sizes)):
        p.grad = v.view_as(p)
    opt.step()
    opt.zero_grad()


def pytorch_steps_per_second(strategy, steps):
    torch.manual_seed(0)
    x, y = (t.to(DEVICE) for t in P.data())
    model = Model().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_fn = standard_step if strategy == "standard" else sam_step
    per_epoch = TRAIN // BATCH
    perm = None
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(TRAIN, device=DEVICE)
        idx = perm[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
        step_fn(model, opt, x[idx], y[idx])
    if torch.device(DEVICE).type == "cuda":
        torch.cuda.synchronize()
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
        f"SAM-MTL step vs the standard step, {P.label}, batch {BATCH}, Adam; {DEVICE}, "
        f"{torch.get_num_threads()} CPU threads (torch {torch.__version__}, eager); "
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
