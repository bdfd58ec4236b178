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
# CHAIN_EVALS picks the evaluations (names below; default: the method's list _chain_evals_<method>, where the
# method is EXP's first word, else the LEWEL paper's); DATA=/imagenet etc. are passed to the stage targets.
# In the chain, OUT and ARGS are pretraining's (its folder and config overrides); the evaluations read the
# checkpoint from that folder and run their own configs (run an evaluation target on its own to override it).
_chain_method = $(firstword $(subst _, ,$(1)))
_chain_evals_cgh := linear linear-hyper coco-c4-1x voc-det
CHAIN_EVALS ?= $(or $(_chain_evals_$(call _chain_method,$(EXP))),linear semisup1 semisup10 voc-det voc-seg coco-c4-1x coco-fpn-1x)
CHAIN_DIR   ?= $(RUNS)/$(EXP)/chain
# Small jobs (converters, tables) need no GPU.
CHAIN_CPU_ARGS ?= GPUS_PER_NODE=0 NODES=1

# evaluation name -> stage make target (targets live in mk/eval_*.mk)
_chain_linear      := eval-linear
_chain_linear-hyper := eval-linear LINEAR_FEATURE=hypercolumn
_chain_semisup1    := eval-semisup PCT=1
_chain_semisup10   := eval-semisup PCT=10
_chain_knn         := eval-knn
_chain_voc-det     := eval-voc-det
_chain_voc-seg     := eval-voc-seg
_chain_coco-c4-1x  := eval-coco ARCH=c4 SCHED=1x
_chain_coco-fpn-1x := eval-coco ARCH=fpn SCHED=1x
_chain_coco-fpn-2x := eval-coco ARCH=fpn SCHED=2x
_chain_unknown = $(strip $(foreach e,$(CHAIN_EVALS),$(if $(_chain_$(e)),,$(e))))

ifeq ($(LAUNCHER),slurm)
# $(call _chain_after,<steps>,<this step>): wait for the jobs of <steps>, record this step's job id
_chain_ids   = $(foreach s,$(1),$(CHAIN_DIR)/$(s).id)
_chain_after = $(if $(1),DEPENDENCY=afterok:$$(cat $(call _chain_ids,$(1)) 2>/dev/null | paste -sd: -)) \
               JOB_ID_FILE=$(CHAIN_DIR)/$(2).id
else
_chain_after =
endif

define _chain_nl


endef
# one recipe line per evaluation
CHAIN_CKPT = $(PRETRAIN_OUT)/backbone.pth
_chain_eval_lines = $(foreach e,$(CHAIN_EVALS),+$(MAKE) --no-print-directory $(_chain_$(e)) EXP=$(EXP) \
  CKPT=$(CHAIN_CKPT) OUT= ARGS= $(call _chain_after,pretrain convert,$(e))$(_chain_nl))

.PHONY: all convert demo chain-check
chain-check:
	@$(if $(_chain_unknown),echo "CHAIN_EVALS: unknown evaluation(s) '$(_chain_unknown)'; known: linear linear-hyper semisup1 semisup10 knn voc-det voc-seg coco-c4-1x coco-fpn-1x coco-fpn-2x" >&2; exit 2,true)

all: chain-check ## pretrain EXP, convert, every evaluation (CHAIN_EVALS), tables; LAUNCHER=slurm chains jobs
	@mkdir -p $(CHAIN_DIR) && rm -f $(CHAIN_DIR)/*.id
	@echo "== chain $(EXP): pretrain -> convert -> $(CHAIN_EVALS) -> tables ($(LAUNCHER))"
	$(MAKE) --no-print-directory pretrain EXP=$(EXP) $(call _chain_after,,pretrain)
	$(MAKE) --no-print-directory convert EXP=$(EXP) CKPT=$(CHAIN_CKPT) OUT= ARGS= $(CHAIN_CPU_ARGS) \
	  $(call _chain_after,pretrain,convert)
	$(_chain_eval_lines)
	$(MAKE) --no-print-directory tables OUT= ARGS= $(CHAIN_CPU_ARGS) $(call _chain_after,$(CHAIN_EVALS),tables)
	@if [ "$(LAUNCHER)" = slurm ]; then echo "== submitted; job ids in $(CHAIN_DIR)/:"; \
	  for f in $(CHAIN_DIR)/*.id; do echo "   $$(basename $$f .id): $$(paste -sd' ' $$f)"; done; fi

# The transfer stages' input formats, written next to the backbone (<folder of CKPT>/backbone_{d2.pkl,mmseg.pth}).
CONVERT_IN  = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
CONVERT_DIR = $(patsubst %/,%,$(dir $(CONVERT_IN)))
convert: $(STAMP) ## convert CKPT (default runs/EXP/backbone.pth) for detectron2 and mmseg
	$(RUN) tools.convert_to_detectron2 $(CONVERT_IN) $(CONVERT_DIR)/backbone_d2.pkl
	$(RUN) tools.convert_to_mmseg $(CONVERT_IN) $(CONVERT_DIR)/backbone_mmseg.pth

# make demo: the whole chain on data/mini from a fresh clone (target: at most 30 minutes on 2 cores).
# DEMO_EXP=cgh: CGH's chain (_chain_evals_cgh) and its loss / kNN curves (no alignment maps: a LEWEL figure).
DEMO_EXP   ?= lewel_m
DEMO_EVALS ?= $(or $(_chain_evals_$(call _chain_method,$(DEMO_EXP))),linear semisup1 semisup10 voc-det voc-seg coco-c4-1x)
_demo_figures_cgh := curves
DEMO_FIGURES ?= $(or $(_demo_figures_$(call _chain_method,$(DEMO_EXP))),figures)
demo: $(STAMP) ## the whole chain (pretrain -> evaluations -> tables, figures) on the embedded mini data
	$(MAKE) --no-print-directory data
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory all EXP=$(DEMO_EXP) DATA= LAUNCHER=local CHAIN_EVALS="$(DEMO_EVALS)" \
	  ARGS="$(strip $(ARGS) log.tensorboard=true)" && \
	$(MAKE) --no-print-directory $(DEMO_FIGURES) EXP=$(DEMO_EXP) && $(MAKE) --no-print-directory report && \
	echo "== demo finished in $$(( $$(date +%s) - start )) s; tables: results/tables/README.md, figures: $(FIGURES_DIR)/, report: $(REPORT_DIR)/index.html"
