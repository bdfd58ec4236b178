##@ Set-up | IMAGENET (an ImageNet-1k root), OUT (the new ImageNet-100 folder), ARGS
# ImageNet-100 (the 100 CMC classes of the LEWEL ablations, Sec. 4.4) as symlinks into an ImageNet-1k root.
#   make in100 IMAGENET=/path/imagenet OUT=/path/imagenet100     then: make pretrain EXP=lewel_b_in100 DATA=/path/imagenet100
# OUT must be new, empty or a previous build of the same source (a no-op); the class list is
# lewel_bench/data/imagenet100.txt. ARGS adds CLI args, e.g. ARGS="--splits train".
IMAGENET   ?=

.PHONY: in100
in100: $(STAMP) ## ImageNet-100 (CMC classes) as symlinks: IMAGENET=<ImageNet-1k root> OUT=<new folder>
	@test -n "$(IMAGENET)" -a -n "$(OUT)" || { echo "usage: make in100 IMAGENET=<ImageNet-1k root with train/ val/> OUT=<new or empty folder>" >&2; exit 2; }
	$(PY) -m tools.make_in100 --imagenet "$(IMAGENET)" --out "$(OUT)" $(ARGS)
