"""Benchmark records and the page generated from them (``docs/benchmarks.md``).

Every number the documentation gives about speed or about the mini results comes from a *benchmark record*: a
small JSON file under ``docs/benchmarks/records/`` (committed) that says what ran (the exact command), where (the
machine: CPU model and cores, memory, GPU, torch), when (date, commit) and what it measured (tables of numbers).
The benchmark tools write one with ``--bench-record DIR`` (``make bench-*`` pass ``BENCH_RECORDS``), and
``tools.bench_command`` times any command (``make pretrain ...``, ``make test``, ``make demo``) and records the
result records it wrote. :func:`render_page` turns the records into the page; :func:`fill_blocks` fills the
README's generated spans (``<!-- bench:NAME -->...<!-- /bench -->``) from the record of that name, so re-running a
benchmark and ``make benchmarks-page`` updates both, and ``--check`` says when a committed page is stale.

A record::

    {"schema": 1, "name": "bench_pretrain", "tool": "tools.bench_pretrain", "command": "python -m ...",
     "date": "2026-12-03T10:00:00+00:00", "commit": "<sha>", "machine": {"cpu": ..., "cores": 2, ...},
     "device": "cpu" | "<GPU name>", "note": "short run ...", "source": "measured" | "transcribed: ...",
     "summary": "one line for the README", "tables": [{"title": ..., "columns": [...], "rows": [[...], ...]}]}

The page shows, per (name, device), the newest record; older ones stay in the folder (their count is shown).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LewelError
from .io import atomic_write_json
from .paths import REPO_ROOT
from .records import now_iso

SCHEMA = 1
#: where the committed records live (relative to the repository)
RECORDS_DIR = Path("docs") / "benchmarks" / "records"
PAGE = Path("docs") / "benchmarks.md"
REQUIRED = ("schema", "name", "tool", "command", "date", "commit", "machine", "device", "tables")
#: the command-line options every benchmark tool takes (:func:`add_record_args`), left out of the recorded command
RECORD_OPTIONS = ("--bench-record", "--bench-note", "--bench-name")


class BenchRecordError(LewelError, ValueError):
    """A benchmark record is malformed; the message names the file and the field."""


@dataclass
class Table:
    """A table of a record: a title, column names and rows of cells (numbers or text)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def as_dict(self) -> dict:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores this process may use, memory, GPU, torch, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem = round(kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": cpu, "cores": cores, "memory_gib": mem, "os": f"{platform.system()} {platform.release()}",
                            "python": platform.python_version(), "torch": None, "gpu": None}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            info["gpu"] = f"{n} x {torch.cuda.get_device_name(0)}" if n > 1 else torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run of ``python -m module argv`` (the record options left out)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in RECORD_OPTIONS:
            skip = True
            continue
        if a.split("=", 1)[0] in RECORD_OPTIONS:
            continue
        kept.append(a)
    return shlex.join(["python", "-m", module, *kept])


def add_record_args(parser) -> None:
    """``--bench-record DIR``, ``--bench-note TEXT``, ``--bench-name NAME`` (every benchmark tool)."""
    from .args import PathArg

    parser.add_argument("--bench-record", metavar="DIR", default=None, type=PathArg("out_dir"),
                        help="also write a benchmark record into DIR (docs/benchmarks/records: the page's source)")
    parser.add_argument("--bench-note", metavar="TEXT", default=None,
                        help="a note the page shows with the numbers (e.g. 'short run: 2 rounds')")
    parser.add_argument("--bench-name", metavar="NAME", default=None,
                        help="the record's name (default: the tool's); the page shows the newest record per name")


def write_record(out: str | Path, *, name: str, tool: str, command: str, tables: Iterable[Table | Mapping],
                 device: str = "cpu", note: str | None = None, summary: str | None = None,
                 settings: Mapping[str, Any] | None = None, source: str = "measured",
                 date: str | None = None, commit: str | None = None,
                 machine_info: Mapping[str, Any] | None = None) -> Path:
    """Write one benchmark record into ``out`` (atomically; a unique file name) and return its path."""
    from .utils import git_commit

    rec = {"schema": SCHEMA, "name": name, "tool": tool, "command": command,
           "date": date or now_iso(),
           "commit": commit or git_commit(REPO_ROOT), "machine": dict(machine_info or machine()), "device": device,
           "source": source, "note": note, "summary": summary, "settings": dict(settings or {}),
           "tables": [t.as_dict() if isinstance(t, Table) else dict(t) for t in tables]}
    validate(rec, "<new benchmark record>")
    stamp = rec["date"][:19].replace(":", "").replace("-", "")
    path = Path(out) / f"{_slug(name)}-{stamp}-{uuid.uuid4().hex[:6]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    return path


def device_label(device: Any) -> str:
    """A record's ``device``: the GPU's name for a CUDA device (a ``torch.device``), else ``"cpu"``."""
    if getattr(device, "type", device) != "cuda":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(device)


