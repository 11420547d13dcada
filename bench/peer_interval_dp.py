"""make bench: diffusion-clustering's interval DP (T = 1000, k = 5) against a
Python port of the reference script (gohyojun15/ANT_diffusion,
interval_clustering.py) on the same inputs.

The port keeps the reference's algorithm and its quirks (centre
round((l + r + 1) / 2), candidates of total exactly 0 dropped, split points
used as starts, last bound 1000) with Python lists in place of numpy arrays
(this .venv has no numpy; a slice sum over a list costs about what numpy's
per-call overhead does at these lengths). It runs once per cost: it takes
tens of seconds. taskweave's times come from `cargo bench --bench
interval_dp` (median of 31 runs, the cost matrix built from the signal
included).

Usage: .venv/bin/python bench/peer_interval_dp.py
"""

import json
import math
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, K = 1000, 5


def linear_snr():
    alpha_bar, out = 1.0, []
    for t in range(T):
        alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * t / (T - 1))
        out.append(alpha_bar / (1.0 - alpha_bar))
    return out


def tas():
    return [[math.exp(-abs(a - b) / 100.0) for b in range(T)] for a in range(T)]


def reference_dp(n, k, interval_loss):
    """The reference's D / S recursion and back-tracking, as the script has them."""
    inf = float("inf")
    d = [[0.0] * k for _ in range(n)]
    s = [[0] * k for _ in range(n)]
    for j in range(k):
        for i in reversed(range(n)):
            if j == 0:
                d[i][j] = interval_loss(0, i)
            elif i >= j:
                items = [0.0] * i
                for split in range(j, i):
                    items[split] = d[split][j - 1] + interval_loss(split + 1, i)
                items = [inf if v == 0 else v for v in items]
                best = min(items)
                d[i][j], s[i][j] = best, items.index(best)
    bounds, b = [], 0
    for j in reversed(range(k)):
        b = s[-1][k - 1] if j == k - 1 else s[int(b)][j]
        bounds.append(b)
    bounds.reverse()
    return [(bounds[i], bounds[i + 1] - 1 if i + 1 < k else 1000) for i in range(k)]


def snr_clusters(snr):
    def loss(left, right):
        if left == right:
            return 0
        centre = snr[round((left + right + 1) / 2)]
        return sum(abs(v - centre) for v in snr[left:right + 1])
    return reference_dp(len(snr), K, loss)


def tas_clusters(matrix):
    def loss(left, right):
        if left == right:
            return -1.0
        return -sum(matrix[int((left + right + 1) / 2)][left:right + 1])
    return reference_dp(len(matrix), K, loss)


def main():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "interval_dp", "-p", "taskweave-diffusion-clustering"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    ours = {r["cost"]: r for r in map(json.loads, filter(None, out.splitlines()))}
    snr = linear_snr()
    cases = [
        ("snr", lambda: snr_clusters(snr)),
        ("log-snr", lambda: snr_clusters([math.log(v) for v in snr])),
        ("gradient", lambda: tas_clusters(tas())),
    ]
    print(f"interval DP, T = {T}, k = {K} (linear schedule SNR; TAS = exp(-|a - b| / 100))")
    print(f"{'cost':<10} {'taskweave ms':>13} {'reference port s':>17} {'speed-up':>10}  intervals (taskweave | port)")
    for name, port in cases:
        start = time.perf_counter()
        clusters = port()
        seconds = time.perf_counter() - start
        ms = ours[name]["median_ms"]
        print(f"{name:<10} {ms:>13.2f} {seconds:>17.1f} {seconds * 1e3 / ms:>9.0f}x  "
              f"{ours[name]['intervals']} | {clusters}")
    print(f"{'timestep':<10} {ours['timestep']['median_ms']:>13.2f} {'(not in the script)':>17}")


if __name__ == "__main__":
    main()
