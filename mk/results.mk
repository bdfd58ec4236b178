# Results: the paper's tables from results/records/, and figures.
#   make tables                       results/tables/*.csv + README.md (STRICT=1: fail on unmatched records)
#   make figures EXP=lewel_b          loss / kNN curves of runs/EXP/metrics.jsonl and the Fig. 5 alignment maps
#   make curves EXP=lewel_b           only the curves
#   make align-maps EXP=lewel_b       only Fig. 5 (LEWEL checkpoints; ALIGN_IMAGES= a folder of images)
TABLES_ARGS  ?=
STRICT       ?=
FIGURES_DIR  ?= results/figures
ALIGN_CKPT   ?= $(RUNS)/$(EXP)/checkpoint.pth
ALIGN_IMAGES ?= $(MINI)/imagenet/val
ALIGN_ARGS   ?=

.PHONY: tables figures curves align-maps
tables: $(STAMP) ## aggregate results/records into the paper's Tables 1-8 (results/tables/*.csv, README.md)
	$(RUN) tools.make_tables $(if $(filter 1 yes true,$(STRICT)),--strict) $(TABLES_ARGS)

curves: $(STAMP) ## loss and kNN accuracy curves of runs/EXP/metrics.jsonl -> results/figures/
	$(PY) -m tools.plot_curves $(RUNS)/$(EXP)/metrics.jsonl $(FIGURES_DIR)/$(EXP)_curves.png

align-maps: $(STAMP) ## Fig. 5: input, augmented view, strongest alignment maps of a LEWEL checkpoint
	$(PY) -m tools.visualize_alignment $(ALIGN_CKPT) $(ALIGN_IMAGES) $(FIGURES_DIR)/$(EXP)_alignment.png $(ALIGN_ARGS)

figures: curves align-maps ## every figure for EXP
