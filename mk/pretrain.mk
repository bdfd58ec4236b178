# Self-supervised pretraining (pretrain/): MoCo v2, BYOL, LEWEL_M, LEWEL_B, CGH, MCL.
#   make pretrain EXP=lewel_m                       mini data (config lewel_m_mini), runs/lewel_m/
#   make pretrain EXP=lewel_b DATA=/path/imagenet   IN-1K config lewel_b (also lewel_b_400ep, lewel_m_in100, ...)
#   make pretrain EXP=lewel_b OUT=runs/x ARGS="epochs=100 optim.name=lars" NPROC=2
# Without DATA, EXP names a recipe with a mini version (lewel_m -> pretrain/configs/lewel_m_mini.yaml); with
# DATA it names a full-data config. The target says which config it runs; an unknown EXP lists the names.
# Re-running the same command resumes from OUT/checkpoint.pth (a folder of another run is refused).
#   make bench-pretrain                             per-method step time and ratios (BENCH_ARGS=...)
#   make bench-loader                               two-view loader images/s, PIL vs batched (BENCH_LOADER_ARGS=...)
#   make bench-e2e                                  the real loader feeding the real step per method (GPU node;
#                                                   BENCH_E2E_ARGS="--iters 300 --workers 15 --json bench.json")
#   make bench-threads                              mini run alone vs beside a competing process, per thread policy
PRETRAIN_OUT  = $(or $(OUT),$(RUNS)/$(EXP))
PRETRAIN_DATA = $(if $(DATA),$(DATA),$(MINI)/imagenet)
BENCH_ARGS ?=
BENCH_LOADER_ARGS ?= --synthetic 1024 --workers 1 2
BENCH_E2E_ARGS ?= --synthetic 4096
BENCH_THREADS_ARGS ?=

.PHONY: pretrain bench-pretrain bench-loader bench-e2e bench-threads
pretrain: $(STAMP) $(if $(DATA),,$(MINI_STAMP)) ## pretrain EXP (mini data unless DATA=...) into OUT (default runs/EXP)
	@cfg=$$($(PY) -m pretrain.experiments resolve '$(EXP)' $(if $(DATA),--full)) || exit 2; \
	echo "make pretrain: EXP=$(EXP) $(if $(DATA),with DATA=$(DATA): the full-data config $$cfg,on the embedded mini data: config $$cfg (with DATA=/path: the full-data config $(EXP)))"; \
	set -x; $(RUN) pretrain "$$cfg" --exp "$(EXP)" --data "$(PRETRAIN_DATA)" --out "$(PRETRAIN_OUT)" $(ARGS)

bench-pretrain: $(STAMP) ## step time of supervised and of every method, and the ratios their configs declare (paper.cost)
	$(PY) -m tools.bench_pretrain $(BENCH_ARGS)

bench-loader: $(STAMP) ## images/s of the pretraining loader: PIL pipeline vs batched photometric ops
	$(PY) -m tools.bench_loader $(BENCH_LOADER_ARGS)

bench-e2e: $(STAMP) ## images/s, loader wait, device busy, peak memory of loader + step per method (GPU node)
	$(PY) -m tools.bench_e2e $(BENCH_E2E_ARGS)

bench-threads: $(STAMP) $(MINI_STAMP) ## images/s of a mini run alone and beside a competing process, per thread policy
	$(PY) -m tools.bench_threads $(BENCH_THREADS_ARGS)
