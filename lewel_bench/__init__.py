"""lewel-bench: the one shared home for what every stage uses.

Modules:
    io          atomic file writes (temp file, fsync, rename)
    config      YAML experiment configs with ``_base_`` inheritance and validated ``key=value`` overrides
    registry    a tiny name -> builder registry (methods, heads, evaluations)
    models      torchvision ResNet backbones and their feature dimensions
    checkpoint  backbone export and the checkpoint intake every evaluation shares
    records     result records (one JSON file per evaluation, written atomically)
    dist        torch.distributed set-up from torchrun or SLURM environment variables
    utils       logging, seeding, RNG state capture, git commit
    data        the embedded mini benchmark generator and dataset readers
"""

import os as _os

__version__ = "0.1.0"

# OpenMP threads sleep at a barrier instead of spinning, so that a competing process on a small shared CPU
# slows a step down less than 2x instead of 3x (`make bench-threads`: mini LEWEL_M on 2 cores beside one
# busy process, 43.9 vs 26.1 images/s; alone, 72.9 vs 77.9). OpenMP reads it when torch loads, which is why
# every stage package imports this package first. OMP_WAIT_POLICY=ACTIVE keeps OpenMP's default.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
