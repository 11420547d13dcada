"""One Meta-RTL meta-iteration, taskweave vs plain PyTorch (torch.func), on
the shapes of pipelines/meta-rtl-qm9.toml: 34 input features, MLP 256-256,
7 linear heads (6 sources + the target), batch 256, 3 inner SGD steps per
source, one target batch (the target's 64 labelled rows, as the pipeline's
`labelled = 64` gives), an LSTM policy of 32 units (its Adam step), the
weighted Reptile update. PyTorch runs the inner loops functionally
(torch.func.functional_call on a parameter dict, torch.autograd.grad) on
random data of the same shapes (speed does not depend on the values), one
source after another, and in a second cell all sources at once
(torch.func.vmap of torch.func.grad over the sources' stacked parameters and
batches; checked against the first before timing).
taskweave's number is steps_per_second of a run of the pipeline with
evaluation only at the end. Runs alternate for BENCH_ROUNDS rounds.

Usage: .venv/bin/python bench/peer_meta_rtl.py [steps]
Environment: BENCH_ROUNDS (3), BENCH_THREADS (intra-op threads of both; default: libtorch's),
BENCH_DEVICE (cpu; `cuda:0` runs both on that GPU, PyTorch synchronised before its clock stops),
TASKWEAVE_BIN and TASKWEAVE_PLUGINS (see bench/runs.py).
"""

import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402
from quiet import alternate, report, taskweave_steps_per_second  # noqa: E402
import quiet  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROUNDS, THREADS = quiet.settings(3)
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
SOURCES, TASKS, BATCH, INNER, LR, HIDDEN = 6, 7, 256, 3, 0.05, 32
# The pipeline's target task keeps 64 labelled rows; a task batch is up to
# BATCH distinct labelled rows, so every target batch is those 64, shuffled.
LABELLED = 64




class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(34, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.heads = nn.Linear(256, TASKS)

    def forward(self, x):
        return self.heads(self.trunk(x))


def pytorch_steps_per_second(vmapped=False):
    """One meta-iteration per step; `vmapped`: every source's inner loop at
    once (torch.func.vmap over the sources' stacked parameters and batches)
    instead of one source after another."""
    torch.manual_seed(0)
    model = Model().to(DEVICE)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    cell, head = nn.LSTMCell(3 * SOURCES, HIDDEN).to(DEVICE), nn.Linear(HIDDEN, SOURCES).to(DEVICE)
    policy_opt = torch.optim.Adam(list(cell.parameters()) + list(head.parameters()), lr=1e-3)
    state = (torch.zeros(1, HIDDEN, device=DEVICE), torch.zeros(1, HIDDEN, device=DEVICE))
    prev = torch.cat([torch.full((SOURCES,), 1 / SOURCES), torch.zeros(2 * SOURCES)]).to(DEVICE)
    xs = torch.randn(8192, 34, device=DEVICE)
    ys = torch.randn(8192, TASKS, device=DEVICE)

    def loss(p, x, y, task):
        return ((functional_call(model, p, (x,))[:, task] - y[:, task]) ** 2).mean()

    def batch(step, draw):
        g = torch.Generator().manual_seed(step * 100 + draw)
        idx = torch.randint(0, 8192, (BATCH,), generator=g).to(DEVICE)
        return xs[idx], ys[idx]

    def target_batch(step):
        g = torch.Generator().manual_seed(step * 100 + 99)
        idx = torch.randperm(LABELLED, generator=g).to(DEVICE)
        return xs[idx], ys[idx]

    def adapt_each(s, target):
        """Adapted parameters per source, one after another, and their target losses."""
        adapted = []
        for i in range(SOURCES):
            x, y = batch(s, i)
            p = dict(params)
            for _ in range(INNER):
                grads = torch.autograd.grad(loss({k: v.requires_grad_() for k, v in p.items()}, x, y, i),
                                            list(p.values()))
                p = {k: (v - LR * g).detach() for (k, v), g in zip(p.items(), grads)}
            adapted.append(p)
        with torch.no_grad():
            specific = torch.stack([loss(p, *target, TASKS - 1) for p in adapted])
        return {k: torch.stack([p[k] for p in adapted]) for k in params}, specific

    # Source i's loss through a one-hot column selector, so that one function
    # serves every source under vmap.
    def column_loss(p, x, y, column):
        return ((functional_call(model, p, (x,)) * column).sum(-1) - (y * column).sum(-1)).pow(2).mean()

    inner_grad = vmap(grad(column_loss))
    target_losses = vmap(column_loss, in_dims=(0, None, None, None))
    columns = torch.eye(TASKS, device=DEVICE)[:SOURCES]

    def adapt_together(s, target):
        """The same, every source at once: [S, ...] parameters and batches."""
        drawn = [batch(s, i) for i in range(SOURCES)]
        x, y = torch.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])
        p = {k: v.expand(SOURCES, *v.shape) for k, v in params.items()}
        for _ in range(INNER):
            grads = inner_grad(p, x, y, columns)
            p = {k: v - LR * grads[k] for k, v in p.items()}
        with torch.no_grad():
            specific = target_losses(p, *target, torch.eye(TASKS, device=DEVICE)[TASKS - 1])
        return p, specific

    if vmapped:  # the two ways agree (the same draws, the same adapted parameters)
        target = target_batch(0)
        (a, la), (b, lb) = adapt_each(0, target), adapt_together(0, target)
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in params) and torch.allclose(la, lb, atol=1e-5)
    adapt = adapt_together if vmapped else adapt_each

    def step(s):
        nonlocal state, prev
        h, c = cell(prev.unsqueeze(0), state)
        state = (h.detach(), c.detach())
        w = torch.softmax(head(h).squeeze(0), 0)
        target = target_batch(s)
        adapted, specific = adapt(s, target)
        with torch.no_grad():
            general = loss(params, *target, TASKS - 1)
        rewards = general - specific
        adv = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-12)
        entropy = -(w * w.clamp_min(1e-12).log()).sum()
        policy_opt.zero_grad()
        (-(w * adv).sum() - 0.01 * entropy).backward()
        policy_opt.step()
        wd = w.detach()
        with torch.no_grad():
            for k in params:
                shape = (SOURCES,) + (1,) * params[k].dim()
                params[k] = params[k] + (wd.view(shape) * (adapted[k] - params[k])).sum(0)
        prev = torch.cat([wd, rewards, specific])

    step(0)  # warm-up
    if DEVICE != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for s in range(1, STEPS + 1):
        step(s)
    if DEVICE != "cpu":
        torch.cuda.synchronize()
    return STEPS / (time.perf_counter() - start)


def main():
    cells = {"taskweave": lambda: taskweave_steps_per_second("pipelines/meta-rtl-qm9.toml", "meta-rtl", STEPS, THREADS, DEVICE),
             "PyTorch, torch.func inner loops": pytorch_steps_per_second,
             "PyTorch, inner loops vmapped": lambda: pytorch_steps_per_second(vmapped=True)}
    title = (f"Meta-RTL meta-iteration (6 sources x 3 inner steps, batch {BATCH}), {STEPS} steps, {DEVICE}, "
             f"{torch.get_num_threads()} CPU threads (torch {torch.__version__})")
    report(title, cells, alternate(cells, ROUNDS))


if __name__ == "__main__":
    main()
