"""Result records: one JSON file per evaluation run, written atomically under ``results/records/``.

A record is what ``tools/make_tables.py`` aggregates into the paper's tables. Required fields:

    method, pretrain_exp, pretrain_epochs   what was evaluated (from the checkpoint's meta when known)
    eval, protocol                          e.g. eval="linear", protocol="mini"; the vocabulary is declared by
                                            the evaluations (eval_*/declaration.py, lewel_bench.declare)
    metrics                                 {"top1": 71.9, "top5": 90.5} (percentages, like the paper)
    seed, checkpoint_sha256, config         reproducibility
    git_commit, start_time, end_time, host  provenance (filled in by ``make_record``)

Written by the stage contract (:mod:`lewel_bench.stage`) besides: ``status`` (``ok``, or ``failed`` with
``failure`` saying why: a non-finite metric is a failed run, never a number), ``data`` (the identity of
the data root: name, fingerprint; :mod:`lewel_bench.data.identity`), ``dataset`` (its name), ``run_id``
(digest of everything that determines the result) and ``group`` (the same without the seeds and the
checkpoint file: the runs the tables may average), ``pretrain_group`` (the pretraining recipe the
checkpoint came from, without its seed: the evaluations of one recipe share a table row). Optional: ``sweep`` (the run is one point of a sweep
over a config key: key, value, the sweep's group), ``pretrain_sweep`` (the checkpoint is one point of a
pretraining sweep: key, value), ``transfer``, ``pretrain_data``, ``hardware``, ``protocol_version`` (the
evaluation's ``PROTOCOL_VERSION`` that wrote it), ``row`` (the paper row a published checkpoint's record fills,
``<method>[_<N>ep]``: ``--row``), ``result_overrides`` (the overrides that change the result: not ``_neutral_``);
from the checkpoint intake (:class:`lewel_bench.checkpoint.Backbone`): ``source_layout`` and ``prefix`` (the
checkpoint layout and the encoder taken), ``pretrain_iters`` and ``pretrain_complete`` (how far the pretraining
went: iterations, whether it finished; null when the file does not say); ``pretrain_epochs`` is the epochs trained
when the file says so.

File names are unique (time + random suffix), so concurrent evaluations never overwrite each other.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import LewelError
from .io import atomic_write_json
from .utils import REPO_ROOT, git_commit, hostname

REQUIRED = ("method", "pretrain_exp", "pretrain_epochs", "eval", "protocol", "metrics", "seed",
            "checkpoint_sha256", "config", "git_commit", "start_time", "end_time", "host")
SCHEMA_VERSION = 1


STATUSES = ("ok", "failed")


class RecordError(LewelError, ValueError):
    """A record file is malformed; the message names the file and the problem."""


def default_records_dir(repo: Path = REPO_ROOT) -> Path:
    """``$LEWEL_RESULTS_DIR/records`` if set, else ``<repo>/results/records`` (``repo``: this checkout, or another
    one, e.g. a fresh clone a command runs in)."""
    root = os.environ.get("LEWEL_RESULTS_DIR")
    return Path(root) / "records" if root else Path(repo) / "results" / "records"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(*, method: str, pretrain_exp: str, pretrain_epochs: int | None, eval: str, protocol: str,
                metrics: Mapping[str, float], seed: int, checkpoint_sha256: str, config: Mapping[str, Any],
                start_time: str, end_time: str | None = None, **extra: Any) -> dict:
    """Assemble a complete record (provenance fields filled in here)."""
    rec = dict(schema=SCHEMA_VERSION, method=method, pretrain_exp=pretrain_exp, pretrain_epochs=pretrain_epochs,
               eval=eval, protocol=protocol, metrics=dict(metrics), seed=seed,
               checkpoint_sha256=checkpoint_sha256, config=dict(config), git_commit=git_commit(),
               start_time=start_time, end_time=end_time or now_iso(), host=hostname())
    rec.update(extra)
    validate_record(rec, "<new record>")
    return rec


def validate_record(rec: Any, where: str) -> None:
    if not isinstance(rec, Mapping):
        raise RecordError(f"{where}: a record must be a JSON object")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise RecordError(f"{where}: missing fields {', '.join(missing)}")
    if not isinstance(rec["metrics"], Mapping) or not rec["metrics"]:
        raise RecordError(f"{where}: 'metrics' must be a non-empty object")
    status = rec.get("status", "ok")
    if status not in STATUSES:
        raise RecordError(f"{where}: status {status!r}, expected one of {', '.join(STATUSES)}")
    if status == "ok":
        bad = [k for k, v in rec["metrics"].items() if not is_finite_number(v)]
        if bad:
            raise RecordError(f"{where}: metric(s) {', '.join(bad)} not a finite number "
                              f"({', '.join(repr(rec['metrics'][k]) for k in bad)}): a run with such a result "
                              f"is recorded as failed")


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def non_finite_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """Names of the metrics that are not finite numbers (NaN, inf, None, strings)."""
    return [k for k, v in metrics.items() if not is_finite_number(v)]


def failed_record(rec: Mapping[str, Any], reason: str) -> dict:
    """``rec`` marked failed: non-finite metric values become ``null`` (valid JSON), ``failure`` says why."""
    out = dict(rec)
    out["status"] = "failed"
    out["failure"] = reason
    out["metrics"] = {k: (v if is_finite_number(v) else None) for k, v in rec["metrics"].items()}
    return out


def write_record(rec: Mapping[str, Any], records_dir: str | Path | None = None) -> Path:
    """Validate and write ``rec`` atomically to a unique file; returns its path."""
    validate_record(rec, "<record to write>")
    d = Path(records_dir) if records_dir else default_records_dir()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{rec['eval']}-{rec['pretrain_exp']}-{stamp}-{uuid.uuid4().hex[:8]}.json"
    return atomic_write_json(d / name.replace("/", "_"), dict(rec))


def load_records(records_dir: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """All records under ``records_dir`` and a list of problems (malformed files), never silently dropped."""
    d = Path(records_dir) if records_dir else default_records_dir()
    records, problems = [], []
    for p in sorted(d.glob("*.json")):
        if not p.is_file():
            problems.append(f"{p}: not a file (a {'folder' if p.is_dir() else 'special file'} named like a record)")
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
            validate_record(rec, str(p))
        except UnicodeDecodeError as e:
            problems.append(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})")
            continue
        except json.JSONDecodeError as e:
            problems.append(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
            continue
        except RecordError as e:
            problems.append(f"{p}: {e}")
            continue
        except OSError as e:
            problems.append(f"{p}: cannot be read ({e.strerror or e})")
            continue
        rec["_path"] = str(p)
        records.append(rec)
    return records, problems


def record_data(rec: Mapping[str, Any]) -> str:
    """``<name>:<fingerprint[:8]>`` of the record's data identity (the dataset name alone for old records)."""
    d = rec.get("data") if isinstance(rec.get("data"), Mapping) else {}
    name = str(rec.get("dataset") or d.get("name") or "unknown")
    return f"{name}:{str(d['fingerprint'])[:8]}" if d.get("fingerprint") else name


