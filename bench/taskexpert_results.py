"""`make taskexpert-results`: TaskExpert against hard sharing, MMoE and PLE on
fashion-scenes (bench/results/<date>-taskexpert-scenes.md).

pipelines/taskexpert-scenes.toml (a ViT over 8x8 patches, dense heads on the
token grid) with each architecture, 3 seeds; single-task models per seed for
Delta m; the mean gate weights TaskExpert logs at its selected step; the
predicted maps of hard sharing and TaskExpert on the first test scenes.
Every number comes from the `taskweave` CLI; two one-thread runs at a time.
Usage:
    .venv/bin/python bench/taskexpert_results.py [--reuse] [OUT.md]
`--reuse` reads the runs an earlier invocation finished.
"""

import concurrent.futures as futures
import datetime
import json
import os
import platform
import statistics
import sys
import time

import runs
from runs import mean_std, slug

PIPELINE = os.path.join(runs.ROOT, "pipelines/taskexpert-scenes.toml")
OUT_DIR = os.path.join(runs.ROOT, "runs", "taskexpert-scenes")
SEEDS = [0, 1, 2]
EXPERTS = "experts=4, expert_hidden=[64]"
ROWS = [
    ("hard sharing (last block's tokens)", '"hard-sharing"'),
    ("MMoE (token gates)", f'{{kind="mmoe", {EXPERTS}}}'),
    ("PLE (token gates)", '{kind="ple", task_experts=2, shared_experts=2, expert_hidden=[64]}'),
    ("TaskExpert", f'{{kind="taskexpert", {EXPERTS}}}'),
    ("TaskExpert without memory", f'{{kind="taskexpert", {EXPERTS}, memory=false}}'),
]
# Per task, the metrics the table shows (the first is the primary one).
METRICS = {"segmentation": ["miou", "pixel_accuracy"], "depth": ["abs_err", "rel_err"],
           "boundaries": ["miou", "pixel_accuracy"]}


def main():
    args = sys.argv[1:]
    reuse = "--reuse" in args
    args = [a for a in args if a != "--reuse"]
    out_md = args[0] if args else os.path.join(
        runs.ROOT, "bench/results", f"{datetime.date.today()}-taskexpert-scenes.md")
    plugin_dir = os.path.join(runs.ROOT, "plugins")
    started = time.time()

    def train(label, table, seed):
        name = f"{slug(label)}-s{seed}"
        summary, seconds = runs.train(PIPELINE, name, [f"model.architecture={table}"], seed, OUT_DIR,
                                      plugin_dir, reuse)
        print(f"{label} seed {seed}: {seconds:.0f} s", flush=True)
        return label, seed, name, summary

    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        if not (reuse and os.path.isdir(os.path.join(OUT_DIR, "baselines"))):
            list(pool.map(lambda s: runs.baselines(PIPELINE, s, OUT_DIR), SEEDS))
        results = list(pool.map(lambda job: train(*job),
                                [(label, table, seed) for label, table in ROWS for seed in SEEDS]))
    elapsed = time.time() - started

    lines = [
        f"# TaskExpert on fashion-scenes ({datetime.date.today()})",
        "",
        f"Reproduce: `make taskexpert-results` (runs `.venv/bin/python bench/taskexpert_results.py`; "
        f"{runs.took(elapsed, reuse)}).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        "one libtorch thread per run, two runs at a time. Seeds " + ", ".join(map(str, SEEDS)) + ".",
        "",
        "Setup (pipelines/taskexpert-scenes.toml): fashion-scenes, 2,000 / 300 / 500 scenes of 64x64; "
        "ViT over 8x8 patches (64 tokens), width 64, 4 blocks, 4 heads; dense heads (3x3 conv 32, then "
        "1x1) on the token grid, upsampled; Adam 1e-3, cosine schedule with 50 warm-up steps, batch 32, "
        "1,000 steps, evaluation every 100, the best validation step reported. Experts: 4 MLPs 64-64 "
        "per mixture (per block for TaskExpert). Delta m against single-task models of the same pipeline "
        "(hard sharing, one task each), per seed.",
        "",
        "| architecture | " + " | ".join(f"{t} {m}" for t, ms in METRICS.items() for m in ms) +
        " | Δm (%) | parameters | steps/s |",
        "|---|" + "---|" * (sum(len(m) for m in METRICS.values()) + 3),
    ]
    for label, _ in ROWS:
        rows = [r for r in results if r[0] == label]
        cells = []
        for task, names in METRICS.items():
            for m in names:
                ms = mean_std([r[3]["test"][task][m] for r in rows])
                cells.append(f"{ms[0]:.4f} ± {ms[1]:.4f}")
        dm = mean_std([r[3]["delta_m"] for r in rows])
        rate = statistics.mean(r[3]["steps_per_second"] for r in rows)
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {dm[0]:+.2f} ± {dm[1]:.2f} | {rows[0][3]['parameters']} | {rate:.1f} |")
    lines += ["", "## TaskExpert's gates (test split, seed 0, mean weight per slot)", ""]
    for label in ("TaskExpert", "TaskExpert without memory"):
        name = next(r[2] for r in results if r[0] == label and r[1] == 0)
        with open(os.path.join(OUT_DIR, name, "metrics.jsonl")) as f:
            final = [json.loads(l) for l in f if '"final":true' in l.replace(" ", "")]
        gates = next(r["architecture"] for r in final if r["split"] == "test")
        slots = sorted({k.split(".")[3] for k in gates})
        lines += [f"{label}:", "", "| task | block | " + " | ".join(slots) + " |"]
        lines.append("|---|---|" + "---|" * len(slots))
        for task in METRICS:
            for block in sorted({int(k.split(".")[2]) for k in gates}):
                values = [gates.get(f"gate.{task}.{block}.{s}") for s in slots]
                lines.append(f"| {task} | {block} | " + " | ".join(
                    "" if v is None else f"{v:.3f}" for v in values) + " |")
        lines.append("")
    # Predicted maps of the first test scenes beside the truth, seed 0.
    lines += ["## Predictions on the first test scenes (seed 0)", ""]
    for label in ("hard sharing (last block's tokens)", "TaskExpert"):
        name = next(r[2] for r in results if r[0] == label and r[1] == 0)
        png = os.path.join(os.path.dirname(out_md), f"{datetime.date.today()}-taskexpert-scenes-{slug(label)}.png")
        runs.cli("preview", os.path.join(OUT_DIR, name), "--split", "test", "--n", "4", "--out", png,
                 "--plugins", runs.PLUGINS or plugin_dir)
        lines += [f"{label}:", "", f"![{label}]({os.path.basename(png)})", ""]
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
