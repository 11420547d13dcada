"""`make diffusion-results`: does clustering the timesteps into tasks and
weighting them (ANT, Go et al. 2023) beat plain uniform-t DDPM training?
The protocol of the diffusion clustering issue, on two benchmarks:

- `2d`: 2-D distributions (eight Gaussians, checkerboard), an MLP denoiser,
  3 seeds, three step budgets; sliced Wasserstein-2 and MMD² of 2,000
  ancestral samples against the test points.
- `fashion`: Fashion-MNIST items at 14x14, a small U-Net denoiser, one step
  budget and the seeds asked for; FD-FMNIST (Fréchet distance in the
  features of a Fashion-MNIST classifier the runtime trains once) and
  sliced W2 of 1,000 DDIM samples (100 steps, clipped) against the test
  items, and grids of samples.

For each: the vanilla denoiser (uniform t, one task) and the clustered ones
(k = 5 intervals by timestep, SNR or gradient cost; UW with its own
learning rate 0.025, PCGrad, or Nash-MTL re-solved every 25 steps, ANT's
defaults); the gradient cost reads task affinity scores (`taskweave
affinity`, 100 timesteps) of the seed's vanilla model at the largest
budget; the intervals the gradient cost chose are drawn on the SNR curve.
Timestep intervals are uniform intervals: the timestep cost's optimum for k
dividing T is the k equal-width intervals.

Every number comes from the `taskweave` CLI; two one-thread runs at a time.
Usage:
    .venv/bin/python bench/diffusion_results.py [--reuse] [--quick] [2d|fashion] [SEEDS] [OUT.md]
SEEDS is a comma list (default: the benchmark's). `--reuse` reads finished
runs and samples instead of redoing them (so seeds can be added later);
`--quick` is a smoke test (tiny budgets, one seed, one distribution).
"""

import concurrent.futures as futures
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time

import runs
from runs import mean_std

QUICK = "--quick" in sys.argv
REUSE = "--reuse" in sys.argv
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
BENCHMARK = ARGS.pop(0) if ARGS and ARGS[0] in ("2d", "fashion") else "2d"
K = 5

