"""How busy the machine was with other people's work while a benchmark ran:
the benchmarks measure it around every round and prefer the quiet rounds."""

import json
import os
import resource
import subprocess
import time

QUIET = 0.1  # cores of foreign CPU use below which a measurement counts as quiet


def settings(rounds):
    """A peer benchmark's BENCH_ROUNDS (default `rounds`) and BENCH_THREADS
    (0: libtorch's default), the thread count applied to this process's torch
    too, so that both frameworks run on the same threads."""
    threads = int(os.environ.get("BENCH_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    return int(os.environ.get("BENCH_ROUNDS", str(rounds))), threads


def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its
    waited-for children, wall seconds)."""
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:9]]
    busy = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    return busy, own, time.perf_counter()


def foreign_load(before, after):
    """Mean CPU cores used by everything but this process tree between two snapshots."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / max(after[2] - before[2], 1e-9)


def alternate(cells, rounds):
    """Runs every cell (name -> function returning steps/s) once per round, in
    turn, and returns [(the round's largest foreign load, {cell: steps/s})]."""
    out = []
    for _ in range(rounds):
        rates, load = {}, 0.0
        for cell, run in cells.items():
            before = cpu_snapshot()
            rates[cell] = run()
            load = max(load, foreign_load(before, cpu_snapshot()))
        out.append((load, rates))
    return out


def report(title, cells, rounds, reference="taskweave"):
    """Prints the median steps/s per cell over the quiet rounds (all rounds,
    flagged, when none was quiet), its range, and `reference`'s ratio to it.
    Returns the medians."""
    import statistics

    used = [r for r in rounds if r[0] < QUIET] or rounds
    med = {c: statistics.median(r[1][c] for r in used) for c in cells}
    lo = {c: min(r[1][c] for r in used) for c in cells}
    hi = {c: max(r[1][c] for r in used) for c in cells}
    print(f"{title}; median of {len(used)} of {len(rounds)} rounds of alternating runs")
    print(f"{'':30}{'steps/s':>10}{'range':>16}{reference + ' / this':>18}")
    for cell in cells:
        ratio = med[reference] / med[cell]
        print(f"{cell:30}{med[cell]:>10.0f}{f'{lo[cell]:.0f}-{hi[cell]:.0f}':>16}{ratio:>17.2f}x")
    print("rounds (other processes' CPU use in cores: steps/s per cell in the order above):")
    for load, rates in rounds:
        flag = "" if load < QUIET else "   (noisy)"
        print(f"  {load:.2f}: " + ", ".join(f"{rates[c]:.0f}" for c in cells) + flag)
    if used[0][0] >= QUIET:
        print(f"NO QUIET ROUND (other processes above {QUIET} cores in every round): the medians are noisy")
    return med


def taskweave_steps_per_second(pipeline, name, steps, threads=0, device="cpu", sets=()):
    """Trains `pipeline` (relative to the repository) for `steps` steps on
    `device` with evaluation and checkpoints only at the end, and `sets`
    (more `--set key=value`), and returns the training speed the run
    reports (summary.json's steps_per_second). The binary and plugins are
    runs.BIN and runs.PLUGINS."""
    from runs import BIN, PLUGINS, ROOT

    cmd = [
        BIN, "-q", "run", "--overwrite", os.path.join(ROOT, pipeline),
        "--set", f"run.name={name}", "--set", f"run.device={device}", "--set", "run.out_dir=runs/bench",
        "--set", f"train.steps={steps}", "--set", f"eval.every={steps}",
        "--set", f"train.checkpoint_every={steps}",
    ]
    if threads:
        cmd += ["--set", f"run.threads={threads}"]
    for kv in sets:
        cmd += ["--set", kv]
    if PLUGINS:
        cmd += ["--set", f'plugins.dirs=["{PLUGINS}"]']
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, "runs/bench", name, "summary.json")) as f:
        return json.load(f)["steps_per_second"]


def pytorch_steps_per_second(model, inputs, rows, batch, steps, fused, compiled, device="cpu"):
    """Trains `model` (whose forward takes a batch of each tensor of
    `inputs` and returns per-task losses) on `device` with Adam 1e-3 on
    batches of `batch` of the first `rows` rows, a fresh permutation every
    epoch, reading the losses back and checking them every step as taskweave
    does, and returns steps/s over `steps` steps (compilation, when
    `compiled`, outside the timed loop; on CUDA the clock stops after the
    device finished)."""
    import torch

    model = model.to(device)
    inputs = [t.to(device) for t in inputs]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    losses_of = torch.compile(model) if compiled else model
    per_epoch = rows // batch

    def step(s, perm):
        idx = perm[(s % per_epoch) * batch:(s % per_epoch + 1) * batch]
        losses = losses_of(*(t[idx] for t in inputs))
        if not all(v == v and abs(v) != float("inf") for v in losses.detach().tolist()):
            raise RuntimeError("non-finite loss")
        opt.zero_grad()
        losses.sum().backward()
        opt.step()

    perm = torch.randperm(rows, device=device)
    if compiled:
        for s in range(20):
            step(s, perm)
    start = time.perf_counter()
    for s in range(steps):
        if s % per_epoch == 0:
            perm = torch.randperm(rows, device=device)
        step(s, perm)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)
