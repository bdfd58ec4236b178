"""Semi-supervised fine-tuning on 1% / 10% of ImageNet labels (LEWEL Sec. 4.2); ``python -m eval_semisup``."""
