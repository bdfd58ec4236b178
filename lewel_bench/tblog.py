"""TensorBoard (and optional W&B offline) logging of a run's scalars and images, under its run folder.

Config keys (``log``, neutral: they never change a result or a run's identity):

* ``log.tensorboard`` (bool): write ``<run folder>/tb/events.out.tfevents.*`` (``make tensorboard`` serves
  the runs folder). On by default; the mini configs turn it off.
* ``log.wandb`` (bool): also log to Weights & Biases in offline mode (``<run folder>/wandb``; sync later with
  ``wandb sync``), only when the ``wandb`` package is installed (it is never required: without it a warning
  says so and the run goes on).
* ``log.images_every`` (int, epochs; pretraining): how often a method with alignment maps (LEWEL) logs them
  as images; 0 = never.

:class:`MetricWriter` is a no-op when disabled and on every rank but the main one, so callers need no checks.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: the TensorBoard folder inside a run folder
TB_DIR = "tb"


def log_options(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``log`` section of a config with its defaults (TensorBoard on, W&B off, images every 10 epochs)."""
    sec = (cfg or {}).get("log") or {}
    return {"tensorboard": bool(sec.get("tensorboard", True)), "wandb": bool(sec.get("wandb", False)),
            "images_every": int(sec.get("images_every", 10))}


class MetricWriter:
    """Scalars and images of one run: TensorBoard under ``<folder>/tb``, W&B offline beside it when asked."""

    def __init__(self, folder: str | Path, tensorboard: bool = True, wandb: bool = False, run_name: str = "",
                 config: Mapping[str, Any] | None = None, enabled: bool = True, purge_step: int | None = None) -> None:
        self.folder = Path(folder)
        self._tb = self._wb = None
        if not enabled:
            return
        if tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # needs the tensorboard package (requirements.txt)
            )

            # purge_step: a resumed run drops the events its checkpoint did not reach (no doubled curves)
            self._tb = SummaryWriter(str(self.folder / TB_DIR), purge_step=purge_step)
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                log.warning("log.wandb is on but the wandb package is not installed: no W&B log (pip install wandb)")
            else:
                self._wb = wb.init(mode="offline", dir=str(self.folder), name=run_name or self.folder.name,
                                   config=dict(config or {}), reinit=True)

    @classmethod
    def for_run(cls, folder: str | Path, cfg: Mapping[str, Any] | None, is_main: bool = True,
                run_name: str = "", purge_step: int | None = None) -> MetricWriter:
        """The writer a run's config asks for (:func:`log_options`); inactive on non-main ranks."""
        opts = log_options(cfg)
        plain = {k: v for k, v in (cfg or {}).items() if not str(k).startswith("_")} if opts["wandb"] else None
        return cls(folder, opts["tensorboard"], opts["wandb"], run_name, plain, enabled=is_main, purge_step=purge_step)

    @property
    def active(self) -> bool:
        return self._tb is not None or self._wb is not None

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Every finite number of ``values`` as ``<prefix>/<key>`` at ``step`` (other entries are skipped)."""
        if not self.active:
            return
        nums = {f"{prefix}/{k}" if prefix else str(k): float(v) for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in nums.items():
                self._tb.add_scalar(k, v, step)
        if self._wb is not None and nums:
            self._wb.log(nums, step=step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        """One image (3, H, W) with values in [0, 1]."""
        if self._tb is not None:
            self._tb.add_image(tag, img.clamp(0, 1), step)
        if self._wb is not None:
            import wandb as wb

            self._wb.log({tag: wb.Image(img.clamp(0, 1).permute(1, 2, 0).cpu().numpy())}, step=step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wb is not None:
            self._wb.finish()
            self._wb = None


def alignment_grid(images: torch.Tensor, maps: torch.Tensor, k: int = 3) -> torch.Tensor:
    """One picture of alignment maps: per image (row), the image then its ``k`` most concentrated maps W
    (largest peak) upsampled and blended over it in red. ``images`` (B, 3, S, S) in [0, 1], ``maps``
    (B, d, h, w) each summing to 1 over positions -> (3, B * S, (k + 1) * S)."""
    b, _, s, _ = images.shape
    rows = []
    for i in range(b):
        m = maps[i]
        top = m.flatten(1).max(1).values.argsort(descending=True)[:k]
        tiles = [images[i]]
        for j in top.tolist():
            heat = torch.nn.functional.interpolate(m[j][None, None], size=(s, s), mode="bilinear",
                                                   align_corners=False)[0, 0]
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
            red = torch.stack([torch.ones_like(heat), torch.zeros_like(heat), torch.zeros_like(heat)])
            tiles.append(images[i] * (1 - 0.6 * heat) + red * 0.6 * heat)
        rows.append(torch.cat(tiles, dim=2))
    return torch.cat(rows, dim=1)
