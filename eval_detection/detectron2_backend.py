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
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lewel_bench.checkpoint import BackboneError
from lewel_bench.errors import LewelError

log = logging.getLogger(__name__)

D2_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "detectron2"
INSTALL_HINT = ("detectron2 is not installed. It is not on PyPI: on a GPU node with the cluster's torch/CUDA, run "
                "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
                " (see detectron2's INSTALL.md), or use --backend torchvision (same layout, schedule and metrics).")


class Detectron2Missing(LewelError, ImportError):
    """The detectron2 backend was asked for where detectron2 cannot be imported."""


def require_detectron2() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise Detectron2Missing(f"{INSTALL_HINT} (import error: {e})") from None


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
        class Res5ROIHeadsExtraNorm(Res5ROIHeads):  # registered by name (MODEL.ROI_HEADS.NAME)
            """Res5ROIHeads + a norm layer after res5 (MoCo's detection transfer)."""

            def __init__(self, cfg, input_shape):
                super().__init__(cfg, input_shape)
                self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))
    _REGISTERED = True


def setup_cfg(config_file: str | Path, opts: Sequence[str]) -> Any:
    """detectron2 ``CfgNode`` from one of our config files plus ``KEY VALUE`` overrides."""
    require_detectron2()
    register_extra_norm_head()
    from detectron2.config import CfgNode, get_cfg

    cfg = get_cfg()
    cfg.LEWEL = CfgNode(dict(LEWEL_D2_KEYS))  # what the suite adds (the log period of its trainer's writers)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def register_datasets(root: Path, fmt: str, class_names: Sequence[str], cfg: Any,
                      data: dict | None = None) -> None:
    """(Re-)register the dataset names used by ``cfg`` at ``root`` (COCO: the annotation files and image folders of
    the protocol config's ``data``, :func:`d2_dataset_names`)."""
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
            part = (data or {}).get("train" if split == "train" else "test") or \
                {"ann": f"annotations/instances_{split}2017.json", "images": f"{split}2017"}
            register_coco_instances(name, {}, str(root / part["ann"]), str(root / part["images"]))


def _trainer_cls() -> Any:
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            if "voc" in dataset_name:
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

        def build_writers(self):  # no TensorBoard writer: tensorboard is not a dependency
            return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"))]

        def build_hooks(self):  # the writers every solver.log_period iterations (LEWEL.LOG_PERIOD)
            from detectron2.engine import hooks

            out = super().build_hooks()
            for h in out:
                if isinstance(h, hooks.PeriodicWriter):
                    h._period = int(self.cfg.LEWEL.LOG_PERIOD)
            return out

    return Trainer


def _worker(cfg_file: str, opts: list[str], root: str, fmt: str, class_names: list[str], out: str,
            data: dict | None = None) -> None:
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
    register_datasets(Path(root), fmt, class_names, cfg, data)
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


# ------------------------------------------------------------------------------------------------
# the protocol config -> detectron2's keys (every key reaches detectron2 or is refused, naming it)
# ------------------------------------------------------------------------------------------------
_RESNET_NORM, _FPN_NORM = "MODEL.RESNETS.NORM", "MODEL.FPN.NORM"
#: protocol config ``arch`` -> (where its class count goes, the norms a CPU smoke run turns from SyncBN into BN)
D2_ARCH_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "c4": ("MODEL.ROI_HEADS.NUM_CLASSES", (_RESNET_NORM,)),
    "fpn": ("MODEL.ROI_HEADS.NUM_CLASSES",
            (_RESNET_NORM, _FPN_NORM, "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")),
    "retinanet": ("MODEL.RETINANET.NUM_CLASSES", (_RESNET_NORM, _FPN_NORM)),
}
#: protocol config ``arch`` -> the detectron2 file's meta-architecture and backbone (read from the YAML)
D2_FILE_ARCH = {"c4": ("GeneralizedRCNN", "build_resnet_backbone"),
                "fpn": ("GeneralizedRCNN", "build_resnet_fpn_backbone"),
                "retinanet": ("RetinaNet", "build_retinanet_resnet_fpn_backbone")}
