# Image-level evaluations (issue 4): linear probe, semi-supervised 1% / 10% fine-tuning, kNN.
#   make eval-linear  EXP=lewel_m                 linear probe of runs/lewel_m/backbone.pth
#   make eval-semisup EXP=lewel_m PCT=1           (or PCT=10) fine-tuning on the 1% / 10% split
#   make eval-knn     EXP=lewel_m                 weighted kNN (k=20, T=0.07)
# CKPT=path|random:<arch> overrides the checkpoint; DATA=/imagenet uses a real ImageNet root (the paper
# recipes), empty = the mini data with the mini configs. LINEAR_CFG / SEMISUP_CFG / KNN_CFG pick another
# config, SUBSET=/path/1percent.txt the official SimCLR split file, EVAL_ARGS adds CLI args / key=value
# overrides. Results: runs/<exp>/<stage>/<config>/ and one record under results/records/.
EXP        ?= lewel_m
CKPT       ?= runs/$(EXP)/backbone.pth
DATA       ?=
PCT        ?= 1
SUBSET     ?=
EVAL_ARGS  ?=
EVAL_DATA   = $(if $(DATA),$(DATA),$(MINI)/imagenet)
EVAL_DEPS   = $(STAMP) $(if $(DATA),,$(MINI_STAMP))
LINEAR_CFG  ?= $(if $(DATA),$(if $(filter lewel_m% mocov2%,$(EXP)),lewel_m_lars,lewel_b_sgd),mini)
SEMISUP_CFG ?= $(if $(DATA),,mini_)$(PCT)pct
KNN_CFG     ?= $(if $(DATA),k20,mini)

.PHONY: eval-linear eval-semisup eval-knn eval-image
eval-linear: $(EVAL_DEPS) ## linear probe of CKPT (default runs/$(EXP)/backbone.pth); resumes if interrupted
	$(RUN) eval_linear --config $(LINEAR_CFG) --ckpt $(CKPT) --data $(EVAL_DATA) $(EVAL_ARGS)

eval-semisup: $(EVAL_DEPS) ## semi-supervised fine-tuning, PCT=1 or 10 (SUBSET=/path/1percent.txt for ImageNet)
	@case "$(PCT)" in 1|10) ;; *) echo "PCT must be 1 or 10, got '$(PCT)'" >&2; exit 2;; esac
	$(RUN) eval_semisup --config $(SEMISUP_CFG) --ckpt $(CKPT) --data $(EVAL_DATA) $(if $(SUBSET),--subset $(SUBSET)) $(EVAL_ARGS)

eval-knn: $(EVAL_DEPS) ## weighted kNN (k=20, T=0.07) of CKPT
	$(RUN) eval_knn --config $(KNN_CFG) --ckpt $(CKPT) --data $(EVAL_DATA) $(EVAL_ARGS)

eval-image: eval-knn eval-linear ## kNN, linear, semi-supervised 1% and 10% of CKPT
	$(MAKE) eval-semisup PCT=1
	$(MAKE) eval-semisup PCT=10
