"""What the segmentation evaluation is, for the tables, the report and the chain (:mod:`lewel_bench.declare`)."""
from lewel_bench.declare import Evaluation, Knob, Step

#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 1

EVALUATIONS = (
    Evaluation(
        name="voc_seg", version=PROTOCOL_VERSION, cli="eval_segmentation", protocols=("fcn_d8_20k",),
        metrics=("mIoU", "aAcc"), primary="mIoU", data_var="VOC_DATA", mini_data="VOCdevkit",
        steps=(Step("voc-seg", "fcn_d8_20k", config="voc12aug", mini="mini"),),
        knobs=(Knob("LRS", sweep="optim_wrapper.optimizer.lr",
                    doc="the paper's search for the fine-tuning lr: one run per value, the tables take the best"),),
        doc="FCN-R50-D8 on VOC12 train + aug through mmsegmentation (mIoU %)",
    ),
)
