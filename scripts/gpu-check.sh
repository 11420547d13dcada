#!/usr/bin/env bash
# GPU check: runs on a CUDA machine from prebuilt binaries only (no cargo).
#
#   make gpu-bundle                       # here: builds dist/gpu/
#   dist/gpu/gpu-check.sh [OUT_DIR]       # there: needs python3 with torch 2.11 (cu13)
#
# 1. what taskweave sees (gpu-info) and the versions (device, driver, CUDA,
# torch), 2. every kernel against its CPU/tch reference on fresh random inputs
# (outputs poisoned with NaN first; fp32 rel. error <= 1e-5, bf16 <= 1e-2),
# 3. the quickstart and SAM-MTL pipelines on cuda:0 (memory statistics, a
# memory cap that is honoured and named), 4. the kernel benchmark (bandwidth
# vs 4.3 TB/s, speed-up over the eager libtorch composite) and one call of
# every gradient weighting (tests/benches/weightings.rs), 5. training
# steps/s against plain PyTorch on the same GPU (bench/peer_quickstart.py,
# bench/sam_torch.py), 6. the later methods' pipelines that need no data
# files (DTRN, diffusion) on cuda:0, TaskExpert where the bundle carries
# Fashion-MNIST items (make gpu-bundle after make images), and a Meta-RTL
# meta-iteration against plain PyTorch where it carries a QM9 head (after
# make qm9). Writes
# OUT_DIR/gpu-check.json plus logs and prints a table. Exit status 0 only
# if every step passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/gpu-check-out}" && cd "${1:-$here/gpu-check-out}" && pwd)
py=${PYTHON:-python3}

# The binaries were linked against a libtorch elsewhere; use this machine's
# PyTorch install (RUNPATH yields to LD_LIBRARY_PATH).
site=$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))') || {
    echo "gpu-check: python3 with torch 2.11 is required" >&2; exit 2; }
lib="$site/torch/lib"
for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && lib="$lib:$d"; done
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

bin="$here/bin"
declare -A result
steps=()
step() {  # step NAME LOG COMMAND...: runs COMMAND, logs to OUT/LOG, records pass/fail
    local name=$1 log=$2 limit=timeout; shift 2
    echo "== $name"
    steps+=("$name")
    # Programs get at most 150 s (a hang must not eat the machine's time); the
    # functions below put that limit on the programs they run.
    declare -F "$1" >/dev/null && limit=
    if ${limit:+$limit 150} "$@" > "$out/$log" 2>&1; then result[$name]=pass; else result[$name]=fail; fi
    tail -n 25 "$out/$log"
}
# A run that must fail with exit 1 and a message holding PATTERN.
fails_naming() {  # fails_naming PATTERN COMMAND...
    local pattern=$1 said code; shift
    said=$("$@" 2>&1); code=$?
    printf '%s\nexit status %s\n' "$said" "$code"
    [ "$code" = 1 ] && grep -qF -- "$pattern" <<<"$said"
}
train() {  # train PIPELINE SETTINGS...: a run on cuda:0 under OUT/runs
    local pipeline=$1; shift
    timeout 150 "$bin/taskweave" run "$here/pipelines/$pipeline.toml" --overwrite --set run.device=cuda:0 \
        --set run.out_dir="$out/runs" --set plugins.dirs="[\"$here/plugins\"]" "$@"
}
export TASKWEAVE_BIN="$bin/taskweave" TASKWEAVE_PLUGINS="$here/plugins" BENCH_DEVICE=cuda:0 PYTHONUNBUFFERED=1

step versions versions.json "$py" -c 'import json, subprocess, torch
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
print(json.dumps({"nvidia_smi": smi, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "device": torch.cuda.get_device_name(0),
                  "sm_count": torch.cuda.get_device_properties(0).multi_processor_count}))'

step gpu-info gpu-info.json "$bin/taskweave" gpu-info --json
if ! grep -q '"libtorch_cuda_loaded": true' "$out/gpu-info.json"; then
    echo "gpu-check: taskweave sees no usable CUDA device here (see $out/gpu-info.json); run this on a CUDA machine" >&2
    exit 2
