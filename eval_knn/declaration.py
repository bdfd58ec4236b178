"""What the kNN evaluation is, for the tables, the report and the chain (:mod:`lewel_bench.declare`)."""
from lewel_bench.declare import Evaluation, Step

#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 1

EVALUATIONS = (
    Evaluation(
        name="knn", version=PROTOCOL_VERSION, cli="eval_knn", protocols=("k20",), metrics=("top1",),
        primary="top1", tables_optional=True, steps=(Step("knn", "k20", config="k20", mini="mini"),),
        doc="weighted kNN (k 20, T 0.07) on the frozen backbone's pooled features (no paper table)",
    ),
)