BENCHMARKS = {
    "2d": dict(
        title="2-D data",
        pipeline="pipelines/diffusion-2d.toml",
        datasets=["eight-gaussians"] if QUICK else ["eight-gaussians", "checkerboard"],
        seeds=[0] if QUICK else [0, 1, 2],
        noise_seeds=[],
        budgets=[200, 400] if QUICK else [1000, 2000, 4000],
        samples=2000,
        sample_args=[],
        metrics=[("sliced Wasserstein-2", "sliced_wasserstein"), ("MMD²", "mmd2")],
        setup=[
            "- Data: `toy-2d` ({datasets}), 20,000 training points; quality against the "
            "2,000 test points (fresh draws of the same generator).",
            "- Model (pipelines/diffusion-2d.toml): DDPM ε-prediction, T = 1000, linear schedule; MLP 34-128-128-128 "
            "(relu) over x_t and 32 sinusoidal timestep features, one shared output head 128-2; Adam 1e-3, constant, "
            "batch 250 (50 per cluster), evaluation every quarter run.",
            "- Sampling: `taskweave sample` ancestral (1000 steps), {samples} samples, sampler seed = run seed; "
            "the parameters of the best validation loss (`eval.select = best-val`).",
            "- Metrics: sliced Wasserstein-2 over 128 random directions (lower is better) and unbiased MMD² with a "
            "sum of Gaussian kernels of bandwidths 0.05–2 (lower is better); mean ± sample std over seeds {seeds}.",
        ],
    ),
    "fashion": dict(
        title="Fashion-MNIST",
        pipeline="pipelines/diffusion-fashion.toml",
        datasets=[None],
        seeds=[0],
        # Vanilla alone at more seeds: its seed-to-seed spread is the yardstick
        # a one-seed comparison is read against.
        noise_seeds=[1] if QUICK else [1, 2],
        budgets=[200] if QUICK else [3000],
        samples=200 if QUICK else 1000,
        sample_args=["--sampler", "ddim", "--ddim-steps", "100", "--clip"],
        sets=["model.backbone.channels=[16, 32]", "train.batch=80"],
        metrics=[("FD-FMNIST", "fd_fmnist"), ("sliced Wasserstein-2", "sliced_wasserstein")],
        setup=[
            "- Data: `fashion-mnist` items at 14×14 (2×2 means, pixels in [−1, 1]), the 50,000 fitting items "
            "of `make images`; quality against the first 1,000 test items.",
            "- Model (pipelines/diffusion-fashion.toml with `model.backbone.channels = [16, 32]`, `train.batch = 80`): "
            "DDPM ε-prediction, T = 1000, linear schedule; U-Net of two levels (14×14 with 16 channels, 7×7 with 32), "
            "one residual block per level and in the middle, group norm (8 groups), 32 sinusoidal timestep features "
            "through a 64-wide SiLU MLP, a shared per-pixel head (1×1 convolution); Adam 1e-3, constant, batch 80 "
            "(16 per cluster), evaluation every quarter run. Sized so that the table fits in about an hour on two "
            "cores (11 runs, five of them with per-task gradients).",
            "- Sampling: `taskweave sample --sampler ddim --ddim-steps 100 --clip`, {samples} samples, sampler "
            "seed = run seed; the parameters of the best validation loss.",
            "- Metrics: FD-FMNIST (lower is better): the Fréchet distance between Gaussians fitted to the 128 hidden "
            "features of a Fashion-MNIST classifier (conv 32-64-128 + a 128-wide layer, 5 epochs, trained once by "
            "the runtime into `data/images/fd-fmnist/`; test accuracy {accuracy}) of the samples and of the test "
            "items; the same distance between {samples} real training items and the test items is {real} (the floor "
            "at this sample count). Not FID: a different feature space, not comparable to published FIDs. Also sliced "
            "Wasserstein-2 on the pixels. Clustered runs: seeds {seeds}; vanilla also seeds {noise_seeds}, whose "
            "spread (± sample std) is the yardstick for a one-seed difference.",
        ],
    ),
}
B = BENCHMARKS[BENCHMARK]
SEEDS = [int(x) for x in ARGS.pop(0).split(",")] if ARGS and ARGS[0][0].isdigit() else B["seeds"]
BUDGETS = B["budgets"]
DATASETS = B["datasets"]
SAMPLES = B["samples"]
OUT_ROOT = os.path.join(runs.ROOT, "runs", "diffusion-2d" if BENCHMARK == "2d" else "diffusion-fashion")
WEIGHTINGS = [
    ("UW", ['train.weighting={kind="uw"}', "train.method_lr=0.025"]),
    ("PCGrad", ['train.weighting={kind="pcgrad"}']),
    ("Nash-MTL", ['train.weighting={kind="nash-mtl", update_weights_every=25}']),
]
COSTS = [("timestep", "timestep"), ("SNR", "snr"), ("gradient", "gradient")]
METHODS = [("vanilla (uniform t, one task)", None, [])] + [
    (f"{cost} clusters + {w}", code, sets) for cost, code in COSTS for w, sets in WEIGHTINGS
]


def slug(text):
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def run_dir(dist, method, steps, seed):
    return os.path.join(OUT_ROOT, dist or "", f"{slug(method)}-{steps}-s{seed}")


def train(dist, method, cost, sets, steps, seed, tas=None):
    """Trains one run (unless reused) and samples from it; `sample --json`'s view."""
    directory = run_dir(dist, method, steps, seed)
    name = os.path.basename(directory)
    sets = [*B.get("sets", []), f"train.steps={steps}", f"eval.every={max(steps // 4, 1)}", *sets]
    if dist:
        sets.append(f'data.distribution="{dist}"')
    if cost:
        sets.append(f'train.grouping={{kind="interval-clustering", cost="{cost}", k={K}}}')
    if tas:
        sets.append(f'diffusion.signals="{tas}"')
    runs.train(B["pipeline"], name, sets, seed, os.path.dirname(directory), reuse=REUSE)
    kept = os.path.join(directory, "sample.json")
    if not (REUSE and os.path.exists(kept)):
        pictures = ["--png", os.path.join(directory, "samples.png")] if dist is None else []
        out = runs.cli("sample", directory, "--n", str(SAMPLES), "--seed", str(seed), "--json",
                       "--out", os.path.join(directory, "samples.safetensors"), *B["sample_args"], *pictures,
                       *(["--plugins", runs.PLUGINS] if runs.PLUGINS else []))
        with open(kept, "w") as f:
            f.write(out)
    with open(kept) as f:
        return json.load(f)


