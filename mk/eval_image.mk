##@ Evaluations | PCT, SUBSET, LINEAR_FEATURE, LINEAR_CFG, SEMISUP_CFG, KNN_CFG
# Image-level evaluations: linear probe, semi-supervised 1% / 10% fine-tuning, kNN.
#   make eval-linear  EXP=lewel_m                 linear probe of runs/lewel_m/backbone.pth
#   make eval-semisup EXP=lewel_m PCT=1           (or PCT=10) fine-tuning on the 1% / 10% split
#   make eval-knn     EXP=lewel_m                 weighted kNN (k=20, T=0.07)
# CKPT=path|random:<arch> overrides the checkpoint (any published layout: CKPT_PREFIX / CKPT_LAYOUT, see
# mk/checkpoint.mk); DATA=/imagenet uses a real ImageNet root with the paper's
# recipes (linear: `auto` = the recipe of the checkpoint's method, see eval_linear/configs/_recipes.yaml),
# empty = the mini data with the mini configs; each target says which config it runs. LINEAR_CFG /
# SEMISUP_CFG / KNN_CFG pick another config, SUBSET=/path/1percent.txt the official SimCLR split file,
# LINEAR_FEATURE=hypercolumn|hypercolumn_learned the linear probe's input (CGH; default the config's: GAP),
# ARGS adds key=value config overrides, OUT the output folder. Results: one folder per run identity
# (runs/<checkpoint>/<stage>/...) and one record under results/records/.
PCT        ?= 1
SUBSET     ?=
EVAL_CKPT   = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
EVAL_DATA   = $(if $(DATA),$(DATA),$(MINI)/imagenet)
EVAL_DEPS   = $(STAMP) $(if $(DATA),,$(MINI_STAMP))
EVAL_OUT    = $(if $(OUT),--out "$(OUT)")
LINEAR_CFG  ?= $(if $(DATA),auto,mini)
LINEAR_FEATURE ?=
SEMISUP_CFG ?= $(if $(DATA),,mini_)$(PCT)pct
KNN_CFG     ?= $(if $(DATA),k20,mini)
# $(call _eval_says,<target>,<config>): one line saying which recipe runs on which data
_eval_says = @echo "make $(1): config $(2) on $(if $(DATA),DATA=$(DATA),the embedded mini data (DATA=/imagenet: the paper's recipe))"

.PHONY: eval-linear eval-semisup eval-knn eval-image
eval-linear: $(EVAL_DEPS) ## linear probe of CKPT (default runs/$(EXP)/backbone.pth); resumes if interrupted
	$(call _eval_says,eval-linear,$(LINEAR_CFG))
	$(RUN) eval_linear --config "$(LINEAR_CFG)" --ckpt "$(EVAL_CKPT)" $(CKPT_FLAGS) --data "$(EVAL_DATA)" $(EVAL_OUT) $(ROW_ARG) $(if $(LINEAR_FEATURE),feature=$(LINEAR_FEATURE)) $(ARGS)

eval-semisup: $(EVAL_DEPS) ## semi-supervised fine-tuning, PCT=1 or 10 (SUBSET=/path/1percent.txt for ImageNet)
	@case "$(PCT)" in 1|10) ;; *) echo "PCT must be 1 or 10, got '$(PCT)'" >&2; exit 2;; esac
	$(call _eval_says,eval-semisup,$(SEMISUP_CFG))
	$(RUN) eval_semisup --config "$(SEMISUP_CFG)" --ckpt "$(EVAL_CKPT)" $(CKPT_FLAGS) --data "$(EVAL_DATA)" $(if $(SUBSET),--subset "$(SUBSET)") $(EVAL_OUT) $(ROW_ARG) $(ARGS)

eval-knn: $(EVAL_DEPS) ## weighted kNN (k=20, T=0.07) of CKPT
	$(call _eval_says,eval-knn,$(KNN_CFG))
	$(RUN) eval_knn --config "$(KNN_CFG)" --ckpt "$(EVAL_CKPT)" $(CKPT_FLAGS) --data "$(EVAL_DATA)" $(EVAL_OUT) $(ROW_ARG) $(ARGS)

eval-image: eval-knn eval-linear ## kNN, linear, semi-supervised 1% and 10% of CKPT
	$(MAKE) eval-semisup PCT=1
	$(MAKE) eval-semisup PCT=10
