"""What the detection stage's pieces share (no heavy imports): config folder, record vocabulary, backend
choice, detectron2 overrides, the data parts of a run's identity, the transfer choice and the schedule's
step rules."""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from lewel_bench.config import ConfigError, override_keys

from .declaration import PROTOCOL_VERSION  # noqa: F401 (declared with the evaluation's protocols)

log = logging.getLogger("eval_detection")

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "torchvision"
METRIC_KEYS = {"voc_det": ("AP", "AP50", "AP75"),
               "coco": ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")}
STATE_FILES = ("last.pth", "metrics.json", "backbone_d2.pkl", "d2_results.json", "model_*.pth", "last_checkpoint")


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    if detectron2_available():
        return "detectron2"
    log.warning("detectron2 is not importable: using the torchvision backend (same layout, schedule and "
                "metrics; see eval_detection/detectron2_backend.py for how to install detectron2 on a cluster)")
    return "torchvision"


def d2_pairs(items: list[str]) -> list[str]:
    """``KEY=VALUE`` items -> detectron2's flat ``[KEY, VALUE, ...]`` list."""
    out: list[str] = []
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--d2-opt {it!r}: expected KEY=VALUE (e.g. SOLVER.MAX_ITER=10)")
        k, v = it.split("=", 1)
        out += [k.strip(), v]
    return out


_RPN_C4 = ("rpn_pre_nms_train", "rpn_post_nms_train", "rpn_pre_nms_test", "rpn_post_nms_test")
_RPN_FPN = tuple(f"fpn_{k}" for k in _RPN_C4)
_RETINANET = ("retinanet_anchor_sizes", "retinanet_scales_per_octave", "retinanet_iou_thresholds",
              "retinanet_topk_candidates", "retinanet_prior_prob", "retinanet_box_loss", "retinanet_head_norm")
#: detector (config ``arch``) -> the ``model`` keys it does not read, which its config inherits from a config of
#: another detector (the FPN pools its boxes at 7 x 7, RetinaNet has no RPN and no RoI heads): an override of one
#: would change nothing in either backend, so it is refused naming the key
UNUSED_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "c4": ("fpn_anchor_sizes", "fpn_norm", *_RPN_FPN, *_RETINANET),
    "fpn": ("anchor_sizes", "pooler_resolution", *_RPN_C4, *_RETINANET),
    "retinanet": ("anchor_sizes", "fpn_anchor_sizes", "pooler_resolution", "rpn_batch_per_image",
                  "roi_batch_per_image", "smooth_l1_beta", *_RPN_C4, *_RPN_FPN),
}


def check_overrides(cfg: dict, where: str) -> None:
    """Refuse an override (``cfg["_meta"]["overrides"]``) of a key the config's detector does not read
    (:data:`UNUSED_MODEL_KEYS`), naming it and the detector, for both backends."""
    if cfg["arch"] == "retinanet" and cfg.get("mask"):
        raise ConfigError(f"mask=true with {where}: RetinaNet has no mask head (both backends)")
    unused = {f"model.{k}" for k in UNUSED_MODEL_KEYS[cfg["arch"]]}
    for key in override_keys((cfg.get("_meta") or {}).get("overrides", [])):
        hit = next((u for u in unused if key == u or key.startswith(u + ".")), None)
        if hit:
            raise ConfigError(f"override of {hit} with {where}: the {cfg['arch']} detector does not read it (the config "
                              f"inherits it from another detector's), so it would change nothing in either backend")


def data_parts(cfg: dict) -> list[str]:
    """The parts of the data root that determine the result (for its fingerprint)."""
    d = cfg["data"]
    if d["format"] == "voc":
        return sorted({f"VOC{y}" for y, _ in d["train"]} | {f"VOC{d['test'][0]}"})
    return sorted({str(Path(d[s]["ann"]).parent) for s in ("train", "test")} | {d[s]["images"] for s in ("train", "test")})


# --------------------------------------------------------------------------------------------------
# transfer: what the detector takes from the checkpoint
# --------------------------------------------------------------------------------------------------
#: ``--transfer`` choices: ``trunk`` (the ResNet alone: the LEWEL / MoCo protocol) or ``bundle`` (the trunk and
#: the checkpoint's transfer-bundle parts the detector has modules for, as MCL's converter loads them).
TRANSFERS = ("trunk", "bundle")
#: detector (config ``arch``) -> the transfer-bundle parts (:data:`lewel_bench.transfer.PARTS`) it loads with
#: ``--transfer bundle``: RetinaNet takes the FPN (levels 3-5; its P6 / P7 and heads stay random), Mask R-CNN
#: FPN the FPN (levels 2-5) and the 4-conv box head; the C4 detectors have no module for any part.
TRANSFER_PARTS: dict[str, tuple[str, ...]] = {"c4": (), "fpn": ("fpn", "box_head"), "retinanet": ("fpn",)}


def transfer_parts(cfg: dict, transfer: str, where: str) -> tuple[str, ...]:
    """The bundle parts a run reads from its checkpoint (none for ``trunk``); ``where`` names the config."""
    if transfer not in TRANSFERS:
        raise ConfigError(f"--transfer {transfer!r}: expected one of {', '.join(TRANSFERS)}")
    if transfer == "trunk":
        return ()
    parts = TRANSFER_PARTS[cfg["arch"]]
    if not parts:
        raise ConfigError(f"--transfer bundle with {where} (arch {cfg['arch']}): this detector has no module for any "
                          f"transfer-bundle part (the FPN and the box head load into arch fpn or retinanet); "
                          f"use --transfer trunk")
    return parts


# --------------------------------------------------------------------------------------------------
# schedule: where the learning rate decays
# --------------------------------------------------------------------------------------------------
def _scale_1x(max_iter: int) -> list[int]:
    """1x's decays (60k and 80k of 90k) at the same fractions of any run: 2/3 and 8/9 (6x: 360k / 480k)."""
    return [round(max_iter * 2 / 3), round(max_iter * 8 / 9)]


def _last_60k_20k(max_iter: int) -> list[int]:
    """detectron2's model-zoo 3x rule (210k / 250k of 270k): 60k and 20k iterations before the end."""
    if max_iter <= 60000:
        raise ConfigError(f"solver.steps_rule last_60k_20k needs solver.max_iter > 60000, got {max_iter}")
    return [max_iter - 60000, max_iter - 20000]


#: ``solver.steps_rule`` -> steps from ``solver.max_iter`` (``explicit``: ``solver.steps`` as written).
STEP_RULES: dict[str, Callable[[int], list[int]]] = {"scale_1x": _scale_1x, "last_60k_20k": _last_60k_20k}


def resolve_steps(solver: dict, where: str) -> list[int]:
    """``solver.steps`` as the run uses them: written out (``steps_rule: explicit``, the default) or from a rule
    of :data:`STEP_RULES` with ``steps: null``; ``where`` names the config in errors."""
    rule = solver.get("steps_rule", "explicit")
    steps = solver.get("steps")
    if rule == "explicit":
        if steps is None:
            raise ConfigError(f"{where}: solver.steps is null and solver.steps_rule is explicit; give the steps or "
                              f"a rule ({', '.join(STEP_RULES)})")
        return [int(s) for s in steps]
    if rule not in STEP_RULES:
        raise ConfigError(f"{where}: solver.steps_rule {rule!r}: expected explicit or one of {', '.join(STEP_RULES)}")
    if steps is not None:
        raise ConfigError(f"{where}: solver.steps {steps} and solver.steps_rule {rule}: give one of them "
                          f"(solver.steps=null to use the rule)")
    return STEP_RULES[rule](int(solver["max_iter"]))
