# lewel-bench: every target installs what it needs (.venv from pinned requirements) on first use.
#   make pretrain EXP=lewel_m      main job on the embedded mini data (see README)
#   make test                      the test suite (what CI runs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

# Embedded mini benchmark (generated on first use, git-ignored).
MINI       ?= data/mini
MINI_STAMP := $(MINI)/.complete
SEED       ?= 0

# What every stage target takes: EXP (experiment), DATA (a real dataset root; empty = the mini data),
# OUT (the output folder of the stage the target runs), CKPT (the checkpoint an evaluation reads; default
# $(RUNS)/$(EXP)/backbone.pth), ARGS (key=value config overrides of that stage). RUNS: where runs go
# ($LEWEL_RUNS_DIR when set, e.g. a scratch file system; else runs/).
RUNS ?= $(or $(LEWEL_RUNS_DIR),runs)
EXP  ?= lewel_m
DATA ?=
OUT  ?=
CKPT ?=
ARGS ?=
# ROW=mocov2_800ep: the paper row an evaluation of a published checkpoint (CKPT=file) fills in the comparison
# tables (the method and its pretraining epochs; a label in the record, every evaluation target passes it).
ROW  ?=
ROW_ARG = $(if $(ROW),--row '$(ROW)')
$(foreach v,EVAL_ARGS DET_ARGS SEG_ARGS,$(if $($(v)),$(error $(v) is no longer read: every stage target takes its overrides from ARGS=...)))

# Where stages run: LAUNCHER=local (default) or slurm (through submitit; see mk/launch.mk).
LAUNCHER    ?= local
LAUNCH_ARGS ?= --launcher $(LAUNCHER)
RUN          = $(PY) -m lewel_bench.launch $(LAUNCH_ARGS) --

export PYTHONUNBUFFERED := 1
# mmengine's resume reads its own trusted checkpoints with pickled objects (see stack notes).
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD := 1

.PHONY: help venv data test clean-venv
help:
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/:.*## /\t/' -e 's/\$$(EXP)/<EXP>/g' | sort

$(STAMP): requirements.txt pyproject.toml
	@echo "Creating $(VENV) from requirements.txt (first use only)"
	rm -rf $(VENV)
	$(PYTHON_SYS) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --no-cache-dir -q -r requirements.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP) ## create .venv from pinned requirements

# Regenerated when the generator changes (generate_mini is a no-op when the version and sizes match).
$(MINI_STAMP): lewel_bench/data/mini.py | $(STAMP)
	$(PY) -m tools.make_mini_data --out $(MINI) --seed $(SEED)
	@touch $@

data: $(MINI_STAMP) ## generate the embedded mini benchmark under data/mini

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)

-include mk/*.mk
