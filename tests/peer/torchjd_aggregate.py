"""The TorchJD side of tests/peer.rs (cross-checks of the gradient weightings).

Usage: .venv/bin/python tests/peer/torchjd_aggregate.py DIR

DIR holds `cases.safetensors` (one f32 matrix `[T, P]` per case) and
`pairs.json` ({"pairs": a list of {"label", "torchjd", "cases", "calls"}: a
TorchJD aggregator as a Python expression, which may use T, the number of
rows, the cases to run it on, and how many calls on the same matrix to make
with one aggregator before recording the last result (stateful ones); "f64": the "label/case" keys TorchJD gets in
float64, where its float32 solves lose their precision). Writes `torchjd.safetensors` with one
f32 vector per "label/case": TorchJD 0.18.0's aggregation of that matrix,
one fresh aggregator per case.
"""

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
from importlib.metadata import version  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torchjd.aggregation import (  # noqa: E402,F401
    CAGrad, ConFIG, DualProj, FairGrad, GradDrop, GradVac, IMTLG, Krum, MGDA, NashMTL,
    PCGrad, TrimmedMean, UPGrad, AlignedMTL, ExcessMTL, PCD, Constant,
    CRMOGMWeighting, MoDoWeighting, SDMGradWeighting, UPGradWeighting,
)


class Gramian:
    """A TorchJD weighting that takes a Gramian (or, for MoDo and SDMGrad,
    a matrix used as one), applied as an aggregator: weights(J Jᵀ) @ J."""

    def __init__(self, weighting):
        self.weighting = weighting

    def __call__(self, matrix):
        return self.weighting(matrix @ matrix.T) @ matrix

assert version("torchjd") == "0.18.0", version("torchjd")
directory = sys.argv[1]
cases = load_file(os.path.join(directory, "cases.safetensors"))
with open(os.path.join(directory, "pairs.json")) as f:
    listing = json.load(f)
torch.manual_seed(0)
out = {}
for pair in listing["pairs"]:
    for case in pair["cases"]:
        key = f"{pair['label']}/{case}"
        matrix = cases[case].double() if key in listing["f64"] else cases[case]
        aggregator = eval(pair["torchjd"], globals(), {"T": matrix.shape[0]})
        for _ in range(pair["calls"]):
            result = aggregator(matrix)
        out[key] = result.detach().float().contiguous()
save_file(out, os.path.join(directory, "torchjd.safetensors"))
