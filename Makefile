# The VAE notebook series. `make lab` to learn, `make test` to check everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]*_*.ipynb))
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 300
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT   ?= 8888
LAB_DIR ?= notebooks

export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONUNBUFFERED := 1

.PHONY: setup data lab lint test test-portable unit nbval run models lecture slides book bench footprint claims clean

# The pinned environment and vae_lib (editable). Re-runs when the pins change.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[all]"
	touch $@

setup: $(STAMP)

# Fashion-MNIST (vae_lib/cli/fetch_data.py): nothing if present, else Debian's package (apt, as root), else tfds.
data: setup
	$(BIN)/python -m vae_lib.cli.fetch_data

# `make lab LAB_DIR=build/slides` opens the slide copies of `make slides` (jupyterlab-rise presents them).
lab: setup data
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) --port=$(PORT) $(LAB_FLAGS)

# The whole suite: vae_lib's unit tests and strict nbval over every notebook, in order. The environment test
# checks Binder's lean environment in build/binder (binder-env) instead of building its own.
test: setup data binder-env
	VAE_BINDER_DIR=$(BINDER_DIR) $(BIN)/python -m pytest tests $(NOTEBOOKS) $(NBVAL)

# Binder's environment, built as repo2docker builds it from binder/ (tools/binder.py): a copy of the repository in
# build/binder/repo, a venv from binder/requirements.txt (rebuilt when it changes; pip's cache makes that a minute),
# binder/postBuild run in the copy, and a kernelspec for that venv.
BINDER_DIR := build/binder
.PHONY: binder-env
binder-env: setup
	$(BIN)/python tools/binder.py --dir $(BINDER_DIR) build --if-online

# Strict nbval over every notebook once more, as Binder runs them and with another machine's numerics: the kernel in
# Binder's environment, on one core, everything under a 2 GiB memory cgroup, offline, XLA compiling for an older
# instruction set and (x86_64) OpenBLAS on another core type. Prints each notebook's time and peak memory.
test-portable: setup binder-env
	$(BIN)/python tools/binder.py --dir $(BINDER_DIR) nbval --pytest-args "$(filter-out --nbval-current-env,$(NBVAL))"

# The fast part of tests/ (seconds per test): no fresh venv, no browser, no planted-bug nbval runs.
unit: setup data
	$(BIN)/python -m pytest tests -m "not slow"

# Ruff (pyproject.toml): lint rules over vae_lib, tests, benchmarks, tools and the notebooks; formatting
# of the .py files (the notebooks are laid out by hand).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

nbval: setup data
	$(BIN)/python -m pytest $(NOTEBOOKS) $(NBVAL)

# Execute every notebook headless, in place, in order: this refreshes the stored outputs.
# A second run on the same machine changes nothing (tools/run_notebook.py says how); cells
# tagged `timings` keep their stored measurements unless TIMINGS=1.
run: setup data
	$(BIN)/python tools/run_notebook.py $(if $(TIMINGS),--timings,) $(NOTEBOOKS)

# The stored models (vae_lib/store/zoo.py, files in vae_lib/store/models/): notebook 05's two VAEs (under a minute),
# notebook 06's twelve small VAEs (about 14 min on 2 cores) and one trained to convergence with early stopping, then
# scored with L_5000 on the whole test set (about an hour); notebook 06b's three recipe changes (vae_converged_cosine,
# vae_converged_gated, vae_converged_long: 30 to 50 minutes each, scoring included) and vae_converged_long_seed41 (its
# second seed). Resumes a cut-off run; NAMES="vae_z2 sweep_z2" for some only.
models: setup data
	$(BIN)/python -m vae_lib.cli.train_models $(NAMES)

# Two processes joined by jax.distributed over loopback train 20 steps together; one JSON line compares them
# with one process on one device (vae_lib/cli/launch.py; notebook 07 runs the same command).
.PHONY: distributed
distributed: setup data
	$(BIN)/python -m vae_lib.cli.launch --processes 2 --devices-per-process 2 --steps 20

# The lecture path: each notebook's cells tagged `lecture`, with their outputs, in build/lecture/; then the
# lecture-path checker (promises without their output, names bound off the path, slide text missing or too long)
# and each path's estimated length (tools/lecture_path.py says how). Fails on a finding.
lecture: setup
	$(BIN)/python tools/lecture_path.py $(NOTEBOOKS)
	$(BIN)/python tools/lecture_path.py --check $(NOTEBOOKS)

# Lecture slides: a reveal.js deck per notebook from its lecture path and its cells' slide text
# (build/slides/NN_name.slides.html), its PDF handout (NN_name.pdf, printed by headless Chromium; skipped, saying
# so, where none is installed), build/slides/index.html listing them with length and slide count, and the slide
# copy jupyterlab-rise presents. Offline: reveal.js and MathJax come from PyPI packages (tools/build_slides.py).
slides: setup
	rm -rf build/slides
	$(BIN)/python tools/build_slides.py $(NOTEBOOKS)

# The static book of the series with its stored outputs (nothing runs), a landing page for learners (book/landing.md)
# and a References page: build/book/index.html. Sphinx + myst-nb + sphinx-book-theme, all from PyPI
# (tools/build_book.py, book/conf.py).
book: setup
	rm -rf build/book build/book_src build/jupyter_execute
	$(BIN)/python tools/build_book.py $(NOTEBOOKS)

# Training throughput, as an ablation (one change per row, paired per-round ratios), on all cores and
# on one; the per-thread profile of the library's step, on all cores and on one. Each writes its
# output under benchmarks/results/, which notebook 04 reads. A run on a busy machine is refused
# (each waits up to 5 minutes for the load to settle first) and leaves the stored results as they were.
NPROC := $(shell nproc)
RESULTS := benchmarks/results
# The PyTorch reference row runs when torch is installed in the venv (pip install torch==2.13.0).
TORCH_ROW = $(shell $(BIN)/python -c "import torch" 2>/dev/null && echo --torch)

bench: setup data
	$(BIN)/python benchmarks/train_throughput.py --wait-quiet 300 $(TORCH_ROW) > $(RESULTS)/.tt_all.tmp
	taskset -c 0 $(BIN)/python benchmarks/train_throughput.py --wait-quiet 300 $(TORCH_ROW) > $(RESULTS)/.tt_1.tmp
	$(BIN)/python benchmarks/profile_step.py > $(RESULTS)/.profile_all.tmp
	taskset -c 0 $(BIN)/python benchmarks/profile_step.py > $(RESULTS)/.profile_1.tmp
	mv $(RESULTS)/.tt_all.tmp $(RESULTS)/train_throughput_$(NPROC)cores.jsonl
	mv $(RESULTS)/.tt_1.tmp $(RESULTS)/train_throughput_1core.jsonl
	mv $(RESULTS)/.profile_all.tmp $(RESULTS)/profile_step.txt
	mv $(RESULTS)/.profile_1.tmp $(RESULTS)/profile_step_1core.txt
	cat $(RESULTS)/train_throughput_$(NPROC)cores.jsonl $(RESULTS)/train_throughput_1core.jsonl \
	    $(RESULTS)/profile_step.txt $(RESULTS)/profile_step_1core.txt

footprint: setup data
	$(BIN)/python benchmarks/notebook_footprint.py

# How far each number the notebooks' text states moves across settings (see vae_lib/notebook/claims.py).
claims: setup data
	$(BIN)/python benchmarks/claim_spread.py

clean:
	rm -rf $(VENV) .pytest_cache artifacts build