def record_from_args(args, *, tool: str, argv: Sequence[str] | None, tables: Iterable[Table], device: Any = "cpu",
                     settings: Mapping[str, Any] | None = None, summary: str | None = None) -> Path | None:
    """The record of a benchmark tool's run when ``--bench-record`` was given (printed); else nothing. ``device``:
    the ``torch.device`` the tool measured on (:func:`device_label`)."""
    if not getattr(args, "bench_record", None):
        return None
    path = write_record(args.bench_record, name=args.bench_name or tool.rsplit(".", 1)[-1], tool=tool,
                        command=command_line(tool, argv), tables=tables, device=device_label(device),
                        note=args.bench_note,
                        settings=settings, summary=summary)
    print(f"benchmark record: {path}", flush=True)
    return path


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def validate(rec: Any, where: str) -> None:
    """Raise :class:`BenchRecordError` naming ``where`` and the field when ``rec`` is not a benchmark record."""
    if not isinstance(rec, Mapping):
        raise BenchRecordError(f"{where}: a benchmark record must be a JSON object")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise BenchRecordError(f"{where}: missing field(s) {', '.join(missing)}")
    if rec["schema"] != SCHEMA:
        raise BenchRecordError(f"{where}: schema {rec['schema']!r}, expected {SCHEMA}")
    for k in ("name", "tool", "command", "date", "commit", "device"):
        if not isinstance(rec[k], str) or not rec[k]:
            raise BenchRecordError(f"{where}: {k} must be a non-empty string, got {rec[k]!r}")
    if not isinstance(rec["machine"], Mapping):
        raise BenchRecordError(f"{where}: machine must be an object")
    if not isinstance(rec["tables"], list):
        raise BenchRecordError(f"{where}: tables must be a list")
    for i, t in enumerate(rec["tables"]):
        if not isinstance(t, Mapping) or not isinstance(t.get("columns"), list) or not isinstance(t.get("rows"), list):
            raise BenchRecordError(f"{where}: tables[{i}] must have 'columns' and 'rows' lists")
        for j, row in enumerate(t["rows"]):
            if not isinstance(row, list) or len(row) != len(t["columns"]):
                raise BenchRecordError(f"{where}: tables[{i}].rows[{j}] must have {len(t['columns'])} cells")


def read_records(folder: str | Path) -> list[dict]:
    """Every record of ``folder`` (``*.json``), validated, each with ``_file`` (its file name)."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BenchRecordError(f"{p}: not a readable JSON file ({e})") from None
        validate(rec, str(p))
        out.append({**rec, "_file": p.name})
    return out


def is_gpu(rec: Mapping) -> bool:
    return rec["device"] != "cpu"


def latest(records: Iterable[Mapping]) -> tuple[list[dict], dict[tuple[str, bool], int]]:
    """The newest record per (name, on a GPU), in name order, and how many older ones each has."""
    by: dict[tuple[str, bool], list[dict]] = {}
    for r in records:
        by.setdefault((r["name"], is_gpu(r)), []).append(dict(r))
    newest, older = [], {}
    for key in sorted(by):
        rs = sorted(by[key], key=lambda r: (r["date"], r.get("_file", "")))
        newest.append(rs[-1])
        older[key] = len(rs) - 1
    return newest, older


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------
def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", s.lower()).strip("-") or "record"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def machine_line(m: Mapping[str, Any], device: str) -> str:
    parts = [f"{m.get('cpu') or 'unknown CPU'}, {m.get('cores') or '?'} cores"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']:g} GiB")
    if device != "cpu":
        parts.insert(0, f"**{device}**")
    elif m.get("gpu"):
        parts.append(f"GPU {m['gpu']} (not used)")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}" + (f" + CUDA {m['cuda']}" if m.get("cuda") else ""))
    return "; ".join(parts)


def render_record(rec: Mapping, older: int = 0, heading: str = "###", folder: str | Path = RECORDS_DIR) -> list[str]:
    """One record as Markdown: heading, the command, machine / date / commit / source, note, its tables."""
    lines = [f"{heading} {rec['name']}", "", "    " + rec["command"], ""]
    prov = [f"machine: {machine_line(rec['machine'], rec['device'])}", f"date: {rec['date'][:10]}",
            f"commit: `{rec['commit'][:12]}{'-dirty' if rec['commit'].endswith('-dirty') else ''}`",
            f"record: `{Path(folder).as_posix()}/{rec.get('_file', '?')}`"]
    if older:
        prov.append(f"{older} earlier record(s) of this name in the folder")
    lines.append("; ".join(prov) + ".")
    if rec.get("source", "measured") != "measured":
        lines += ["", f"Source: {rec['source']}"]
    if rec.get("note"):
        lines += ["", f"Note: {rec['note']}"]
    for t in rec["tables"]:
        lines.append("")
        if t.get("title"):
            lines += [f"*{t['title']}*", ""]
        lines.append("| " + " | ".join(_cell(c) for c in t["columns"]) + " |")
        lines.append("|" + "---|" * len(t["columns"]))
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t["rows"]]
    lines.append("")
    return lines


#: page sections: (title, what belongs there, text when empty)
SECTIONS = (
    ("Commands: set-up, runs and mini results",
     lambda r: not is_gpu(r) and r["tool"] == "tools.bench_command",
     "No command has been timed yet (`make bench-command CMD=\"...\"`)."),
    ("CPU benchmarks", lambda r: not is_gpu(r) and r["tool"] != "tools.bench_command",
     "No CPU benchmark has a record yet (`make bench-pretrain`, `bench-threads`, `bench-loader`, `bench-e2e`)."),
    ("GPU benchmarks", is_gpu, "No GPU figure has a record yet."),
)

HEADER = """# Benchmarks and measured numbers

