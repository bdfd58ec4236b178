##@ Chains | EXP, DATA, VOC_DATA, COCO_DATA, OUT and ARGS (pretraining's), CHAIN_EVALS, CHAIN_DEMO, CHAIN_DIR, CHAIN_CPU_ARGS, LAUNCHER=slurm (make all); DEMO_EXP, DEMO_EVALS, DEMO_FIGURES (make demo)
# The whole pipeline for one experiment: pretrain -> converters -> every evaluation -> tables.
#   make all EXP=lewel_b                       locally, one stage after the other
#   make all EXP=lewel_b LAUNCHER=slurm LAUNCH_CONFIG=launch/slurm.yaml
#                                              every stage submitted at once as a SLURM job with afterok
#                                              dependencies (nothing waits on the login node); job ids
#                                              under runs/<EXP>/chain/*.id
#   make demo                                  the chain on the embedded mini data (fresh clone, 2 cores)
#   make all EXP=lewel_b_r50                   the chain on the mini data with a ResNet-50 (the paper's backbone);
#                                              EXP=lewel_b runs it with the mini configs' ResNet-18 (faster: the
#                                              transfer stages' mini configs take either depth)
#   make all EXP=cgh                           CGH's chain (its supplement's evaluations): pretrain, convert, linear
#                                              probe on GAP and on the hypercolumn, COCO C4 1x, VOC det, tables
#                                              (on the mini data without DATA; make demo DEMO_EXP=cgh adds curves)
#   make all EXP=mcl                           MCL's chain (its appendix's Tables 11-13): RetinaNet 1x / 2x / 6x with
#                                              the FPN bundle, Mask R-CNN C4 1x / 2x, its linear probe, tables
# The evaluations are the method's paper chain, declared in its config (`paper.chain`, pretrain/configs/; steps of
# the evaluations' catalogues, eval_*/declaration.py) and planned by lewel_bench/chain.py: each step runs its
# evaluation's real-data config when its data root is given (DATA, or the evaluation's own variable such as
# VOC_DATA / COCO_DATA), else its mini config on the embedded mini data. `make -n all EXP=mcl` prints MCL's.
# CHAIN_EVALS picks steps by name (a name of the method's chain keeps the paper's settings; any other step of an
# evaluation's catalogue runs as declared, e.g. CHAIN_EVALS="linear knn voc-seg"); `python -m lewel_bench.chain
# show ...` describes a plan. Make variables an evaluation reads (SEEDS, BACKEND, SUBSET, LRS, MAX_SIZE_TRAIN, ...:
# their declarations say) are passed to it. In the chain, OUT and ARGS are pretraining's (its folder and config
# overrides); the evaluations read the checkpoint from that folder and run their own configs (run an evaluation
# target on its own to override it).
CHAIN_EVALS ?=
CHAIN_DEMO  ?=
CHAIN_DIR   ?= $(RUNS)/$(EXP)/chain
# Small jobs (converters, tables) need no GPU.
CHAIN_CPU_ARGS ?= GPUS_PER_NODE=0 NODES=1

_chain_q = '$(subst ','"'"',$(1))'
# the method's config (its paper declaration), resolved once per make
_chain_cfg = $(eval _chain_cfg := $(shell $(PY) -m pretrain.experiments resolve --path $(call _chain_q,$(EXP)) \
  $(if $(DATA),--full) 2>/dev/null))$(_chain_cfg)
_chain_sel = --config $(call _chain_q,$(_chain_cfg)) $(if $(strip $(CHAIN_EVALS)),--only $(call _chain_q,$(CHAIN_EVALS))) \
  $(if $(filter 1 yes true,$(CHAIN_DEMO)),--demo)
_chain_steps = $(eval _chain_steps := $(shell $(PY) -m lewel_bench.chain steps $(_chain_sel)))$(_chain_steps)
_chain_vars = $(shell $(PY) -m lewel_bench.chain vars)
# the planner separates its lines with ASCII RS ($(shell) joins newlines); each becomes a recipe line
_chain_rs := $(shell printf '\036')
_chain_lines = $(subst $(_chain_rs),$(_chain_nl),$(shell $(PY) -m lewel_bench.chain lines $(_chain_sel) \
  --ckpt $(call _chain_q,$(CHAIN_CKPT)) --mini $(call _chain_q,$(MINI)) --data $(call _chain_q,$(DATA)) \
  $(foreach v,$(_chain_vars),--var $(call _chain_q,$(v)=$($(v)))) \
  --launch $(call _chain_q,$(PY) -m lewel_bench.launch $(LAUNCH_ARGS)) \
  $(if $(filter slurm,$(LAUNCHER)),--chain-dir $(call _chain_q,$(CHAIN_DIR)))))

