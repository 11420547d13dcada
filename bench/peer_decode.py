"""Byte-level decoding speed: taskweave's KV-cached decoding against the same
model in plain PyTorch with a KV cache, side by side, and the cost of dynamic
logit fusion per decoded byte as a fraction of the large model's forward.

Usage: .venv/bin/python bench/peer_decode.py   (after `make build`)

Two models of `transformer-lm` shape are trained for one step on a small
synthetic text (the weights do not matter for speed; both sides load the same
checkpoint): small (dim 128, depth 2, heads 4) and large (dim 256, depth 6,
heads 8, about 10x the small's parameters), context 128. `taskweave decode`
continues a 16-byte prompt to the full context (111 bytes, greedy) with the
large model as `large`, the small one as `small` and as the one expert, once
with `fusion = large` and once with `fusion = logit-fusion`; its `--steering`
line reports the seconds spent in the large model's forward passes and in the
fusion. PyTorch decodes the same prompt with the same weights and a KV cache,
timed over the forward passes only. The greedy bytes of both must agree (a
check that the two compute the same model). Threads: BENCH_THREADS (default 1)
for both. Rounds: BENCH_ROUNDS (default 5), the median reported.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TASKWEAVE_BIN", os.path.join(ROOT, "target/release/taskweave"))
PLUGINS = os.environ.get("TASKWEAVE_PLUGINS", os.path.join(ROOT, "plugins"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONTEXT = 128
PROMPT = "the river stone "
SIZES = {"small": (128, 2, 4), "large": (256, 6, 8)}
torch.set_num_threads(THREADS)


def taskweave(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    out = subprocess.run([BIN, "-q", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"taskweave {' '.join(args)} failed:\n{out.stderr}")
    return out


def train(work, name):
    dim, depth, heads = SIZES[name]
    text = f"""[run]
name = "{name}"
device = "cpu"
out_dir = "runs"
[data]
kind = "text"
context = {CONTEXT}
[data.corpora]
words = ["text/*.txt"]
[model]
backbone = {{ kind = "transformer-lm", dim = {dim}, depth = {depth}, heads = {heads} }}
head = {{ hidden = [], shared = true }}
[train]
steps = 1
batch = 4
"""
    with open(os.path.join(work, f"{name}.toml"), "w") as f:
        f.write(text)
    taskweave(["lm", "train", f"{name}.toml", "--overwrite"], work)


def checkpoint(work, name):
    folder = os.path.join(work, "runs", name, "checkpoints")
    newest = sorted(f for f in os.listdir(folder) if f.startswith("step-"))[-1]
    return load_file(os.path.join(folder, newest))


class CachedLm:
    """The `transformer-lm` model (pre-norm blocks, GELU MLP, final norm,
    linear head) in PyTorch, decoding with a per-block KV cache."""

    def __init__(self, weights, heads):
        self.w = weights
        self.heads = heads
        self.depth = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("backbone.blocks."))

    def linear(self, x, name):
        return torch.nn.functional.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def norm(self, x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"])

    def step(self, ids, cache):
        """Logits of the last of `ids` (the tokens after those in `cache`)."""
        past = cache[0][0].shape[2] if cache else 0
        x = self.w["backbone.tokens.weight"][ids] + self.w["backbone.positions"][past:past + ids.shape[1]]
        b, n, d = x.shape
        h = self.heads
        for i in range(self.depth):
            p = f"backbone.blocks.{i}"
            qkv = self.linear(self.norm(x, p + ".norm1"), p + ".attention.qkv")
            q, k, v = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            if len(cache) > i:
                k = torch.cat([cache[i][0], k], 2)
                v = torch.cat([cache[i][1], v], 2)
                cache[i] = (k, v)
            else:
                cache.append((k, v))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=n > 1)
            x = x + self.linear(a.transpose(1, 2).reshape(b, n, d), p + ".attention.proj")
            hidden = torch.nn.functional.gelu(self.linear(self.norm(x, p + ".norm2"), p + ".mlp.fc1"))
            x = x + self.linear(hidden, p + ".mlp.fc2")
        x = self.norm(x[:, -1], "backbone.norm")
        return self.linear(x, "heads.shared.0")


def torch_decode(model, steps):
    """Greedy bytes and the seconds in forward passes."""
    ids = [256] + list(PROMPT.encode())
    cache, spent, out = [], 0.0, []
    with torch.no_grad():
        fresh = torch.tensor([ids])
        for _ in range(steps):
            start = time.perf_counter()
            logits = model.step(fresh, cache)
            spent += time.perf_counter() - start
            byte = int(logits[0].argmax())
            out.append(byte)
            fresh = torch.tensor([[byte]])
    return out, spent


def parameters(weights):
    return sum(t.numel() for k, t in weights.items() if not k.startswith("optimizer."))


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: run `make build` first")
    work = tempfile.mkdtemp(prefix="peer-decode-")
    os.makedirs(os.path.join(work, "text"))
    words = ["apple", "river", "stone", "cloud", "ember", "lotus"]
    for i in range(12):
        with open(os.path.join(work, "text", f"{i}.txt"), "w") as f:
            f.write(" ".join(words[(i * 7 + j * j) % 6] for j in range(400)))
    os.makedirs(os.path.join(work, "plugins"))
    for name in os.listdir(PLUGINS):
        if name.endswith(".so"):
            os.symlink(os.path.join(PLUGINS, name), os.path.join(work, "plugins", name))
    for name in SIZES:
        train(work, name)
    steps = CONTEXT - 1 - len(PROMPT)
    with open(os.path.join(work, "decode.toml"), "w") as f:
        f.write(f"""device = "cpu"
