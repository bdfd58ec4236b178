"""What the semi-supervised evaluation is, for the tables, the report and the chain (:mod:`lewel_bench.declare`)."""
from lewel_bench.declare import Evaluation, Knob, Step

#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 1

EVALUATIONS = (
    Evaluation(
        name="semisup", version=PROTOCOL_VERSION, cli="eval_semisup", protocols=("1pct", "10pct"),
        metrics=("top1", "top5"), primary="top1",
        steps=(Step("semisup1", "1pct", config="1pct", mini="mini_1pct"),
               Step("semisup10", "10pct", config="10pct", mini="mini_10pct")),
        knobs=(Knob("SUBSET", flag="--subset", doc="the SimCLR split file (1percent.txt / 10percent.txt)"),),
        doc="fine-tuning on 1 % / 10 % of the labels (top-1 / top-5 %)",
    ),
)
