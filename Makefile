# stripes: every target sets itself up (venv + pinned installs) on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup data table1 toy bench train sweep evaluate tables plots smoke reproduce reproduce-full demo site \
        wandb-sync test test-full clean gpu-pack gpu-check

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project with pinned dependencies

data: $(STAMP) ## preprocess POP909 into cached windows (PROFILE=cpu|paper|smoke)
	$(PY) -m stripes.data.preprocess profile=$(PROFILE) $(ARGS)

table1: $(STAMP) ## Table I: mutual information between pitches and context labels
	$(PY) -m stripes.data.table1 $(ARGS)

toy: $(STAMP) ## toy study: Figs. 2-3 and the asymmetry CSV
	$(PY) -m stripes.toy $(ARGS)

bench: $(STAMP) ## attention and training benchmarks -> outputs/bench/
	$(PY) -m stripes.bench $(ARGS)

train: $(STAMP) ## one training run, e.g. make train ARGS="pe=ropepool context=bin"
	$(PY) -m stripes.train profile=$(PROFILE) $(ARGS)

sweep: $(STAMP) ## a multirun sweep, e.g. make sweep ARGS="experiment=table3 seed=0,1,2"
	$(PY) -m stripes.train -m profile=$(PROFILE) $(ARGS)

evaluate: $(STAMP) ## predict + score every trained run into outputs/results/
	$(PY) -m stripes.evaluate $(ARGS)

tables: $(STAMP) ## Tables II-III (+ F-StrIPE rows) from the results store
	$(PY) -m stripes.eval.tables $(ARGS)

plots: $(STAMP) ## Fig. 4 and per-context bar charts
	$(PY) -m stripes.eval.plots $(ARGS)

site: $(STAMP) ## the demo page outputs/site/index.html (samples with audio, tables, figures, harmonize demo)
	$(PY) -m stripes.site $(ARGS)

smoke: $(STAMP) ## the whole reproduce chain on the tiny smoke profile (minutes)
	$(PY) -m stripes.reproduce profile=smoke full=true 'table1_overrides=["profile=smoke"]' $(ARGS)

reproduce: $(STAMP) ## regenerate Tables I-III, Figs. 3-4, samples and outputs/REPORT.md
	$(PY) -m stripes.reproduce profile=$(PROFILE) $(ARGS)

reproduce-full: $(STAMP) ## make reproduce + the [F] rows (NoPE/SPE/F-StrIPE) and the unpooled F-StrIPE1 ablation
	$(PY) -m stripes.reproduce profile=$(PROFILE) full=true $(ARGS)

demo: $(STAMP) ## harmonize the shipped example melody with the reproduced checkpoint
	$(PY) -m stripes.harmonize examples/melody.mid --out outputs/demo/harmonized.mid $(ARGS)

wandb-sync: $(STAMP) ## upload offline W&B runs (needs an account and network)
	bash scripts/wandb_sync.sh

test: $(STAMP) ## fast test suite (no `slow` tests)
	WANDB_MODE=disabled $(PY) -m pytest -q $(ARGS)

test-full: $(STAMP) ## all tests, including those marked slow
	WANDB_MODE=disabled $(PY) -m pytest -q -m "" $(ARGS)

GPU_DIR ?= .gpu
GPU_PY ?= python3
gpu-pack: $(STAMP) ## wheels + data archive for an offline GPU machine -> .gpu/ (then make gpu-check there)
	$(PY) -m stripes.gpu.pack --out $(GPU_DIR) $(ARGS)

# No venv, no network: the GPU machine's own python3 (PyTorch, Lightning, Triton) + the carried .gpu/.
gpu-check: ## on a CUDA machine: fused attention, throughput, spot check -> outputs/gpu_check/REPORT.md
	PYTHONPATH=$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled \
	    $(GPU_PY) -m stripes.gpu.check --pack $(GPU_DIR) $(ARGS)

clean: ## remove caches and outputs (keeps .venv)
	rm -rf outputs data/cache .pytest_cache
