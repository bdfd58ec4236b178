##@ Pretraining | EXP (default lewel_m), DATA (a real ImageNet root; empty: the mini data), OUT (default runs/EXP), ARGS (key=value config overrides), RUNS ($LEWEL_RUNS_DIR or runs/), NPROC, LAUNCHER
# Self-supervised pretraining (pretrain/): MoCo v2, BYOL, LEWEL_M, LEWEL_B, CGH, MCL.
#   make pretrain EXP=lewel_m                       mini data (config lewel_m_mini), runs/lewel_m/
#   make pretrain EXP=lewel_b DATA=/path/imagenet   IN-1K config lewel_b (also lewel_b_400ep, lewel_m_in100, ...)
#   make pretrain EXP=lewel_b OUT=runs/x ARGS="epochs=100 optim.name=lars" NPROC=2
# Without DATA, EXP names a recipe with a mini version (lewel_m -> pretrain/configs/lewel_m_mini.yaml); with
# DATA it names a full-data config. The target says which config it runs; an unknown EXP lists the names.
# Re-running the same command resumes from OUT/checkpoint.pth (a folder of another run is refused).
PRETRAIN_OUT  = $(or $(OUT),$(RUNS)/$(EXP))
PRETRAIN_DATA = $(if $(DATA),$(DATA),$(MINI)/imagenet)

.PHONY: pretrain
pretrain: $(STAMP) $(if $(DATA),,$(MINI_STAMP)) ## pretrain EXP (mini data unless DATA=...) into OUT (default runs/EXP)
	@cfg=$$($(PY) -m pretrain.experiments resolve '$(EXP)' $(if $(DATA),--full)) || exit 2; \
	echo "make pretrain: EXP=$(EXP) $(if $(DATA),with DATA=$(DATA): the full-data config $$cfg,on the embedded mini data: config $$cfg (with DATA=/path: the full-data config $(EXP)))"; \
	set -x; $(RUN) pretrain "$$cfg" --exp "$(EXP)" --data "$(PRETRAIN_DATA)" --out "$(PRETRAIN_OUT)" $(ARGS)
