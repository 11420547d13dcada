"""make bench: an MMoE step on UCI Census-Income (KDD), batch 1024, trained by
taskweave (pipelines/census-mmoe.toml) and by the same model in plain PyTorch.

Same data (the two files of `make census`, parsed here the way the
census-income data kind does: ids from the training file's values, the 7
numeric columns standardised, income / never-married labels), same model
(one 4-wide embedding per categorical field, concatenated with the numbers;
8 experts Linear(131, 16) + ReLU; per task a softmax gate Linear(131, 8) and
a tower 16-8-1), per-task BCE-with-logits summed, Adam(lr=1e-3), batches of
1024 from a fresh permutation every epoch, per-task losses read back every
step (taskweave checks them for NaN/Inf; so does the PyTorch loop).
Evaluation and checkpoints are outside the timed loop everywhere. PyTorch
runs eager with torch.optim.Adam, eager with fused Adam, and compiled
(torch.compile, inductor) with fused Adam; runs alternate for BENCH_ROUNDS
rounds and the quiet rounds' medians are reported (bench/quiet.py).

Usage: .venv/bin/python bench/peer_census.py [steps]
Environment: BENCH_ROUNDS (5), BENCH_THREADS (intra-op threads of both; default: libtorch's).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data/census-income")
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS, THREADS = quiet.settings(5)
BATCH, DIM, EXPERTS, EXPERT, TOWER = 1024, 4, 8, 16, 8
NUMERIC = [0, 5, 16, 17, 18, 30, 39]
WEIGHT, INCOME, MARITAL, EDUCATION = 24, 41, 7, 4
FIELDS = [c for c in range(42) if c not in NUMERIC + [WEIGHT, INCOME, MARITAL, EDUCATION]]


def load():
    """The training file as (ids [N, 31], numbers [N, 7], labels [N, 2]) and the vocabulary sizes."""
    vocab = [dict() for _ in FIELDS]
    ids, nums, labels = [], [], []
    with open(os.path.join(DATA, "census_income_1994_1995_train.csv")) as f:
        for line in f:
            cells = [c.strip() for c in line.split(",")]
            ids.append([v.setdefault(cells[c], len(v) + 1) for v, c in zip(vocab, FIELDS)])
            nums.append([float(cells[c]) for c in NUMERIC])
            labels.append([cells[INCOME] == "50000+.", cells[MARITAL] == "Never married"])
    nums = torch.tensor(nums)
    nums = (nums - nums.mean(0)) / nums.std(0)
    return torch.tensor(ids), nums, torch.tensor(labels, dtype=torch.float32), [len(v) + 1 for v in vocab]




class Mmoe(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.register_buffer("offsets", torch.tensor([0] + vocab[:-1]).cumsum(0))
        self.table = nn.Embedding(sum(vocab), DIM)
        width = len(vocab) * DIM + len(NUMERIC)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(width, EXPERT), nn.ReLU()) for _ in range(EXPERTS))
        self.gates = nn.ModuleList(nn.Linear(width, EXPERTS) for _ in range(2))
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(EXPERT, TOWER), nn.ReLU(), nn.Linear(TOWER, 1)) for _ in range(2)
        )

    def forward(self, ids, nums, y):
        x = torch.cat([self.table(ids + self.offsets).flatten(1), nums], 1)
        experts = torch.stack([e(x) for e in self.experts], 1)
        losses = []
        for t, (gate, tower) in enumerate(zip(self.gates, self.towers)):
            mixed = (experts * gate(x).softmax(-1).unsqueeze(-1)).sum(1)
            losses.append(F.binary_cross_entropy_with_logits(tower(mixed).squeeze(-1), y[:, t]))
        return torch.stack(losses)


def pytorch_steps_per_second(data, fused, compiled):
    ids, nums, y, vocab = data
    torch.manual_seed(0)
    # The training split: 90% of the file, as in the pipeline.
    return quiet.pytorch_steps_per_second(
        Mmoe(vocab), (ids, nums, y), len(ids) * 9 // 10, BATCH, STEPS, fused, compiled)



def main():
    if not os.path.exists(os.path.join(DATA, "census_income_1994_1995_train.csv")):
        sys.exit("census-income data not found; run `make census`")
    data = load()
    cells = {
        "taskweave": lambda: taskweave_steps_per_second("pipelines/census-mmoe.toml", "census", STEPS, THREADS),
        "PyTorch eager, Adam": lambda: pytorch_steps_per_second(data, False, False),
        "PyTorch eager, fused Adam": lambda: pytorch_steps_per_second(data, True, False),
        "PyTorch compiled, fused Adam": lambda: pytorch_steps_per_second(data, True, True),
    }
    report(
        f"census-income MMoE training, batch {BATCH}, {STEPS} steps, CPU, {torch.get_num_threads()} threads "
        f"(torch {torch.__version__})",
        cells,
        alternate(cells, ROUNDS),
    )


if __name__ == "__main__":
    main()
