"""`make lm-fusion-results`: dynamic logit fusion (Fan et al. 2024) with
byte-level models trained here on the four domains of `make corpora`
(bench/results/<date>-lm-fusion.md).

Models (pipelines/lm-bytes.toml, context 128, 1 MB of each domain, the same
held-out documents in every run): a small general model (dim 64, depth 2)
and a large one (dim 192, depth 3: about 10x the parameters), both on the
mixture of the four domains;
per domain an expert (the small model fine-tuned on that domain alone) and
the ceiling (the large model fine-tuned on it). Then `taskweave eval-lm` on
each domain's held-out documents, teacher-forced: the large model alone,
proxy tuning (alpha = 1 with the domain's expert), dynamic logit fusion with
the domain's expert (single-task) and with all four experts (multi-task), the
expert alone, and the fine-tuned large model; gap closed = (PPL_large -
PPL_fused) / (PPL_large - PPL_ft), as the paper reports it.

Steps: LM_STEPS (general models, 2000) and LM_FT_STEPS (fine-tuning, 500).
Usage:
    .venv/bin/python bench/lm_fusion_results.py [--reuse] [OUT.md]
`--reuse` keeps finished runs (a run directory with a summary) and rescoring.
"""

import concurrent.futures as futures
import datetime
import json
import os
import platform
import sys
import time

import runs

PIPELINE = os.path.join(runs.ROOT, "pipelines/lm-bytes.toml")
OUT_DIR = os.path.join(runs.ROOT, "runs", "lm-fusion")
DOMAINS = ["prose", "python", "c", "docs"]
# Sized for the issue's budget (everything in about 2 hours on 2 cores): the
# large model at dim 256, depth 6 (4.9M parameters) trains at 0.35 steps/s on
# one thread here, which alone would take 95 minutes for 2000 steps.
SIZES = {"small": (64, 2, 2), "large": (192, 3, 6)}
STEPS = int(os.environ.get("LM_STEPS", "2000"))
FT_STEPS = int(os.environ.get("LM_FT_STEPS", "500"))
# The paper's headline (Fan et al. 2024, "On Giant's Shoulders: Effortless
# Weak to Strong by Dynamic Logits Fusion"): 7B experts steering a 13B model
# close 96.4% of the gap to fine-tuning the 13B model (single-task) and 86.3%
# (multi-task).
PAPER = {"single": 96.4, "multi": 86.3}


def corpus(domain, absolute=False):
    """The glob list of a domain: relative to pipelines/ for training, absolute
    for the decoding pipelines written under runs/."""
    root = os.path.join(runs.ROOT, "data/corpora") if absolute else "../data/corpora"
    return f'["{root}/{domain}/*.txt"]'


def train(name, size, sets, reuse):
    """`taskweave lm train` of run `name` at model size `size`."""
    summary = os.path.join(OUT_DIR, name, "summary.json")
    start = time.time()
    if not (reuse and os.path.exists(summary)):
        dim, depth, heads = SIZES[size]
        args = ["lm", "train", PIPELINE, "--overwrite", "--set", f"run.name={name}", "--set",
                f"run.out_dir={OUT_DIR}", "--set", "run.threads=1", "--set", "run.device=cpu", "--set",
                f"model.backbone={{kind=\"transformer-lm\", dim={dim}, depth={depth}, heads={heads}}}"]
        for s in sets:
            args += ["--set", s]
        runs.cli(*args)
    print(f"{name}: {time.time() - start:.0f} s", flush=True)
    with open(summary) as f:
        return json.load(f)


def decode_pipeline(path, large, domains, experts_choice):
    """A decoding pipeline file over the runs: `large` as the large model, the
    small general model, every domain's expert; `domains` held out."""
    experts = ", ".join(f'{d} = {{ kind = "run", dir = "{OUT_DIR}/expert-{d}" }}' for d in DOMAINS)
    corpora = "\n".join(f"{d} = {corpus(d, absolute=True)}" for d in domains)
    # The training pipeline's [data] keys (context, split, seed, max_bytes),
    # so that every model's held-out documents are the ones scored.
    with open(PIPELINE) as f:
        data = f.read().split("[data]")[1].split("[data.corpora]")[0]
    text = f"""device = "cpu"

[plugins]
dirs = ["{runs.PLUGINS or os.path.join(runs.ROOT, 'plugins')}"]

[models]
large = {{ kind = "run", dir = "{OUT_DIR}/{large}" }}
small = {{ kind = "run", dir = "{OUT_DIR}/small" }}
experts = {{ {experts} }}

[fusion]
kind = "large"

[data]{data}
[data.corpora]
{corpora}

[eval]
experts = "{experts_choice}"
"""
    with open(path, "w") as f:
        f.write(text)


def evaluate(pipeline, fusion, plot=None):
    """`taskweave eval-lm --json` with `fusion` (and its α plot into `plot`):
    corpus -> score."""
    out = runs.cli("eval-lm", pipeline, "--json", "--set", f"fusion={fusion}",
                   *(["--plot", plot] if plot else []))
    return {s["corpus"]: s for s in json.loads(out)}


