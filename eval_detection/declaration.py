"""What the detection evaluations are, for the tables, the report and the chain (:mod:`lewel_bench.declare`).

One stage, two record names: ``voc_det`` (Faster R-CNN C4 on VOC07+12) and ``coco`` (Mask R-CNN C4 / FPN,
RetinaNet on COCO); every protocol has a config ``<config>`` and a ``mini_<config>`` for the embedded mini data.
"""
from lewel_bench.declare import Evaluation, Knob, Step

#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 2

_COCO = ("c4_1x", "c4_2x", "fpn_1x", "fpn_2x", "retinanet_1x", "retinanet_2x", "retinanet_6x")
_KNOBS = (Knob("SEEDS", seeds=True, doc="runs seeds 0 .. SEEDS-1 (one folder and one record each)"),
          Knob("BACKEND", flag="--backend", doc="detectron2 | torchvision | auto"))

EVALUATIONS = (
    Evaluation(
        name="voc_det", version=PROTOCOL_VERSION, cli="eval_detection", protocols=("c4_24k",),
        metrics=("AP", "AP50", "AP75"), primary="AP", data_var="VOC_DATA", mini_data="VOCdevkit",
        steps=(Step("voc-det", "c4_24k", config="voc_c4_24k", mini="mini_voc_c4_24k"),),
        options={"transfer": "--transfer {}"}, knobs=_KNOBS,
        doc="Faster R-CNN R50-C4 on VOC07+12, tested on VOC07 (AP %)",
    ),
    Evaluation(
        name="coco", version=PROTOCOL_VERSION, cli="eval_detection", protocols=_COCO,
        metrics=("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"), primary="bbox_AP",
        data_var="COCO_DATA", mini_data="coco",
        steps=tuple(Step("coco-" + p.replace("_", "-"), p, config=f"coco_{p}", mini=f"mini_coco_{p}") for p in _COCO),
        options={"transfer": "--transfer {}"},
        knobs=_KNOBS + (Knob("MAX_SIZE_TRAIN", override="model.max_size_train",
                             doc="the longest training image side (MCL's C4 configs: 1200)"),),
        doc="Mask R-CNN R50-C4 / R50-FPN and RetinaNet R50-FPN on COCO (box / mask AP %; RetinaNet: box only)",
    ),
)
