# synthmed: every command a newcomer needs. `make demo` and `make test` set everything up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes (pytest-xdist): CI has 2 cores. `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

# Telemetry off for every tool we call.
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONUNBUFFERED := 1
# DVC stages call `kedro`: use the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup demo studies metrics-all plots test test-fast lint check-lock dvc-deps verify add-raw train sample bench-gpu push pull viz viz-build mlflow-ui status clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "synthmed needs Python 3.11 or newer; found " + sys.version.split()[0] + ". Run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	@touch $@

setup: $(STAMP) ## create .venv and install the pinned dependencies

demo: setup ## build the sample data, run every pipeline through DVC, push to the default remote
	@start=$$(date +%s); \
	dvc repro; \
	$(BIN)/synthmed push; \
	echo; echo "== dvc status (clean means every output matches dvc.lock) =="; \
	dvc status; \
	echo; echo "== headline (synthmed headline; the same numbers: dvc metrics show) =="; \
	$(BIN)/synthmed headline; \
	echo; echo "demo finished in $$(( $$(date +%s) - start )) s"; \
	echo "  report:      data/08_reporting/report.html (every metric with its N, floor and figures)"; \
	echo "  comparison:  data/08_reporting/family_comparison.csv   every metric: make metrics-all"; \
	echo "  plots:       make plots  ->  dvc_plots/index.html (opens offline)"; \
	echo "  released:    data/09_release/dataset (card: the gate and the evaluation headline), data/09_release/models"; \
	echo "  outputs:     data/ (de-identified: data/03_primary, model input: data/05_model_input,"; \
	echo "               previews and metrics: data/08_reporting)"; \
	echo "  DVC remote:  $$(dvc remote list | head -n 1)"; \
	echo "  MLflow UI:   make mlflow-ui  ->  http://127.0.0.1:5000 (it prints the link to the runs)"; \
	echo "  kedro-viz:   make viz        ->  http://127.0.0.1:4141"

studies: setup ## the four 2D studies one after another (after make demo; about 7 min on 2 cores with AMX bf16, about 20 in fp32), then their tables on one page
	@for study in class_multiplication lesion_patches inpainting mask_to_image; do \
		echo "== kedro run --pipelines study_$$study"; \
		$(BIN)/kedro run --pipelines study_$$study || exit 1; \
	done
	$(BIN)/synthmed studies
	@echo "  the four tables beside the published figures: data/08_reporting/studies/index.html"

metrics-all: setup ## every evaluation number (about 600; `dvc metrics show` prints the headline and the stages' summaries)
	$(BIN)/dvc metrics show data/08_reporting/metrics.json

plots: setup ## dvc plots show with Vega inlined: dvc_plots/index.html opens without a network
	$(BIN)/synthmed plots

test: setup lint ## lint, import contracts, then the test suite (CPU, tiny configurations)
	$(PYTEST)

lint: setup ## ruff (lint + import order) and the import-layer contracts (docs/architecture.md)
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/lint-imports

check-lock: setup ## fail if dvc.lock does not match the code and parameters (regenerate: make demo)
	$(BIN)/python -m pytest -q tests/test_dvc_lock.py

dvc-deps: setup ## rewrite the src/ deps of dvc.yaml from the pipelines' imports
	$(BIN)/python tools/dvc_deps.py --write

test-fast: setup ## the unit tests only (skips the end-to-end DVC round trip and slow tests)
	$(PYTEST) -m "not slow"

verify: setup ## check every store under data/ against its recorded sha256 and size
	$(BIN)/synthmed verify

add-raw: setup ## track your raw folder with DVC, never pushed: make add-raw DIR=data/01_raw/my_study
	@test -n "$(DIR)" || { echo "usage: make add-raw DIR=data/01_raw/<your folder>"; exit 2; }
	$(BIN)/synthmed add-raw "$(DIR)"

train: setup ## the training pipeline through Kedro on N processes (torchrun): make train PROCESSES=2 [ARGS="--namespaces ddpm"]
	$(BIN)/synthmed train --processes $(or $(PROCESSES),1) $(ARGS)

sample: setup ## sampling (and PIPELINES=sampling,rebalancing) on N processes, work split, one process's outputs: make sample PROCESSES=2
	$(BIN)/synthmed launch --processes $(or $(PROCESSES),1) --pipelines $(or $(PIPELINES),sampling) $(ARGS)

bench-gpu: setup ## on a CUDA machine: gpu-profile DDPM training/sampling at 128 px, images/s, MFU, plain-loop ratio, peak memory, sampling throughput -> benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_generators.py --profile gpu --families ddpm --mfu --append-results benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_generators.py --profile gpu --sampling-throughput --sampling-batches 64,256,auto --append-results benchmarks/RESULTS.md

push: setup ## dvc push, refused if any raw or identifiable output would reach the remote
	$(BIN)/synthmed push

pull: setup ## dvc pull of the shareable outputs (what push sends; raw data never leaves its machine)
	$(BIN)/synthmed pull

viz: setup ## open kedro-viz on http://127.0.0.1:4141
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

viz-build: setup ## write kedro-viz as a static site to ./build (offline)
	$(BIN)/kedro viz build

mlflow-ui: setup ## open the MLflow UI on http://127.0.0.1:5000 (prints the link to synthmed's runs)
	@$(BIN)/synthmed mlflow-url
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

status: setup ## what DVC thinks is out of date
	$(BIN)/dvc status

clean: ## remove the virtual environment (data and DVC cache stay)
	rm -rf $(VENV)
