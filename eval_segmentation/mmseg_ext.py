"""What lewel-bench adds to mmsegmentation (imported by the configs through ``custom_imports``).

* installs the pure-torch ``mmcv.ops`` shim when mmcv has no compiled ops (before mmseg is imported);
* ``PerClassIoUMetric``: mmseg's ``IoUMetric`` unchanged (same mIoU / aAcc, same logged table), whose
  returned metrics also carry the per-class IoU (``IoU.<class>``, percentages) that ``IoUMetric`` only
  prints, so the result record can keep them;
* ``CheckedLoadImageFromFile`` / ``CheckedLoadAnnotations``: the loading steps of every pipeline (the stage
  puts them in place of ``LoadImageFromFile`` / ``LoadAnnotations``, train and test alike), which refuse,
  naming the file: an image that cannot be decoded; a mask that is not one channel of class indices, that
  does not have its image's size, or whose labels are not the config's classes (0..C-1) or 255 (ignore)
  (:func:`lewel_bench.data.voc.mask_array`, :func:`~lewel_bench.data.voc.check_mask_labels`; mmseg's own
  loader would wrap a 16-bit label around to 8 bits and pass a wrong-size or out-of-range mask on);
* mmengine's local file writes through its file backend (the checkpoints) go through a temporary file and a
  rename (:mod:`lewel_bench.io`), so an interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

from lewel_bench.transfer.mmcv_ops import install as _install_mmcv_ops

_install_mmcv_ops()

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.fileio.backends import LocalBackend
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS, TRANSFORMS

from lewel_bench.config import ConfigError
from lewel_bench.data.imagenet import BadImageError
from lewel_bench.data.voc import check_mask_labels, mask_array
from lewel_bench.io import atomic_write_bytes, atomic_write_text

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


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` whose undecodable image is a :class:`~lewel_bench.data.BadImageError` naming the file
    (mmcv's own is an ``AssertionError``)."""

    def transform(self, results: dict) -> dict | None:
        try:
            out = super().transform(results)
        except BadImageError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure of a data file is bad input, named
            raise BadImageError(f"image {results.get('img_path')} cannot be read ({type(e).__name__}: {e})") from None
        return out


@TRANSFORMS.register_module()
class CheckedLoadAnnotations(LoadAnnotations):
    """``LoadAnnotations`` (segmentation maps) that checks each mask as it decodes it (one decode, one
    ``bincount``): one channel of class indices that fit 8 bits, its image's size (``ori_shape``, set by the
    image loader before it), labels in 0..``num_classes``-1 or ``ignore_index`` after ``reduce_zero_label`` and
    the dataset's ``label_map``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)

    def _load_seg_map(self, results: dict) -> None:
        import mmcv

        path = results["seg_map_path"]
        try:
            raw = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), flag="unchanged",
                                   backend=self.imdecode_backend)
        except Exception as e:  # noqa: BLE001 - a data file that cannot be decoded is bad input, named
            raise BadImageError(f"mask {path} cannot be read ({type(e).__name__}: {e})") from None
        mask = mask_array(raw, path, results.get("ori_shape"), results.get("img_path")).copy()
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results["reduce_zero_label"]
        if self.reduce_zero_label != results["reduce_zero_label"]:
            raise ConfigError(f"reduce_zero_label is {self.reduce_zero_label} in LoadAnnotations but "
                              f"{results['reduce_zero_label']} in its dataset: give it once, in the dataset")
        note = ""
        if self.reduce_zero_label:  # label 0 is ignored, the others shift down by one
            ignored = mask == 0
            mask = mask - 1
            mask[ignored | (mask == 254)] = 255
            note = " (after reduce_zero_label: 0 -> 255, k -> k - 1)"
        if results.get("label_map") is not None:
            old = mask.copy()
            for old_id, new_id in results["label_map"].items():
                mask[old == old_id] = new_id
            note += " (after the dataset's label_map)"
        check_mask_labels(mask, path, self.num_classes, self.ignore_index, note)
        results["gt_seg_map"] = mask
        results["seg_fields"].append("gt_seg_map")


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (temporary file, fsync, rename)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        atomic_write_bytes(filepath, obj.encode(encoding)) if encoding.lower() not in ("utf-8", "utf8") \
            else atomic_write_text(filepath, obj)


def _atomic_local_writes() -> None:
    """Route mmengine's local paths (no URI prefix) to :class:`AtomicLocalBackend`."""
    import mmengine.fileio.io as fio

    fileio.register_backend("local", AtomicLocalBackend, force=True, prefixes="")
    fio.backend_instances.clear()  # instances made before this import


_atomic_local_writes()