_FPN_NORMS = {"none": "", "bn": "SyncBN"}
_HEAD_NORMS = {"none": "", "gn": "GN"}
#: ``model.retinanet_box_loss`` -> (RETINANET.BBOX_REG_LOSS_TYPE, RETINANET.SMOOTH_L1_LOSS_BETA): torchvision's l1 is
#: detectron2's smooth-L1 with beta 0, its smooth_l1 has beta 1/9
_BOX_LOSSES = {"l1": ("smooth_l1", 0.0), "smooth_l1": ("smooth_l1", 1.0 / 9), "giou": ("giou", 0.0)}
#: ``solver.no_decay`` rules detectron2 has a key for (the norm layers' and the biases' weight decay)
_NO_DECAY = {"norm": "SOLVER.WEIGHT_DECAY_NORM", "bias": "SOLVER.WEIGHT_DECAY_BIAS"}
#: Keys of the LEWEL node :func:`setup_cfg` adds to detectron2's config, with their defaults.
LEWEL_D2_KEYS = {"LOG_PERIOD": 20}


def _rcnn_model(m: dict, arch: str) -> dict[str, Any]:
    """The R-CNN keys of ``arch`` (c4: its RPN and RoI sizes; fpn: the ``fpn_*`` ones, 7 x 7 box pooling)."""
    fpn = arch == "fpn"
    rpn = "fpn_rpn" if fpn else "rpn"
    out = {"MODEL.ANCHOR_GENERATOR.SIZES": [[a] for a in m["fpn_anchor_sizes"]] if fpn else [list(m["anchor_sizes"])],
           "MODEL.RPN.PRE_NMS_TOPK_TRAIN": m[f"{rpn}_pre_nms_train"],
           "MODEL.RPN.POST_NMS_TOPK_TRAIN": m[f"{rpn}_post_nms_train"],
           "MODEL.RPN.PRE_NMS_TOPK_TEST": m[f"{rpn}_pre_nms_test"],
           "MODEL.RPN.POST_NMS_TOPK_TEST": m[f"{rpn}_post_nms_test"],
           "MODEL.RPN.BATCH_SIZE_PER_IMAGE": m["rpn_batch_per_image"],
           "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": m["roi_batch_per_image"],
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST": m["box_score_thresh"],
           "MODEL.ROI_HEADS.NMS_THRESH_TEST": m["box_nms_thresh"],
           # box regression, RPN and box head: smooth-L1 with this beta (0: L1, detectron2's default)
           "MODEL.RPN.SMOOTH_L1_BETA": float(m["smooth_l1_beta"]),
           "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": float(m["smooth_l1_beta"])}
    if fpn:
        out["MODEL.FPN.NORM"] = _FPN_NORMS[m["fpn_norm"]]
    else:
        out["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"] = m["pooler_resolution"]
    return out


def _retinanet_model(m: dict) -> dict[str, Any]:
    n = int(m["retinanet_scales_per_octave"])
    loss, beta = _BOX_LOSSES[m["retinanet_box_loss"]]
    return {"MODEL.ANCHOR_GENERATOR.SIZES": [[float(x) * 2 ** (i / n) for i in range(n)]
                                             for x in m["retinanet_anchor_sizes"]],
            "MODEL.FPN.NORM": _FPN_NORMS[m["fpn_norm"]],
            "MODEL.RETINANET.IOU_THRESHOLDS": list(m["retinanet_iou_thresholds"]),
            "MODEL.RETINANET.TOPK_CANDIDATES_TEST": m["retinanet_topk_candidates"],
            "MODEL.RETINANET.PRIOR_PROB": m["retinanet_prior_prob"],
            "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": loss, "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": beta,
            "MODEL.RETINANET.NORM": _HEAD_NORMS[m["retinanet_head_norm"]],
            "MODEL.RETINANET.SCORE_THRESH_TEST": m["box_score_thresh"],
            "MODEL.RETINANET.NMS_THRESH_TEST": m["box_nms_thresh"]}


