#!/usr/bin/env bash
# GPU check: runs on a CUDA machine from prebuilt binaries only (no cargo).
#
#   make gpu-bundle                       # here: builds dist/gpu/
#   dist/gpu/gpu-check.sh [OUT_DIR]       # there: needs python3 with torch 2.11 (cu13)
#
# 1. what taskweave sees (gpu-info), 2. every kernel against its CPU/tch
# reference on fresh random inputs (outputs poisoned with NaN first; fp32 rel.
# error <= 1e-5, bf16 <= 1e-2), 3. the quickstart and SAM-MTL pipelines on
# cuda:0, 4. the kernel benchmark (bandwidth vs 4.3 TB/s, speed-up over the
# eager libtorch composite). Writes OUT_DIR/gpu-check.json plus logs and
# prints a table. Exit status 0 only if every step passed.
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
step() {  # step NAME LOG COMMAND...: runs COMMAND, logs to OUT/LOG, records pass/fail
    local name=$1 log=$2; shift 2
    echo "== $name"
    if "$@" > "$out/$log" 2>&1; then result[$name]=pass; else result[$name]=fail; fi
    tail -n 25 "$out/$log"
}

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
step pipeline-quickstart pipeline-quickstart.log "$bin/taskweave" run "$here/pipelines/quickstart.toml" \
    --overwrite --set run.device=cuda:0 --set run.out_dir="$out/runs" --set run.gpu_memory_fraction=0.9
step memory-stats memory-stats.log "$py" -c 'import json, sys; m = json.load(open(sys.argv[1]))["memory"]; print(m); sys.exit(0 if m else 1)' \
    "$out/runs/quickstart/summary.json"
# The SAM-MTL run also sets allocator options through c10 (run.cuda_allocator).
step pipeline-sam-mtl pipeline-sam-mtl.log "$bin/taskweave" run "$here/pipelines/sam-mtl.toml" \
    --overwrite --set run.device=cuda:0 --set run.out_dir="$out/runs" \
    --set 'run.cuda_allocator="expandable_segments:True"'
step kernel-bench kernel-bench.txt "$bin/kernel-bench" --json "$out/kernel-bench.json"

status=0
{
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)\","
    for k in gpu-info kernel-tests weightings-cuda pipeline-quickstart memory-stats pipeline-sam-mtl kernel-bench; do
        echo "  \"$k\": \"${result[$k]}\","
        [ "${result[$k]}" = pass ] || status=1
    done
    for p in quickstart sam-mtl; do
        s="$out/runs/$p/summary.json"
        if [ -f "$s" ]; then echo "  \"$p-summary\": $(cat "$s"),"; fi
    done
    echo "  \"kernel_bench_json\": \"kernel-bench.json\""
    echo "}"
} > "$out/gpu-check.json"

echo
printf '%-22s %s\n' check result
for k in gpu-info kernel-tests weightings-cuda pipeline-quickstart memory-stats pipeline-sam-mtl kernel-bench; do
    printf '%-22s %s\n' "$k" "${result[$k]}"
done
echo "results: $out/gpu-check.json"
exit $status
