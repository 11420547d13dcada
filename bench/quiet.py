"""How busy the machine was with other people's work while a benchmark ran:
the benchmarks measure it around every round and prefer the quiet rounds."""

import os
import resource
import time

QUIET = 0.1  # cores of foreign CPU use below which a measurement counts as quiet


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
