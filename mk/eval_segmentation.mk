##@ Evaluations | SEG_CFG, LRS, SEG_LR_KEY
# Segmentation transfer: mmsegmentation FCN-R50-D8 on VOC12 train + aug through mmseg's Runner.
#   make eval-voc-seg EXP=lewel_b                        FCN on the mini VOC data (DATA empty)
#   make eval-voc-seg EXP=lewel_b DATA=/data/VOCdevkit   the paper protocol (VOC2012 + SegmentationClassAug)
#   make eval-voc-seg EXP=lewel_b CKPT=random:resnet50   explicit random-init baseline
#   make eval-voc-seg EXP=lewel_b NPROC=4                DDP (4 local processes); LAUNCHER=slurm on a cluster
# CKPT overrides runs/<EXP>/backbone.pth; VOC_DATA (else DATA) is a VOCdevkit root; SEG_CFG picks the config
# (mini | voc12aug | path; `mini` takes the checkpoint's depth: fcn_r18-d8_mini.py for the mini pretraining's
# ResNet-18, fcn_r50-d8_mini.py for a ResNet-50); ARGS adds mmseg config overrides, e.g.
# ARGS="train_cfg.max_iters=40". Work dir: one per run identity (runs/<checkpoint>/eval_segmentation/...) or OUT.
# LRS="0.005 0.01 0.02": the paper's search for the best fine-tuning learning rate (Sec. 4.3): one run per value
# (its own job with LAUNCHER=slurm), each recorded as a point of the sweep; the tables report the best one.
# CKPT_PREFIX / CKPT_LAYOUT: which encoder of a published checkpoint (mk/checkpoint.mk).
SEG_CKPT  = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
SEG_DATA  = $(or $(VOC_DATA),$(DATA))
SEG_CFG  ?= $(if $(SEG_DATA),voc12aug,mini)
SEG_LR_KEY ?= optim_wrapper.optimizer.lr
LRS      ?=

.PHONY: eval-voc-seg
eval-voc-seg: $(STAMP) $(if $(SEG_DATA),,$(MINI_STAMP)) ## FCN-R50-D8 VOC12aug segmentation (mmseg) of CKPT; DATA=VOCdevkit, empty = mini
	@echo "make eval-voc-seg: config $(SEG_CFG) on $(if $(SEG_DATA),$(SEG_DATA),the embedded mini data (DATA=/VOCdevkit: the paper protocol))"
	@set -e; for lr in $(or $(LRS),-); do \
	  $(RUN) eval_segmentation --config "$(SEG_CFG)" --ckpt "$(SEG_CKPT)" $(CKPT_FLAGS) --data "$(or $(SEG_DATA),$(MINI)/VOCdevkit)" $(if $(OUT),--out "$(OUT)$(if $(LRS),/lr$$lr)") $(ROW_ARG) $(ARGS) \
	    $$( [ "$$lr" = - ] || echo "$(SEG_LR_KEY)=$$lr --sweep $(SEG_LR_KEY)" ); \
	done