def d2_dataset_names(data: dict) -> tuple[list[str], list[str]]:
    """detectron2's dataset names of the protocol's splits (:func:`register_datasets` registers them at the
    config's paths): ``voc_<year>_<split>`` (its evaluator reads the year), ``coco_2017_train`` / ``_val``."""
    if data["format"] == "voc":
        return [f"voc_{y}_{s}" for y, s in data["train"]], [f"voc_{data['test'][0]}_{data['test'][1]}"]
    return ["coco_2017_train"], ["coco_2017_val"]


def d2_settings(tv_cfg: dict, class_names: Sequence[str], weights: Path, out: Path, seed: int) -> dict[str, Any]:
    """Every setting of the protocol config (:file:`configs/torchvision`) as detectron2 keys -> values, so that
    both backends run what the config says, the defaults and every override alike (``solver.base_lr``,
    ``model.min_size_train``, ...). What detectron2 cannot run is refused first (:func:`check_for_detectron2`).
    ``amp: auto`` / ``num_workers: auto`` keep the detectron2 file's own choice (fp32, as the papers' runs)."""
    import torch

    check_for_detectron2(tv_cfg)
    arch, m, s, test = tv_cfg["arch"], tv_cfg["model"], tv_cfg["solver"], tv_cfg.get("test", {})
    classes_key, norm_keys = D2_ARCH_KEYS[arch]
    train, test_sets = d2_dataset_names(tv_cfg["data"])
    d: dict[str, Any] = {
        "MODEL.WEIGHTS": str(weights), "OUTPUT_DIR": str(out), "SEED": int(seed), classes_key: len(class_names),
        "DATASETS.TRAIN": train, "DATASETS.TEST": test_sets,
        "INPUT.MIN_SIZE_TRAIN": list(m["min_size_train"]), "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
        "INPUT.MAX_SIZE_TRAIN": int(m.get("max_size_train") or m["max_size"]),
        "INPUT.MIN_SIZE_TEST": m["min_size_test"], "INPUT.MAX_SIZE_TEST": m["max_size"],
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [list(m["aspect_ratios"])],
        "TEST.DETECTIONS_PER_IMAGE": m["detections_per_img"],
        "SOLVER.IMS_PER_BATCH": s["ims_per_batch"], "SOLVER.BASE_LR": s["base_lr"], "SOLVER.MOMENTUM": s["momentum"],
        "SOLVER.WEIGHT_DECAY": s["weight_decay"],
        "SOLVER.MAX_ITER": s["max_iter"], "SOLVER.STEPS": list(s["steps"]), "SOLVER.GAMMA": s["gamma"],
        "SOLVER.WARMUP_ITERS": s["warmup_iters"], "SOLVER.WARMUP_FACTOR": s["warmup_factor"],
        "SOLVER.WARMUP_METHOD": "linear", "SOLVER.CHECKPOINT_PERIOD": s["checkpoint_period"],
        "LEWEL.LOG_PERIOD": s["log_period"],
        "TEST.PRECISE_BN.ENABLED": int(test.get("precise_bn_iters", 0)) > 0,
        "TEST.PRECISE_BN.NUM_ITER": max(1, int(test.get("precise_bn_iters", 0))),
    }
    for rule, key in _NO_DECAY.items():  # excluded from weight decay: 0; else the common weight decay
        d[key] = 0.0 if rule in s["no_decay"] else s["weight_decay"]
    if arch == "retinanet":
        d.update(_retinanet_model(m))
    else:
        d["MODEL.MASK_ON"] = bool(tv_cfg["mask"])
        d.update(_rcnn_model(m, arch))
    if tv_cfg.get("amp", "auto") != "auto":
        d["SOLVER.AMP.ENABLED"] = bool(tv_cfg["amp"])
    if tv_cfg.get("num_workers", "auto") != "auto":
        d["DATALOADER.NUM_WORKERS"] = int(tv_cfg["num_workers"])
    if not torch.cuda.is_available():  # a CPU smoke run: SyncBN needs GPUs, plain BN instead
        d["MODEL.DEVICE"] = "cpu"
        for key in norm_keys:
            if d.get(key, "SyncBN") != "":
                d[key] = "BN"
    return d


