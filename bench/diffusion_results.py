"""`make diffusion-results`: does clustering the timesteps into tasks and
weighting them (ANT, Go et al. 2023) beat plain uniform-t DDPM training on
2-D data? The protocol of the diffusion clustering issue, 2-D part:

1. per distribution and seed, the vanilla denoiser (uniform t, one task) and
   the clustered ones (k = 5 intervals by timestep, SNR or gradient cost;
   UW with its own learning rate 0.025, PCGrad, or Nash-MTL re-solved every
   25 steps, ANT's defaults), each trained for every step budget;
2. the gradient cost reads task affinity scores (`taskweave affinity`, 100
   timesteps) of the seed's vanilla model at the largest budget;
3. sample quality of each run (`taskweave sample`, 2,000 ancestral samples)
   against the 2,000 test points: sliced Wasserstein-2 and MMD²;
4. the intervals the gradient cost chose, drawn on the SNR curve.

Timestep intervals are uniform intervals: the timestep cost's optimum for
k dividing T is the k equal-width intervals.

Every number comes from the `taskweave` CLI; two one-thread runs at a time.
Usage:
    .venv/bin/python bench/diffusion_results.py [--reuse] [--quick] [OUT.md]
`--reuse` reads finished runs and samples instead of redoing them; `--quick`
is a smoke test (tiny budgets, one seed, one distribution).
"""

import concurrent.futures as futures
import datetime
import json
import os
import platform
import sys
import time

import runs
from runs import mean_std

PIPELINE = "pipelines/diffusion-2d.toml"
OUT_ROOT = os.path.join(runs.ROOT, "runs", "diffusion-2d")
QUICK = "--quick" in sys.argv
REUSE = "--reuse" in sys.argv
SEEDS = [0] if QUICK else [0, 1, 2]
BUDGETS = [200, 400] if QUICK else [1000, 2000, 4000]
DISTRIBUTIONS = ["eight-gaussians"] if QUICK else ["eight-gaussians", "checkerboard"]
SAMPLES = 2000
K = 5
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
    return os.path.join(OUT_ROOT, dist, f"{slug(method)}-{steps}-s{seed}")


