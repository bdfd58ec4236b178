"""Records -> the per-metric runs the tables match, and the records that cannot be placed (with the reason).

A record is listed (``unmatched``), never placed, when it is malformed, of an unknown ``schema`` or eval /
protocol, written by a newer ``protocol_version`` than the evaluation declares, failed, or has non-numeric
metrics. Two records of one ``run_id`` are one run recorded twice (a ``--fresh`` re-run, a relabelled row): the
latest counts. A record of an unfinished pretraining (``pretrain_complete: false``) keeps to a group of its own
(never averaged with the finished run's). ``row`` (``--row mocov2_800ep``) places a published checkpoint's record
as that method and epochs.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..declare import Evaluation, evaluations
from ..records import (
    SCHEMA_VERSION,
    record_data,
    record_group,
    record_weights,
    result_overrides,
)

log = logging.getLogger(__name__)

IN100 = "imagenet100"
ROW = re.compile(r"(?P<method>[A-Za-z0-9][\w.+-]*?)(?:_(?P<epochs>\d+)ep)?")


@dataclass
class Run:
    """One metric value of one record, with everything a table matches on."""
    method: str
    exp: str
    epochs: int | None
    eval: str
    protocol: str
    metric: str
    value: float
    dataset: str
    path: str
    group: str = ""
    data: str = ""
    weights: str = "trunk"
    in100: bool = False
    hardware: str = ""
    sweep_group: str = ""
    sweep: str = ""          # "<key>=<value>" of a sweep point
    pretrain_data: str = ""  # name of the checkpoint's pretraining data (imagenet100, mini, ...)
    pretrain_sweep: str = ""  # "<key>=<value>": the checkpoint is one point of a pretraining sweep
    ablation: bool = False   # belongs to the ablation tables (mark_ablations), never to Tables 1-4 / 8 / 9
    pretrain_group: str = ""  # the pretraining recipe (one row of ours per recipe; "" for old records)
    attrs: dict[str, str] = field(default_factory=dict)   # RECORD_ATTRS values
    arch: str = ""           # the evaluated backbone's arch ("" when the record does not say)
    changed: tuple[str, ...] = ()   # overrides that change the result (result_overrides)
    complete: bool | None = None    # the checkpoint's pretraining finished (None: not known)
    iters: int | None = None        # pretraining iterations the checkpoint trained
    row: str = ""            # the paper row the user named (--row), "" for none


def parse_row(row: str) -> tuple[str, int | None] | None:
    """``mocov2_800ep`` -> ("mocov2", 800); ``supervised`` -> ("supervised", None); None if malformed."""
    m = ROW.fullmatch(str(row).strip())
    if not m:
        return None
    return m["method"], (int(m["epochs"]) if m["epochs"] else None)


def sweep_label(key: Any, value: Any) -> str:
    """``<key>=<value>`` of a sweep point, numbers written as the paper CSVs write them (``model.beta=0.3``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{key}={value}"


#: What a row can ask of a record besides method / epochs / protocol: row column -> (the record's value given the
#: experiments' declared variants, the value a table WITHOUT that column requires). ``feature``: the linear
#: probe's input (eval_linear); ``variant``: the pretraining's declared variant (a config's ``paper.variant``,
#: e.g. ``multi`` for a multi-crop pretraining).
RECORD_ATTRS: dict[str, tuple[Callable[[Mapping, Mapping[str, str]], str], str]] = {
    "feature": (lambda rec, variants: str(rec.get("feature") or "gap"), "gap"),
    "variant": (lambda rec, variants: str(variants.get(str(rec.get("pretrain_exp") or ""), "")), ""),
}


def latest_per_run(records: list[dict]) -> list[dict]:
    """One record per ``run_id``: a record another one relabelled (``relabelled_from``, ``--row``) is superseded by
    it; of the rest the latest by end time, then file name. Records without a run id are all kept."""
    relabelled = {Path(str(r["relabelled_from"])).name for r in records if r.get("relabelled_from")}

    def rank(rec: dict) -> tuple:
        return (Path(str(rec.get("_path"))).name not in relabelled, str(rec.get("end_time") or ""),
                str(rec.get("_path") or ""))

    best: dict[str, dict] = {}
    for rec in records:
        rid = rec.get("run_id")
        if rid and (str(rid) not in best or rank(rec) > rank(best[str(rid)])):
            best[str(rid)] = rec
    out = []
    for rec in records:
        rid = rec.get("run_id")
        if rid and best[str(rid)] is not rec:
            log.info("record %s: the same run as %s (run id %s), which supersedes it: not counted twice",
                     rec.get("_path"), best[str(rid)].get("_path"), rid)
            continue
        out.append(rec)
    return out


def problem_rows(problems: list[str]) -> list[dict]:
    """load_records' problems ("<file>: <message>", the message may repeat the file) as unmatched rows."""
    out = []
    for p in problems:
        file, _, msg = p.partition(": ")
        msg = msg[len(file) + 2:] if msg.startswith(file + ": ") else msg
        out.append({"file": file, "reason": f"malformed: {msg}"})
    return out


def refusal(rec: Mapping[str, Any], evals: Mapping[str, Evaluation]) -> str | None:
    """Why a record cannot be placed in any table (None: it can)."""
    schema = rec.get("schema", SCHEMA_VERSION)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA_VERSION:
        return (f"record schema {schema!r}: this code reads schema 1..{SCHEMA_VERSION} (written by another version "
                f"of the suite; listed, never averaged)")
    ev, proto = str(rec["eval"]), str(rec["protocol"])
    if ev not in evals:
        return f"unknown eval {ev!r} (known: {sorted(evals)})"
    if proto not in evals[ev].protocols:
        return f"unknown protocol {proto!r} for eval {ev!r} (known: {sorted(evals[ev].protocols)})"
    pv = rec.get("protocol_version")
    if pv is not None and (not isinstance(pv, int) or isinstance(pv, bool) or pv > evals[ev].version):
        return (f"protocol version {pv!r} of eval {ev!r}: this code's is {evals[ev].version} (written by a newer "
                f"version of the evaluation; listed, never averaged)")
    epochs = rec.get("pretrain_epochs")
    try:
        None if epochs is None else int(epochs)
    except (TypeError, ValueError):
        return f"pretrain_epochs {epochs!r} is not an integer"
    if rec.get("row") is not None and parse_row(str(rec["row"])) is None:
        return f"row {rec['row']!r}: expected <method>[_<N>ep] (e.g. mocov2_800ep)"
    if rec.get("status", "ok") == "failed":
        return f"failed run, skipped: {rec.get('failure', 'no reason given')}"
    bad = [k for k, v in rec["metrics"].items()
           if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
    if bad:
        return f"non-numeric metrics {bad}"
    return None


def unfinished_tag(rec: Mapping[str, Any]) -> str:
    """``unfinished:<epochs>:<iters>`` for a record of an unfinished pretraining, else ''."""
    if rec.get("pretrain_complete") is not False:
        return ""
    return f"unfinished:{rec.get('pretrain_epochs')}:{rec.get('pretrain_iters')}"


def runs_of(rec: Mapping[str, Any], variants: Mapping[str, str]) -> list[Run]:
    """The per-metric runs of a placeable record."""
    proto = str(rec["protocol"])
    method, epochs = str(rec["method"]), rec.get("pretrain_epochs")
    epochs = None if epochs is None else int(epochs)
    if rec.get("row"):
        method, epochs = parse_row(str(rec["row"]))  # type: ignore[misc]
    tag = unfinished_tag(rec)
    group, recipe = record_group(rec), str(rec.get("pretrain_group") or "")
    if tag:  # never one group with the finished run's records
        group, recipe = f"{group}:{tag}", f"{recipe or group}:{tag}"
    sw = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else {}
    psw = rec.get("pretrain_sweep") if isinstance(rec.get("pretrain_sweep"), dict) else {}
    iters = rec.get("pretrain_iters")
    common = dict(
        method=method, exp=str(rec["pretrain_exp"]), epochs=epochs, eval=str(rec["eval"]), protocol=proto,
        dataset=str(rec.get("dataset") or ("mini" if proto == "mini" else "unknown")), path=rec.get("_path", "?"),
        group=group, data=record_data(rec), weights=record_weights(rec), in100=rec.get("pretrain_data") == IN100,
        hardware=str(rec.get("hardware") or ""), sweep_group=str(sw.get("group", "")),
        sweep=f"{sw.get('key')}={sw.get('value')}" if sw else "", pretrain_data=str(rec.get("pretrain_data") or ""),
        pretrain_sweep=sweep_label(psw.get("key"), psw.get("value")) if psw else "", pretrain_group=recipe,
        attrs={name: get(rec, variants) for name, (get, _) in RECORD_ATTRS.items()},
        arch=str(rec.get("arch") or ""), changed=tuple(result_overrides(rec)),
        complete=rec.get("pretrain_complete") if isinstance(rec.get("pretrain_complete"), bool) else None,
        iters=iters if isinstance(iters, int) and not isinstance(iters, bool) else None, row=str(rec.get("row") or ""))
    return [Run(metric=metric, value=float(value), **common) for metric, value in rec["metrics"].items()]


def flatten_records(records: list[dict], problems: list[str], variants: Mapping[str, str] | None = None,
                    evals: Mapping[str, Evaluation] | None = None) -> tuple[list[Run], list[dict]]:
    """Records -> per-metric runs; records that cannot be placed -> unmatched rows (file, reason)."""
    evals = evaluations() if evals is None else evals
    runs: list[Run] = []
    unmatched = problem_rows(problems)
    for rec in latest_per_run(records):
        why = refusal(rec, evals)
        if why:
            unmatched.append({"file": rec.get("_path", "?"), "reason": why})
            continue
        runs += runs_of(rec, variants or {})
    return runs, unmatched


def mark_ablations(runs: list[Run], ablation_exps: set[str]) -> None:
    """Runs of the ablation tables: IN-100 pretraining, a pretraining sweep, or a run of an ablation experiment
    on other data (the mini runs of ``make ablations``: rows of their own); the other tables never take them."""
    for r in runs:
        r.ablation = r.in100 or bool(r.pretrain_sweep) or r.exp in ablation_exps


def aggregate(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None for one run, count)."""
    n = len(values)
    if n == 0:
        return None, None, 0
    s = pd.Series(values, dtype=float)
    return float(s.mean()), (float(s.std(ddof=1)) if n > 1 else None), n