def record_weights(rec: Mapping[str, Any]) -> str:
    """What the evaluated model took from the checkpoint: ``trunk`` or ``trunk+fpn+box_head`` (the record's
    ``transfer``; ``trunk`` for records that predate it)."""
    t = rec.get("transfer") if isinstance(rec.get("transfer"), Mapping) else {}
    return "+".join(["trunk", *sorted(k for k in t if k != "trunk")])


def record_group(rec: Mapping[str, Any]) -> str:
    """The record's ``group`` (runs that may be averaged); for records written before groups existed, a
    digest of everything but the seed that the record kept."""
    import hashlib

    if rec.get("group"):
        return str(rec["group"])
    cfg = {k: v for k, v in (rec.get("config") or {}).items() if k not in ("seed", "_meta")}
    keep = {k: rec.get(k) for k in ("eval", "protocol", "dataset", "method", "pretrain_exp", "pretrain_epochs",
                                    "backend", "arch")}
    blob = json.dumps({**keep, "config": cfg}, sort_keys=True, default=str)
    return "legacy-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def result_overrides(rec: Mapping[str, Any]) -> list[str]:
    """The record's overrides that change its result: ``result_overrides`` when written (the config's
    ``_neutral_`` keys left out), else those of its ``overrides`` whose key is in its config (the identity
    config holds no neutral key); the key of the record's sweep is never counted (the sweep is its own)."""
    sweep = rec.get("sweep") if isinstance(rec.get("sweep"), Mapping) else {}
    given = rec.get("result_overrides")
    if isinstance(given, list):
        items = [str(o) for o in given]
    else:
        cfg = rec.get("config") if isinstance(rec.get("config"), Mapping) else {}
        items = [str(o) for o in (rec.get("overrides") or []) if _has_key(cfg, str(o).split("=", 1)[0].strip())]
    return [o for o in items if o.split("=", 1)[0].strip() != sweep.get("key")]


def _has_key(cfg: Mapping[str, Any], key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def record_for_backbone(bb: Any, *, eval: str, protocol: str, metrics: Mapping[str, float], seed: int,
                        config: Mapping[str, Any], start_time: str, **extra: Any) -> dict:
    """A record whose method / experiment / epochs / sha256 / pretraining data come from a
    ``checkpoint.Backbone``; ``transfer`` (what the evaluated model took from it: ``{"trunk": n, <part>:
    n}``) defaults to the backbone's own (:meth:`~lewel_bench.checkpoint.Backbone.transfer`)."""
    meta = bb.meta or {}
    pdata = meta.get("data") if isinstance(meta.get("data"), Mapping) else {}
    extra.setdefault("transfer", bb.transfer())
    if isinstance(meta.get("sweep"), Mapping):  # the checkpoint is one point of a pretraining sweep
        extra.setdefault("pretrain_sweep", dict(meta["sweep"]))
    # which layout and encoder of the file were taken; how far it trained (None: the file does not say)
    extra.setdefault("source_layout", getattr(bb, "layout", "") or None)
    extra.setdefault("prefix", bb.prefix if getattr(bb, "layout", "") else None)
    extra.setdefault("pretrain_iters", getattr(bb, "iterations_trained", None))
    extra.setdefault("pretrain_complete", getattr(bb, "complete", None))
    trained = getattr(bb, "epochs_trained", None)
    return make_record(method=meta.get("method", "unknown"), pretrain_exp=meta.get("exp", Path(bb.path).parent.name),
                       pretrain_epochs=trained if trained is not None else meta.get("epochs"), eval=eval,
                       protocol=protocol, metrics=metrics, seed=seed,
                       checkpoint_sha256=bb.sha256, config=config, start_time=start_time,
                       checkpoint=bb.path, arch=bb.arch, pretrain_data=pdata.get("name"), **extra)
