"""A TaskExpert training step on fashion-scenes (pipelines/taskexpert-scenes.toml,
batch 32) by taskweave and by the same model in plain PyTorch, side by side.

The model (334,634 trainable values; the script checks the PyTorch count
against the `parameters` of taskweave's summary.json after every taskweave
run):
- ViT backbone (runtime/src/model/backbone/vit.rs, stack.rs): the 1×64×64
  image cut into 8×8 patches by Conv2d(1, 64, 8, stride 8) (64 tokens), plus
  learned positions [64, 64]; 4 pre-norm blocks (plugin-api nn/transformer.rs:
  LayerNorm, qkv Linear(64, 192), 4 heads of scaled_dot_product_attention,
  proj Linear(64, 64), residual; LayerNorm, Linear(64, 256), exact GELU,
  Linear(256, 64), residual); the last block's tokens through a final
  LayerNorm. Every block's tokens [B, 64, 64] are an output.
- TaskExpert (plugins/taskexpert, plugin-api nn/experts.rs): at each of the 4
  blocks, 4 experts Linear(64, 64) + ReLU over the tokens, and per task a gate
  Linear(64, 5) whose softmax over 5 slots (the 4 experts and the task's
  memory) mixes the experts' outputs and the task's memory from the previous
  block (zeros at block 0, where the memory term is left out as taskweave's
  gate leaves it out); the mixture is the task's new memory, the last one
  feeds the task's head. Written the way a PyTorch user would (and as
  bench/peer_census.py writes MMoE): the experts as separate modules stacked
  to [B, N, 4, 64], a loop over the tasks' gates, and the mixture as a
  broadcast multiply and sum, `(experts * w[..., :4, None]).sum(-2) +
  w[..., 4:] * memory` (not einsum: on the CPU that becomes a batched product
  of 2,048 tiny [1, 4] x [4, 64] matrices, which kernels/src/ops/gate.rs
  measured 2.5x slower).
- Per task a dense head (runtime/src/model/head.rs): the tokens laid on their
  8×8 grid, Conv2d(64, 32, 3, padding 1), ReLU, Conv2d(32, out, 1), bilinear
  upsampling to 64×64 (align_corners false); out = 11 (segmentation), 1
  (depth), 2 (boundaries).
- Losses (runtime/src/train/metrics.rs): cross-entropy over the 11 classes,
  mean squared error of depth, cross-entropy over the 2 boundary classes
  (fashion-scenes' boundaries are a 2-class per-pixel task, not BCE), each
  the mean over the pixels, summed (EW); Adam(lr=1e-3).

Batches of 32 of the 2,000 training scenes from a fresh permutation every
epoch, per-task losses read back and checked every step (as taskweave does).
taskweave's cosine schedule (50 warm-up steps) only sets the learning rate
each step; PyTorch keeps lr 1e-3 (speed does not depend on it). PyTorch reads
random images and labels of the same shapes and dtypes (float32 images and
depth, int64 classes; speed does not depend on the values). Evaluation and
checkpoints are outside the timed loop everywhere. taskweave runs twice: as
it is, and with each batch split over two threads (`run.batch_threads = 2`,
data parallelism inside the process; PyTorch has no such switch, DDP would
need processes). Runs alternate for
BENCH_ROUNDS rounds and the quiet rounds' medians are reported
(bench/quiet.py).

Usage: .venv/bin/python bench/peer_taskexpert.py [steps]
Environment: BENCH_ROUNDS (5), BENCH_THREADS (intra-op threads of both; default: libtorch's).
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

import quiet
from quiet import alternate, report, taskweave_steps_per_second
from runs import ROOT

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ROUNDS, THREADS = quiet.settings(5)
PIPELINE, NAME = "pipelines/taskexpert-scenes.toml", "taskexpert"
BATCH, ROWS, SIZE, PATCH, DIM, DEPTH, HEADS, MLP = 32, 2000, 64, 8, 64, 4, 4, 4
EXPERTS, EXPERT, HEAD = 4, 64, 32
OUTPUTS = {"segmentation": 11, "depth": 1, "boundaries": 2}
TASKS = len(OUTPUTS)


class Block(nn.Module):
    """A pre-norm ViT block, as plugin-api/src/nn/transformer.rs."""

    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, MLP * DIM), nn.Linear(MLP * DIM, DIM)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TaskExpert(nn.Module):
    def __init__(self):
        super().__init__()
        tokens = (SIZE // PATCH) ** 2
        self.embed = nn.Conv2d(1, DIM, PATCH, stride=PATCH)
        self.positions = nn.Parameter(torch.randn(tokens, DIM) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.experts = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(DIM, EXPERT), nn.ReLU()) for _ in range(EXPERTS))
            for _ in range(DEPTH))
        self.gates = nn.ModuleList(
            nn.ModuleList(nn.Linear(DIM, EXPERTS + 1) for _ in range(TASKS)) for _ in range(DEPTH))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(EXPERT, HEAD, 3, padding=1), nn.ReLU(), nn.Conv2d(HEAD, out, 1))
            for out in OUTPUTS.values())

    def forward(self, image, segmentation, depth, boundaries):
        x = self.embed(image).flatten(2).transpose(1, 2) + self.positions
        layers = []
        for block in self.blocks:
            x = block(x)
            layers.append(x)
        layers[-1] = self.norm(layers[-1])
        memory = [None] * TASKS
        for x, experts, gates in zip(layers, self.experts, self.gates):
            stacked = torch.stack([e(x) for e in experts], -2)  # [B, N, n, d]
            for t, gate in enumerate(gates):
                w = gate(x).softmax(-1)  # [B, N, n + 1]
                mixed = (stacked * w[..., :EXPERTS, None]).sum(-2)
                if memory[t] is not None:
                    mixed = mixed + w[..., EXPERTS:] * memory[t]
                memory[t] = mixed
        b, n, c = memory[0].shape
        side = int(n ** 0.5)
        outputs = [
            F.interpolate(head(m.transpose(1, 2).reshape(b, c, side, side)), size=(SIZE, SIZE),
                          mode="bilinear", align_corners=False)
            for head, m in zip(self.heads, memory)
        ]
        return torch.stack([
            F.cross_entropy(outputs[0], segmentation),
            F.mse_loss(outputs[1], depth),
            F.cross_entropy(outputs[2], boundaries),
        ])


def parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def data():
    torch.manual_seed(0)
    return (
        torch.rand(ROWS, 1, SIZE, SIZE),
        torch.randint(0, OUTPUTS["segmentation"], (ROWS, SIZE, SIZE)),
        torch.rand(ROWS, 1, SIZE, SIZE),
        torch.randint(0, OUTPUTS["boundaries"], (ROWS, SIZE, SIZE)),
    )


def pytorch_steps_per_second(inputs, fused, compiled):
    torch.manual_seed(0)
    return quiet.pytorch_steps_per_second(TaskExpert(), inputs, ROWS, BATCH, STEPS, fused, compiled)


def taskweave(ours, sets=()):
    rate = taskweave_steps_per_second(PIPELINE, NAME, STEPS, THREADS, sets=sets)
    with open(os.path.join(ROOT, "runs/bench", NAME, "summary.json")) as f:
        theirs = json.load(f)["parameters"]
    assert theirs == ours, f"taskweave trains {theirs} values, the PyTorch model {ours}: not the same model"
    return rate


def main():
    ours = parameters(TaskExpert())
    inputs = data()
    cells = {
        "taskweave": lambda: taskweave(ours),
        "taskweave, run.batch_threads = 2": lambda: taskweave(ours, ("run.batch_threads=2",)),
        "PyTorch eager, Adam": lambda: pytorch_steps_per_second(inputs, False, False),
        "PyTorch eager, fused Adam": lambda: pytorch_steps_per_second(inputs, True, False),
    }
    report(
        f"TaskExpert training on fashion-scenes ({ours} parameters), batch {BATCH}, {STEPS} steps, CPU, "
        f"{torch.get_num_threads()} threads (torch {torch.__version__})",
        cells,
        alternate(cells, ROUNDS),
    )


if __name__ == "__main__":
    main()
