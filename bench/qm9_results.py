"""`make qm9-results`: the QM9 tables of bench/results/ (issue: SAM-MTL and the
gradient weightings on QM9).

1. Δm (test MAE of the 11 targets against single-task baselines, %) for EW,
   PCGrad, CAGrad, MGDA, IMTL-G, Nash-MTL and SAM-MTL + {EW, PCGrad, IMTL-G},
   3 seeds, mean ± std.
2. Flatness: mean training-loss increase under random perturbations of the
   shared parameters of relative norm RADIUS, SAM-MTL + X against X.

Every number comes from the `taskweave` CLI (`baselines`, `run`, `flatness`)
on pipelines/qm9.toml; runs use one libtorch thread each and two run at a time
(the machine has two cores). Usage:
    .venv/bin/python bench/qm9_results.py [OUT.md]
"""

import concurrent.futures as futures
import datetime
import os
import platform
import statistics
import sys
import time

import runs
from runs import mean_std

ROOT = runs.ROOT
PIPELINE = os.path.join(ROOT, "pipelines/qm9.toml")
OUT_DIR = os.path.join(ROOT, "runs/qm9-results")
SEEDS = [0, 1, 2]
RADIUS = 0.05
SAMPLES = 20
METHODS = [
    ("EW", ["train.weighting=ew"]),
    ("PCGrad", ["train.weighting=pcgrad"]),
    ("CAGrad", ["train.weighting=cagrad"]),
    ("MGDA", ["train.weighting=mgda"]),
    ("IMTL-G", ["train.weighting=imtl-g"]),
    ("Nash-MTL", ["train.weighting=nash-mtl"]),
    ("SAM-MTL + EW", ["train.weighting=ew", "train.strategy=sam-mtl"]),
    ("SAM-MTL + PCGrad", ["train.weighting=pcgrad", "train.strategy=sam-mtl"]),
    ("SAM-MTL + IMTL-G", ["train.weighting=imtl-g", "train.strategy=sam-mtl"]),
]
FLATNESS_PAIRS = [("EW", "SAM-MTL + EW"), ("PCGrad", "SAM-MTL + PCGrad"), ("IMTL-G", "SAM-MTL + IMTL-G")]


def slug(method):
    return method.lower().replace(" + ", "-").replace(" ", "-")


def baselines(seed):
    runs.baselines(PIPELINE, seed, OUT_DIR)


def train(method, sets, seed):
    summary, seconds = runs.train(PIPELINE, f"{slug(method)}-s{seed}", sets, seed, OUT_DIR)
    return method, seed, summary, seconds


def flatness(method, seed):
    flat = runs.flatness(os.path.join(OUT_DIR, f"{slug(method)}-s{seed}"), RADIUS, SAMPLES)
    return method, seed, flat["mean_increase"]


def main():
    out_md = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "bench/results", f"{datetime.date.today()}-qm9.md")
    started = time.time()
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(baselines, SEEDS))
        jobs = [pool.submit(train, m, s, seed) for m, s in METHODS for seed in SEEDS]
        results = [j.result() for j in jobs]
        flat_jobs = [pool.submit(flatness, m, seed) for pair in FLATNESS_PAIRS for m in pair for seed in SEEDS]
        flat = [j.result() for j in flat_jobs]
    elapsed = time.time() - started

    by_method = {m: [r for r in results if r[0] == m] for m, _ in METHODS}
    lines = [
        f"# QM9: Δm and flatness ({datetime.date.today()})",
        "",
        f"Reproduce: `make qm9-results` (runs `{' '.join(['.venv/bin/python', 'bench/qm9_results.py'])}`; "
        f"{elapsed / 60:.0f} minutes here).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        "one libtorch thread per run, two runs at a time.",
        "",
        "Setup (pipelines/qm9.toml): 20,000 molecules of QM9 (qm9pack 1.0.3), split 16,000 / 2,000 / 2,000; "
        "inputs: 29 sorted Coulomb-matrix eigenvalues + 5 atom counts; 11 targets (mu, alpha, homo, lumo, r2, "
        "zpve, u0, u298, h298, g298, cv), each relative to its atom-count least-squares fit and standardised; "
        "shared MLP 34-256-256, linear heads, Adam 1e-3, batch 256, 3,000 steps. "
        "Δm: mean over the 11 targets of the relative test-MAE improvement over single-task models trained "
        "the same way (positive is better), per seed against that seed's baselines.",
        "",
        "## Δm (test, 3 seeds)",
        "",
        "| method | Δm (%) mean ± std | per seed | steps/s |",
        "|---|---|---|---|",
    ]
    for method, _ in METHODS:
        rows = sorted(by_method[method], key=lambda r: r[1])
        deltas = [r[2]["delta_m"] for r in rows]
        m, s = mean_std(deltas)
        rate = statistics.mean(r[2]["steps_per_second"] for r in rows)
        lines.append(f"| {method} | {m:+.2f} ± {s:.2f} | {', '.join(f'{d:+.2f}' for d in deltas)} | {rate:.0f} |")

    lines += ["", "Test MAE per target (mean over seeds):", ""]
    tasks = list(by_method["EW"][0][2]["test"].keys())
    lines.append("| method | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    for method, _ in METHODS:
        maes = [statistics.mean(r[2]["test"][t]["mae"] for r in by_method[method]) for t in tasks]
        lines.append(f"| {method} | " + " | ".join(f"{v:.4g}" for v in maes) + " |")

    lines += [
        "",
        f"## Flatness (training loss increase, relative perturbation {RADIUS}, {SAMPLES} directions)",
        "",
        f"`taskweave flatness RUN_DIR --radius {RADIUS} --samples {SAMPLES}`: mean over tasks of the increase "
        "of the (standardised) training loss when the shared parameters move by a random direction of norm "
        f"{RADIUS}·‖θ_shared‖; lower means a flatter minimum.",
        "",
        "| base | base increase | SAM-MTL + base increase | ratio |",
        "|---|---|---|---|",
    ]
    for base, sam in FLATNESS_PAIRS:
        b = mean_std([f[2] for f in flat if f[0] == base])
        s = mean_std([f[2] for f in flat if f[0] == sam])
        lines.append(f"| {base} | {b[0]:.4f} ± {b[1]:.4f} | {s[0]:.4f} ± {s[1]:.4f} | {s[0] / b[0]:.2f} |")
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