<!-- Generated by `make benchmarks-page` (python -m tools.bench_page) from {folder}/*.json: do not edit. -->

Every number below comes from a record in `{folder}/`: the exact command, the machine, the date and
the commit it ran at. A benchmark target writes one (`make bench-pretrain`, `make bench-threads`, `make bench-loader`,
`make bench-e2e`: `BENCH_RECORDS=` turns it off) and re-renders this page; `make bench-command BENCH_NAME=setup-pretrain
CLONE=1 CMD="make pretrain EXP=lewel_m"` times any command (in a fresh clone with `CLONE=1`) and records the result
records it wrote (the mini results). The page shows the newest
record of each name; older ones stay in the folder. Timings depend on the machine and on what else ran on it: compare
numbers of one record (the benchmarks interleave what they compare), not across records.
"""


def render_page(records: Sequence[Mapping], folder: str | Path = RECORDS_DIR) -> str:
    """``docs/benchmarks.md`` from the records (sections: commands and mini results, CPU, GPU)."""
    newest, older = latest(records)
    lines = [HEADER.format(folder=Path(folder).as_posix())]
    for title, belongs, empty in SECTIONS:
        lines += [f"## {title}", ""]
        recs = [r for r in newest if belongs(r)]
        if not recs:
            lines += [empty, ""]
        for r in recs:
            lines += render_record(r, older[(r["name"], is_gpu(r))], folder=folder)
    return "\n".join(lines).rstrip() + "\n"


BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w.-]+) -->)(?P<body>.*?)(<!-- /bench -->)", re.DOTALL)


def block_text(rec: Mapping) -> str:
    """A README span filled from a record: its summary, the command, machine (short), date, commit and note."""
    m = rec["machine"]
    where = rec["device"] if is_gpu(rec) else f"{m.get('cores') or '?'} CPU cores"
    cmd = rec["command"].split("    #", 1)[0].strip()
    return (f"{rec.get('summary') or 'measured'} (`{cmd}`, {where}, {rec['date'][:10]}, commit {rec['commit'][:7]}"
            f"{'; ' + rec['note'] if rec.get('note') else ''})")


def fill_blocks(text: str, records: Sequence[Mapping], where: str = "README.md") -> str:
    """``text`` with every ``<!-- bench:NAME -->...<!-- /bench -->`` span filled from the newest record NAME (a
    CPU record before a GPU one); a span naming no record says so."""
    newest, _ = latest(records)
    by_name: dict[str, dict] = {}
    for r in newest:
        by_name.setdefault(r["name"], r)  # sorted (name, is_gpu): the CPU record first

    def sub(m: re.Match) -> str:
        rec = by_name.get(m.group("name"))
        text = block_text(rec) if rec else f"(no record named {m.group('name')} yet: see docs/benchmarks.md)"
        return f"{m.group(1)}{text}{m.group(4)}"

    return BLOCK.sub(sub, text)


# --------------------------------------------------------------------------------------------------
# the README's methods x tables table (from the declarations)
# --------------------------------------------------------------------------------------------------
def short_title(title: str) -> str:
    """``Table 1`` of ``'Table 1: IN-1K linear ...'``, ``MCL Table 11`` of ``'MCL Table 11 (appendix): ...'``."""
    return re.sub(r"\s*\(appendix\)", "", title.split(":", 1)[0]).strip()


def methods_table(methods: Sequence[tuple[str, Any]], titles: Mapping[str, str]) -> str:
    """A Markdown table: per method (its experiment name and its ``paper`` declaration,
    :class:`lewel_bench.declare.Paper`) the paper, the evaluations ``make all`` runs (its chain) and the tables its
    rows are in (``paper.tables``, by their short titles)."""
    lines = ["| `EXP=` | paper | `make all` evaluates (chain steps) | its rows in the tables |", "|---|---|---|---|"]
    for exp, paper in methods:
        tables = ", ".join(short_title(titles.get(t, t)) for t in paper.tables)
        chain = " ".join(f"`{e.name}`" for e in paper.chain)
        lines.append(f"| `{exp}` | {paper.name} | {chain} | {tables} |")
    return "\n".join(lines)


def fill_span(text: str, tag: str, body: str, where: str = "README.md") -> str:
    """``text`` with the span ``<!-- tag -->...<!-- /tag -->`` replaced by ``body`` (on lines of its own)."""
    pat = re.compile(rf"(<!-- {re.escape(tag)} -->\n)(?:.*?\n)?(<!-- /{re.escape(tag)} -->)", re.DOTALL)
    if not pat.search(text):
        raise BenchRecordError(f"{where}: no <!-- {tag} --> ... <!-- /{tag} --> span (each on a line of its own)")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text, count=1)
