"""Detection transfer (VOC07+12 Faster R-CNN C4, COCO Mask R-CNN C4/FPN): detectron2 configs and a torchvision backend."""

import lewel_bench  # noqa: F401,E402  (first: it sets the OpenMP wait policy before torch loads)
