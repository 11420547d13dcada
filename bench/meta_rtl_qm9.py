"""Meta-RTL on low-resource QM9 (issue: Meta-RTL), first measurement.

Target `gap` with 64 labelled training molecules; sources homo, lumo, mu,
alpha, r2 on the whole training split plus homo with shuffled labels. Three
ways to reach the target, each followed by the same fine-tuning on the 64
(pipelines/meta-rtl-qm9-finetune.toml, best validation step):
  target only   fine-tuning from scratch;
  joint         300 steps of plain multi-task training on all tasks first;
  reptile       300 uniform-weight Reptile meta-iterations first (meta-rtl, uniform = true);
  meta-rtl      300 Meta-RTL meta-iterations first (pipelines/meta-rtl-qm9.toml).
run.seed 0, 1, 2 (the 64 molecules are the same: data seed 0).
Usage: .venv/bin/python bench/meta_rtl_qm9.py [OUT.md]
"""

import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TASKWEAVE_BIN", os.path.join(ROOT, "target/release/taskweave"))
OUT = "runs/meta-rtl-qm9-bench"
SEEDS = [0, 1, 2]


def run(pipeline, name, seed, *sets):
    args = [BIN, "-q", "run", pipeline, "--overwrite", "--set", f'run.name="{name}"',
            "--set", f"run.seed={seed}", "--set", f'run.out_dir="{OUT}"', "--set", 'run.device="cpu"']
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    with open(os.path.join(ROOT, OUT, name, "summary.json")) as f:
        return json.load(f)


def main():
    out_md = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "bench/results", f"{datetime.date.today()}-meta-rtl-qm9.md")
    meta, ft = "pipelines/meta-rtl-qm9.toml", "pipelines/meta-rtl-qm9-finetune.toml"
    mae = {"target only": [], "joint": [], "reptile": [], "meta-rtl": []}
    weights = None
    for seed in SEEDS:
        mae["target only"].append(run(ft, f"none-s{seed}", seed)["test"]["gap"]["mae"])
        run(meta, f"joint-s{seed}", seed, 'train.strategy="standard"')
        mae["joint"].append(run(ft, f"ft-joint-s{seed}", seed,
                                f'train.init="../{OUT}/joint-s{seed}"')["test"]["gap"]["mae"])
        run(meta, f"reptile-s{seed}", seed, "train.strategy.uniform=true")
        mae["reptile"].append(run(ft, f"ft-reptile-s{seed}", seed,
                                  f'train.init="../{OUT}/reptile-s{seed}"')["test"]["gap"]["mae"])
        run(meta, f"meta-s{seed}", seed)
        mae["meta-rtl"].append(run(ft, f"ft-meta-s{seed}", seed,
                                   f'train.init="../{OUT}/meta-s{seed}"')["test"]["gap"]["mae"])
        if seed == 0:
            with open(os.path.join(ROOT, OUT, "meta-s0", "metrics.jsonl")) as f:
                weights = [(r["step"], r["weights"]) for r in map(json.loads, f)
                           if "weights" in r and not r.get("final")]
    lines = [
        f"# Meta-RTL on low-resource QM9: a first measurement ({datetime.date.today()})",
        "",
        "Command: `make qm9 build && .venv/bin/python bench/meta_rtl_qm9.py` (about a minute on 2 cores).",
        "",
        __doc__.strip().split("\n", 1)[1].rsplit("Usage:", 1)[0].strip(),
        "",
        "Test MAE of `gap` (Hartree) after fine-tuning, per seed and mean ± std:",
        "",
        "| start | seeds 0, 1, 2 | mean ± std |",
        "|---|---|---|",
    ]
    for name, values in mae.items():
        lines.append(f"| {name} | {', '.join(f'{v:.5f}' for v in values)} | "
                     f"{statistics.mean(values):.5f} ± {statistics.stdev(values):.5f} |")
    sources = [k for k in weights[0][1] if k != "gap"]
    lines += ["", "Meta-RTL's source weights during meta-training (seed 0):", "",
              "| step | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for step, w in weights:
        lines.append(f"| {step} | " + " | ".join(f"{w[s]:.3f}" for s in sources) + " |")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out_md}")


if __name__ == "__main__":
    main()
