##@ Chains | ABLATIONS, SWEEPS, ABLATION_PAPER, ABLATION_LINEAR_ARGS, ABLATION_SEG_ARGS (make ablations / ablations-fig3)
# LEWEL's ablations (Sec. 4.4): every ImageNet-100 run of Tables 5-7 -> linear probe + VOC12 segmentation ->
# the tables (results/tables/table5_components.csv, table6_heads.csv, table7_num_aligned.csv).
#   make ablations DATA=/path/in100 VOC_DATA=/path/VOCdevkit   the paper's runs (IN-100 from `make in100`)
#   make ablations                                             the same chain on the embedded mini data
#                                                              (configs <exp>_mini: a smoke chain)
#   make ablations-fig3 DATA=... VOC_DATA=...                  Fig. 3: the points of its pretraining sweeps
#                                                              (LEWEL_M at each beta and aligned dimensionality
#                                                              c) -> fig3a_beta.csv, fig3b_aligned_dim.csv
#   make -n ablations                                          print the chain
#   LAUNCHER=slurm                                             every step its own job, afterok-chained (the
#                                                              evaluations after their pretraining, the tables
#                                                              after every evaluation); job ids in RUNS/<run>/chain/
# The runs are those the ablation tables have rows for (results/paper/tables.yaml, `key: exp`; the paper files'
# `exp` and `pretrain_sweep` columns). ABLATIONS picks experiments (default: every row of Tables 5-7), SWEEPS the
# sweep points as <run folder>:<exp>:<key>=<value> (default: every point of Fig. 3, e.g.
# lewel_m_in100-beta0.3:lewel_m_in100:model.beta=0.3); ARGS adds pretraining overrides to every run,
# ABLATION_LINEAR_ARGS / ABLATION_SEG_ARGS the evaluations' overrides, LRS the segmentation lr search
# (eval-voc-seg). Each run's folder is RUNS/<exp> (a sweep point: its folder); running the command again resumes
# what is unfinished and skips what is done.
ABLATION_PAPER ?= results/paper
_abl_list = $(shell $(PY) -m lewel_bench.chain ablations --paper $(ABLATION_PAPER) $(1))
ABLATIONS ?= $(eval ABLATIONS := $(call _abl_list,))$(ABLATIONS)
SWEEPS    ?= $(eval SWEEPS := $(call _abl_list,--sweeps))$(SWEEPS)
ABLATION_LINEAR_ARGS ?=
ABLATION_SEG_ARGS    ?=
ABLATION_RUNS = $(sort $(ABLATIONS))

_abl_chain = $(RUNS)/$(1)/chain
# make -n runs every line of a canned recipe that calls $(MAKE); the folder line then only prints itself
_abl_dry := $(findstring n,$(firstword -$(MAKEFLAGS)))
ifeq ($(LAUNCHER),slurm)
# $(call _abl_after,<run>,<steps it waits for>,<this step>)
_abl_after = $(if $(2),DEPENDENCY=afterok:$$(cat $(foreach s,$(2),"$(call _abl_chain,$(1))/$(s).id") | paste -sd: -)) \
             JOB_ID_FILE="$(call _abl_chain,$(1))/$(3).id"
_abl_tables_after = DEPENDENCY=afterok:$$(cat $(foreach r,$(1),"$(call _abl_chain,$(r))/linear.id" \
                    "$(call _abl_chain,$(r))/voc-seg.id") | paste -sd: -)
else
_abl_after =
_abl_tables_after =
endif

define _abl_nl


endef
# $(call _abl_run,<run folder name>,<EXP>,<extra pretraining arguments>): pretrain, linear, segmentation
define _abl_run
@$(if $(_abl_dry),echo 'mkdir -p "$(call _abl_chain,$(1))" && rm -f "$(call _abl_chain,$(1))"/*.id',mkdir -p "$(call _abl_chain,$(1))" && rm -f "$(call _abl_chain,$(1))"/*.id)
+$(MAKE) --no-print-directory pretrain EXP=$(2) OUT="$(RUNS)/$(1)" ARGS="$(strip $(ARGS) $(3))" \
  $(call _abl_after,$(1),,pretrain)
+$(MAKE) --no-print-directory eval-linear EXP=$(2) CKPT="$(RUNS)/$(1)/backbone.pth" OUT= ARGS="$(ABLATION_LINEAR_ARGS)" \
  $(call _abl_after,$(1),pretrain,linear)
+$(MAKE) --no-print-directory eval-voc-seg EXP=$(2) CKPT="$(RUNS)/$(1)/backbone.pth" DATA="$(VOC_DATA)" OUT= \
  ARGS="$(ABLATION_SEG_ARGS)" $(call _abl_after,$(1),pretrain,voc-seg)
endef

_abl_check = @$(if $(and $(DATA),$(if $(VOC_DATA),,x)),echo "make $(1): DATA=$(DATA) is the IN-100 root; the \
  segmentation stage needs VOC_DATA=/path/VOCdevkit too" >&2; exit 2,true)

.PHONY: ablations ablations-fig3
ablations: ## LEWEL Tables 5-7: every IN-100 ablation run -> linear + VOC seg -> tables (mini data unless DATA=)
	$(call _abl_check,ablations)
	@echo "== ablations ($(words $(ABLATION_RUNS)) runs, $(if $(DATA),DATA=$(DATA),the embedded mini data), $(LAUNCHER)): \
	  pretrain -> linear + voc-seg -> tables"
	$(foreach r,$(ABLATION_RUNS),$(call _abl_run,$(r),$(r),)$(_abl_nl))
	+$(MAKE) --no-print-directory tables OUT= ARGS= GPUS_PER_NODE=0 NODES=1 $(call _abl_tables_after,$(ABLATION_RUNS))

# a sweep point <folder>:<exp>:<key>=<value> -> its folder, experiment, override
_sw = $(word $(2),$(subst :, ,$(1)))
FIG3_RUNS = $(foreach s,$(SWEEPS),$(call _sw,$(s),1))
ablations-fig3: ## LEWEL Fig. 3: every point of its pretraining sweeps (SWEEPS) -> linear + VOC seg -> tables
	$(call _abl_check,ablations-fig3)
	@echo "== Fig. 3 ($(words $(FIG3_RUNS)) runs, $(if $(DATA),DATA=$(DATA),the embedded mini data), $(LAUNCHER)): \
	  $(foreach s,$(SWEEPS),$(call _sw,$(s),3)); each experiment's own value is its own run (make ablations)"
	$(foreach s,$(SWEEPS),$(call _abl_run,$(call _sw,$(s),1),$(call _sw,$(s),2),$(call _sw,$(s),3) --sweep \
	  $(firstword $(subst =, ,$(call _sw,$(s),3))))$(_abl_nl))
	+$(MAKE) --no-print-directory tables OUT= ARGS= GPUS_PER_NODE=0 NODES=1 $(call _abl_tables_after,$(FIG3_RUNS))
