"""What lewel-bench adds to mmsegmentation (imported by the configs through ``custom_imports``).

* installs the pure-torch ``mmcv.ops`` shim when mmcv has no compiled ops (before mmseg is imported);
* ``PerClassIoUMetric``: mmseg's ``IoUMetric`` unchanged (same mIoU / aAcc, same logged table), whose
  returned metrics also carry the per-class IoU (``IoU.<class>``, percentages) that ``IoUMetric`` only
  prints, so the result record can keep them.
"""
from __future__ import annotations

from lewel_bench.transfer.mmcv_ops import install as _install_mmcv_ops

_install_mmcv_ops()

import numpy as np  # noqa: E402
from mmseg.evaluation import IoUMetric  # noqa: E402
from mmseg.registry import METRICS  # noqa: E402

PER_CLASS_PREFIX = "IoU."


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` whose result also has ``IoU.<class>`` = 100 * intersection / union over the set."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only or not results:
            return metrics
        inter, union = (sum(r[i] for r in results) for i in (0, 1))
        iou = (inter / union).cpu().numpy() if hasattr(inter, "cpu") else np.asarray(inter / union)
        for name, v in zip(self.dataset_meta["classes"], iou):
            metrics[f"{PER_CLASS_PREFIX}{name}"] = float(np.round(v * 100, 2))
        return metrics
