"""make bench: the quickstart model trained by taskweave and by plain PyTorch,
PyTorch in its default form and in its strongest CPU forms.

Same model (MLP 100-64 shared, per-task heads 64-16-1, ReLU), same data shape
(10000 x 100, two regression targets), batch 128 drawn from a fresh permutation
every epoch, per-task MSE summed (equal weighting), Adam(lr=1e-3), and in every
loop the per-task losses read back every step (taskweave checks them for
NaN/Inf; the PyTorch loops do the same check). Evaluation and checkpoints are
moved out of the timed loop everywhere. PyTorch variants:

- eager, torch.optim.Adam with its defaults (per-tensor "foreach" updates);
- eager, Adam(fused=True): one fused kernel for every parameter update;
- torch.compile'd forward and loss (inductor, C++ on CPU) + fused Adam; the
  compilation happens in warm-up steps outside the timed loop.

The runs alternate (taskweave, then each PyTorch variant) for BENCH_ROUNDS
rounds; each run's foreign CPU load (CPU time of processes other than this one
and its children, from /proc/stat) is measured, and reported is the median
steps/s per cell over the rounds where it stayed below 0.1 core (over all
rounds, flagged, when none did), with the min-max range of those rounds.

Usage: .venv/bin/python bench/peer_quickstart.py [steps]
Environment: BENCH_ROUNDS (5), BENCH_THREADS (intra-op threads of both
frameworks; default: libtorch's), BENCH_DEVICE (cpu; `cuda:0` trains both on
the GPU, data resident there, and leaves the compiled variant out: its
compilation costs more device time than the runs), TASKWEAVE_BIN and
TASKWEAVE_PLUGINS (see runs.py).
"""

import os
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from quiet import alternate, report, taskweave_steps_per_second  # noqa: E402
import quiet  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
ROUNDS, THREADS = quiet.settings(5)
N, D, TASKS, BATCH = 10000, 100, 2, 128




class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(D, 64), nn.ReLU())
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1)) for _ in range(TASKS)
        )

    def forward(self, xb, yb):
        features = self.backbone(xb)
        return torch.stack([F.mse_loss(h(features).squeeze(-1), yb[:, t]) for t, h in enumerate(self.heads)])


def pytorch_steps_per_second(fused, compiled):
    torch.manual_seed(0)
    x, y = torch.randn(N, D), torch.randn(N, TASKS)
    return quiet.pytorch_steps_per_second(Model(), (x, y), N, BATCH, STEPS, fused, compiled, DEVICE)



CELLS = {
    "taskweave": lambda: taskweave_steps_per_second("pipelines/quickstart.toml", "quickstart", STEPS, THREADS, DEVICE),
    "PyTorch eager, Adam": lambda: pytorch_steps_per_second(False, False),
    "PyTorch eager, fused Adam": lambda: pytorch_steps_per_second(True, False),
}
if DEVICE == "cpu":
    CELLS["PyTorch compiled, fused Adam"] = lambda: pytorch_steps_per_second(True, True)


def main():
    rounds = alternate(CELLS, ROUNDS)
    report(
        f"quickstart training, {STEPS} steps, {DEVICE}, {torch.get_num_threads()} CPU threads "
        f"(torch {torch.__version__})",
        CELLS,
        rounds,
    )


if __name__ == "__main__":
    main()
