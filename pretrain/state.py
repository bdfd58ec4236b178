"""A pretraining run's state on disk: its identity, ``checkpoint.pth`` (layout and versions), resuming it, and
the refusals of its run folder (the stage contract of :mod:`lewel_bench.stage`).

``checkpoint.pth``: every parameter and buffer by the module tree (``model``: the online network, predictors,
..., the backbone under ``meta.backbone_prefix``; ``target``; ``queue``: every :class:`FIFOQueue`), the
optimiser, the AMP scaler, ``epoch`` (epochs completed), ``iteration``, ``epoch_end_pending`` (a stop came
before the epoch end's kNN pass and images: a resumed run does them first), the RNG states, the config, and
``meta``: format, method, arch, planned ``epochs``, exp, git commit, transfer parts, the run identity
(``identity``, ``run_id``, ``group``) and how far the run got (``epochs_trained``, ``iterations_trained``,
``complete``).

What a folder may hold is checked before anything is written (:func:`open_run`): the run holds the folder
(a lock that dies with the process); ``--fresh`` discards the saved state; else a checkpoint that cannot be
read, is not a pretraining checkpoint, holds another experiment, was written by a newer version of this code,
or holds a run of another identity is refused (each names the file and ends with the same remedy as every
stage's refusal), and is left as it is.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lewel_bench.checkpoint import PRETRAIN_FORMAT, non_finite_keys, torch_load
from lewel_bench.errors import NonFiniteError
from lewel_bench.io import atomic_write_text
from lewel_bench.stage import (
    IDENTITY_FILE,
    RunFolder,
    RunIdentity,
    StageError,
    digest,
    identity_config,
    on_main_rank,
)
from lewel_bench.utils import get_rng_state, git_commit, set_rng_state

from .methods import SSLMethod
from .methods.base import FIFOQueue

log = logging.getLogger(__name__)

#: Bump when a change of the pretraining code changes what a config computes (part of every run's identity).
CODE_VERSION = 1
#: Layout version of :func:`checkpoint_state` (1: queues were the method's own ``queue`` / ``queue_ptr`` buffers).
STATE_VERSION = 2
#: Version-1 buffer names of a one-queue method -> their names in its ``queue`` :class:`FIFOQueue`.
_V1_QUEUE = {"queue": "queue.keys", "queue_ptr": "queue.ptr"}

CHECKPOINT, BACKBONE, METRICS, RECORD_MARKER = "checkpoint.pth", "backbone.pth", "metrics.jsonl", "pretrain_record.json"
#: What ``--fresh`` removes (with ``identity.json`` and ``result.json``).
STATE_FILES = (CHECKPOINT, BACKBONE, METRICS, RECORD_MARKER, "config.yaml", "tb/*")


class ResumeError(StageError):
    """The output folder holds a checkpoint that cannot be resumed (another run, unreadable, a newer version);
    it is left as it is."""


def pretrain_identity(cfg: dict, data: Mapping[str, Any]) -> RunIdentity:
    """What determines a pretraining run's result: its config (minus the ``_neutral_`` keys; the seed is the
    config's), its data and :data:`CODE_VERSION`. ``group`` leaves the seed out (runs the tables may average)."""
    return RunIdentity(stage="pretrain", code_version=CODE_VERSION, config=identity_config(cfg), data=dict(data))


def run_folder(out: Path, identity: RunIdentity) -> RunFolder:
    """The pretraining run folder (its default is ``runs/<exp>``, not one per identity)."""
    return RunFolder(out, identity, STATE_FILES, per_identity=False)


def progress(iteration: int, iters_per_epoch: int, total: int) -> dict[str, Any]:
    """How far a run got: ``epochs_trained`` (complete epochs), ``iterations_trained``, ``complete``."""
    return {"epochs_trained": iteration // iters_per_epoch, "iterations_trained": iteration,
            "complete": iteration >= total}


def _queue_prefixes(method: SSLMethod) -> list[str]:
    return [f"{name}." for name, m in method.named_modules() if isinstance(m, FIFOQueue)]


def checkpoint_state(method: SSLMethod, optimizer, scaler, cfg: dict, iteration: int, iters_per_epoch: int,
                     total: int, exp: str, identity: RunIdentity, epoch_end_pending: bool = False,
                     rng: dict | None = None) -> dict:
    """The checkpoint of iteration ``iteration`` (see the module docstring); ``rng``: the RNG states to store
    (default: now)."""
    sd = method.state_dict()
    queues = _queue_prefixes(method)
    in_queue = {k for k in sd if any(k.startswith(q) for q in queues)}
    return {
        "model": {k: v for k, v in sd.items() if not k.startswith("target.") and k not in in_queue},
        "target": method.target.state_dict(),
        "queue": {k: sd[k] for k in sorted(in_queue)},
        "state_version": STATE_VERSION,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": iteration // iters_per_epoch,
        "iteration": iteration,
        "epoch_end_pending": epoch_end_pending,
        "rng": rng or get_rng_state(),
        "config": cfg,
        "meta": {"format": PRETRAIN_FORMAT, "backbone_prefix": method.backbone_prefix, "arch": cfg["arch"],
                 "method": cfg["method"], "epochs": cfg["epochs"], "exp": exp, "git": git_commit(),
                 "transfer_parts": method.transfer_parts(), "identity": identity.as_dict(),
                 "run_id": identity.run_id, "group": identity.group,
                 **progress(iteration, iters_per_epoch, total)},
    }


