# LEWEL's ablations (Sec. 4.4): every ImageNet-100 run of Tables 5-7 -> linear probe + VOC12 segmentation ->
# the tables (results/tables/table5_components.csv, table6_heads.csv, table7_num_aligned.csv).
#   make ablations DATA=/path/in100 VOC_DATA=/path/VOCdevkit   the paper's runs (IN-100 from `make in100`)
#   make ablations                                             the same chain on the embedded mini data
#                                                              (configs <exp>_mini: a smoke chain)
#   make ablations-fig3 DATA=... VOC_DATA=...                  Fig. 3: LEWEL_M at each beta (BETAS) and
#                                                              aligned dimensionality c (CS) -> fig3a_beta.csv,
#                                                              fig3b_aligned_dim.csv
#   make -n ablations                                          print the chain
#   LAUNCHER=slurm                                             every step its own job, afterok-chained (the
#                                                              evaluations after their pretraining, the tables
#                                                              after every evaluation); job ids in RUNS/<run>/chain/
# ABLATIONS picks the runs (default: every row of the three tables); ARGS adds pretraining overrides to every
# run, ABLATION_LINEAR_ARGS / ABLATION_SEG_ARGS the evaluations' overrides, LRS the segmentation lr search
# (eval-voc-seg). Each run's folder is RUNS/<exp> (Fig. 3: RUNS/lewel_m_in100-beta<value>, -c<value>); running
# the command again resumes what is unfinished and skips what is done.
ABLATIONS_T5 := mocov2_in100 lewel_m_in100_align_only lewel_m_in100_uncoupled lewel_m_in100
ABLATIONS_T6 := mocov2_in100_d256 mocov2_in100_d512 mocov2_in100_extra_p lewel_m_in100_no_p lewel_m_in100_random_w
ABLATIONS_T7 := byol_in100 lewel_b_in100_d512_h4 lewel_b_in100_h1 lewel_b_in100_h2 lewel_b_in100 lewel_b_in100_h8 \
                lewel_b_in100_h16 lewel_b_in100_d128_h4 lewel_b_in100_d64_h4
ABLATIONS    ?= $(ABLATIONS_T5) $(ABLATIONS_T6) $(ABLATIONS_T7)
# Fig. 3 (LEWEL_M, lewel_m_in100): the defaults beta = 0.5 and c = d = 128 are lewel_m_in100's own run.
BETAS        ?= 0.1 0.3 0.7 0.9 1.0
CS           ?= 16 32 64 256
ABLATION_LINEAR_ARGS ?=
ABLATION_SEG_ARGS    ?=
ABLATION_RUNS = $(sort $(ABLATIONS))

_abl_chain = $(RUNS)/$(1)/chain
ifeq ($(LAUNCHER),slurm)
# $(call _abl_after,<run>,<steps it waits for>,<this step>)
_abl_after = $(if $(2),DEPENDENCY=afterok:$$(cat $(foreach s,$(2),$(call _abl_chain,$(1))/$(s).id) | paste -sd: -)) \
             JOB_ID_FILE=$(call _abl_chain,$(1))/$(3).id
_abl_tables_after = DEPENDENCY=afterok:$$(cat $(foreach r,$(1),$(call _abl_chain,$(r))/linear.id \
                    $(call _abl_chain,$(r))/voc-seg.id) | paste -sd: -)
else
_abl_after =
_abl_tables_after =
endif

define _abl_nl


endef
# $(call _abl_run,<run folder name>,<EXP>,<extra pretraining arguments>): pretrain, linear, segmentation
define _abl_run
@mkdir -p $(call _abl_chain,$(1)) && rm -f $(call _abl_chain,$(1))/*.id
+$(MAKE) --no-print-directory pretrain EXP=$(2) OUT=$(RUNS)/$(1) ARGS="$(strip $(ARGS) $(3))" \
  $(call _abl_after,$(1),,pretrain)
+$(MAKE) --no-print-directory eval-linear EXP=$(2) CKPT=$(RUNS)/$(1)/backbone.pth OUT= ARGS="$(ABLATION_LINEAR_ARGS)" \
  $(call _abl_after,$(1),pretrain,linear)
+$(MAKE) --no-print-directory eval-voc-seg EXP=$(2) CKPT=$(RUNS)/$(1)/backbone.pth DATA=$(VOC_DATA) OUT= \
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

FIG3_RUNS = $(foreach b,$(BETAS),lewel_m_in100-beta$(b)) $(foreach c,$(CS),lewel_m_in100-c$(c))
ablations-fig3: ## LEWEL Fig. 3: LEWEL_M at each beta (BETAS) and c (CS) -> linear + VOC seg -> tables
	$(call _abl_check,ablations-fig3)
	@echo "== Fig. 3 ($(words $(FIG3_RUNS)) runs, $(if $(DATA),DATA=$(DATA),the embedded mini data), $(LAUNCHER)): \
	  beta in $(BETAS), c in $(CS); beta = 0.5 / c = 128 is lewel_m_in100 (make ablations)"
	$(foreach b,$(BETAS),$(call _abl_run,lewel_m_in100-beta$(b),lewel_m_in100,model.beta=$(b) --sweep model.beta)$(_abl_nl))
	$(foreach c,$(CS),$(call _abl_run,lewel_m_in100-c$(c),lewel_m_in100,model.sem_dim=$(c) --sweep model.sem_dim)$(_abl_nl))
	+$(MAKE) --no-print-directory tables OUT= ARGS= GPUS_PER_NODE=0 NODES=1 $(call _abl_tables_after,$(FIG3_RUNS))
