# Self-supervised pretraining (pretrain/): MoCo v2, BYOL, LEWEL_M, LEWEL_B.
#   make pretrain EXP=lewel_m                       mini data (config lewel_m_mini), runs/lewel_m/
#   make pretrain EXP=lewel_b DATA=/path/imagenet   IN-1K config lewel_b (also lewel_b_400ep, lewel_m_in100, ...)
#   make pretrain EXP=lewel_b OUT=runs/x ARGS="epochs=100 optim.name=lars" NPROC=2
# Re-running the same command resumes from OUT/checkpoint.pth. Configs: pretrain/configs/<name>.yaml.
#   make bench-pretrain                             per-method step time and ratios (BENCH_ARGS=...)
#   make bench-loader                               two-view loader images/s, PIL vs batched (BENCH_LOADER_ARGS=...)
EXP  ?= lewel_m
DATA ?=
OUT  ?= runs/$(EXP)
ARGS ?=
PRETRAIN_CFG  = $(if $(DATA),$(EXP),$(EXP)_mini)
PRETRAIN_DATA = $(if $(DATA),$(DATA),$(MINI)/imagenet)
BENCH_ARGS ?=
BENCH_LOADER_ARGS ?= --synthetic 1024 --workers 1 2

.PHONY: pretrain bench-pretrain bench-loader
pretrain: $(STAMP) $(if $(DATA),,$(MINI_STAMP)) ## pretrain EXP (mini data unless DATA=...) into OUT (default runs/EXP)
	@test -f pretrain/configs/$(PRETRAIN_CFG).yaml || { echo "make pretrain: unknown EXP '$(EXP)': no pretrain/configs/$(PRETRAIN_CFG).yaml; available: $$(ls pretrain/configs | grep -v '^_' | sed 's/.yaml$$//' | tr '\n' ' ')" >&2; exit 2; }
	$(RUN) pretrain $(PRETRAIN_CFG) --data $(PRETRAIN_DATA) --out $(OUT) $(ARGS)

bench-pretrain: $(STAMP) ## step time of supervised / MoCo v2 / LEWEL_M / BYOL / LEWEL_B and their ratios
	$(PY) -m tools.bench_pretrain $(BENCH_ARGS)

bench-loader: $(STAMP) ## images/s of the pretraining loader: PIL pipeline vs batched photometric ops
	$(PY) -m tools.bench_loader $(BENCH_LOADER_ARGS)
