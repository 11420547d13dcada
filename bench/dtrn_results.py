"""`make dtrn-results`: DTRN against a shared bottom, MMoE and PLE, with its
ablations, on multi-behaviour-synthetic and MovieLens
(bench/results/<date>-dtrn.md).

pipelines/behaviours-dtrn.toml and pipelines/movielens-dtrn.toml with each
architecture, 3 seeds: test AUC and log-loss (BCE) per task at the best
validation step, parameter counts, training speed. The baselines run on the
`embedding` backbone twice: over the fields only (`sequences = "ignore"`),
and with each behaviour sequence mean-pooled into the shared input (the
default, and how the paper's baselines read the sequences). DTRN reads the
sequences itself.
Every number comes from the `taskweave` CLI; two one-thread runs at a time.
Usage:
    .venv/bin/python bench/dtrn_results.py [--reuse] [OUT.md]
`--reuse` reads the runs an earlier invocation finished.
"""

import concurrent.futures as futures
import datetime
import os
import platform
import statistics
import sys
import time

import runs
from runs import mean_std, slug

SEEDS = [0, 1, 2]
BENCHMARKS = [
    ("multi-behaviour-synthetic", "pipelines/behaviours-dtrn.toml", "behaviours"),
    ("MovieLens (dslabs, 100,004 ratings)", "pipelines/movielens-dtrn.toml", "movielens"),
]
EXPERTS = "experts=4, expert_hidden=[32]"
# (label, --sets): the DTRN rows keep the pipeline's dtrn table.
BASELINES = [
    ("shared bottom", 'model.architecture="hard-sharing"'),
    ("MMoE", f"model.architecture={{kind=\"mmoe\", {EXPERTS}}}"),
    ("PLE", 'model.architecture={kind="ple", task_experts=2, shared_experts=2, expert_hidden=[32]}'),
]
FIELDS_ONLY = 'model.backbone.sequences="ignore"'
ROWS = [(f"{name} (fields only)", [arch, FIELDS_ONLY]) for name, arch in BASELINES] + [
    (f"{name} (fields + pooled sequences)", [arch]) for name, arch in BASELINES] + [
    ("DTRN", []),
    ("DTRN + MMoE", [f"model.architecture.mixture={{{EXPERTS}}}"]),
    ("DTRN without hypernetwork", ["model.architecture.hypernetwork=false"]),
    ("DTRN without refinement", ["model.architecture.refinement=false"]),
]
TASKS = ["watch", "like"]


def main():
    args = sys.argv[1:]
    reuse = "--reuse" in args
    args = [a for a in args if a != "--reuse"]
    out_md = args[0] if args else os.path.join(runs.ROOT, "bench/results", f"{datetime.date.today()}-dtrn.md")
    plugin_dir = os.path.join(runs.ROOT, "plugins")
    started = time.time()

    def train(bench, pipeline, short, label, sets, seed):
        out_dir = os.path.join(runs.ROOT, "runs", f"dtrn-{short}")
        summary, seconds = runs.train(os.path.join(runs.ROOT, pipeline), f"{slug(label)}-s{seed}", sets, seed,
                                      out_dir, plugin_dir, reuse)
        print(f"{bench}: {label} seed {seed}: {seconds:.0f} s", flush=True)
        return bench, label, summary

    jobs = [(b, p, s, label, sets, seed) for b, p, s in BENCHMARKS for label, sets in ROWS for seed in SEEDS]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: train(*job), jobs))
    elapsed = time.time() - started

    lines = [
        f"# DTRN on multi-behaviour-synthetic and MovieLens ({datetime.date.today()})",
        "",
        f"Reproduce: `make dtrn-results` (runs `.venv/bin/python bench/dtrn_results.py`; "
        f"{runs.took(elapsed, reuse)}).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        "one libtorch thread per run, two runs at a time. Seeds " + ", ".join(map(str, SEEDS)) +
        " (initialisation and batch order; each data set is the pipeline's, the same in every run).",
        "",
        "Metrics: test AUC and log-loss (BCE) per task at the best validation step, mean ± std over the "
        "seeds. `like` is scored on rated candidates only (MovieLens) or on every sample (synthetic).",
    ]
    for bench, pipeline, _ in BENCHMARKS:
        lines += ["", f"## {bench} (`{pipeline}`)", "",
                  "| architecture | " + " | ".join(f"{t} AUC | {t} log-loss" for t in TASKS) +
                  " | parameters | steps/s |",
                  "|---|" + "---|" * (2 * len(TASKS) + 2)]
        for label, _ in ROWS:
            rows = [r[2] for r in results if r[0] == bench and r[1] == label]
            cells = []
            for t in TASKS:
                for m in ("auc", "bce"):
                    ms = mean_std([r["test"][t][m] for r in rows])
                    cells.append(f"{ms[0]:.4f} ± {ms[1]:.4f}")
            rate = statistics.mean(r["steps_per_second"] for r in rows)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {rows[0]['parameters']} | {rate:.1f} |")
        lines += [""] + verdict(results, bench)
    lines += ["", PAPER]
    runs.write_report(out_md, lines)


# What could be found of the paper's own numbers (arXiv 2308.05996, CIKM 2023).
PAPER = (
    "The paper (Liu et al., \"Deep Task-specific Bottom Representation Network for Multi-Task "
    "Recommendation\", CIKM 2023, arXiv 2308.05996) reports experiments on \"one public dataset and "
    "one industrial dataset\" and an online deployment (abstract). Its result tables could not be "
    "retrieved from this machine (no web access; the search corpora hold the abstract only), so no "
    "paper number stands beside ours; the next session with web access should add them."
)


def verdict(results, bench):
    """Per task: DTRN's test AUC minus the best baseline's (by mean), with
    the standard error of the difference over the seeds."""
    def aucs(label, task):
        return [r[2]["test"][task]["auc"] for r in results if r[0] == bench and r[1] == label]

    out = []
    for task in TASKS:
        baselines = [label for label, _ in ROWS if not label.startswith("DTRN")]
        best = max(baselines, key=lambda label: statistics.mean(aucs(label, task)))
        dtrn, base = aucs("DTRN", task), aucs(best, task)
        diff = statistics.mean(dtrn) - statistics.mean(base)
        se = (statistics.variance(dtrn) / len(dtrn) + statistics.variance(base) / len(base)) ** 0.5
        plain = "beats" if diff > 2 * se else ("trails" if diff < -2 * se else "is level with")
        out.append(f"- `{task}`: DTRN {plain} the best baseline ({best}): AUC {diff:+.4f} ± {se:.4f} "
                   "(difference of means ± its standard error; \"beats\"/\"trails\" need 2 SE).")
    return out


if __name__ == "__main__":
    main()
