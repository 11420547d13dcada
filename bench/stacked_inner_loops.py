"""Whether stacking several sources' inner loops into batched products pays
on one CPU thread: Meta-RTL's inner SGD steps (MLP 34-256-256, 7 linear
heads, batch 256, 3 steps, lr 0.05) for 3 sources one after another (`mm`)
against the 3 at once (`bmm` over `[3, ...]` parameters and batches), the
share of one team member on a 2-core machine. Plain PyTorch eager, autograd
for the gradients; the two ways are checked to agree first.

Usage: .venv/bin/python bench/stacked_inner_loops.py [repetitions]
Prints ms per source-step for each way, per round.
"""

import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
BATCH, TASKS, SOURCES, INNER, LR = 256, 7, 3, 3, 0.05
torch.set_num_threads(1)
torch.manual_seed(0)

# Weights as [in, out] so one expression serves both ways (addmm / baddbmm).
widths = [(34, 256), (256, 256), (256, TASKS)]
single = [t for i, o in widths for t in (torch.randn(i, o) / i**0.5, torch.zeros(1, o))]
stacked = [p.expand(SOURCES, *p.shape).contiguous() for p in single]
x, y = torch.randn(SOURCES, BATCH, 34), torch.randn(SOURCES, BATCH, TASKS)
columns = torch.eye(TASKS)[:SOURCES].unsqueeze(1)  # source i's loss reads column i


def forward(ps, x, product):
    h = x
    for k in range(0, len(ps), 2):
        h = product(ps[k + 1], h, ps[k])
        if k + 2 < len(ps):
            h = torch.relu(h)
    return h


def sgd(ps, loss_of):
    for _ in range(INNER):
        ps = [p.requires_grad_() for p in ps]
        grads = torch.autograd.grad(loss_of(ps), ps)
        ps = [(p - LR * g).detach() for p, g in zip(ps, grads)]
    return ps


def one_by_one():
    return [sgd(list(single), lambda ps, i=i: ((forward(ps, x[i], torch.addmm)[:, i] - y[i, :, i]) ** 2).mean())
            for i in range(SOURCES)]


def together():
    def loss(ps):
        err = ((forward(ps, x, torch.baddbmm) - y) * columns).sum(-1)
        return (err**2).mean(1).sum()  # the sources' losses are independent: their sum's gradient is each's
    return sgd(list(stacked), loss)


each, all_at_once = one_by_one(), together()
gap = max((each[i][k] - all_at_once[k][i]).abs().max().item() for i in range(SOURCES) for k in range(len(single)))
assert gap < 1e-5, gap
print(f"{SOURCES} sources x {INNER} inner steps, batch {BATCH}, 1 thread (torch {torch.__version__}); "
      f"max difference between the ways {gap:.1e}")
for r in range(3):
    t0 = time.perf_counter()
    for _ in range(REPS):
        one_by_one()
    t1 = time.perf_counter()
    for _ in range(REPS):
        together()
    t2 = time.perf_counter()
    per = REPS * SOURCES * INNER / 1e3
    print(f"round {r + 1}: ms per source-step: one after another {(t1 - t0) / per:.3f}, stacked {(t2 - t1) / per:.3f}")