def main():
    args = sys.argv[1:]
    reuse = "--reuse" in args
    args = [a for a in args if a != "--reuse"]
    out_md = args[0] if args else os.path.join(runs.ROOT, "bench/results", f"{datetime.date.today()}-lm-fusion.md")
    if not os.path.exists(os.path.join(runs.ROOT, "data/corpora/.fetched")):
        sys.exit("the corpora are missing: run `make corpora`")
    started = time.time()
    general = [f"train.steps={STEPS}"]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda s: train(s, s, general, reuse), SIZES))

        def fine_tune(kind, size, base, domain):
            sets = [f"data.corpora={{{domain}={corpus(domain)}}}", f"train.init={OUT_DIR}/{base}",
                    f"train.steps={FT_STEPS}", "train.schedule={kind=\"cosine\"}"]
            return train(f"{kind}-{domain}", size, sets, reuse)

        jobs = [(k, s, b, d) for d in DOMAINS for k, s, b in (("expert", "small", "small"), ("ft", "large", "large"))]
        list(pool.map(lambda j: fine_tune(*j), jobs))
    trained = time.time() - started
    work = os.path.join(OUT_DIR, "pipelines")
    os.makedirs(work, exist_ok=True)
    rows = {}
    for d in DOMAINS:
        own, ft = os.path.join(work, f"{d}.toml"), os.path.join(work, f"{d}-ft.toml")
        decode_pipeline(own, "large", [d], "own")
        decode_pipeline(ft, f"ft-{d}", [d], "own")
        rows[d] = {
            "large": evaluate(own, '{kind="large"}')[d],
            "proxy": evaluate(own, '{kind="proxy"}')[d],
            "fusion": evaluate(own, '{kind="logit-fusion"}')[d],
            "expert": evaluate(own, '{kind="expert"}')[d],
            "ft": evaluate(ft, '{kind="large"}')[d],
        }
    mixed = os.path.join(work, "all.toml")
    decode_pipeline(mixed, "large", DOMAINS, "all")
    plot = out_md[:-len(".md")] + "-alpha.png"
    multi = evaluate(mixed, '{kind="logit-fusion"}', plot)
    elapsed = time.time() - started

    def gap(d, ppl):
        large, ft = rows[d]["large"]["perplexity"], rows[d]["ft"]["perplexity"]
        return 100 * (large - ppl) / (large - ft) if large != ft else float("nan")

    params = {}
    for name in ("small", "large"):
        with open(os.path.join(OUT_DIR, name, "summary.json")) as f:
            params[name] = json.load(f)["parameters"]
    lines = [
        f"# Dynamic logit fusion with byte-level models ({datetime.date.today()})",
        "",
        f"Reproduce: `make corpora lm-fusion-results` (runs `.venv/bin/python bench/lm_fusion_results.py`; "
        f"{runs.took(elapsed, reuse)}, training {trained / 60:.0f} minutes of it).",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; one "
        "libtorch thread per run, two runs at a time. One seed (0).",
        "",
        f"Models: small {params['small']:,} parameters (dim {SIZES['small'][0]}, depth {SIZES['small'][1]}), "
        f"large {params['large']:,} (dim {SIZES['large'][0]}, depth {SIZES['large'][1]}), byte-level, context 128, "
        f"1 MB of each domain (pipelines/lm-bytes.toml); general models {STEPS} steps "
        f"on the four domains, experts and fine-tuned large models {FT_STEPS} more steps on one domain.",
        "",
        "## Per domain (single-task: each domain's own expert)",
        "",
        "Perplexity per byte on the domain's held-out documents (teacher forcing), bits per byte in brackets; "
        "gap closed = (PPL_large − PPL) / (PPL_large − PPL_fine-tuned large).",
        "",
        "| domain | large | proxy tuning | dynamic fusion | expert alone | fine-tuned large | gap closed: proxy | gap closed: fusion | fusion's mean α |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DOMAINS:
        r = rows[d]
        cell = lambda k: f"{r[k]['perplexity']:.3f} ({r[k]['bits']:.3f})"  # noqa: E731
        lines.append(f"| {d} | {cell('large')} | {cell('proxy')} | {cell('fusion')} | {cell('expert')} | "
                     f"{cell('ft')} | {gap(d, r['proxy']['perplexity']):.1f}% | "
                     f"{gap(d, r['fusion']['perplexity']):.1f}% | {r['fusion']['mean_alpha']:.2f} |")
    lines += [
        "",
        "## Multi-task (all four experts available, every domain's held-out text)",
        "",
        "| domain | dynamic fusion perplexity | gap closed | steering share per expert | mean α |",
        "|---|---|---|---|---|",
    ]
    for d in DOMAINS:
        s = multi[d]
        shares = ", ".join(f"{e} {100 * v:.0f}%" for e, v in zip(s["experts"], s["expert_share"]))
        lines.append(f"| {d} | {s['perplexity']:.3f} | {gap(d, s['perplexity']):.1f}% | {shares} | "
                     f"{s['mean_alpha']:.2f} |")
    single = sum(gap(d, rows[d]["fusion"]["perplexity"]) for d in DOMAINS) / len(DOMAINS)
    several = sum(gap(d, multi[d]["perplexity"]) for d in DOMAINS) / len(DOMAINS)
    lines += [
        "",
        f"![α per byte and expert, multi-task]({os.path.basename(plot)}) "
        "(`eval-lm --plot`: per domain, the share of its held-out bytes each expert steered at each α; "
        "the rest the fusion left to the large model).",
        "",
        f"Mean gap closed: {single:.1f}% single-task, {several:.1f}% multi-task; the paper reports "
        f"{PAPER['single']}% and {PAPER['multi']}% with 7B experts steering a 13B model (Fan et al. 2024).",
    ]
    runs.write_report(out_md, lines)


if __name__ == "__main__":
    main()
