"""Small builders the tests share (a tiny ImageNet-layout tree, reading a records folder, detectron2 YAML, a tiny
detection batch, comparing table cells, installing a Debian package for a test's set-up)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
    from eval_detection.detectron2_backend import d2_yaml

    return d2_yaml(D2_CONFIGS / name)


def tiny_detection_batch(mask: bool) -> tuple[list, list]:
    """Two small images with one box each (and its mask when ``mask``), torchvision's detection input format."""
    import torch

    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 64, 72, generator=g), torch.rand(3, 64, 64, generator=g)]
    targets = []
    for i, box in enumerate(([8.0, 10.0, 40.0, 50.0], [20.0, 5.0, 60.0, 30.0])):
        t = {"boxes": torch.tensor([box]), "labels": torch.tensor([i + 1])}
        if mask:
            m = torch.zeros(1, 64, imgs[i].shape[-1], dtype=torch.uint8)
            x1, y1, x2, y2 = map(int, box)
            m[0, y1:y2, x1:x2] = 1
            t["masks"] = m
        targets.append(t)
    return imgs, targets


def same_cell(a: object, b: object) -> bool:
    """Two table cells are equal: both empty (None / NaN), numerically within 1e-9, or the same text."""
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    if na or nb:
        return na and nb
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return str(a) == str(b)


def apt_install(packages: list[str], installed: Callable[[], bool], error: type[Exception], timeout: float) -> None:
    """Debian packages for a test's set-up (the SLURM daemons, chromium): ``apt-get install`` when
    ``installed()`` is false, root only, within ``timeout`` seconds, with one ``apt-get update`` and a retry when
    the first try fails; raises ``error`` saying why when that is impossible or did not install them."""
    if installed():
        return
    what = " ".join(packages)
    if os.geteuid() != 0:
        raise error(f"{what}: not installed and this is not root (cannot apt-get install)")
    if shutil.which("apt-get") is None:
        raise error(f"{what}: not installed and there is no apt-get on this machine")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    deadline = time.monotonic() + timeout
    try:
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True,
                           timeout=max(10.0, deadline - time.monotonic()), check=False)
            r = subprocess.run(install, env=env, capture_output=True, text=True,
                               timeout=max(10.0, deadline - time.monotonic()), check=False)
    except subprocess.TimeoutExpired:
        raise error(f"apt-get install {what} timed out after {timeout:.0f} s") from None
    if r.returncode != 0 or not installed():
        raise error(f"apt-get install {what} failed: {r.stderr.strip()[-500:]}")
