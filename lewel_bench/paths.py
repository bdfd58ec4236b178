"""Where things are: the repository root and the runs folder (no heavy imports, for fast command lines)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    """Where runs go by default: ``$LEWEL_RUNS_DIR`` if set (e.g. a scratch file system), else ``<repo>/runs``."""
    return Path(os.environ.get("LEWEL_RUNS_DIR") or REPO_ROOT / "runs")
