##@ Evaluations | VOC_DATA, COCO_DATA, ARCH, SCHED, TRANSFER, SEEDS, BACKEND, MAX_SIZE_TRAIN, DET_VOC_CFG, DET_COCO_CFG
# Detection transfer: Table 3 (VOC07+12 Faster R-CNN R50-C4), Table 4/8 (COCO Mask R-CNN) and MCL's Tables 11/12.
#   make eval-voc-det EXP=lewel_b                         Faster R-CNN R50-C4 + extra BN, VOC07+12 -> VOC07 test
#   make eval-coco    EXP=lewel_b ARCH=c4 SCHED=1x|2x     Mask R-CNN R50-C4 (+ extra BN), 1x / 2x
#   make eval-coco    EXP=lewel_b ARCH=fpn SCHED=1x|2x    Mask R-CNN R50-FPN SyncBN
#   make eval-coco    EXP=mcl ARCH=retinanet SCHED=1x|2x|6x TRANSFER=bundle   RetinaNet R50-FPN (MCL Table 11)
# CKPT=path|random:resnet50|supervised:/path/resnet50.pth overrides runs/<EXP>/backbone.pth (supervised: a
# torchvision ImageNet classifier's weights you provide; nothing is downloaded; a published checkpoint's encoder:
# CKPT_PREFIX / CKPT_LAYOUT, see mk/checkpoint.mk). VOC_DATA / COCO_DATA (else
# DATA) is a real VOCdevkit / COCO root with the paper's configs; empty = the embedded mini data with the
# mini_* configs. TRANSFER=trunk (default: the ResNet alone, the LEWEL / MoCo protocol) | bundle (also the
# checkpoint's FPN and, for ARCH=fpn, its 4-conv box head, as MCL's converter loads them; ARCH=c4 has none).
# MAX_SIZE_TRAIN=1200: MCL's C4 training size limit (INPUT.MAX_SIZE_TRAIN; default 1333, the test size).
# BACKEND=detectron2|torchvision (default auto: detectron2 when importable, else torchvision, logged).
# SEEDS=5 runs seeds 0..4 (one folder and one record each; MoCo averages VOC over runs). ARGS adds key=value
# config overrides (e.g. ARGS="solver.base_lr=0.03"; detectron2-only overrides: ARGS="--d2-opt KEY=VALUE").
# Each run has its own folder per identity (runs/<checkpoint>/eval_detection/...; OUT=dir: OUT/s<seed>);
# re-running resumes from its last.pth, or reports a finished run.
SEEDS    ?= 1
BACKEND  ?= auto
ARCH     ?= c4
SCHED    ?= 1x
TRANSFER ?= trunk
MAX_SIZE_TRAIN ?=
# the COCO protocols: ARCH-SCHED pairs with a config (coco_<arch>_<sched>, mini_coco_<arch>_<sched>)
DET_COCO_PROTOCOLS = c4-1x c4-2x fpn-1x fpn-2x retinanet-1x retinanet-2x retinanet-6x
DET_CKPT      = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
DET_VOC_DATA  = $(or $(VOC_DATA),$(DATA))
DET_COCO_DATA = $(or $(COCO_DATA),$(DATA))
DET_VOC_CFG  ?= $(if $(DET_VOC_DATA),,mini_)voc_c4_24k
DET_COCO_CFG ?= $(if $(DET_COCO_DATA),,mini_)coco_$(ARCH)_$(SCHED)
# Checked when the targets are asked for (a dry run `make -n` says so too).
ifneq ($(filter eval-coco eval-voc-det eval-detection,$(MAKECMDGOALS)),)
$(call _posint,SEEDS,$(SEEDS))
ifeq ($(filter trunk bundle,$(TRANSFER)),)
$(error TRANSFER must be trunk or bundle, got '$(TRANSFER)')
endif
endif
ifneq ($(filter eval-coco,$(MAKECMDGOALS)),)
ifeq ($(filter $(ARCH)-$(SCHED),$(DET_COCO_PROTOCOLS)),)
$(error ARCH-SCHED must be one of $(DET_COCO_PROTOCOLS) (the papers' protocols), got $(ARCH)-$(SCHED))
endif
endif
# $(call _det_runs,<config>,<data root>,<given data>,<extra key=value>)
_det_runs = @set -e; for s in $$(seq 0 $$(( $(SEEDS) - 1 ))); do \
	  echo "== detection: config $(1) on $(if $(3),$(2),the embedded mini data (DATA=<root>: the paper's protocol)), seed $$s ($(DET_CKPT), transfer $(TRANSFER), backend $(BACKEND))"; \
	  $(RUN) eval_detection --config "$(1)" --ckpt "$(DET_CKPT)" $(CKPT_FLAGS) --data "$(2)" --seed $$s --backend $(BACKEND) \
	    --transfer $(TRANSFER) $(if $(OUT),--out "$(OUT)/s$$s") $(ROW_ARG) $(4) $(ARGS); \
	done

.PHONY: eval-voc-det eval-coco eval-detection
eval-voc-det: $(STAMP) $(if $(DET_VOC_DATA),,$(MINI_STAMP)) ## VOC07+12 Faster R-CNN R50-C4 of CKPT (SEEDS=5, BACKEND=, DATA=VOCdevkit)
	$(call _det_runs,$(DET_VOC_CFG),$(or $(DET_VOC_DATA),$(MINI)/VOCdevkit),$(DET_VOC_DATA))

eval-coco: $(STAMP) $(if $(DET_COCO_DATA),,$(MINI_STAMP)) ## COCO detection of CKPT: ARCH=c4|fpn SCHED=1x|2x, ARCH=retinanet SCHED=1x|2x|6x; TRANSFER=trunk|bundle
	$(call _det_runs,$(DET_COCO_CFG),$(or $(DET_COCO_DATA),$(MINI)/coco),$(DET_COCO_DATA),$(if $(MAX_SIZE_TRAIN),model.max_size_train=$(MAX_SIZE_TRAIN)))

eval-detection: eval-voc-det ## VOC detection, COCO C4 1x and FPN 1x of CKPT
	$(MAKE) --no-print-directory eval-coco ARCH=c4 SCHED=1x
	$(MAKE) --no-print-directory eval-coco ARCH=fpn SCHED=1x