ifeq ($(LAUNCHER),slurm)
# $(call _chain_after,<steps>,<this step>): wait for the jobs of <steps>, record this step's job id
_chain_ids   = $(foreach s,$(1),"$(CHAIN_DIR)/$(s).id")
_chain_after = $(if $(1),DEPENDENCY=afterok:$$(cat $(call _chain_ids,$(1)) 2>/dev/null | paste -sd: -)) \
               JOB_ID_FILE="$(CHAIN_DIR)/$(2).id"
else
_chain_after =
endif

define _chain_nl


endef
CHAIN_CKPT = $(PRETRAIN_OUT)/backbone.pth

.PHONY: all convert demo chain-check
chain-check: $(STAMP)
	@$(PY) -m pretrain.experiments resolve $(call _chain_q,$(EXP)) $(if $(DATA),--full) >/dev/null && \
	  $(PY) -m lewel_bench.chain check $(_chain_sel)

all: chain-check ## pretrain EXP, convert, its paper's evaluations (CHAIN_EVALS), tables; LAUNCHER=slurm chains jobs
	@mkdir -p "$(CHAIN_DIR)" && rm -f "$(CHAIN_DIR)"/*.id
	@echo "== chain $(EXP): pretrain -> convert -> $(_chain_steps) -> tables ($(LAUNCHER))"
	$(MAKE) --no-print-directory pretrain EXP=$(EXP) $(call _chain_after,,pretrain)
	$(MAKE) --no-print-directory convert EXP=$(EXP) CKPT="$(CHAIN_CKPT)" OUT= ARGS= $(CHAIN_CPU_ARGS) \
	  $(call _chain_after,pretrain,convert)
	$(_chain_lines)
	$(MAKE) --no-print-directory tables OUT= ARGS= $(CHAIN_CPU_ARGS) $(call _chain_after,$(_chain_steps),tables)
	@if [ "$(LAUNCHER)" = slurm ]; then echo "== submitted; job ids in $(CHAIN_DIR)/:"; \
	  for f in "$(CHAIN_DIR)"/*.id; do echo "   $$(basename $$f .id): $$(paste -sd' ' $$f)"; done; fi

##@ Checkpoints
# The transfer stages' input formats, written next to the backbone (<folder of CKPT>/backbone_{d2.pkl,mmseg.pth}).
CONVERT_IN  = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
CONVERT_DIR = $(patsubst %/,%,$(dir $(CONVERT_IN)))
convert: $(STAMP) ## convert CKPT (default runs/EXP/backbone.pth) for detectron2 and mmseg
	$(RUN) tools.convert_to_detectron2 "$(CONVERT_IN)" "$(CONVERT_DIR)/backbone_d2.pkl" $(CKPT_FLAGS)
	$(RUN) tools.convert_to_mmseg "$(CONVERT_IN)" "$(CONVERT_DIR)/backbone_mmseg.pth" $(CKPT_FLAGS)

##@ Chains
# make demo: the whole chain on data/mini from a fresh clone (target: at most 30 minutes on 2 cores).
# DEMO_EXP=cgh: CGH's chain; each method's chain without its `paper.demo_skip` steps, and its figures: the loss / kNN
# curves, and the alignment maps when its method has them (LEWEL).
DEMO_EXP     ?= lewel_m
DEMO_EVALS   ?=
DEMO_FIGURES ?= $(shell $(PY) -m pretrain.experiments figures $(call _chain_q,$(DEMO_EXP)))
demo: $(STAMP) ## the whole chain (pretrain -> evaluations -> tables, figures) on the embedded mini data
	$(MAKE) --no-print-directory data
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory all EXP=$(DEMO_EXP) DATA= LAUNCHER=local \
	  $(if $(DEMO_EVALS),CHAIN_EVALS="$(DEMO_EVALS)",CHAIN_DEMO=1) ARGS="$(strip $(ARGS) log.tensorboard=true)" && \
	$(MAKE) --no-print-directory $(DEMO_FIGURES) EXP=$(DEMO_EXP) && $(MAKE) --no-print-directory report && \
	echo "== demo finished in $$(( $$(date +%s) - start )) s; tables: results/tables/README.md, figures: $(FIGURES_DIR)/, report: $(REPORT_DIR)/index.html"
