##@ Tables and report | STRICT, TABLES_ARGS, REPORT_DIR, REPORT_ARGS, BENCH, FIGURES_DIR, ALIGN_CKPT, ALIGN_IMAGES, ALIGN_ARGS, TB_PORT, RUNS
# Results: the paper's tables from results/records/, figures, and the report page.
#   make tables                       results/tables/*.csv + README.md (STRICT=1: fail on unmatched records)
#   make report                       results/report/index.html: tables, run index, curves, alignment maps, costs
#   make figures EXP=lewel_b          loss / kNN curves of runs/EXP/metrics.jsonl and the Fig. 5 alignment maps
#   make curves EXP=lewel_b           only the curves (random-init kNN line from the records of the same data)
#   make tensorboard                  TensorBoard on the runs folder (every run's <out>/tb; TB_PORT=6006)
#   make align-maps EXP=lewel_b       only Fig. 5 (LEWEL checkpoints; images: the val split of the checkpoint's
#                                     pretraining data, or ALIGN_IMAGES= a folder of images)
TABLES_ARGS  ?=
STRICT       ?=
FIGURES_DIR  ?= results/figures
ALIGN_CKPT   ?= $(RUNS)/$(EXP)/checkpoint.pth
ALIGN_IMAGES ?=
ALIGN_ARGS   ?=
REPORT_DIR   ?= results/report
BENCH        ?=
REPORT_ARGS  ?=
TB_PORT      ?= 6006

.PHONY: tables figures curves align-maps report tensorboard
tables: $(STAMP) ## aggregate results/records into the paper's Tables 1-8 (results/tables/*.csv, README.md)
	$(RUN) tools.make_tables $(if $(filter 1 yes true,$(STRICT)),--strict) $(TABLES_ARGS)

curves: $(STAMP) ## loss, lr, EMA momentum and kNN curves of runs/EXP/metrics.jsonl -> results/figures/
	$(PY) -m tools.plot_curves "$(RUNS)/$(EXP)/metrics.jsonl" "$(FIGURES_DIR)/$(EXP)_curves.png"

align-maps: $(STAMP) ## Fig. 5: image, augmented view, strongest alignment maps of a LEWEL checkpoint
	$(PY) -m tools.visualize_alignment "$(ALIGN_CKPT)" $(if $(ALIGN_IMAGES),"$(ALIGN_IMAGES)") "$(FIGURES_DIR)/$(EXP)_alignment.png" $(ALIGN_ARGS)

figures: curves align-maps ## every figure for EXP

# One static page (no server; opens offline): docs/report.md. BENCH=file.json adds a benchmark's cost ratios.
report: $(STAMP) ## the report page: tables, run index, curves, alignment maps -> results/report/index.html
	$(PY) -m tools.make_report --runs "$(RUNS)" --out "$(REPORT_DIR)" $(if $(BENCH),--bench "$(BENCH)") $(REPORT_ARGS)

tensorboard: $(STAMP) ## TensorBoard on RUNS (pretraining and evaluation scalars, LEWEL alignment maps); TB_PORT=6006
	$(PY) -m tensorboard.main --logdir "$(RUNS)" --port $(TB_PORT)
