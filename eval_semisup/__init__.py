"""Semi-supervised fine-tuning on 1% / 10% of ImageNet labels (LEWEL Sec. 4.2); ``python -m eval_semisup``."""

import lewel_bench  # noqa: F401,E402  (first: it sets the OpenMP wait policy before torch loads)