def _voc07(c: dict) -> Any:
    return str(c["data"]["test"][0]) == "2007" if c["data"]["format"] == "voc" else c["data"].get("use_07_metric")


#: Protocol config keys detectron2 has no setting for: refused with the detectron2 backend unless they hold the
#: value detectron2 runs anyway (key -> (that value for the config, why)).
D2_FIXED: dict[str, tuple[Callable[[dict], Any], str]] = {
    "test.batch": (lambda c: 1, "detectron2's test loader takes one image per GPU"),
    "test.max_images": (lambda c: None, "detectron2 evaluates the whole test split"),
    "data.use_07_metric": (_voc07, ("detectron2's VOC evaluator takes the 11-point VOC07 AP for a 2007 test split "
                                    "and the area AP for another year")),
}


def check_for_detectron2(tv_cfg: dict) -> None:
    """Refuse (naming the key and the backend) what detectron2 cannot run as the config says: a key of
    :data:`D2_FIXED` with another value, ``solver.no_decay`` rules besides norm / bias, an ``arch`` that is not the
    detectron2 file's."""
    from lewel_bench.config import ConfigError, get_key

    for key, (value_of, why) in D2_FIXED.items():
        try:
            got = get_key(tv_cfg, key)
        except ConfigError:
            continue
        want = value_of(tv_cfg)
        if got != want:
            shown = {None: "null", True: "true", False: "false"}.get(want, want)
            raise ConfigError(f"{key}={got} is not possible with the detectron2 backend ({why}): leave it "
                              f"{shown} or use --backend torchvision")
    other = [r for r in tv_cfg["solver"].get("no_decay", []) if r not in _NO_DECAY]
    if other:
        raise ConfigError(f"solver.no_decay {other} is not possible with the detectron2 backend (it has weight-decay "
                          f"settings for {' and '.join(_NO_DECAY)} only): use --backend torchvision")
    cfg_file = D2_CONFIG_DIR / tv_cfg["detectron2_config"]
    arch = d2_file_arch(cfg_file) if cfg_file.is_file() else None
    if arch is not None and arch != tv_cfg["arch"]:
        raise ConfigError(f"arch={tv_cfg['arch']} is not possible with the detectron2 backend: it runs "
                          f"{cfg_file.name}, a {arch} detector (detectron2_config names the protocol's detectron2 file)")


def d2_yaml(cfg_file: str | Path) -> dict:
    """A detectron2 YAML with its ``_BASE_`` chain merged (plain YAML, detectron2 not needed)."""
    from lewel_bench.config import load_yaml_file

    cfg_file = Path(cfg_file)
    data = load_yaml_file(cfg_file, "detectron2 config") or {}
    base = data.pop("_BASE_", None)
    if base is None:
        return data

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(d2_yaml(cfg_file.parent / base), data)


def d2_file_arch(cfg_file: str | Path) -> str | None:
    """The protocol ``arch`` (c4, fpn, retinanet) of a detectron2 config file, or None when it is none of them."""
    model = d2_yaml(cfg_file).get("MODEL", {})
    pair = (model.get("META_ARCHITECTURE"), (model.get("BACKBONE") or {}).get("NAME"))
    return next((a for a, p in D2_FILE_ARCH.items() if p == pair), None)


def _d2_value(v: Any) -> str:
    """A value as detectron2's ``merge_from_list`` reads it back (``literal_eval``; strings stay strings)."""
    if isinstance(v, (list, tuple)):
        return str(tuple(_plain(x) for x in v))
    return str(_plain(v))


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return float(v) if isinstance(v, float) else v


