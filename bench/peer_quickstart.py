"""make bench: the quickstart model trained by taskweave and by plain PyTorch.

Same model (MLP 100-64 shared, per-task heads 64-16-1, ReLU), same data shape
(10000 x 100, two regression targets), batch 128 drawn from a fresh permutation
every epoch, per-task MSE summed (equal weighting), Adam(lr=1e-3), and in both
loops the per-task losses read back every step (taskweave checks them for
NaN/Inf; the PyTorch loop does the same check). Evaluation and checkpoints are
moved out of the timed loop in both. Prints steps/s and the ratio.

Usage: .venv/bin/python bench/peer_quickstart.py [steps]
"""

import json
import os
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3000


def taskweave_steps_per_second():
    name = "bench-quickstart"
    cmd = [
        os.path.join(ROOT, "target/release/taskweave"), "-q", "run", "--overwrite",
        os.path.join(ROOT, "pipelines/quickstart.toml"),
        "--set", f"run.name={name}", "--set", "run.device=cpu",
        "--set", f"train.steps={STEPS}", "--set", f"eval.every={STEPS}",
        "--set", f"train.checkpoint_every={STEPS}",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, "runs", name, "summary.json")) as f:
        return json.load(f)["steps_per_second"]


def pytorch_steps_per_second():
    torch.manual_seed(0)
    n, d, tasks, batch = 10000, 100, 2, 128
    x, y = torch.randn(n, d), torch.randn(n, tasks)
    backbone = nn.Sequential(nn.Linear(d, 64), nn.ReLU())
    heads = nn.ModuleList(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1)) for _ in range(tasks))
    opt = torch.optim.Adam(list(backbone.parameters()) + list(heads.parameters()), lr=1e-3)
    per_epoch = n // batch
    perm = None
    start = time.perf_counter()
    for step in range(STEPS):
        if step % per_epoch == 0:
            perm = torch.randperm(n)
        idx = perm[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        xb, yb = x[idx], y[idx]
        features = backbone(xb)
        losses = torch.stack([F.mse_loss(h(features).squeeze(-1), yb[:, t]) for t, h in enumerate(heads)])
        if not all(map(lambda v: v == v and abs(v) != float("inf"), losses.detach().tolist())):
            raise RuntimeError("non-finite loss")
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
    return STEPS / (time.perf_counter() - start)


def main():
    ours = taskweave_steps_per_second()
    theirs = pytorch_steps_per_second()
    print(f"quickstart training, {STEPS} steps, CPU, {torch.get_num_threads()} threads")
    print(f"{'':12}{'steps/s':>10}")
    print(f"{'taskweave':12}{ours:>10.0f}")
    print(f"{'PyTorch':12}{theirs:>10.0f}   (torch {torch.__version__}, eager, torch.optim.Adam defaults)")
    print(f"ratio taskweave / PyTorch: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
