"""What the result scripts of bench/ share: running the `taskweave` CLI on a
pipeline (`baselines`, `run`, `flatness`), reading a run's summary, and mean ±
std over seeds.

Every run uses one libtorch thread on the CPU, so that a script can run two at
a time on a two-core machine. TASKWEAVE_BIN and TASKWEAVE_PLUGINS point at a
copy of the binary and plugins, so that rebuilding the workspace during a long
run replaces neither.
"""

import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TASKWEAVE_BIN", os.path.join(ROOT, "target/release/taskweave"))
PLUGINS = os.environ.get("TASKWEAVE_PLUGINS")


def cli(*args):
    """Runs `taskweave -q ARGS` from the repository root; its stdout."""
    return subprocess.run([BIN, "-q", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def common(seed, out_dir, plugin_dir=None):
    """The `--set`s every run of a result script shares."""
    args = ["--set", f"run.seed={seed}", "--set", f"run.out_dir={out_dir}", "--set", "run.threads=1",
            "--set", "run.device=cpu"]
    plugins = PLUGINS or plugin_dir
    return args + (["--set", f'plugins.dirs=["{plugins}"]'] if plugins else [])


def baselines(pipeline, seed, out_dir, sets=()):
    """`taskweave baselines`: one single-task model per task, for Δm."""
    args = ["baselines", pipeline, *common(seed, out_dir)]
    for s in sets:
        args += ["--set", s]
    cli(*args)


def train(pipeline, name, sets, seed, out_dir, plugin_dir=None, reuse=False):
    """`taskweave run` as run `name` with `sets`; (summary, seconds). With
    `reuse`, a run that already has a summary is read instead (0 seconds)."""
    summary = os.path.join(out_dir, name, "summary.json")
    start = time.time()
    if not (reuse and os.path.exists(summary)):
        args = ["run", pipeline, "--overwrite", *common(seed, out_dir, plugin_dir), "--set", f"run.name={name}"]
        for s in sets:
            args += ["--set", s]
        cli(*args)
    with open(summary) as f:
        return json.load(f), time.time() - start


def flatness(run_dir, radius, samples, plugin_dir=None, reuse=False, split="train"):
    """`taskweave flatness --json` at the run's selected checkpoint: per-task
    losses on `split` (`base`), their values under random perturbations of the
    shared parameters of relative norm `radius` (`perturbed`), and the mean
    increase (`mean_increase`). The answer is kept in the run directory; with
    `reuse` a kept one is read (kept answers name the split, and the
    checkpoint: `sel`)."""
    kept = os.path.join(run_dir, f"flatness-{split}-sel-r{radius}-n{samples}.json")
    if reuse and os.path.exists(kept):
        with open(kept) as f:
            return json.load(f)
    plugins = PLUGINS or plugin_dir
    out = cli("flatness", run_dir, "--radius", str(radius), "--samples", str(samples), "--split", split,
              "--json", *(["--plugins", plugins] if plugins else []))
    with open(kept, "w") as f:
        f.write(out)
    return json.loads(out)


def write_report(out_md, lines):
    """Writes the markdown `lines` to `out_md` (creating its folder) and prints them."""
    os.makedirs(os.path.dirname(out_md), exist_ok=True)
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out_md}")


def took(seconds, reuse=False):
    """How long a result script took, for its report: with `reuse`, the
    training happened in an earlier invocation and is not timed here."""
    if reuse:
        return "the tables rewritten from finished runs with `--reuse`; training time in the first invocation's log"
    return f"{seconds / 60:.0f} minutes here"


def slug(label):
    """A run directory name for a table row's label: lower case, every
    character but letters and digits as `-`, none at the ends."""
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def mean_std(values):
    """(mean, sample std); the std of one value is 0."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