def d2_opts_for(tv_cfg: dict, class_names: Sequence[str], weights: Path, out: Path, seed: int) -> list[str]:
    """:func:`d2_settings` as detectron2's flat ``[KEY, VALUE, ...]`` override list."""
    opts: list[str] = []
    for k, v in d2_settings(tv_cfg, class_names, weights, out, seed).items():
        opts += [k, _d2_value(v)]
    return opts


#: torchvision ResNet -> detectron2's RESNETS.DEPTH (the protocol configs say 50; a mini run may bring a ResNet-18)
D2_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


def depth_opts(arch: str) -> list[str]:
    """detectron2's ResNet of the checkpoint's depth (ResNet-18 / 34: basic blocks, res2 with 64 channels; the C4
    protocols' res5 head needs bottleneck blocks, so those take a ResNet-50 or deeper)."""
    opts = ["MODEL.RESNETS.DEPTH", str(D2_DEPTHS[arch])]
    return opts + (["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"] if D2_DEPTHS[arch] < 50 else [])


# ------------------------------------------------------------------------------------------------
# what detectron2 loads from the converted file (its DetectionCheckpointer's name matching)
# ------------------------------------------------------------------------------------------------
#: transfer part -> the detectron2 modules it fills (a model tensor whose name has ``<module><digits>.``)
D2_PART_MODULES: dict[str, tuple[str, ...]] = {"fpn": ("fpn_lateral", "fpn_output"), "box_head": ("box_head.conv",)}


def _matches(model_key: str, ckpt_key: str) -> bool:
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def d2_transfer_report(model: Mapping[str, tuple[int, ...] | None], ckpt: Mapping[str, tuple[int, ...] | None],
                       part_of: Mapping[str, str], parts: Sequence[str], where: str = "<checkpoint>") -> dict[str, int]:
    """How many tensors of each part (``trunk`` and the transfer parts) detectron2 loads into ``model``.

    ``model`` / ``ckpt``: tensor name -> shape (``None``: not checked) of detectron2's model and of the converted
    file; ``part_of``: ckpt name -> ``trunk`` or its part. Matching as detectron2's ``DetectionCheckpointer``
    (``matching_heuristics``): each model tensor takes the longest checkpoint name that is a dot-separated suffix
    of its own. Refused (:class:`BackboneError` naming the part): a trunk tensor with no match, a part of
    ``parts`` that fills none of its detector modules (:data:`D2_PART_MODULES`) or only some of them, a shape
    mismatch, one checkpoint name matching two model tensors.
    """
    taken: dict[str, str] = {}
    for mk in sorted(model):
        best = max((ck for ck in ckpt if _matches(mk, ck)), key=len, default=None)
        if best is None:
            continue
        if best in taken:
            raise BackboneError(f"{where}: {best} matches two detectron2 tensors ({taken[best]}, {mk})")
        if model[mk] is not None and ckpt[best] is not None and tuple(model[mk]) != tuple(ckpt[best]):
            raise BackboneError(f"{where}: {part_of.get(best, 'trunk')} tensor {best} has shape {tuple(ckpt[best])}, "
                                f"detectron2's {mk} {tuple(model[mk])}")
        taken[best] = mk
    trunk = [k for k, p in part_of.items() if p == "trunk" and not k.endswith("num_batches_tracked")]
    lost = [k for k in trunk if k not in taken]
    if lost:
        raise BackboneError(f"{where}: {len(lost)} of {len(trunk)} trunk tensors match no detectron2 tensor "
                            f"(first: {', '.join(lost[:3])})")
    counts = {"trunk": sum(1 for k, p in part_of.items() if p == "trunk" and k in taken)}
    for part in parts:
        mods = D2_PART_MODULES[part]
        targets = [mk for mk in model if any(re.search(rf"(^|\.){re.escape(mod)}\d+\.", mk) for mod in mods)
                   and not mk.endswith("num_batches_tracked")]
        filled = {mk for ck, mk in taken.items() if part_of.get(ck) == part}
        missing = [mk for mk in targets if mk not in filled]
        if not filled or missing:
            raise BackboneError(f"{where}: transfer part {part!r} does not match the detectron2 model: "
                                f"{len(missing)} of its {len(targets)} tensors ({', '.join(mods)}*) not in the part "
                                f"(first: {', '.join(missing[:3]) or '-'})")
        counts[part] = sum(1 for k, p in part_of.items() if p == part and k in taken)
        unused = sum(1 for k, p in part_of.items() if p == part and k not in taken)
        log.info("detectron2 transfer: part %s: %d tensors loaded%s", part, counts[part],
                 f", {unused} not used by this model" if unused else "")
    return counts


