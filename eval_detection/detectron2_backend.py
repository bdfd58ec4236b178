"""detectron2 backend (the paper's code base) for clusters where detectron2 is installed.

The stand-alone entry point is ``python -m eval_detection.train_net`` (detectron2's usual name); this
module is the glue ``python -m eval_detection --backend detectron2`` runs.

detectron2 is not on PyPI. Install it on a GPU node from its git repository, built against the
cluster's torch / CUDA (about 5-10 minutes)::

    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'

(or ``git clone`` it and ``pip install --no-build-isolation -e detectron2``; see detectron2's
INSTALL.md for the torch / CUDA combinations it supports). Everything here imports detectron2 lazily,
so the rest of lewel-bench works without it.

What this module registers for ``configs/detectron2/*.yaml``:

* ``Res5ROIHeadsExtraNorm``: detectron2's ``Res5ROIHeads`` with an extra norm layer (the config's
  ``RESNETS.NORM``) after res5, as in MoCo's detection code;
* the datasets named in the configs (``voc_2007_trainval``, ``voc_2012_trainval``, ``voc_2007_test``,
  ``coco_2017_train``, ``coco_2017_val``) re-registered at ``--data`` (detectron2's built-in ones
  read ``$DETECTRON2_DATASETS``), with the class names of the run (VOC's 20 or the mini shapes).

Usage (normally through ``python -m eval_detection --backend detectron2 ...`` / ``make eval-voc-det``)::

    python -m eval_detection.train_net --config-file eval_detection/configs/detectron2/voc_R_50_C4_24k.yaml \\
        --ckpt runs/lewel_b/backbone.pth --data /datasets/VOCdevkit --out runs/lewel_b/detection/voc --num-gpus 8

It converts the checkpoint (:mod:`lewel_bench.transfer.detectron2`), trains, evaluates with detectron2's
``PascalVOCDetectionEvaluator`` / ``COCOEvaluator`` and writes ``metrics.json`` and a result record.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

D2_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "detectron2"
INSTALL_HINT = ("detectron2 is not installed. It is not on PyPI: on a GPU node with the cluster's torch/CUDA, run\n"
                "    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
                "(see detectron2's INSTALL.md), or use --backend torchvision (same layout, schedule and metrics).")


def require_detectron2() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{INSTALL_HINT}\n(import error: {e})") from None


_REGISTERED = False


def register_extra_norm_head() -> None:
    """Register ``Res5ROIHeadsExtraNorm`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:
        @ROI_HEADS_REGISTRY.register()
        class Res5ROIHeadsExtraNorm(Res5ROIHeads):  # noqa: F811 - registered by name
            """Res5ROIHeads + a norm layer after res5 (MoCo's detection transfer)."""

            def __init__(self, cfg, input_shape):  # noqa: ANN001 - detectron2's signature
                super().__init__(cfg, input_shape)
                self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))
    _REGISTERED = True


def setup_cfg(config_file: str | Path, opts: Sequence[str]) -> Any:
    """detectron2 ``CfgNode`` from one of our config files plus ``KEY VALUE`` overrides."""
    require_detectron2()
    register_extra_norm_head()
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def register_datasets(root: Path, fmt: str, class_names: Sequence[str], cfg: Any) -> None:
    """(Re-)register the dataset names used by ``cfg`` at ``root``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if fmt == "voc":
            from detectron2.data.datasets.pascal_voc import register_pascal_voc

            _, year, split = name.split("_", 2)  # voc_2007_trainval
            register_pascal_voc(name, str(root / f"VOC{year}"), split, int(year), list(class_names))
        else:
            from detectron2.data.datasets import register_coco_instances

            split = name.split("_")[-1]  # coco_2017_train
            register_coco_instances(name, {}, str(root / "annotations" / f"instances_{split}2017.json"),
                                    str(root / f"{split}2017"))


def _trainer_cls() -> Any:
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):  # noqa: ANN001, ANN206
            if "voc" in dataset_name:
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

        def build_writers(self):  # noqa: ANN201 - no TensorBoard writer: tensorboard is not a dependency
            return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"))]

    return Trainer


def _worker(cfg_file: str, opts: list[str], root: str, fmt: str, class_names: list[str], out: str) -> None:
    """One detectron2 process: register, train (resuming), evaluate once; rank 0 writes ``d2_results.json``
    with the results and the config that ran (``cfg.dump()``).

    ``DefaultTrainer.train()`` evaluates the test set itself when training ends (its ``EvalHook``) and keeps
    the results in ``trainer._last_eval_results`` (main process; ``{}`` elsewhere); calling ``Trainer.test``
    again would evaluate a second time. A resumed finished run evaluates its final model once.
    """
    from detectron2.engine import default_setup
    from detectron2.utils import comm

    cfg = setup_cfg(cfg_file, opts)
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=cfg_file, opts=opts, eval_only=False, resume=True))
    register_datasets(Path(root), fmt, class_names, cfg)
    Trainer = _trainer_cls()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    res = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process():
        from lewel_bench.io import atomic_write_json

        if not res:
            raise RuntimeError("detectron2 finished training without evaluation results (EvalHook did not run)")
        atomic_write_json(Path(out) / "d2_results.json", {"results": {k: dict(v) for k, v in res.items()},
                                                         "config": cfg.dump()})


def d2_metrics(res: dict, eval_name: str) -> dict[str, float]:
    """detectron2's result dict -> our metric keys (percentages, as detectron2 reports them)."""
    if eval_name == "voc_det":
        return {k: float(res["bbox"][k]) for k in ("AP", "AP50", "AP75")}
    out = {}
    for t in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75"):
            if t in res:
                out[f"{t}_{k}"] = float(res[t][k])
    return out


def d2_opts_for(tv_cfg: dict, class_names: Sequence[str], weights: Path, out: Path, seed: int) -> list[str]:
    """Overrides that bind a protocol config to this run (weights, output, seed, classes; mini sizes)."""
    import torch

    opts = ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out), "SEED", str(seed),
            "MODEL.ROI_HEADS.NUM_CLASSES", str(len(class_names))]
    if not torch.cuda.is_available():  # a CPU smoke run: SyncBN needs GPUs, plain BN instead
        opts += ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN"]
        if str(tv_cfg["protocol"]).startswith("fpn"):
            opts += ["MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "BN", "MODEL.ROI_MASK_HEAD.NORM", "BN"]
    if tv_cfg.get("dataset") == "mini":  # the mini protocol's sizes and schedule
        m, s = tv_cfg["model"], tv_cfg["solver"]
        opts += ["INPUT.MIN_SIZE_TRAIN", str(tuple(m["min_size_train"])), "INPUT.MIN_SIZE_TEST", str(m["min_size_test"]),
                 "INPUT.MAX_SIZE_TRAIN", str(m["max_size"]), "INPUT.MAX_SIZE_TEST", str(m["max_size"]),
                 "SOLVER.IMS_PER_BATCH", str(s["ims_per_batch"]), "SOLVER.BASE_LR", str(s["base_lr"]),
                 "SOLVER.MAX_ITER", str(s["max_iter"]), "SOLVER.STEPS", str(tuple(s["steps"])),
                 "SOLVER.WARMUP_ITERS", str(s["warmup_iters"]), "SOLVER.CHECKPOINT_PERIOD", str(s["checkpoint_period"]),
                 "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(m["roi_batch_per_image"]),
                 "MODEL.RPN.BATCH_SIZE_PER_IMAGE", str(m["rpn_batch_per_image"]),
                 "TEST.DETECTIONS_PER_IMAGE", str(m["detections_per_img"]),
                 "TEST.PRECISE_BN.NUM_ITER", str(tv_cfg.get("test", {}).get("precise_bn_iters", 20) or 1),
                 "DATALOADER.NUM_WORKERS", "0"]
        if str(tv_cfg["protocol"]).startswith("fpn"):
            opts += ["MODEL.ANCHOR_GENERATOR.SIZES", str([[a] for a in m["fpn_anchor_sizes"]]),
                     "MODEL.RPN.PRE_NMS_TOPK_TRAIN", str(m["fpn_rpn_pre_nms_train"]),
                     "MODEL.RPN.POST_NMS_TOPK_TRAIN", str(m["fpn_rpn_post_nms_train"]),
                     "MODEL.RPN.PRE_NMS_TOPK_TEST", str(m["fpn_rpn_pre_nms_test"]),
                     "MODEL.RPN.POST_NMS_TOPK_TEST", str(m["fpn_rpn_post_nms_test"])]
        else:
            opts += ["MODEL.ANCHOR_GENERATOR.SIZES", str([list(m["anchor_sizes"])]),
                     "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", str(m["pooler_resolution"]),
                     "MODEL.RPN.PRE_NMS_TOPK_TRAIN", str(m["rpn_pre_nms_train"]),
                     "MODEL.RPN.POST_NMS_TOPK_TRAIN", str(m["rpn_post_nms_train"]),
                     "MODEL.RPN.PRE_NMS_TOPK_TEST", str(m["rpn_pre_nms_test"]),
                     "MODEL.RPN.POST_NMS_TOPK_TEST", str(m["rpn_post_nms_test"])]
    return opts


def run_detectron2(tv_cfg: dict, args: argparse.Namespace, bb: Any, root: Path, out: Path,
                   extra_opts: Sequence[str] = ()) -> tuple[dict[str, float], dict]:
    """Convert ``bb``, run detectron2 on the protocol's config (all local GPUs); returns our metrics and the
    config detectron2 ran (its ``cfg.dump()`` as a dict, with the overrides it was given)."""
    require_detectron2()
    import pickle

    import torch
    from detectron2.engine import launch

    from eval_detection.datasets import resolve_class_names
    from lewel_bench.io import atomic_write_bytes
    from lewel_bench.transfer.detectron2 import to_detectron2

    fmt = tv_cfg["data"]["format"]
    if fmt == "voc":
        class_names = list(resolve_class_names(tv_cfg["data"]["classes"]))
    else:
        doc = json.loads((root / tv_cfg["data"]["train"]["ann"]).read_text())
        class_names = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    weights = atomic_write_bytes(out / "backbone_d2.pkl", pickle.dumps(to_detectron2(bb)))
    cfg_file = str(D2_CONFIG_DIR / tv_cfg["detectron2_config"])
    opts = d2_opts_for(tv_cfg, class_names, weights, out, args.seed) + list(extra_opts)
    gpus = max(1, torch.cuda.device_count())
    log.info("detectron2: %s on %d %s, opts %s", cfg_file, gpus, "GPU(s)" if torch.cuda.is_available() else "CPU", opts)
    launch(_worker, gpus, num_machines=1, machine_rank=0, dist_url="auto",
           args=(cfg_file, opts, str(root), fmt, class_names, str(out)))
    import yaml

    res = json.loads((out / "d2_results.json").read_text())
    ran = {"detectron2": yaml.safe_load(res["config"]), "detectron2_config_file": cfg_file, "detectron2_opts": opts}
    return d2_metrics(res["results"], tv_cfg["eval"]), ran
