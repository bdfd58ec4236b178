"""``python -m toy_resume --out DIR --iters N --sleep S``: counts iterations with a checkpoint after each.

Behaves like a real stage for the launcher: running it again with the same ``--out`` resumes from
``DIR/checkpoint.json`` (the iteration counter continues). Every iteration appends a line to
``DIR/progress.jsonl`` with the iteration, the process id and the launcher's attempt number.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from lewel_bench.io import append_jsonl, atomic_write_json


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="toy_resume")
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--sleep", type=float, default=0.5)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.json"
    start = json.loads(ckpt.read_text())["iter"] if ckpt.exists() else 0
    attempt = int(os.environ.get("LEWEL_LAUNCH_ATTEMPT", "0"))
    for it in range(start, args.iters):
        time.sleep(args.sleep)
        append_jsonl(out / "progress.jsonl", {"iter": it, "pid": os.getpid(), "attempt": attempt,
                                              "resumed_from": start})
        atomic_write_json(ckpt, {"iter": it + 1})
    atomic_write_json(out / "done.json", {"iters": args.iters})