def affinity(dist, seed):
    """TAS of the seed's vanilla model at the largest budget (absolute path)."""
    directory = run_dir(dist, METHODS[0][0], BUDGETS[-1], seed)
    out = os.path.join(directory, "tas.safetensors")
    if not (REUSE and os.path.exists(out)):
        runs.cli("affinity", directory, "--timesteps", "100", "--out", out,
                 "--png", os.path.join(directory, "tas.png"),
                 *(["--plugins", runs.PLUGINS] if runs.PLUGINS else []))
    return out


def cell(values):
    m, s = mean_std(values)
    return f"{m:.4f} ± {s:.4f}" if len(values) > 1 else f"{m:.4f}"


def main():
    today = datetime.date.today().isoformat()
    topic = "diffusion-2d" if BENCHMARK == "2d" else "diffusion-fashion"
    out_md = ARGS[0] if ARGS else os.path.join(runs.ROOT, "bench", "results", f"{today}-{topic}.md")
    started = time.time()
    results = {}  # (dist, method, steps) -> [sample view per seed]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        # Vanilla first: the gradient cost needs its models (and, for images,
        # its first sample trains the FD-FMNIST classifier, alone).
        first = [(d, s, b) for d in DATASETS for s in SEEDS for b in BUDGETS]
        results[(first[0][0], METHODS[0][0], first[0][2])] = [train(first[0][0], METHODS[0][0], None, [],
                                                                    first[0][2], first[0][1])]
        noise = [(d, s, b) for d in DATASETS for s in B["noise_seeds"] if s not in SEEDS for b in BUDGETS]
        jobs = {pool.submit(train, d, METHODS[0][0], None, [], b, s): (d, METHODS[0][0], b)
                for d, s, b in first[1:] + noise}
        for job, key in jobs.items():
            results.setdefault(key, []).append(job.result())
        tas = {(d, s): affinity(d, s) for d in DATASETS for s in SEEDS}
        jobs = {}
        for dist in DATASETS:
            for seed in SEEDS:
                for method, cost, sets in METHODS[1:]:
                    for steps in BUDGETS:
                        signals = tas[(dist, seed)] if cost == "gradient" else None
                        job = pool.submit(train, dist, method, cost, sets, steps, seed, signals)
                        jobs[job] = (dist, method, steps)
        for job, key in jobs.items():
            results.setdefault(key, []).append(job.result())
    # The gradient cost's intervals of the first seed on each data set, on the SNR curve.
    pictures = []
    for dist in DATASETS:
        png = os.path.join(os.path.dirname(out_md), f"{today}-{topic}-{dist + '-' if dist else ''}gradient-intervals.png")
        runs.cli("call", "grouping", "interval-clustering", "--tasks", "1000", "--schedule", "linear",
                 "--signals", tas[(dist, SEEDS[0])], "--set", "cost=gradient", "--set", f"k={K}",
                 "--out", os.path.join(OUT_ROOT, dist or "", "gradient-groups.safetensors"), "--plot", png,
                 *(["--plugins", runs.PLUGINS] if runs.PLUGINS else []))
        pictures.append((dist or B["title"], os.path.basename(png)))
    elapsed = time.time() - started

    details = {"datasets": ", ".join(d for d in DATASETS if d), "samples": SAMPLES, "seeds": SEEDS,
               "noise_seeds": [s for s in B["noise_seeds"] if s not in SEEDS]}
    if BENCHMARK == "fashion":
        views = [v for vs in results.values() for v in vs]
        real = [v["fd_fmnist_real"] for v in views]
        with open(os.path.join(runs.ROOT, "data", "images", "fd-fmnist", "fashion-14px", "summary.json")) as f:
            accuracy = json.load(f)["test"]["class"]["accuracy"]
        details.update(real=f"{statistics.mean(real):.3f}", accuracy=f"{accuracy:.3f}")
    metric_names = ", ".join(name for name, _ in B["metrics"])
    lines = [
        f"# Diffusion timestep clustering on {B['title']} ({today})",
        "",
        "Does training a DDPM with its timesteps clustered into k = 5 tasks, the per-cluster losses "
        "combined by a weighting (ANT: Go et al., \"Addressing Negative Transfer in Diffusion Models\", "
        f"NeurIPS 2023), beat plain uniform-t training on sample quality ({metric_names}) at equal steps?",
        "",
        "## Setup",
        "",
        *[line.format(**details) for line in B["setup"]],
        "- Clustered runs: `[train] grouping = { kind = \"interval-clustering\", cost, k = 5 }` (plugins/"
        "diffusion-clustering); UW with `train.method_lr = 0.025`, Nash-MTL with `update_weights_every = 25` "
        "(ANT's defaults), PCGrad as shipped. The gradient cost reads `taskweave affinity` (100 timesteps, "
        f"256 training samples) of the same seed's vanilla model after {BUDGETS[-1]} steps.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, two one-thread runs at a time "
        f"({runs.took(elapsed, REUSE)}).",
        "",
        f"Reproduce: `make diffusion-results DIFFUSION_BENCHMARK={BENCHMARK}` (runs `.venv/bin/python "
        f"bench/diffusion_results.py {BENCHMARK}`).",
        "",
    ]
    for dist in DATASETS:
        for metric, key in B["metrics"]:
            lines += [f"## {dist + ': ' if dist else ''}{metric} at each step budget", "",
                      "| method | " + " | ".join(f"{b} steps" for b in BUDGETS) + " |",
                      "|---|" + "---|" * len(BUDGETS)]
            for method, _, _ in METHODS:
                cells = [cell([r[key] for r in results[(dist, method, b)]]) for b in BUDGETS]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Verdict", ""]
    metric, key = B["metrics"][0]
    for dist in DATASETS:
        last = BUDGETS[-1]
        vanilla = mean_std([r[key] for r in results[(dist, METHODS[0][0], last)]])
        better = []
        for method, _, _ in METHODS[1:]:
            m, s = mean_std([r[key] for r in results[(dist, method, last)]])
            # One seed: below vanilla's mean by more than twice its seed-to-seed std.
            if (m + s < vanilla[0] - vanilla[1]) if len(SEEDS) > 1 else (m < vanilla[0] - 2 * vanilla[1]):
                better.append(method)
        apart = ("means apart by more than one std each" if len(SEEDS) > 1
                 else "one seed, below vanilla's mean by more than two of its seed-to-seed stds")
        verdict = (f"better than vanilla ({apart}): {', '.join(better)}"
                   if better else "no clustered method is better than vanilla")
        lines.append(f"- {dist or B['title']}, {last} steps, {metric}: vanilla {vanilla[0]:.4f} ± {vanilla[1]:.4f}; "
                     f"{verdict}.")
    lines += ["", f"## The gradient cost's intervals (seed {SEEDS[0]}, drawn on the linear schedule's SNR)", ""]
    for dist, png in pictures:
        lines.append(f"![{dist}]({png})")
    lines += ["", "The timestep and SNR costs' intervals for both schedules: 2026-12-03-interval-dp-*.png.", ""]
    if BENCHMARK == "fashion":
        lines += ["## Samples (seed " + str(SEEDS[0]) + ", first 64)", ""]
        for method, _, _ in METHODS:
            source = os.path.join(run_dir(None, method, BUDGETS[-1], SEEDS[0]), "samples.png")
            target = f"{today}-{topic}-{slug(method)}.png"
            shutil.copyfile(source, os.path.join(os.path.dirname(out_md), target))
            lines += [f"{method}:", "", f"![{method}]({target})", ""]
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
