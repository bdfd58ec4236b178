"""``rank_probe OUT``: init_distributed() from the (SLURM / torchrun) environment, all-reduce the ranks,
write ``OUT/rank<r>.json`` with the rendezvous variables and the reduced sum."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lewel_bench.dist import cleanup, init_distributed


def main(argv: list[str] | None = None) -> None:
    out = Path((sys.argv[1:] if argv is None else argv)[0])
    info = init_distributed()
    t = torch.tensor([float(info.rank)])
    if dist.is_initialized():
        dist.all_reduce(t)
    keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{info.rank}.json").write_text(json.dumps(
        {"env": {k: os.environ.get(k) for k in keys}, "rank": info.rank, "world": info.world_size,
         "rank_sum": t.item()}))
    cleanup()