def read_checkpoint(path: Path, exp: str, folder: RunFolder, neutral: list[str]) -> dict:
    """``checkpoint.pth`` of ``folder`` if this run may resume from it, else a :class:`ResumeError` naming the
    file and why (unreadable, not a pretraining checkpoint, another experiment, a newer state layout or code
    version, another identity); the file is left as it is. ``neutral``: the config's ``_neutral_`` keys (a
    checkpoint of an older version keeps only its config to compare)."""
    remedy = f"it is left as it is: {folder.remedy}"
    try:
        ck = torch_load(path, "pretraining checkpoint", ResumeError)
    except ResumeError as e:
        raise ResumeError(f"{e}; {remedy}") from None
    meta = ck.get("meta", {}) if isinstance(ck, dict) else {}
    if meta.get("format") != PRETRAIN_FORMAT:
        raise ResumeError(f"{path} is not a lewel-bench pretraining checkpoint (meta.format={meta.get('format')!r}); "
                          f"{remedy}")
    method = folder.identity.config["method"]
    if meta.get("exp") != exp or meta.get("method") != method:
        raise ResumeError(f"{path} holds experiment {meta.get('exp')!r} (method {meta.get('method')!r}), not {exp!r}: "
                          f"{folder.remedy}")
    version = ck.get("state_version", 1)
    if not isinstance(version, int) or version > STATE_VERSION:
        raise ResumeError(f"{path} was written by a newer version of the pretraining code (state layout {version}; "
                          f"this code reads layouts up to {STATE_VERSION}): update the code to resume it, or "
                          f"{folder.remedy}")
    own = folder.identity.as_dict()
    saved = meta.get("identity")
    if saved is None:  # a checkpoint of an older version: compare what it kept (the config)
        saved = {**own, "config": identity_config({**ck.get("config", {}), "_meta": {"neutral": neutral}})}
        if saved["config"] == own["config"]:
            log.warning("%s has no data identity (an older version): its config matches; its data is not checked",
                        path)
    if digest(saved) != folder.identity.run_id:
        raise ResumeError(str(folder.other_run(saved, path)))
    return ck


def restore(ck: dict, path: Path, method: SSLMethod, optimizer, scaler) -> int:
    """Load a checkpoint read by :func:`read_checkpoint` into the method, optimiser, scaler and RNGs; returns
    its iteration."""
    sd = dict(ck["model"])
    sd.update({f"target.{k}": v for k, v in ck["target"].items()})
    queue = dict(ck["queue"])
    if ck.get("state_version", 1) == 1 and set(queue) == set(_V1_QUEUE) and "queue." in _queue_prefixes(method):
        queue = {_V1_QUEUE[k]: v for k, v in queue.items()}  # a checkpoint of the one-queue layout
    sd.update(queue)
    missing, unexpected = method.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ResumeError(f"{path} does not fit this version of {method.cfg['method']!r} (state layout "
                          f"{ck.get('state_version', 1)}, now {STATE_VERSION}; {len(missing)} tensor(s) missing, "
                          f"first {missing[:3]}; {len(unexpected)} unexpected, first {unexpected[:3]}): it is "
                          f"left as it is; start the run in another output folder (--out), or pass --fresh to "
                          f"discard it")
    optimizer.load_state_dict(ck["optimizer"])
    scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    return int(ck["iteration"])


def open_run(folder: RunFolder, exp: str, fresh: bool, is_main: bool, neutral: list[str]) -> dict | None:
    """On the main process: hold ``folder``, refuse what cannot be resumed (see the module docstring), prepare
    it (stale temporary files removed, with ``fresh`` the saved state too, ``identity.json`` written); the other
    processes raise what it met, then read the checkpoint it accepted. Returns the checkpoint to resume from, or
    None for a fresh start."""
    path = folder.out / CHECKPOINT
    found: dict[str, dict | None] = {"ck": None}

    def work() -> None:
        folder.lock.acquire()
        if not fresh and path.exists():
            found["ck"] = read_checkpoint(path, exp, folder, neutral)
            saved = folder.saved_identity()  # an identity file beside it must be the same run's
            if saved is not None and saved.get("run_id") != folder.identity.run_id:
                raise ResumeError(str(folder.other_run(saved.get("identity", {}), folder.out / IDENTITY_FILE)))
        else:
            folder.check(fresh)
        folder.prepare(fresh)

    on_main_rank(is_main, work)
    if is_main or fresh or not path.exists():
        return found["ck"]
    return read_checkpoint(path, exp, folder, neutral)


def check_finite_state(state: dict, iteration: int, last_good: int, path: Path) -> None:
    """Refuse to write a checkpoint holding NaN / inf (model, target or queue); the last finite one stays."""
    bad = non_finite_keys({k: state[k] for k in ("model", "target", "queue")})
    if bad:
        raise NonFiniteError(f"the training state holds NaN or inf at iteration {iteration} ({len(bad)} tensor(s), "
                             f"first: {', '.join(bad[:3])}); stopped without saving. Last good checkpoint: {path} "
                             f"at iteration {last_good}")


def truncate_metrics(path: Path, iteration: int) -> None:
    """Keep only the metric lines of iterations <= ``iteration`` (those the checkpoint has seen)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iter", 0) <= iteration:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(line + "\n" for line in keep))
