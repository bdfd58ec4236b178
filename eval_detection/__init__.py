"""Detection transfer (VOC07+12 Faster R-CNN C4, COCO Mask R-CNN C4/FPN): detectron2 configs and a torchvision backend."""
