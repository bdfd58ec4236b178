##@ Benchmarks | BENCH_RECORDS (where records go; default docs/benchmarks/records, empty: none), BENCH_ARGS, BENCH_LOADER_ARGS, BENCH_E2E_ARGS, BENCH_THREADS_ARGS, BENCH_NAME, BENCH_NOTE, CMD, CLONE=1
# Speed benchmarks and timed commands. Each writes a benchmark record (machine, date, commit, the exact command, its
# numbers) into BENCH_RECORDS and re-renders docs/benchmarks.md from the records (lewel_bench/benchmarks.py).
#   make bench-pretrain                             per-method step time and ratios (BENCH_ARGS=...)
#   make bench-loader                               two-view loader images/s, PIL vs batched (BENCH_LOADER_ARGS=...)
#   make bench-e2e                                  the real loader feeding the real step per method (GPU node;
#                                                   BENCH_E2E_ARGS="--iters 300 --workers 15 --json bench.json")
#   make bench-threads                              mini run alone vs beside a competing process, per thread policy
#   make bench-command BENCH_NAME=setup-test CLONE=1 CMD="make test"
#                                                   time any command (in a fresh clone with CLONE=1) and record the
#                                                   result records it wrote (the README's times, the mini results)
#   make benchmarks-page                            docs/benchmarks.md and the README's measured spans from the records
# BENCH_NOTE="short run" is shown with the numbers on the page.
BENCH_RECORDS     ?= docs/benchmarks/records
BENCH_NOTE        ?=
BENCH_NAME        ?=
CMD               ?=
CLONE             ?=
BENCH_ARGS        ?=
BENCH_LOADER_ARGS ?= --synthetic 1024 --workers 1 2 --batch 32
BENCH_E2E_ARGS    ?= --synthetic 4096
BENCH_THREADS_ARGS ?=
_bench_rec  = $(if $(BENCH_RECORDS),--bench-record "$(BENCH_RECORDS)" $(if $(BENCH_NOTE),--bench-note $(call _sq,$(BENCH_NOTE))) \
  $(if $(BENCH_NAME),--bench-name $(call _sq,$(BENCH_NAME))))
_bench_page = $(if $(BENCH_RECORDS),$(PY) -m tools.bench_page --records "$(BENCH_RECORDS)")

.PHONY: bench-pretrain bench-loader bench-e2e bench-threads bench-command benchmarks-page
bench-pretrain: $(STAMP) ## step time of supervised and of every method, and the ratios their configs declare (paper.cost)
	$(PY) -m tools.bench_pretrain $(BENCH_ARGS) $(_bench_rec)
	$(_bench_page)

bench-loader: $(STAMP) ## images/s of the pretraining loader: PIL pipeline vs batched photometric ops
	$(PY) -m tools.bench_loader $(BENCH_LOADER_ARGS) $(_bench_rec)
	$(_bench_page)

bench-e2e: $(STAMP) ## images/s, loader wait, device busy, peak memory of loader + step per method (GPU node)
	$(PY) -m tools.bench_e2e $(BENCH_E2E_ARGS) $(_bench_rec)
	$(_bench_page)

bench-threads: $(STAMP) $(MINI_STAMP) ## images/s of a mini run alone and beside a competing process, per thread policy
	$(PY) -m tools.bench_threads $(BENCH_THREADS_ARGS) $(_bench_rec)
	$(_bench_page)

bench-command: $(STAMP) ## time CMD="..." (CLONE=1: in a fresh clone) as record BENCH_NAME, with the result records it wrote
	@if [ -z "$(CMD)" ] || [ -z "$(BENCH_NAME)" ]; then echo "make bench-command: pass BENCH_NAME=<record name> CMD=\"<command>\"" >&2; exit 2; fi
	$(PY) -m tools.bench_command --name $(call _sq,$(BENCH_NAME)) $(if $(filter 1 yes true,$(CLONE)),--clone) \
	  --bench-record "$(or $(BENCH_RECORDS),docs/benchmarks/records)" $(if $(BENCH_NOTE),--bench-note $(call _sq,$(BENCH_NOTE))) -- $(CMD)
	$(_bench_page)

benchmarks-page: $(STAMP) ## docs/benchmarks.md and the README's measured numbers, from the benchmark records
	$(PY) -m tools.bench_page --records "$(or $(BENCH_RECORDS),docs/benchmarks/records)"