fi
# A skipped GPU test is a failure here (the tests skip on machines without one).
step kernel-tests kernel-tests.log env TASKWEAVE_REQUIRE_GPU=1 "$bin/kernel-tests" --test-threads=1
step weightings-cuda weightings-cuda.log env TASKWEAVE_REQUIRE_GPU=1 "$bin/baselines-tests" cuda_agrees_with_the_cpu
# A fresh process with a memory fraction: the allocator must be initialised
# before the fraction is set, and the summary must hold memory statistics.
step pipeline-quickstart pipeline-quickstart.log train quickstart --set run.gpu_memory_fraction=0.9
step memory-stats memory-stats.log "$py" -c 'import json, sys; m = json.load(open(sys.argv[1]))["memory"]; print(m); sys.exit(0 if m else 1)' \
    "$out/runs/quickstart/summary.json"
# A cap far below what the data needs (about 140 KB of the card): exit 1 naming the setting.
step memory-cap memory-cap.log fails_naming "run.gpu_memory_fraction = " \
    train quickstart --set run.name=capped --set run.gpu_memory_fraction=0.000001
# The SAM-MTL run also sets allocator options through c10 (run.cuda_allocator).
step pipeline-sam-mtl pipeline-sam-mtl.log train sam-mtl --set 'run.cuda_allocator="expandable_segments:True"'
step kernel-bench kernel-bench.txt "$bin/kernel-bench" --json "$out/kernel-bench.json"
# Every gradient weighting on cuda:0 (their Gramian through the kernel) beside
# cuBLAS's G Gᵀ + w G: QM9's shape, then 8 M columns. 300 ms per method.
for p in 75008 8000000; do
    step "weightings-$p" "weightings-$p.txt" env BENCH_PARAMS=$p \
        "$bin/weightings-bench" --time-only --out "$out/weightings-$p.json" --budget-ms 300
done
step peer-quickstart peer-quickstart.txt env BENCH_ROUNDS=3 "$py" "$here/bench/peer_quickstart.py" 3000
step peer-sam-mtl peer-sam-mtl.txt env BENCH_ROUNDS=3 "$py" "$here/bench/sam_torch.py" 2000 200
step pipeline-dtrn pipeline-dtrn.log train behaviours-dtrn --set train.steps=500 --set eval.every=250
step pipeline-diffusion pipeline-diffusion.log train diffusion-2d --set train.steps=1000 --set eval.every=500
# TaskExpert where the bundle carries Fashion-MNIST items: its evaluations run the gate kernel.
if [ -f "$here/pipelines/taskexpert-scenes.toml" ]; then
    step pipeline-taskexpert pipeline-taskexpert.log train taskexpert-scenes --set train.steps=300 --set eval.every=100
fi
# Meta-RTL's meta-iteration against torch.func inner loops (one source after
# another, and vmapped) on the GPU, where the bundle carries the QM9 head.
if [ -f "$here/pipelines/meta-rtl-qm9.toml" ]; then
    for f in "$here"/data/qm9/*.csv.gz; do [ -f "$f" ] && gunzip -f "$f"; done
    step peer-meta-rtl peer-meta-rtl.txt env BENCH_ROUNDS=3 "$py" "$here/bench/peer_meta_rtl.py" 100
fi

status=0
{
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)\","
    echo "  \"environment\": $(cat "$out/versions.json" 2>/dev/null || echo null),"
    for k in "${steps[@]}"; do
        echo "  \"$k\": \"${result[$k]}\","
        [ "${result[$k]}" = pass ] || status=1
    done
    for p in quickstart sam-mtl behaviours-dtrn diffusion-2d taskexpert-scenes; do
        s="$out/runs/$p/summary.json"
        if [ -f "$s" ]; then echo "  \"$p-summary\": $(cat "$s"),"; fi
    done
    echo "  \"kernel_bench_json\": \"kernel-bench.json\""
    echo "}"
} > "$out/gpu-check.json"

echo
printf '%-22s %s\n' check result
for k in "${steps[@]}"; do
    printf '%-22s %s\n' "$k" "${result[$k]}"
done
echo "results: $out/gpu-check.json"
exit $status
