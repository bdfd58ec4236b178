"""What the linear evaluation is, for the tables, the report and the chain (:mod:`lewel_bench.declare`)."""
from lewel_bench.declare import Evaluation, Step

#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 1

EVALUATIONS = (
    Evaluation(
        name="linear", version=PROTOCOL_VERSION, cli="eval_linear",
        protocols=("lewel_b_sgd", "lewel_m_lars", "cgh_sgd", "mcl_sgd", "mini"),
        metrics=("top1", "top5"), primary="top1",
        # on real data `auto`: the paper's recipe for the checkpoint's method (configs/_recipes.yaml); a method's
        # chain may name its own (`config: mcl_sgd`); the mini data has one recipe for all
        steps=(Step("linear", "lewel_b_sgd", config="auto", mini="mini"),
               Step("linear-hyper", "lewel_b_sgd", config="auto", mini="mini", args=("feature=hypercolumn",))),
        options={"feature": "feature={}"},
        doc="linear probe of the frozen backbone (top-1 / top-5 %); the record's `feature` says its input",
    ),
)
