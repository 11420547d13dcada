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
# Plugin crates under plugins/<name>/; their .so files are copied to plugins/.
PLUGINS := rlw sam-mtl

.PHONY: run test bench build venv clean

run: build
	$(BIN) baselines pipelines/quickstart.toml
	$(BIN) run --overwrite pipelines/quickstart.toml

test: build
	$(CARGO) test --release --workspace

bench: build
	$(CARGO) bench --bench abi_call -p taskweave-tests
	$(VENV)/bin/python bench/peer_quickstart.py

venv: $(VENV_STAMP)

# Reinstalled whenever requirements.txt changes.
$(VENV_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	ln -sfn "$$($(VENV)/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" $(VENV)/libtorch
	touch $@

build: $(VENV_STAMP)
	$(CARGO) build --release --workspace
	mkdir -p plugins
	for p in $(PLUGINS); do cp target/release/libtaskweave_$${p//-/_}.so plugins/; done

clean:
	rm -rf target runs plugins/*.so
