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

##@ Evaluations | CKPT (default runs/EXP/backbone.pth; a published checkpoint, random:<arch>, supervised:<file>), EXP, DATA (empty: the mini data), OUT, ARGS, ROW (the paper row a published checkpoint fills)
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
# $(call _sq,TEXT): TEXT as one single-quoted shell word (a ' inside it kept)
_sq = '$(subst ','"'"',$(1))'
ROW_ARG = $(if $(ROW),--row $(call _sq,$(ROW)))
$(foreach v,EVAL_ARGS DET_ARGS SEG_ARGS,$(if $($(v)),$(error $(v) is no longer read: every stage target takes its overrides from ARGS=...)))
# Paths may hold spaces and non-ASCII characters (the recipes quote them), except these two, which name make
# targets (make splits a target name at spaces).
$(foreach v,VENV MINI,$(if $(filter-out 1,$(words $($(v)))),$(error $(v)='$($(v))': this path names make targets and cannot contain spaces or be empty)))
# Counts the recipes loop over: a positive integer, checked before anything runs (a dry run `make -n` too).
_posint = $(if $(shell printf '%s' '$(2)' | grep -Eqx '[1-9][0-9]{0,5}' && echo ok),,$(error $(1)='$(2)': expected a positive integer))

# Where stages run: LAUNCHER=local (default) or slurm (through submitit; see mk/launch.mk).
LAUNCHER    ?= local
LAUNCH_ARGS ?= --launcher $(LAUNCHER)
RUN          = $(PY) -m lewel_bench.launch $(LAUNCH_ARGS) --

export PYTHONUNBUFFERED := 1
# mmengine's resume reads its own trusted checkpoints with pickled objects (see stack notes).
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD := 1

.PHONY: help venv data test clean-venv
##@ Set-up | VENV (.venv), MINI (data/mini), SEED (the mini data's), PYTHON_SYS
# `make help`: every target under its group (`##@ Group | variables` lines beside the targets, mk/help.awk).
HELP_ORDER := Set-up Pretraining Evaluations Checkpoints Chains Tables Benchmarks Where
help:
	@awk -v order='$(HELP_ORDER)' -f mk/help.awk $(MAKEFILE_LIST)

# The stamp is named by the checksum of requirements.txt and pyproject.toml, so the venv is rebuilt when their
# CONTENT changes, never because a checkout made them newer. A rebuild goes into $(VENV).new and replaces $(VENV)
# only once complete: until then (and if it fails) the old $(VENV) stays as it was.
_venv_abs = $(abspath $(VENV))
$(STAMP):
	@echo "Creating $(VENV) from requirements.txt ($(if $(wildcard $(VENV)/bin/python),requirements changed: building \
	$(VENV).new beside the current $(VENV),first use))"
	rm -rf "$(VENV).new"
	$(PYTHON_SYS) -m venv "$(VENV).new"
	"$(VENV).new/bin/pip" install --disable-pip-version-check --no-cache-dir -q -r requirements.txt
	"$(VENV).new/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@# the scripts in bin/ name their folder: point them at $(VENV) before the swap
	@grep -lIr --exclude-dir=__pycache__ "$(_venv_abs).new" "$(VENV).new/bin" | while IFS= read -r f; do \
	  [ -L "$$f" ] || sed -i "s|$(_venv_abs).new|$(_venv_abs)|g" "$$f"; done
	touch "$(VENV).new/$(notdir $(STAMP))"
	rm -rf "$(VENV).old" && { [ ! -e "$(VENV)" ] || mv "$(VENV)" "$(VENV).old"; } && mv "$(VENV).new" "$(VENV)" && \
	  rm -rf "$(VENV).old"

venv: $(STAMP) ## create .venv from pinned requirements

# Regenerated when the generator changes (generate_mini is a no-op when the version and sizes match).
$(MINI_STAMP): lewel_bench/data/mini.py | $(STAMP)
	$(PY) -m tools.make_mini_data --out "$(MINI)" --seed "$(SEED)"
	@touch $@

data: $(MINI_STAMP) ## generate the embedded mini benchmark under data/mini

test: $(STAMP) ## lint (ruff) and run the test suite
	$(PY) -m ruff check --no-cache .
	$(PY) -m pytest -q

clean-venv:
	rm -rf "$(VENV)" "$(VENV).new" "$(VENV).old"

-include mk/*.mk
