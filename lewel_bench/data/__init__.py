"""Embedded mini benchmark (procedural shapes) and readers for ImageNet / VOC / COCO roots.

The readers take a root path, so the same code reads the real datasets on a cluster and
``data/mini`` here (``make data`` = ``python -m tools.make_mini_data --out data/mini --seed 0``).
A missing or malformed root raises ONE :class:`DataLayoutError` naming the path and the layout:

ImageNet (:class:`ImageNetFolder`)::

    <root>/{train,val}/<wnid>/<name>.JPEG          classes = sorted wnid folders
    <root>/{1percent,10percent}.txt                 SimCLR subsets: one train file name per line

Pascal VOC (:class:`VOCDetection`, :func:`voc_segmentation_pairs`), ``root`` = VOCdevkit::

    <root>/VOC<year>/Annotations/<id>.xml, JPEGImages/<id>.jpg
    <root>/VOC<year>/SegmentationClass/<id>.png     palette PNG, 255 = object borders / ignore
    <root>/VOC2012/SegmentationClassAug/<id>.png    plain class-index PNG (the "aug" set, mmseg voc12aug)
    <root>/VOC<year>/ImageSets/Main/{train,val,trainval[,test]}.txt
    <root>/VOC<year>/ImageSets/Segmentation/{train,val,trainval[,test],aug}.txt   (aug: VOC2012)

COCO 2017 (:func:`coco_paths`, :func:`read_coco_json`, :func:`coco_api`; the detection reader of
``eval_detection.datasets`` builds on them)::

    <root>/annotations/instances_{train,val}2017.json, <root>/{train,val}2017/*.jpg

The mini benchmark (:func:`generate_mini`) writes all three under ``<out>/imagenet``,
``<out>/VOCdevkit`` and ``<out>/coco`` with the class names :data:`SHAPE_CLASSES` (VOC/seg class
index = 1 + shape index, COCO category id = 1 + shape index; wnids :data:`WNIDS`).
"""
from .coco import coco_api, coco_paths, read_coco_json
from .identity import data_identity, same_data
from .imagenet import (
    BadImageError,
    ImageNetFolder,
    class_list,
    parse_subset_file,
    read_image,
    scan_split,
)
from .layout import DataError, DataLayoutError, require_file, require_layout
from .mini import (
    DEFAULT_SIZES,
    SHAPE_CLASSES,
    TEST_SIZES,
    WNIDS,
    generate_mini,
    is_complete,
    voc_palette,
)
from .voc import VOCDetection, read_image_ids, voc_segmentation_pairs, voc_year_dir

__all__ = [
    "DEFAULT_SIZES",
    "SHAPE_CLASSES",
    "TEST_SIZES",
    "WNIDS",
    "BadImageError",
    "DataError",
    "DataLayoutError",
    "ImageNetFolder",
    "VOCDetection",
    "class_list",
    "coco_api",
    "coco_paths",
    "data_identity",
    "generate_mini",
    "is_complete",
    "parse_subset_file",
    "read_coco_json",
    "read_image",
    "read_image_ids",
    "require_file",
    "require_layout",
    "same_data",
    "scan_split",
    "voc_palette",
    "voc_segmentation_pairs",
    "voc_year_dir",
]
