"""Self-supervised pretraining stage: MoCo v2, BYOL, LEWEL_M and LEWEL_B (LEWEL, CVPR 2022), CGH and MCL.

``python -m pretrain EXP [--data ROOT] [--out DIR] [key=value ...]`` (see :mod:`pretrain.cli`).
"""

