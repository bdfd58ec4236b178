# Segmentation transfer (issue 6): mmsegmentation FCN-R50-D8 on VOC12 train + aug through mmseg's Runner.
#   make eval-voc-seg EXP=lewel_b                     FCN on the mini VOC data (DATA empty), ~10 min on 2 cores
#   make eval-voc-seg EXP=lewel_b DATA=/data/VOCdevkit   the paper protocol (VOC2012 + SegmentationClassAug)
#   make eval-voc-seg EXP=lewel_b CKPT=random:resnet50   explicit random-init baseline
#   make eval-voc-seg EXP=lewel_b NPROC=4             DDP (4 local processes); LAUNCHER=slurm on a cluster
# CKPT overrides runs/<EXP>/backbone.pth; VOC_DATA (else DATA) is a VOCdevkit root; SEG_CFG picks the config
# (mini | voc12aug | path; `mini` takes the checkpoint's depth: fcn_r18-d8_mini.py for the mini pretraining's
# ResNet-18, fcn_r50-d8_mini.py for a ResNet-50); SEG_ARGS adds CLI args, e.g. SEG_ARGS="--cfg-options train_cfg.max_iters=40".
# Work dir (mmengine checkpoints/logs, resumed when run again): runs/<EXP>/eval_segmentation/<cfg>-<ckpt>/.
SEG_CKPT  = $(if $(CKPT),$(CKPT),runs/$(EXP)/backbone.pth)
SEG_DATA  = $(or $(VOC_DATA),$(DATA))
SEG_CFG  ?= $(if $(SEG_DATA),voc12aug,mini)
SEG_WORK ?= runs/$(EXP)/eval_segmentation/$(notdir $(basename $(SEG_CFG)))-$(subst :,_,$(notdir $(basename $(SEG_CKPT))))
SEG_ARGS ?=

.PHONY: eval-voc-seg
eval-voc-seg: $(STAMP) $(if $(SEG_DATA),,$(MINI_STAMP)) ## FCN-R50-D8 VOC12aug segmentation (mmseg) of CKPT; DATA=VOCdevkit, empty = mini
	@test -n "$(EXP)" || { echo "usage: make eval-voc-seg EXP=<name> [CKPT=path|random:resnet50] [DATA=VOCdevkit]" >&2; exit 2; }
	$(RUN) eval_segmentation --config $(SEG_CFG) --ckpt $(SEG_CKPT) --work-dir $(SEG_WORK) \
	  --data $(if $(SEG_DATA),$(SEG_DATA),$(MINI)/VOCdevkit) $(SEG_ARGS)
