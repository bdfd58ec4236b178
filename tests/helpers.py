"""Small builders the tests share (a tiny ImageNet-layout tree, reading a records folder, detectron2 YAML)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

D2_CONFIGS = Path(__file__).resolve().parents[1] / "eval_detection" / "configs" / "detectron2"


def make_imagenet(root: Path, seed: int = 0, classes: int = 3, n_train: int = 6, n_val: int = 3) -> Path:
    """A tiny ImageNet-layout tree: one colour per class plus noise, 32 px JPEGs."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"n0000000{c}"
            d.mkdir(parents=True, exist_ok=True)
            colour = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)][c % 4])
            for i in range(n):
                arr = np.clip(colour[None, None] + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"n0000000{c}_{i}.JPEG", quality=90)
    return root


def records_in(d: Path) -> list[dict]:
    """Every result record (``*.json``) in a folder, in name order; none when the folder is missing."""
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def d2_cfg(name: str) -> dict:
    """A detectron2 YAML of ``eval_detection/configs/detectron2`` with its _BASE_ chain merged (plain YAML, no
    detectron2 needed)."""
    data = yaml.safe_load((D2_CONFIGS / name).read_text())
    base = data.pop("_BASE_", None)
    if base is None:
        return data

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(d2_cfg(base), data)
