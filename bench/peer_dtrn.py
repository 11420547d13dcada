"""make bench: a DTRN training step (pipelines/behaviours-dtrn.toml, batch
512) by taskweave and by the same model in plain PyTorch, side by side.

The model (plugins/dtrn): per field column a 16-wide embedding (items 200,
categories 8; the item table also embeds the sequences); per behaviour
(`liked`, `other`: 8 items, masked) and task, one transformer block (qkv,
projection, GELU MLP 16-64-16, learned positions) with conditional layer
norms whose (gamma, beta) a hypernetwork Linear(32, 16)-ReLU-Linear(16, 64)
makes from 16-wide task and behaviour embeddings, attention pooling to the
candidate item; per task a SENet-like refinement of the 4 field vectors
(Linear(4, 2)-ReLU-Linear(2, 4), gates 2*sigmoid) and a tower 64-32-1.
Per-task BCE-with-logits summed, Adam(lr=1e-3), losses read back and checked
every step (as taskweave does). PyTorch reads random ids of the same shapes
(speed does not depend on the values). taskweave runs twice: as it is, and with
each batch split over two threads (`run.batch_threads = 2`, data parallelism
inside the process; PyTorch has no such switch, DDP would need processes).
Runs alternate for BENCH_ROUNDS rounds
and the quiet rounds' medians are reported (bench/quiet.py).

Usage: .venv/bin/python bench/peer_dtrn.py [steps]
Environment: BENCH_ROUNDS (5), BENCH_THREADS (intra-op threads of both; default: libtorch's).
"""

import sys

import torch
import torch.nn.functional as F
from torch import nn

import quiet
from quiet import alternate, report, taskweave_steps_per_second

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
ROUNDS, THREADS = quiet.settings(5)
BATCH, ROWS, DIM, HEADS, HYPER, LENGTH = 512, 20000, 16, 2, 16, 8
ITEMS, CATEGORIES, TASKS, BEHAVIOURS = 200, 8, 2, 2


def conditional_norm(x, gamma, beta):
    return F.layer_norm(x, x.shape[-1:]) * (1 + gamma[:, None, None]) + beta[:, None, None]


class Dtrn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fields = nn.ModuleList([nn.Embedding(ITEMS, DIM), nn.Embedding(CATEGORIES, DIM)])
        self.positions = nn.Parameter(torch.randn(LENGTH, DIM) * 0.02)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)
        self.query, self.key = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.tasks = nn.Parameter(torch.randn(TASKS, HYPER))
        self.behaviours = nn.Parameter(torch.randn(BEHAVIOURS, HYPER))
        self.hyper = nn.Sequential(nn.Linear(2 * HYPER, HYPER), nn.ReLU(), nn.Linear(HYPER, 4 * DIM))
        slots = 2 + BEHAVIOURS
        self.refine = nn.ModuleList(
            nn.Sequential(nn.Linear(slots, slots // 2), nn.ReLU(), nn.Linear(slots // 2, slots)) for _ in range(TASKS))
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(slots * DIM, 32), nn.ReLU(), nn.Linear(32, 1)) for _ in range(TASKS))

    def interest(self, b, items, valid, candidate):
        n, length, d = items.shape
        params = self.hyper(torch.cat([self.tasks, self.behaviours[b].expand(TASKS, -1)], 1))
        g1, b1, g2, b2 = params.split(d, 1)
        x = items + self.positions[:length]  # [N, L, d]: normalised once, broadcast over the tasks
        any_valid = valid.any(1, keepdim=True)
        keys = valid | ~any_valid
        q, k, v = self.qkv(conditional_norm(x, g1, b1)).reshape(TASKS * n, length, 3, HEADS, d // HEADS).permute(
            2, 0, 3, 1, 4)
        mask = keys.expand(TASKS, n, length).reshape(TASKS * n, 1, 1, length)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(TASKS, n, length, d)
        x = x + self.proj(a)
        x = x + self.fc2(F.gelu(self.fc1(conditional_norm(x, g2, b2))))
        scores = (self.key(x) * self.query(candidate)[None, :, None]).sum(-1) / d ** 0.5
        weights = scores.masked_fill(~keys[None], float("-inf")).softmax(-1)[..., None]
        return (x * weights).sum(2) * any_valid[None]

    def forward(self, fields, liked, liked_mask, other, other_mask, y):
        embedded = [table(fields[:, f]) for f, table in enumerate(self.fields)]
        pooled = [self.interest(b, self.fields[0](seq), mask, embedded[0])
                  for b, (seq, mask) in enumerate([(liked, liked_mask), (other, other_mask)])]
        base = torch.stack(embedded, 1)
        losses = []
        for t in range(TASKS):
            h = torch.cat([base] + [u[t][:, None] for u in pooled], 1)
            gates = 2 * torch.sigmoid(self.refine[t](h.mean(-1)))
            logits = self.towers[t]((h * gates[..., None]).flatten(1)).squeeze(-1)
            losses.append(F.binary_cross_entropy_with_logits(logits, y[:, t]))
        return torch.stack(losses)


def data():
    torch.manual_seed(0)
    masks = [torch.arange(LENGTH)[None] < torch.randint(0, LENGTH + 1, (ROWS, 1)) for _ in range(2)]
    fields = torch.stack([torch.randint(ITEMS, (ROWS,)), torch.randint(CATEGORIES, (ROWS,))], 1)
    seqs = [torch.randint(ITEMS, (ROWS, LENGTH)) for _ in range(2)]
    return fields, seqs[0], masks[0], seqs[1], masks[1], torch.randint(0, 2, (ROWS, TASKS)).float()


def pytorch_steps_per_second(inputs, fused, compiled):
    torch.manual_seed(0)
    return quiet.pytorch_steps_per_second(Dtrn(), inputs, ROWS, BATCH, STEPS, fused, compiled)


def main():
    inputs = data()
    cells = {
        "taskweave": lambda: taskweave_steps_per_second("pipelines/behaviours-dtrn.toml", "dtrn", STEPS, THREADS),
        "taskweave, run.batch_threads = 2": lambda: taskweave_steps_per_second(
            "pipelines/behaviours-dtrn.toml", "dtrn", STEPS, THREADS, sets=("run.batch_threads=2",)),
        "PyTorch eager, Adam": lambda: pytorch_steps_per_second(inputs, False, False),
        "PyTorch eager, fused Adam": lambda: pytorch_steps_per_second(inputs, True, False),
    }
    report(
        f"DTRN training on multi-behaviour-synthetic, batch {BATCH}, {STEPS} steps, CPU, "
        f"{torch.get_num_threads()} threads (torch {torch.__version__})",
        cells,
        alternate(cells, ROUNDS),
    )


if __name__ == "__main__":
    main()
