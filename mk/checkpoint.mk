##@ Checkpoints: inspect and convert | CKPT, CKPT_PREFIX (another encoder of the file), CKPT_LAYOUT (the layout of a file that matches several)
# Which encoder of a checkpoint file the evaluations and converters take (every target that reads CKPT passes these).
#   make inspect CKPT=moco_v2_800ep_pretrain.pth.tar      what is in a file: layout, encoders, arch, epochs, parts,
#                                                        non-finite tensors, sha256 (nothing is loaded into a model)
#   make inspect-layouts                                 the known layouts and the encoder each one's authors evaluate
#   make eval-knn CKPT=dino_full.pth CKPT_PREFIX=student.module.backbone.   another encoder than the authors' one
#   make eval-knn CKPT=file.pth CKPT_LAYOUT=moco         the layout of a file that matches several
# By default the encoder taken is the one the file's layout says its authors evaluate (logged; see docs/checkpoints.md).
CKPT_PREFIX ?=
CKPT_LAYOUT ?=
CKPT_FLAGS   = $(if $(CKPT_PREFIX),--ckpt-prefix $(call _sq,$(CKPT_PREFIX))) $(if $(CKPT_LAYOUT),--layout $(call _sq,$(CKPT_LAYOUT)))

.PHONY: inspect inspect-layouts
inspect: $(STAMP) ## what is in CKPT=FILE: layout, encoder candidates, arch, epochs, parts, non-finite tensors, sha256
	@if [ -z "$(CKPT)" ]; then echo "make inspect: pass CKPT=FILE (a checkpoint to describe)" >&2; exit 2; fi
	$(PY) -m tools.inspect_checkpoint "$(CKPT)" $(CKPT_FLAGS)

inspect-layouts: $(STAMP) ## the checkpoint layouts the evaluations read, and the encoder each one's authors evaluate
	$(PY) -m tools.inspect_checkpoint --list
