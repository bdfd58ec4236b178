"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from lewel_bench.data.mini import TEST_SIZES

MINI_TEST_SEED = 0


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a SMALL mini benchmark, generated once per test session (about 1.5 s on one core).

    Seed 0, sizes ``lewel_bench.data.mini.TEST_SIZES``:
      * ``<root>/imagenet``: 10 classes x (100 train + 20 val) JPEGs at 64x64; ``1percent.txt`` (1 per
        class), ``10percent.txt`` (10 per class);
      * ``<root>/VOCdevkit/VOC2007``: 10 train + 10 val + 10 test; ``VOC2012``: 10 train + 10 val
        (SegmentationClass) + 10 extra aug (SegmentationClassAug, ``aug.txt`` = 20 ids);
      * ``<root>/coco``: 20 train + 10 val images;
      detection images are 96-128 px with 1-4 objects. Read-only: copy it before modifying anything.
    """
    from lewel_bench.data.mini import generate_mini

    return generate_mini(tmp_path_factory.mktemp("mini"), seed=MINI_TEST_SEED, workers=1, **TEST_SIZES)


@pytest.fixture(scope="session", autouse=True)
def _runs_outside_the_repository(tmp_path_factory: pytest.TempPathFactory):
    """Default run folders (``runs/...``) and result records of every test go to temporary folders, never
    the repository's ``runs/`` or ``results/``."""
    import os

    old = {k: os.environ.get(k) for k in ("LEWEL_RUNS_DIR", "LEWEL_RESULTS_DIR")}
    os.environ["LEWEL_RUNS_DIR"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["LEWEL_RESULTS_DIR"] = str(tmp_path_factory.mktemp("results"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
