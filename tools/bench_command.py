"""Time a command and record it, with the result records it wrote: the source of the set-up times and of the
mini results in the documentation (``docs/benchmarks.md``, the README's measured spans).

    python -m tools.bench_command --name setup-pretrain --clone -- make pretrain EXP=lewel_m
    python -m tools.bench_command --name setup-test --clone -- make test
    python -m tools.bench_command --name demo -- make demo
    make bench-command NAME=eval-linear CMD="make eval-linear EXP=lewel_m"

Runs the command (in this checkout, or with ``--clone`` in a fresh clone of its HEAD in a temporary folder, so the
time includes creating the venv and the mini data), streaming its output, and writes one benchmark record
(:mod:`lewel_bench.benchmarks`) into ``--bench-record`` (default ``docs/benchmarks/records``): the wall time, the
command's last output lines and the exit status; and one row per result record the command wrote (eval, protocol,
method, data, seed, metrics, status; read from ``$LEWEL_RESULTS_DIR/records``, else the checkout's
``results/records``). A command that fails is recorded as failed (and this tool exits with its status).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from lewel_bench import benchmarks as B
from lewel_bench.args import COUNT, ArgumentParser, PathArg
from lewel_bench.errors import LewelError
from lewel_bench.records import default_records_dir
from lewel_bench.stage import cli_entry
from lewel_bench.utils import REPO_ROOT


class CommandFailed(LewelError):
    exit_status = 1


def duration(seconds: float) -> str:
    """``3m59s`` / ``41.2 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m{s:02d}s" if m >= 60 else f"{m}m{s:02d}s"


def _metrics(m: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in sorted(m.items()))


def result_rows(files: list[Path]) -> list[list]:
    """One row per result record: eval, protocol, method, data, seed, metrics, status."""
    rows = []
    for p in sorted(files):
        try:
            r = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LewelError(f"{p}: not a readable record ({e})") from None
        data = r.get("data") or {}
        rows.append([r.get("eval"), r.get("protocol"), r.get("method"), data.get("name") or r.get("dataset"),
                     r.get("seed"), _metrics(r.get("metrics") or {}), r.get("status", "ok")])
    return rows


def scrub(line: str, cwd: Path) -> str:
    """An output line with this machine's folders named as the user would: the checkout ``.``, the runs and results
    folders by their variables (a record is committed; it names no path of the machine it ran on)."""
    for var in ("LEWEL_RUNS_DIR", "LEWEL_RESULTS_DIR"):
        if os.environ.get(var):
            line = line.replace(os.environ[var].rstrip("/"), f"${var}")
    return line.replace(f"{cwd}/", "").replace(str(cwd), ".")


def run(cmd: list[str], cwd: Path, tail: int) -> tuple[int, float, list[str]]:
    """Run ``cmd`` in ``cwd`` streaming its output; (status, seconds, its last ``tail`` lines)."""
    last: deque[str] = deque(maxlen=tail)
    t = time.perf_counter()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last.append(scrub(line.rstrip().rsplit("\r", 1)[-1], cwd)[:200])  # a progress bar: its last state
        status = proc.wait()
    return status, time.perf_counter() - t, list(last)


@cli_entry("bench_command")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_command", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="the record's name (the page shows the newest record per name)")
    p.add_argument("--clone", action="store_true", help="run in a fresh clone of this checkout's HEAD")
    p.add_argument("--tail", type=COUNT, default=3, help="output lines kept in the record")
    p.add_argument("--bench-record", metavar="DIR", default=str(REPO_ROOT / B.RECORDS_DIR), type=PathArg("out_dir"),
                   help="where the record goes (default docs/benchmarks/records)")
    p.add_argument("--bench-note", metavar="TEXT", default=None)
    p.add_argument("command", nargs="+", help="the command (after --)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_command_") as tmp:
        cwd = REPO_ROOT
        if args.clone:
            cwd = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(cwd)], check=True)
        rec_dir = default_records_dir(cwd)
        before = set(rec_dir.glob("*.json")) if rec_dir.is_dir() else set()
        status, secs, last = run(args.command, cwd, args.tail)
        new = sorted(set(rec_dir.glob("*.json")) - before) if rec_dir.is_dir() else []
        rows = result_rows(new)
    shown = shlex.join(args.command)
    where = "    # in a fresh clone" if args.clone else ""
    tables = [B.Table("", ["wall time", "exit status", "last output lines"],
                      [[duration(secs), status, " / ".join(last)]])]
    if rows:
        tables.append(B.Table("result records it wrote", ["eval", "protocol", "method", "data", "seed", "metrics",
                                                          "status"], rows))
    path = B.write_record(args.bench_record, name=args.name, tool="tools.bench_command", command=shown + where,
                          tables=tables, note=args.bench_note, settings={"clone": args.clone, "seconds": secs},
                          summary=duration(secs) + (" in a fresh clone" if args.clone else "")
                          + ("" if status == 0 else f", FAILED (exit status {status})"))
    print(f"benchmark record: {path}", flush=True)
    if status:
        raise CommandFailed(f"{shown} exited with status {status} (recorded in {path})")


if __name__ == "__main__":
    main()