[plugins]
dirs = ["plugins"]
[models]
large = {{ kind = "run", dir = "runs/large" }}
small = {{ kind = "run", dir = "runs/small" }}
experts = {{ words = {{ kind = "run", dir = "runs/small" }} }}
[fusion]
kind = "large"
[decode]
max_new = {steps}
[data]
kind = "text"
context = {CONTEXT}
[data.corpora]
words = ["text/*.txt"]
""")
    runs = {"large": [], "logit-fusion": []}
    bytes_seen = {}
    for _ in range(ROUNDS):
        for fusion in runs:
            out = taskweave(["decode", "decode.toml", "--prompt", PROMPT, "--steering",
                             "--set", f'fusion={{kind="{fusion}"}}'], work)
            line = json.loads(out.stderr.strip().splitlines()[-1])
            runs[fusion].append(line["seconds"])
            bytes_seen[fusion] = line["bytes"]
    weights = {name: checkpoint(work, name) for name in SIZES}
    large = CachedLm(weights["large"], SIZES["large"][2])
    torch_times, torch_bytes = [], None
    for _ in range(ROUNDS):
        torch_bytes, spent = torch_decode(large, steps)
        torch_times.append(spent)
    agree = torch_bytes == bytes_seen["large"]
    median = statistics.median
    tw_large = median(r["large"] for r in runs["large"])
    tw_fused_large = median(r["large"] for r in runs["logit-fusion"])
    fusion_s = median(r["fusion"] for r in runs["logit-fusion"])
    baseline_fusion_s = median(r["fusion"] for r in runs["large"])
    pt = median(torch_times)
    rows = [
        ("PyTorch (KV cache), large model forward", steps / pt),
        ("taskweave decode, large model forward", steps / tw_large),
    ]
    print(f"# Byte-level decoding speed ({time.strftime('%Y-%m-%d')})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, CPU only; {THREADS} thread(s) each; "
          f"torch {torch.__version__}; median of {ROUNDS} rounds.\n")
    print(f"Models: large {parameters(weights['large']):,} parameters (dim 256, depth 6, heads 8), "
          f"small {parameters(weights['small']):,} (dim 128, depth 2, heads 4), context {CONTEXT}; "
          f"a {len(PROMPT)}-byte prompt continued by {steps} bytes, greedy.\n")
    print("| decoder | bytes/s | vs PyTorch |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / (steps / pt):.2f}x |")
    print()
    print(f"Greedy bytes equal between taskweave and PyTorch: {agree}.\n")
    print("Fusion per decoded byte (taskweave, one expert):\n")
    print("| fusion | fusion ms/byte | large forward ms/byte | fusion / large forward |")
    print("|---|---|---|---|")
    for name, f_s, l_s in [("large (log-softmax only)", baseline_fusion_s, tw_large),
                           ("logit-fusion (21-value grid)", fusion_s, tw_fused_large)]:
        print(f"| {name} | {1e3 * f_s / steps:.3f} | {1e3 * l_s / steps:.3f} | {f_s / l_s:.1%} |")
    if not agree:
        sys.exit("the greedy bytes differ: the two sides do not compute the same model")


if __name__ == "__main__":
    main()