def d2_model_shapes(cfg_file: str | Path, opts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the model ``cfg_file`` + ``opts`` builds (on the CPU, never trained)."""
    from detectron2.modeling import build_model

    cfg = setup_cfg(cfg_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    return {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}


def run_detectron2(tv_cfg: dict, args: argparse.Namespace, bb: Any, root: Path, out: Path,
                   extra_opts: Sequence[str] = (),
                   parts: Sequence[str] = ()) -> tuple[dict[str, float], dict, dict[str, int]]:
    """Convert ``bb`` (with the transfer ``parts``), run detectron2 on the protocol's config (all local GPUs);
    returns our metrics, the config detectron2 ran (its ``cfg.dump()`` as a dict, with the overrides it was
    given) and the tensors its model takes from the file per part (:func:`d2_transfer_report`, checked before
    training starts)."""
    require_detectron2()
    import pickle

    import torch
    from detectron2.engine import launch

    from eval_detection.datasets import resolve_class_names
    from lewel_bench.io import atomic_write_bytes
    from lewel_bench.transfer import PARTS
    from lewel_bench.transfer.detectron2 import to_detectron2, tv_to_d2_name

    fmt = tv_cfg["data"]["format"]
    if fmt == "voc":
        class_names = list(resolve_class_names(tv_cfg["data"]["classes"]))
    else:
        doc = json.loads((root / tv_cfg["data"]["train"]["ann"]).read_text())
        class_names = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    obj = to_detectron2(bb, parts)
    weights = atomic_write_bytes(out / "backbone_d2.pkl", pickle.dumps(obj))
    cfg_file = str(D2_CONFIG_DIR / tv_cfg["detectron2_config"])
    opts = d2_opts_for(tv_cfg, class_names, weights, out, args.seed) + depth_opts(bb.arch) + list(extra_opts)
    part_of = {tv_to_d2_name(k): "trunk" for k in bb.state_dict if not k.startswith("fc.")}
    part_of.update({PARTS[p] + k: p for p in parts for k in bb.parts[p]})
    transfer = d2_transfer_report(d2_model_shapes(cfg_file, opts), {k: tuple(v.shape) for k, v in obj["model"].items()},
                                  part_of, parts, str(weights))
    log.info("detectron2 takes from %s: %s", weights, ", ".join(f"{k} {v} tensors" for k, v in transfer.items()))
    gpus = max(1, torch.cuda.device_count())
    log.info("detectron2: %s on %d %s, opts %s", cfg_file, gpus, "GPU(s)" if torch.cuda.is_available() else "CPU", opts)
    launch(_worker, gpus, num_machines=1, machine_rank=0, dist_url="auto",
           args=(cfg_file, opts, str(root), fmt, class_names, str(out), tv_cfg["data"]))
    import yaml

    res = json.loads((out / "d2_results.json").read_text())
    ran = {"detectron2": yaml.safe_load(res["config"]), "detectron2_config_file": cfg_file, "detectron2_opts": opts}
    return d2_metrics(res["results"], tv_cfg["eval"]), ran, transfer
