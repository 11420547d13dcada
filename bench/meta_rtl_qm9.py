"""Meta-RTL on low-resource QM9 (issue: Meta-RTL).

Target `gap` with n ∈ {16, 64, 256} labelled training molecules; sources
homo, lumo, mu, alpha, r2 on the whole training split plus homo with
shuffled labels. Four ways to reach the target, each followed by the same
fine-tuning on the n (pipelines/meta-rtl-qm9-finetune.toml, best validation
step):
  target only   fine-tuning from scratch;
  joint         300 steps of plain multi-task training on all tasks first;
  reptile       300 uniform-weight Reptile meta-iterations first (meta-rtl, uniform = true);
  meta-rtl      300 Meta-RTL meta-iterations first (pipelines/meta-rtl-qm9.toml).
Two model layouts: a head per task (the pipelines' default: inner steps on a
source never touch the target's head, so the rewards measure a random head's
loss), and one head shared by every task (`model.head.shared = true`, as
Meta-RTL's own setting shares the answer-scoring layer across tasks).
run.seed 0, 1, 2; one libtorch thread per run. The n molecules (and the
subset, split and shuffled source) come from `[data] seed`: 0 for every run
seed, or, with META_RTL_DATA_SEEDS=per-seed, the run seed's own (each seed
then draws its own n molecules).
Usage: .venv/bin/python bench/meta_rtl_qm9.py [OUT.md]
Environment: META_RTL_DATA_SEEDS (`fixed`, the default, or `per-seed`).
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TASKWEAVE_BIN", os.path.join(ROOT, "target/release/taskweave"))
OUT = "runs/meta-rtl-qm9-bench"
SEEDS = [0, 1, 2]
LABELLED = [16, 64, 256]
LAYOUTS = [("a head per task", "false"), ("one shared head", "true")]
METHODS = ["target only", "joint", "reptile", "meta-rtl"]
DATA_SEEDS = os.environ.get("META_RTL_DATA_SEEDS", "fixed")
if DATA_SEEDS not in ("fixed", "per-seed"):
    sys.exit(f"META_RTL_DATA_SEEDS is `{DATA_SEEDS}`; use `fixed` or `per-seed`")


def run(pipeline, name, seed, *sets):
    args = [BIN, "-q", "run", pipeline, "--overwrite", "--set", f'run.name="{name}"',
            "--set", f"run.seed={seed}", "--set", f'run.out_dir="{OUT}"', "--set", 'run.device="cpu"',
            "--set", "run.threads=1"]
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    with open(os.path.join(ROOT, OUT, name, "summary.json")) as f:
        return json.load(f)


def measure(n, shared):
    """Test MAE per method (one per seed) and seed 0's Meta-RTL weights."""
    meta, ft = "pipelines/meta-rtl-qm9.toml", "pipelines/meta-rtl-qm9-finetune.toml"
    common = [f"data.low_resource.labelled={n}", f"model.head.shared={shared}"]
    mae = {m: [] for m in METHODS}
    weights = None
    for seed in SEEDS:
        tag = f"n{n}-{'shared' if shared == 'true' else 'own'}-s{seed}"
        data = [f"data.seed={seed if DATA_SEEDS == 'per-seed' else 0}"]
        summary = run(ft, f"none-{tag}", seed, *common, *data)
        mae["target only"].append(summary["test"]["gap"]["mae"])
        for method, name, sets in [("joint", f"joint-{tag}", ['train.strategy="standard"']),
                                   ("reptile", f"reptile-{tag}", ["train.strategy.uniform=true"]),
                                   ("meta-rtl", f"meta-{tag}", [])]:
            run(meta, name, seed, *common, *data, *sets)
            summary = run(ft, f"ft-{name}", seed, *common, *data, f'train.init="../{OUT}/{name}"')
            mae[method].append(summary["test"]["gap"]["mae"])
        if seed == 0:
            with open(os.path.join(ROOT, OUT, f"meta-{tag}", "metrics.jsonl")) as f:
                weights = [(r["step"], r["weights"]) for r in map(json.loads, f)
                           if "weights" in r and not r.get("final")]
    return mae, weights


def cell(values):
    return f"{statistics.mean(values):.5f} ± {statistics.stdev(values):.5f}"


def main():
    out_md = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "bench/results", f"{datetime.date.today()}-meta-rtl-qm9.md")
    started = time.time()
    results = {(layout, n): measure(n, shared) for layout, shared in LAYOUTS for n in LABELLED}
    minutes = (time.time() - started) / 60
    lines = [
        f"# Meta-RTL on low-resource QM9 ({datetime.date.today()})",
        "",
        f"Command: `META_RTL_DATA_SEEDS={DATA_SEEDS} .venv/bin/python bench/meta_rtl_qm9.py` "
        f"(`make meta-rtl-results` runs it with the default); {minutes:.0f} minutes on 2 cores.",
        "",
        __doc__.strip().split("\n", 1)[1].rsplit("Usage:", 1)[0].strip(),
        "",
    ]
    for layout, _ in LAYOUTS:
        lines += [f"## {layout}: test MAE of `gap` (Hartree) after fine-tuning, mean ± std over seeds", "",
                  "| start | " + " | ".join(f"n = {n}" for n in LABELLED) + " |",
                  "|---|" + "---|" * len(LABELLED)]
        for method in METHODS:
            lines.append(f"| {method} | " + " | ".join(cell(results[(layout, n)][0][method]) for n in LABELLED)
                         + " |")
        lines.append("")
    for layout, _ in LAYOUTS:
        weights = results[(layout, 64)][1]
        sources = [k for k in weights[0][1] if k != "gap"]
        lines += [f"Meta-RTL's source weights during meta-training ({layout}, n = 64, seed 0):", "",
                  "| step | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        for step, w in weights:
            lines.append(f"| {step} | " + " | ".join(f"{w[s]:.3f}" for s in sources) + " |")
        lines.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out_md}")


if __name__ == "__main__":
    main()
