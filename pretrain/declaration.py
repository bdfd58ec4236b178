"""The records the pretraining stage writes itself (:mod:`lewel_bench.declare`): its training speed, and the step
cost ``tools.bench_pretrain --record`` measures. The chain does not run them as evaluations."""
from lewel_bench.declare import Evaluation

EVALUATIONS = (
    Evaluation(name="pretrain", version=1, protocols=("time_per_epoch",),
               metrics=("time_per_epoch_s", "images_per_s"), primary="images_per_s", tables_optional=True,
               doc="seconds per epoch of a pretraining run, from its median images/s (LEWEL Table 9)"),
    Evaluation(name="cost", version=1, protocols=("step_time",),
               metrics=("time_rel", "flops_rel", "step_s", "images_per_s"), primary="images_per_s",
               doc="a method's training step time relative to supervised (tools.bench_pretrain --record)"),
)
