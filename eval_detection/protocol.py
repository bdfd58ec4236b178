"""What the detection stage's pieces share (no heavy imports): config folder, record vocabulary, backend
choice, detectron2 overrides, the data parts of a run's identity."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from lewel_bench.config import ConfigError

log = logging.getLogger("eval_detection")

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "torchvision"
#: Bump when a change of this stage's code changes its results (part of every run's identity).
PROTOCOL_VERSION = 1
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


def data_parts(cfg: dict) -> list[str]:
    """The parts of the data root that determine the result (for its fingerprint)."""
    d = cfg["data"]
    if d["format"] == "voc":
        return sorted({f"VOC{y}" for y, _ in d["train"]} | {f"VOC{d['test'][0]}"})
    return sorted({str(Path(d[s]["ann"]).parent) for s in ("train", "test")} | {d[s]["images"] for s in ("train", "test")})
