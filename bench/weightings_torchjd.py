"""make bench: every aggregator taskweave and TorchJD 0.18.0 both have, timed
side by side on one input, with the floor any Gramian-based aggregator has.

Reads what `cargo bench --bench weightings` wrote under
target/bench/weightings/ (the QM9-shaped input, T = 11 tasks x P = 74,752
shared parameters, f32, and taskweave's first update for each method). Each
round runs the taskweave bench executable (`--time-only`) and then times
TorchJD here, so both see the same machine load; reported is the median per
call over the rounds in which other processes used less than 0.1 core
(all rounds, flagged, when none was that quiet).

Columns:
- TorchJD µs, taskweave µs, and TorchJD/taskweave (above 1: taskweave faster);
- floor µs: one f32 `G @ G.T` plus one `w @ G` in PyTorch on the same threads,
  the least any aggregator that forms the Gramian and combines the rows must
  do, and taskweave/floor;
- agreement of the first call's updates: cosine and norm ratio
  |taskweave|/|TorchJD| (randomised methods: their draws differ, so `random`).

TorchJD gets each library's defaults except where taskweave's differ by
convention: CAGrad is divided by 1 + c^2 in taskweave (its official
rescaling; TorchJD does not rescale, hence the norm ratio 1/1.16), Krum gets
n_byzantine = 1 in both (TorchJD has no default), Nash-MTL keeps one instance
across calls in both (warm starts, as in training). MoDo, SDMGrad and CR-MOGM
exist in TorchJD as Gramian weightings only; they run here as TorchJD's own
Gramian-weighted aggregators do (weights of J Jᵀ, then weights @ J).

Usage: .venv/bin/python bench/weightings_torchjd.py [taskweave.json]
Environment: BENCH_ROUNDS (3), BENCH_BUDGET_MS per method and round (1000),
BENCH_THREADS (intra-op threads of both; default: libtorch's).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402
from quiet import QUIET, cpu_snapshot, foreign_load  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torchjd.aggregation import (  # noqa: E402
    CAGrad, ConFIG, Constant, DualProj, ExcessMTL, FairGrad, GradDrop, GradVac, IMTLG, Krum,
    MGDA, NashMTL, PCD, PCGrad, Random, TrimmedMean, UPGrad, AlignedMTL, CRMOGMWeighting,
    MoDoWeighting, SDMGradWeighting, UPGradWeighting,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/bench/weightings/taskweave.json")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BUDGET_MS = float(os.environ.get("BENCH_BUDGET_MS", "1000"))
WARMUP, MIN_SAMPLES, MAX_SAMPLES = 10, 25, 2000
if os.environ.get("BENCH_THREADS"):  # the taskweave executable reads it too
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))

RANDOM = {"pcgrad", "gradvac", "graddrop", "rgw"}


class Gramian:
    """A TorchJD weighting of the Gramian as an aggregator, as TorchJD's own
    GramianWeightedAggregator does: weights(J @ J.T) @ J."""

    def __init__(self, weighting):
        self.weighting = weighting

    def __call__(self, matrix):
        return self.weighting(matrix @ matrix.T) @ matrix


def aggregators(t):
    """label -> a fresh TorchJD aggregator."""
    return {
        "upgrad": UPGrad,
        "dualproj": DualProj,
        "aligned-mtl": AlignedMTL,
        "config": ConFIG,
        "imtl-g": IMTLG,
        "mgda": MGDA,
        "cagrad": lambda: CAGrad(c=0.4),
        "nash-mtl": lambda: NashMTL(n_tasks=t, max_norm=1.0, update_weights_every=1, optim_niter=20),
        "fairgrad": lambda: FairGrad(alpha=1.0),
        "pcgrad": PCGrad,
        "gradvac": GradVac,
        "krum": lambda: Krum(n_byzantine=1),
        "trimmed-mean": lambda: TrimmedMean(trim_number=1),
        "graddrop": GradDrop,
        "rgw": Random,
        "modo": lambda: Gramian(MoDoWeighting()),
        "sdmgrad": lambda: Gramian(SDMGradWeighting()),
        "excess-mtl": ExcessMTL,
        "pcd": PCD,
        "cr-mogm": lambda: Gramian(CRMOGMWeighting(UPGradWeighting())),
        "constant": lambda: Constant(torch.ones(t)),
    }


def time_calls(call):
    for _ in range(WARMUP):
        call()
    samples, started = [], time.perf_counter()
    while len(samples) < MIN_SAMPLES or (
        len(samples) < MAX_SAMPLES and (time.perf_counter() - started) * 1e3 < BUDGET_MS
    ):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return samples


def main():
    with open(REPORT) as f:
        report = json.load(f)
    G = load_file(report["inputs"])["grads"]
    updates = load_file(report["updates"])
    t = G.shape[0]
    made = aggregators(t)
    agreement = {}
    for label, make in made.items():
        ours = updates[f"update/{label}"].double()
        theirs = make()(G).double()
        if label in RANDOM:
            agreement[label] = "random"
            continue
        cos = float(ours @ theirs / (ours.norm() * theirs.norm()))
        agreement[label] = f"cos {cos:.6f}, ratio {float(ours.norm() / theirs.norm()):.3f}"

    w = torch.full((t,), 1.0 / t)
    floor_call = lambda: (G @ G.T, w @ G)  # noqa: E731
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            out = os.path.join(tmp, f"round{r}.json")
            before = cpu_snapshot()
            subprocess.run([report["exe"], "--time-only", "--out", out, "--budget-ms", str(BUDGET_MS)], check=True)
            with open(out) as f:
                timed = json.load(f)
            ours = {label: m["samples_us"] for label, m in timed["methods"].items()}
            theirs = {}
            for label, make in made.items():
                aggregator = make()  # one instance per method and round: warm state, as in training
                theirs[label] = time_calls(lambda: aggregator(G))
            theirs["(floor)"] = time_calls(floor_call)
            rounds.append((foreign_load(before, cpu_snapshot()), ours, theirs, timed["threads"]))
    used = [r for r in rounds if r[0] < QUIET] or rounds
    median = lambda side, label: statistics.median(x for r in used for x in r[side][label])  # noqa: E731
    floor = median(2, "(floor)")
    print(
        f"TorchJD 0.18.0 vs taskweave, one aggregation, T = {t}, P = {G.shape[1]:,}, f32, CPU, threads: "
        f"taskweave {rounds[0][3]}, TorchJD {torch.get_num_threads()} (torch {torch.__version__}); "
        f"median per call over {len(used)} of {ROUNDS} alternating rounds"
    )
    print(f"{'aggregator':14}{'TorchJD µs':>12}{'taskweave µs':>14}{'TorchJD/tw':>12}{'floor µs':>10}{'tw/floor':>10}  agreement")
    for label in made:
        jd, tw = median(2, label), median(1, label)
        print(f"{label:14}{jd:>12.0f}{tw:>14.0f}{jd / tw:>11.2f}x{floor:>10.0f}{tw / floor:>9.2f}x  {agreement[label]}")
    loads = ", ".join(f"{r[0]:.2f}" for r in rounds)
    print(f"floor = one f32 G @ G.T plus one w @ G in PyTorch; other processes' CPU use per round (cores): {loads}")
    if used[0][0] >= QUIET:
        print(f"NO QUIET ROUND (other processes above {QUIET} cores in every round): the medians are noisy")


if __name__ == "__main__":
    main()