def train(dist, method, cost, sets, steps, seed, tas=None):
    """Trains one run (unless reused) and samples from it; (SW2, MMD²)."""
    directory = run_dir(dist, method, steps, seed)
    name = os.path.basename(directory)
    sets = [f'data.distribution="{dist}"', f"train.steps={steps}", f"eval.every={max(steps // 4, 1)}", *sets]
    if cost:
        sets.append(f'train.grouping={{kind="interval-clustering", cost="{cost}", k={K}}}')
    if tas:
        sets.append(f'diffusion.signals="{tas}"')
    runs.train(PIPELINE, name, sets, seed, os.path.dirname(directory), reuse=REUSE)
    kept = os.path.join(directory, "sample.json")
    if not (REUSE and os.path.exists(kept)):
        out = runs.cli("sample", directory, "--n", str(SAMPLES), "--seed", str(seed), "--json",
                       "--out", os.path.join(directory, "samples.safetensors"),
                       *(["--plugins", runs.PLUGINS] if runs.PLUGINS else []))
        with open(kept, "w") as f:
            f.write(out)
    with open(kept) as f:
        view = json.load(f)
    return view["sliced_wasserstein"], view["mmd2"]


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
    return f"{m:.4f} ± {s:.4f}"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    today = datetime.date.today().isoformat()
    out_md = args[0] if args else os.path.join(runs.ROOT, "bench", "results", f"{today}-diffusion-2d.md")
    started = time.time()
    results = {}  # (dist, method, steps) -> [(sw, mmd) per seed]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        # Vanilla first: the gradient cost needs its models.
        jobs = {}
        for dist in DISTRIBUTIONS:
            for seed in SEEDS:
                for steps in BUDGETS:
                    jobs[pool.submit(train, dist, METHODS[0][0], None, [], steps, seed)] = (dist, METHODS[0][0], steps)
        for job, key in jobs.items():
            results.setdefault(key, []).append(job.result())
        tas = {(d, s): affinity(d, s) for d in DISTRIBUTIONS for s in SEEDS}
        jobs = {}
        for dist in DISTRIBUTIONS:
            for seed in SEEDS:
                for method, cost, sets in METHODS[1:]:
                    for steps in BUDGETS:
                        signals = tas[(dist, seed)] if cost == "gradient" else None
                        job = pool.submit(train, dist, method, cost, sets, steps, seed, signals)
                        jobs[job] = (dist, method, steps)
        for job, key in jobs.items():
            results.setdefault(key, []).append(job.result())
    # The gradient cost's intervals of seed 0 on each distribution, on the SNR curve.
    pictures = []
    for dist in DISTRIBUTIONS:
        png = os.path.join(os.path.dirname(out_md), f"{today}-diffusion-2d-{dist}-gradient-intervals.png")
        runs.cli("call", "grouping", "interval-clustering", "--tasks", "1000", "--schedule", "linear",
                 "--signals", tas[(dist, 0)], "--set", "cost=gradient", "--set", f"k={K}",
                 "--out", os.path.join(OUT_ROOT, dist, "gradient-groups.safetensors"), "--plot", png,
                 *(["--plugins", runs.PLUGINS] if runs.PLUGINS else []))
        pictures.append((dist, os.path.basename(png)))
    elapsed = time.time() - started

    lines = [
        f"# Diffusion timestep clustering on 2-D data ({today})",
        "",
        "Does training a DDPM with its timesteps clustered into k = 5 tasks, the per-cluster losses "
        "combined by a weighting (ANT: Go et al., \"Addressing Negative Transfer in Diffusion Models\", "
        "NeurIPS 2023), beat plain uniform-t training on sample quality at equal steps?",
        "",
        "## Setup",
        "",
        f"- Data: `toy-2d` ({', '.join(DISTRIBUTIONS)}), 20,000 training points; quality against the "
        f"2,000 test points (fresh draws of the same generator).",
        "- Model (pipelines/diffusion-2d.toml): DDPM ε-prediction, T = 1000, linear schedule; MLP 34-128-128-128 "
        "(relu) over x_t and 32 sinusoidal timestep features, one shared output head 128-2; Adam 1e-3, constant, "
        "batch 250 (50 per cluster), evaluation every quarter run.",
        "- Clustered runs: `[train] grouping = { kind = \"interval-clustering\", cost, k = 5 }` (plugins/"
        "diffusion-clustering); UW with `train.method_lr = 0.025`, Nash-MTL with `update_weights_every = 25` "
        "(ANT's defaults), PCGrad as shipped. The gradient cost reads `taskweave affinity` (100 timesteps, "
        f"256 training points) of the same seed's vanilla model after {BUDGETS[-1]} steps.",
        f"- Sampling: `taskweave sample` ancestral (1000 steps), {SAMPLES} samples, sampler seed = run seed; "
        "the parameters of the best validation loss (`eval.select = best-val`).",
        "- Metrics: sliced Wasserstein-2 over 128 random directions (lower is better) and unbiased MMD² with a "
        "sum of Gaussian kernels of bandwidths 0.05–2 (lower is better); mean ± sample std over seeds "
        f"{SEEDS}.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, two one-thread runs at a time "
        f"({runs.took(elapsed, REUSE)}).",
        "",
        f"Reproduce: `make diffusion-results` (runs `.venv/bin/python bench/diffusion_results.py`).",
        "",
    ]
    for dist in DISTRIBUTIONS:
        for metric, index in [("sliced Wasserstein-2", 0), ("MMD²", 1)]:
            lines += [f"## {dist}: {metric} at each step budget", "",
                      "| method | " + " | ".join(f"{b} steps" for b in BUDGETS) + " |",
                      "|---|" + "---|" * len(BUDGETS)]
            for method, _, _ in METHODS:
                cells = [cell([r[index] for r in results[(dist, method, b)]]) for b in BUDGETS]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Verdict", ""]
    for dist in DISTRIBUTIONS:
        last = BUDGETS[-1]
        vanilla = mean_std([r[0] for r in results[(dist, METHODS[0][0], last)]])
        better = []
        for method, _, _ in METHODS[1:]:
            m, s = mean_std([r[0] for r in results[(dist, method, last)]])
            if m + s < vanilla[0] - vanilla[1]:
                better.append(method)
        verdict = (f"clearly better than vanilla (means apart by more than one std each): {', '.join(better)}"
                   if better else "no clustered method is clearly better than vanilla")
        lines.append(f"- {dist}, {last} steps, sliced W2: vanilla {vanilla[0]:.4f} ± {vanilla[1]:.4f}; {verdict}.")
    lines += ["", "## The gradient cost's intervals (seed 0, drawn on the linear schedule's SNR)", ""]
    for dist, png in pictures:
        lines.append(f"![{dist}]({png})")
    lines += ["", "The timestep and SNR costs' intervals for both schedules: 2026-12-03-interval-dp-*.png.", ""]
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
