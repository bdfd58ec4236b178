# Detection transfer: Table 3 (VOC07+12 Faster R-CNN R50-C4) and Table 4/8 (COCO Mask R-CNN).
#   make eval-voc-det EXP=lewel_b                    Faster R-CNN R50-C4 + extra BN, VOC07+12 -> VOC07 test
#   make eval-coco    EXP=lewel_b ARCH=c4 SCHED=1x   Mask R-CNN R50-C4 1x (ARCH=fpn SCHED=1x|2x: R50-FPN SyncBN)
# CKPT=path|random:resnet50 overrides runs/<EXP>/backbone.pth. VOC_DATA / COCO_DATA (else DATA) is a real
# VOCdevkit / COCO root with the paper's configs; empty = the embedded mini data with the mini_* configs.
# BACKEND=detectron2|torchvision (default auto: detectron2 when importable, else torchvision, logged).
# SEEDS=5 runs seeds 0..4 (one folder and one record each; MoCo averages VOC over runs). ARGS adds key=value
# config overrides (e.g. ARGS="solver.base_lr=0.03"; detectron2-only overrides: ARGS="--d2-opt KEY=VALUE").
# Each run has its own folder per identity (runs/<checkpoint>/eval_detection/...; OUT=dir: OUT/s<seed>);
# re-running resumes from its last.pth, or reports a finished run.
SEEDS    ?= 1
BACKEND  ?= auto
ARCH     ?= c4
SCHED    ?= 1x
DET_CKPT      = $(or $(CKPT),$(RUNS)/$(EXP)/backbone.pth)
DET_VOC_DATA  = $(or $(VOC_DATA),$(DATA))
DET_COCO_DATA = $(or $(COCO_DATA),$(DATA))
DET_VOC_CFG  ?= $(if $(DET_VOC_DATA),,mini_)voc_c4_24k
DET_COCO_CFG ?= $(if $(DET_COCO_DATA),,mini_)coco_$(ARCH)_$(SCHED)
# $(call _det_runs,<config>,<data root>,<given data>)
_det_runs = @set -e; for s in $$(seq 0 $$(( $(SEEDS) - 1 ))); do \
	  echo "== detection: config $(1) on $(if $(3),$(2),the embedded mini data (DATA=<root>: the paper's protocol)), seed $$s ($(DET_CKPT), backend $(BACKEND))"; \
	  $(RUN) eval_detection --config $(1) --ckpt $(DET_CKPT) --data $(2) --seed $$s --backend $(BACKEND) \
	    $(if $(OUT),--out $(OUT)/s$$s) $(ARGS); \
	done

.PHONY: eval-voc-det eval-coco eval-detection
eval-voc-det: $(STAMP) $(if $(DET_VOC_DATA),,$(MINI_STAMP)) ## VOC07+12 Faster R-CNN R50-C4 of CKPT (SEEDS=5, BACKEND=, DATA=VOCdevkit)
	$(call _det_runs,$(DET_VOC_CFG),$(or $(DET_VOC_DATA),$(MINI)/VOCdevkit),$(DET_VOC_DATA))

eval-coco: $(STAMP) $(if $(DET_COCO_DATA),,$(MINI_STAMP)) ## COCO Mask R-CNN of CKPT: ARCH=c4|fpn SCHED=1x|2x (DATA=COCO root)
	@case "$(ARCH)-$(SCHED)" in c4-1x|fpn-1x|fpn-2x) ;; *) echo "ARCH/SCHED must be c4/1x, fpn/1x or fpn/2x (the paper's protocols), got $(ARCH)/$(SCHED)" >&2; exit 2;; esac
	$(call _det_runs,$(DET_COCO_CFG),$(or $(DET_COCO_DATA),$(MINI)/coco),$(DET_COCO_DATA))

eval-detection: eval-voc-det ## VOC detection, COCO C4 1x and FPN 1x of CKPT
	$(MAKE) --no-print-directory eval-coco ARCH=c4 SCHED=1x
	$(MAKE) --no-print-directory eval-coco ARCH=fpn SCHED=1x
