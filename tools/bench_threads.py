"""Images/s of a short pretraining run on a quiet and on a busy CPU, per thread policy.

    python -m tools.bench_threads [--config <EXP>_mini] [--data data/mini/imagenet] [--images 640]
        [--policies active-2 passive-2 threads-1 auto] [--competitor spin|torch]
    make bench-threads [BENCH_THREADS_ARGS="--competitor torch"]

A laptop or a shared node is rarely idle. With as many compute threads as cores, every OpenMP barrier of
a step waits for a thread that the competing process has descheduled, and spinning threads (OpenMP's
active wait policy) burn the core the late thread needs. Each policy runs the same command twice, alone
and beside a competitor started just before it (``spin``: one busy Python loop, one core; ``torch``: a
two-thread matmul loop), and the table reports both and their ratio (the slowdown a competitor causes).
Policies: ``active-N`` / ``passive-N`` (N compute threads fixed, ``OMP_WAIT_POLICY`` ACTIVE / PASSIVE) and
``threads-1``; ``auto`` is what pretraining does by default (no override: OpenMP's default wait, the cores
minus the loader workers, adapted during the run by ``lewel_bench.threads.ThreadTuner``). Images/s are over
the whole run but its first iteration (the tuner's trials included). Runs are one at a time and the
machine should be quiet otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lewel_bench.args import COUNT, ArgumentParser, PathArg
from lewel_bench.benchmarks import Table, add_record_args, record_from_args
from lewel_bench.errors import LewelError
from lewel_bench.stage import cli_entry
from lewel_bench.utils import REPO_ROOT

COMPETITORS = {
    "spin": [sys.executable, "-c", "while True: pass"],
    "torch": [sys.executable, "-c", ("import torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\n"
                                     "while True: a = (a @ a).tanh_()")],
}


def policy_env(policy: str) -> tuple[dict[str, str], list[str]]:
    """(environment changes, config overrides) of a policy name."""
    if policy == "auto":
        return {}, []
    if policy == "threads-1":
        return {}, ["num_threads=1", "threads_adapt=false"]
    wait, _, n = policy.partition("-")
    if wait not in ("active", "passive") or not n.isdigit():
        raise LewelError(f"--policies {policy!r}: expected auto, threads-1, active-N or passive-N")
    return {"OMP_WAIT_POLICY": wait.upper()}, [f"num_threads={n}", "threads_adapt=false"]


def images_per_s(metrics: Path) -> float:
    """Images/s of the whole run but its first iteration, from ``metrics.jsonl`` (one row per iteration):
    the harmonic mean of the per-iteration rates (equal batches), so slow iterations count in full."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in rows[1:] if r.get("images_per_s")]
    if not rates:
        raise LewelError(f"{metrics}: fewer than two logged iterations (raise --images)")
    return statistics.harmonic_mean(rates)


def run_once(args: argparse.Namespace, policy: str, busy: bool, tmp: Path) -> float:
    env_changes, overrides = policy_env(policy)
    env = {**os.environ, **env_changes, "LEWEL_RESULTS_DIR": str(tmp / "results")}  # no speed records in the tables
    if "OMP_WAIT_POLICY" not in env_changes:
        env.pop("OMP_WAIT_POLICY", None)
    out = tmp / f"{policy}-{'busy' if busy else 'quiet'}"
    cmd = [sys.executable, "-m", "pretrain", args.config, "--data", args.data, "--out", str(out),
           "knn.every=0", f"data.max_images={args.images}", "epochs=1", "log_every=1", *overrides]
    comp = subprocess.Popen(COMPETITORS[args.competitor], stdout=subprocess.DEVNULL) if busy else None
    try:
        if comp:
            time.sleep(1.0)
        subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        if comp:
            comp.kill()
            comp.wait()
    return images_per_s(out / "metrics.jsonl")


@cli_entry("bench_threads")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_threads", description=__doc__.split("\n\n")[0])
    from pretrain.experiments import DEFAULT_EXP, resolve

    p.add_argument("--config", default=resolve(DEFAULT_EXP, full=False),
                   help="a mini pretraining config (default: that of make pretrain's default experiment)")
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "mini" / "imagenet"), type=PathArg("dir"))
    p.add_argument("--images", type=COUNT, default=1920, help="training images of the one-epoch run")
    p.add_argument("--policies", nargs="+", default=["active-2", "passive-2", "threads-1", "auto"])
    p.add_argument("--competitor", choices=COMPETITORS, default="spin")
    p.add_argument("--json", default=None, metavar="PATH", type=PathArg("out_file"))
    add_record_args(p)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as d:
        for policy in args.policies:
            quiet = run_once(args, policy, False, Path(d))
            busy = run_once(args, policy, True, Path(d))
            rows.append({"policy": policy, "quiet_images_per_s": quiet, "busy_images_per_s": busy,
                         "slowdown": quiet / busy})
            print(f"  {policy}: quiet {quiet:.1f} images/s, busy {busy:.1f} images/s", flush=True)
    print(f"\n# {args.config}, {args.images} images, competitor {args.competitor}, {os.cpu_count()} cores")
    print("| policy | quiet (images/s) | with a competitor (images/s) | slowdown |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['quiet_images_per_s']:.1f} | {r['busy_images_per_s']:.1f} | {r['slowdown']:.2f} |")
    if args.json:
        from lewel_bench.io import atomic_write_json

        atomic_write_json(Path(args.json), {"settings": vars(args), "rows": rows})
    record_from_args(args, tool="tools.bench_threads", argv=argv, tables=[Table(
        f"{args.config}, {args.images} images, competitor {args.competitor}, {os.cpu_count()} cores",
        ["policy", "quiet (images/s)", "with a competitor (images/s)", "slowdown"],
        [[r["policy"], f"{r['quiet_images_per_s']:.1f}", f"{r['busy_images_per_s']:.1f}", f"{r['slowdown']:.2f}"]
         for r in rows])])


if __name__ == "__main__":
    main()
