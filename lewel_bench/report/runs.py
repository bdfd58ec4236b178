"""The pretraining runs of a runs folder, and the records that evaluated each."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .base import ReportError, read_json

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    path: Path
    name: str
    identity: dict
    cfg: dict
    metrics: pd.DataFrame | None
    commit: str = ""
    records: list[int] = field(default_factory=list)
    curves_img: str = ""
    align_img: str = ""
    align_note: str = ""
    config_link: str = ""

    @property
    def data(self) -> dict:
        return (self.identity.get("identity") or {}).get("data") or {}

    @property
    def fingerprint(self) -> str:
        return str(self.data.get("fingerprint") or "")



def checkpoint_commit(run: Path) -> str:
    """The commit the run's weights were trained at (``meta.git`` of backbone.pth, else checkpoint.pth)."""
    import torch

    for name, weights_only in (("backbone.pth", True), ("checkpoint.pth", False)):
        f = run / name
        if not f.is_file():
            continue
        try:
            ck = torch.load(f, map_location="cpu", weights_only=weights_only, mmap=True)
            git = (ck.get("meta") or {}).get("git") if isinstance(ck, dict) else None
            if git:
                return str(git)
        except Exception as e:  # noqa: BLE001 - a commit we cannot read is shown as unknown
            log.warning("%s: cannot read its meta (%s); commit unknown", f, e)
    return ""


def find_runs(root: Path) -> list[RunInfo]:
    """Pretraining run folders under ``root``: ``<root>/<name>/identity.json`` of stage ``pretrain``."""
    import yaml

    from .curves import MetricsError, read_metrics

    runs = []
    if not root.is_dir():
        return runs
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        f = d / "identity.json"
        if not f.is_file():
            continue
        ident = read_json(f)
        if not isinstance(ident, dict):
            raise ReportError(f"{f}: expected a JSON object")
        if (ident.get("identity") or {}).get("stage", "pretrain") != "pretrain":
            continue
        cfg: dict = {}
        cf = d / "config.yaml"
        if cf.is_file():
            try:
                cfg = yaml.safe_load(cf.read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise ReportError(f"{cf}: not readable YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(cfg, dict):
                raise ReportError(f"{cf}: expected a mapping")
        metrics = None
        mf = d / "metrics.jsonl"
        if mf.is_file() and mf.stat().st_size:
            try:
                metrics = read_metrics(mf)
            except MetricsError as e:
                raise ReportError(str(e)) from None
        runs.append(RunInfo(d, d.name, ident, cfg, metrics, commit=checkpoint_commit(d)))
    return runs


def records_of(run: RunInfo, records: list[dict]) -> list[int]:
    """Indices of the records that evaluated this run's weights: their checkpoint lies in the run folder, or
    their pretraining experiment has the run's name (or its config's)."""
    base = run.path.resolve()
    names = {run.name, Path(str((run.cfg.get("_meta") or {}).get("config_path") or run.name)).stem}
    out = []
    for i, r in enumerate(records):
        ck = r.get("checkpoint")
        if r.get("method") == "random" or (isinstance(ck, str) and ck.startswith("random:")):
            continue
        inside = False
        if isinstance(ck, str) and ck:
            try:
                inside = Path(ck).resolve().parent == base
            except OSError:
                pass
        if inside or r.get("pretrain_exp") in names:
            out.append(i)
    return out

