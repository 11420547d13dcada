"""How fast could any framework run a peer benchmark's training step on this
machine, if everything but the kernels (or only the heavy ones) cost nothing?

Runs a peer (the PyTorch side of bench/peer_*.py and bench/sam_torch.py)
once as it is, timed, and once under a TorchDispatchMode that records every
aten call it makes after autograd with its argument shapes and strides. It
then replays the calls back to back on fresh tensors of the same layouts,
with no autograd, no optimizer and no Python model code (the replay loop's
own cost per call, measured on a call with no kernel, subtracted): once only
the heavy ones (matrix products, convolutions and their backward, attention
and its backward), once all of them. Each replay's time is a floor for any
implementation that runs the same computation through libtorch's kernels
(taskweave does: it links the same libtorch), so peer time / floor bounds
the speed-up over the peer that such an implementation can reach here. The
measurement's biases (inputs hot in cache, no memory traffic between ops)
make the floors lower and the bounds higher. Calls that cannot run on the
replay's tensors (data-dependent ones) are left out and counted.

Usage: .venv/bin/python bench/kernel_floor.py [meta-rtl|dtrn|taskexpert|sam-mtl ...]
Environment: BENCH_ROUNDS (3: timed runs of the peer and replays; the fastest of each counts),
BENCH_THREADS (intra-op threads; default: libtorch's).
"""

import importlib
import os
import sys
import time
import warnings
from collections import Counter

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_map  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quiet  # noqa: E402

ROUNDS, THREADS = quiet.settings(3)
aten = torch.ops.aten

# The kernels whose work does not depend on the framework around them.
HEAVY = {
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
    aten.convolution.default, aten.convolution_backward.default,
    aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
}


def layout(value):
    """A tensor argument as (shape, stride, dtype); anything else as it is."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype)
    return value


class Recorder(TorchDispatchMode):
    """Records the calls made under it (op, argument layouts) in order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, tree_map(layout, args), tree_map(layout, kwargs)))
        return func(*args, **kwargs)


def is_layout(value):
    """Whether `value` is a tensor argument as `layout` records it."""
    return isinstance(value, tuple) and len(value) == 4 and value[0] == "tensor"


def materialise(calls):
    """The recorded calls with tensors of their recorded layouts (random values,
    one tensor per distinct layout, shared between calls)."""
    pool = {}

    def tensor(value):
        if is_layout(value):
            if value not in pool:
                _, shape, stride, dtype = value
                span = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0
                base = torch.empty(span, dtype=dtype)
                base = base.normal_() if dtype.is_floating_point else base.zero_()
                pool[value] = base.as_strided(shape, stride)
            return pool[value]
        return value

    return [(f, tree_map(tensor, a, is_leaf=is_layout), tree_map(tensor, k, is_leaf=is_layout))
            for f, a, k in calls]


def replay_seconds(calls):
    with torch.no_grad():
        start = time.perf_counter()
        for f, a, k in calls:
            f(*a, **k)
        return time.perf_counter() - start


def replayable(calls):
    """The calls that run on the pool's tensors: those that change a tensor's
    shape or storage, or read data-dependent indices, are left out (each is
    counted)."""
    kept, dropped = [], Counter()
    for f, a, k in materialise(calls):
        try:
            with torch.no_grad():
                f(*a, **k)
            kept.append((f, a, k))
        except Exception:
            dropped[str(f)] += 1
    return kept, dropped


def peer(name):
    """(the issue it measures, the issue's target ratio, a function running the
    peer's training as its benchmark does). The peer scripts read their step
    counts from the command line when imported: argv is set to a short run."""
    if name == "sam-mtl":
        os.environ["BENCH_PROBLEM"] = "multi-fashion"
        sys.argv = [sys.argv[0], "117", "39"]
        m = importlib.import_module("sam_torch")
        return "issue 12 (SAM-MTL + EW on Multi-Fashion)", 1.5, lambda: m.pytorch_steps_per_second("sam-mtl", 39)
    if name == "meta-rtl":
        sys.argv = [sys.argv[0], "30"]
        m = importlib.import_module("peer_meta_rtl")
        return "issue 17 (Meta-RTL meta-iteration)", 1.5, m.pytorch_steps_per_second
    if name == "dtrn":
        sys.argv = [sys.argv[0], "100"]
        m = importlib.import_module("peer_dtrn")
        inputs = m.data()
        return "issue 16 (DTRN step)", 1.2, lambda: m.pytorch_steps_per_second(inputs, False, False)
    if name == "taskexpert":
        sys.argv = [sys.argv[0], "30"]
        m = importlib.import_module("peer_taskexpert")
        inputs = m.data()
        return "issue 15 (TaskExpert step)", 1.2, lambda: m.pytorch_steps_per_second(inputs, False, False)
    raise SystemExit(f"unknown peer {name!r}: one of meta-rtl, dtrn, taskexpert, sam-mtl")


def measure(name):
    label, target, run = peer(name)
    run()  # warm-up: first-touch allocations, MKL/oneDNN setup
    # The peer's own wall time (setup inside the call included: it makes the
    # floors' share smaller, the bounds larger).
    plain = min(time_of(run) for _ in range(ROUNDS))
    recorder = Recorder()
    with recorder:
        run()
    every, dropped = replayable(recorder.calls)
    heavy = [c for c in every if c[0] in HEAVY]
    # What the replay loop itself costs per call (Python and the dispatcher),
    # measured on a call with no kernel behind it and subtracted.
    probe = torch.empty(1)
    per_call = min(replay_seconds([(aten.alias.default, (probe,), {})] * 10000) for _ in range(ROUNDS)) / 10000
    floors = {}
    for kind, calls in (("heavy", heavy), ("all", every)):
        floors[kind] = min(replay_seconds(calls) for _ in range(ROUNDS)) - per_call * len(calls)
    ops = Counter(str(f).removeprefix("aten.").removesuffix(".default") for f, _, _ in heavy)
    print(f"{label}: peer {plain:.3f} s for its run")
    print(f"  heavy kernels alone {floors['heavy']:.3f} s ({100 * floors['heavy'] / plain:.0f} %; "
          + ", ".join(f"{n} {o}" for o, n in ops.most_common()) + ")")
    print(f"  every kernel it calls {floors['all']:.3f} s ({100 * floors['all'] / plain:.0f} %; {len(every)} calls"
          + (f", {sum(dropped.values())} not replayable left out: "
             + ", ".join(f"{n} {o}" for o, n in dropped.most_common()) if dropped else "")
          + f"; replay overhead {1e6 * per_call:.1f} us a call subtracted)")
    for kind, what in (("heavy", "only the heavy kernels cost time"), ("all", "only kernels cost time")):
        bound = plain / floors[kind]
        verdict = "reachable in principle" if bound >= target else "NOT reachable"
        print(f"  bound on the speed-up of any libtorch-based implementation if {what}: "
              f"{bound:.2f}x (the issue asks {target}x: {verdict})")


def time_of(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main():
    names = sys.argv[1:] or ["sam-mtl", "taskexpert", "dtrn", "meta-rtl"]
    print(f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__}), fastest of {ROUNDS} runs each")
    for name in names:
        measure(name)


if __name__ == "__main__":
    main()
