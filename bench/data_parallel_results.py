"""Data-parallel training under mpirun (issue 18): steps/s of the QM9 pipeline
(11 tasks, batch 256, and again with batch 4096, where the arithmetic
outweighs the fixed cost of a step) on one process and on two ranks, one
libtorch thread each, for EW (a loss weighting: one reduced gradient per
step) and PCGrad (a gradient weighting: every task's gradient reduced), with
the bytes each rank hands to the reductions per step and how far the
two-rank parameters end from the one-process ones. Rounds alternate the
cells so that load from elsewhere falls on all of them alike; the quiet
rounds count. STEPS is for batch 256; batch 4096 runs STEPS / 6.

    .venv/bin/python bench/data_parallel_results.py [STEPS] [ROUNDS]
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

import runs
import quiet
from safetensors.torch import load_file

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 600
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
OUT = "/tmp/taskweave-data-parallel"
PIPELINE = "pipelines/qm9.toml"
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


BATCHES = {256: STEPS, 4096: max(STEPS // 6, 2)}


def name(weighting, batch, ranks):
    return f"{weighting}-b{batch}-{ranks}"


def command(weighting, batch, ranks):
    steps = BATCHES[batch]
    args = [runs.BIN, "-q", "run", PIPELINE, "--overwrite", *runs.common(0, OUT),
            "--set", f"run.name={name(weighting, batch, ranks)}", "--set", f"train.steps={steps}",
            "--set", f"train.batch={batch}", "--set", f"eval.every={steps // 2}",
            "--set", f'train.weighting={{kind="{weighting}"}}']
    return (["mpirun", "-np", str(ranks), "--oversubscribe"] if ranks > 1 else []) + args


def train(weighting, batch, ranks):
    subprocess.run(command(weighting, batch, ranks), cwd=runs.ROOT, check=True, capture_output=True, env=MPI_ENV)
    with open(os.path.join(OUT, name(weighting, batch, ranks), "summary.json")) as f:
        return json.load(f)


def final(name):
    folder = os.path.join(OUT, name, "checkpoints")
    newest = sorted(p for p in os.listdir(folder) if p.startswith("step-"))[-1]
    return load_file(os.path.join(folder, newest))


def relative_difference(a, b):
    """‖θ_b − θ_a‖ / ‖θ_a‖ over every model parameter at the end of both runs."""
    x, y = final(a), final(b)
    keys = [k for k in x if k.startswith(("backbone.", "heads.", "architecture."))]
    diff = sum(((x[k] - y[k]).double() ** 2).sum().item() for k in keys)
    norm = sum((x[k].double() ** 2).sum().item() for k in keys)
    return (diff / norm) ** 0.5


def metric_difference(a, b):
    """The largest relative difference of a task's test MAE between two runs' summaries."""
    return max(abs(b["test"][t]["mae"] - a["test"][t]["mae"]) / abs(a["test"][t]["mae"]) for t in a["test"])


def main():
    cells = [(w, b, r) for b in BATCHES for w in ("ew", "pcgrad") for r in (1, 2)]
    summaries = {}

    def cell(c):
        def run():
            summaries[c] = train(*c)
            return summaries[c]["steps_per_second"]
        return run

    rounds = quiet.alternate({c: cell(c) for c in cells}, ROUNDS)
    quiet_rounds = [r for load, r in rounds if load < quiet.QUIET] or [r for _, r in rounds]
    rate = {c: statistics.median(r[c] for r in quiet_rounds) for c in cells}
    spread = {c: (min(r[c] for r in quiet_rounds), max(r[c] for r in quiet_rounds)) for c in cells}
    lines = [
        f"# Data-parallel training on one machine: 1 vs 2 MPI ranks ({datetime.date.today()})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Open MPI {subprocess.run(['mpirun', '--version'], capture_output=True, text=True).stdout.split()[3]}; "
        "one libtorch thread per rank; CPU.",
        f"Pipeline: `{PIPELINE}` (QM9, 11 regression tasks, MLP 256-256, 77,579 parameters), batch 256 "
        f"({STEPS} steps) as the pipeline has it and batch 4096 ({BATCHES[4096]} steps), each split in two halves "
        f"over two ranks; seed 0. {len(quiet_rounds)} of {ROUNDS} rounds quiet (foreign load < {quiet.QUIET} "
        "cores); median and range over them. steps/s is the training loop's, evaluations included.",
        "",
        "Command: `make data-parallel-results` "
        f"(`.venv/bin/python bench/data_parallel_results.py {STEPS} {ROUNDS}`); one cell is",
        f"`{' '.join(command('pcgrad', 256, 2)).replace(runs.BIN, 'taskweave')}`.",
        "",
        "| batch | weighting | ranks | steps/s (median, range) | speed-up | bytes reduced per step per rank | parameters vs 1 process (relative L2) | test MAE vs 1 process (largest relative difference over tasks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (w, b, r) in cells:
        lo, hi = spread[(w, b, r)]
        one = name(w, b, 1)
        diff = "—" if r == 1 else f"{relative_difference(one, name(w, b, r)):.1e}"
        metric = "—" if r == 1 else f"{metric_difference(summaries[(w, b, 1)], summaries[(w, b, r)]):.1e}"
        lines.append(
            f"| {b} | {w} | {r} | {rate[(w, b, r)]:.1f} ({lo:.1f}–{hi:.1f}) | "
            f"{rate[(w, b, r)] / rate[(w, b, 1)]:.2f}× | {summaries[(w, b, r)]['reduced_bytes_per_step']:,} | {diff} | {metric} |")
    lines.append("")
    runs.write_report(os.path.join(runs.ROOT, "bench/results", f"{datetime.date.today()}-data-parallel.md"), lines)


if __name__ == "__main__":
    main()
