"""The contract every evaluation stage follows: arguments, run identity, output folder, result record.

Arguments (:func:`stage_parser`): ``--config``, ``--ckpt`` (with ``--ckpt-prefix`` / ``--layout``: which encoder
of the file, :mod:`lewel_bench.layouts`), ``--data``, ``--out``, ``--seed``, ``--records-dir``, ``--fresh``,
``--sweep``, ``--row`` and ``key=value`` config overrides anywhere on the line.

Identity (:class:`RunIdentity`): what determines a run's result: the stage and its protocol code version,
the resolved config with the overrides (minus the keys the config declares ``_neutral_``: worker counts,
logging), the identity of the data root (:func:`lewel_bench.data.identity.data_identity`), the
checkpoint's sha256 and which of its encoders was taken (``checkpoint_source``: its layout and key prefix),
the seed, and what a stage adds (a subset file's digest, the detection backend).
``run_id`` is its digest; ``group`` the digest without the seed and the checkpoint file but with the
pretraining recipe the checkpoint came from: the runs the tables may average.

Output folder (:class:`RunFolder`): ``--out``, or by default (under ``$LEWEL_RUNS_DIR``, else the
repository's ``runs/``) ``runs/<checkpoint>/<stage>/<config>-<data>-
s<seed>-<run_id[:8]>``, so that a run of another identity always has a folder of its own. The folder keeps
``identity.json``; a folder that holds another identity is refused, naming every difference (or the newer
code version that wrote it; ``--fresh`` discards its state and starts over). A finished run (``result.json``
of the same ``run_id``) is reported, not run again; temporary files of interrupted writes are removed when
the run starts. While it runs, the main process holds the folder (:class:`FolderLock`, a lock the kernel
releases when the process ends): a second run started into it is refused, naming the holder.

Result (:meth:`Stage.finish`): one record (``lewel_bench.records``) with the identity's ``data``,
``run_id`` and ``group``; a non-finite metric makes the record ``failed`` and the stage exits non-zero.
With ``--sweep KEY`` the record also says which point of a sweep over the config key it is (``sweep``:
key, value, and the group of the sweep's points), so the tables can report the sweep's best point. The record
carries the evaluation's ``protocol_version`` and the overrides that change its result (``result_overrides``:
not the config's ``_neutral_`` keys), so the tables can tell a run in the paper's settings from another.
``--row METHOD[_<N>ep]`` names the paper row a published checkpoint's record fills (``mocov2_800ep``): a label,
not part of the run's identity; asking a finished run again with another ``--row`` writes its record again
with that row (nothing is recomputed; the tables count the latest record of a run).

If the record cannot be written (a read-only records folder, a full disk), nothing is lost: ``result.json``
is written first and keeps the metrics and the record; the error names it, and running the same command again
writes the record without running again.

Errors (:func:`cli_entry`): any :class:`~lewel_bench.errors.LewelError` ends the command with one line
naming the file or key and its exit status (2: bad input or a refused run, 1: a failed run; the table in
:mod:`lewel_bench.errors`), Ctrl-C with one line and status 130, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .args import (
    ArgumentParser,
    CheckpointArg,
    ConfigArg,
    PathArg,
    check_path,
    make_dir,
    seed_arg,
)
from .config import ConfigError, get_key
from .errors import (
    EXIT_INTERRUPTED,
    CommandExit,
    LewelError,
    NonFiniteError,
    StorageError,
    one_line,
)
from .io import atomic_write_json, remove_stale_temp
from .layouts import names as layout_names
from .paths import runs_dir
from .signals import quiet_forked_children

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
RESULT_FILE = "result.json"


class StageError(LewelError, RuntimeError):
    """A run cannot start or finish as asked (its folder holds another run, a result is not finite, ...)."""


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def add_encoder_choice(p: argparse.ArgumentParser, *aliases: str) -> None:
    """``--ckpt-prefix`` (with ``aliases``) and ``--layout``: which encoder of a checkpoint file to take, on every
    command line that reads one (evaluations, converters, the inspector)."""
    p.add_argument("--ckpt-prefix", *aliases, dest="ckpt_prefix", default=None, metavar="PREFIX",
                   help="the encoder to take from the checkpoint: its key prefix, in full (e.g. "
                        "state_dict.module.encoder_k.) or inside the checkpoint's state dict (e.g. module.encoder_k.); "
                        "default: the encoder the checkpoint's layout says its authors evaluate (logged; `make inspect "
                        "CKPT=FILE` lists them)")
    p.add_argument("--layout", default=None, choices=layout_names(), metavar="NAME",
                   help="the checkpoint's layout, when the file matches several (default: recognised); one of "
                        + ", ".join(layout_names()))


def stage_parser(prog: str, description: str, default_config: str | None,
                 config: ConfigArg | None = None) -> argparse.ArgumentParser:
    """The arguments every evaluation takes; stages add their own (``--subset``, ``--backend``, ...).

    Paths are checked when the line is parsed (:mod:`lewel_bench.args`): ``--data`` an existing folder,
    ``--ckpt`` a checkpoint file or spec, ``--out`` / ``--records-dir`` folders that can be written, ``--config``
    a name or a config file (``config``: the stage's configs folder, file suffixes and loader); ``--seed`` an
    integer in ``0 .. 2**32 - 1``."""
    p = ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", default=default_config, required=default_config is None,
                   type=config or ConfigArg("."),
                   help="config name in the stage's configs/ folder or a file path"
                        + (f" (default {default_config})" if default_config else ""))
    p.add_argument("--ckpt", required=True, type=CheckpointArg(),
                   help="backbone.pth, a full pretraining checkpoint, a torchvision state dict, random:<arch> "
                        "for an explicit random-init baseline, or supervised:<file> for the supervised ImageNet "
                        "baseline (a torchvision classifier's weights you provide)")
    add_encoder_choice(p)
    p.add_argument("--data", default=None, type=PathArg("dir"),
                   help="dataset root (default: the config's data root)")
    p.add_argument("--out", default=None, type=PathArg("out_dir"),
                   help="output folder (default runs/<checkpoint>/<stage>/<config>-<data>-s<seed>-<run id>)")
    p.add_argument("--seed", type=seed_arg, default=0, help="an integer in 0..2**32-1 (default 0)")
    p.add_argument("--records-dir", default=None, type=PathArg("out_dir"),
                   help="where the result record goes (default results/records)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the saved state / finished result in the output folder and start over")
    p.add_argument("--sweep", default=None, metavar="KEY",
                   help="this run is one point of a sweep over the config key KEY (e.g. solver.base_lr): the "
                        "tables report the best point of the sweep, with its value")
    p.add_argument("--row", default=None, metavar="METHOD[_<N>ep]",
                   help="the paper row this (published) checkpoint's record fills, e.g. mocov2_800ep: MoCo v2's "
                        "800-epoch row in the papers' comparison tables (a label: not part of the run's identity)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides anywhere on the line (e.g. epochs=2 data.crop_size=64)")
    return p


def yaml_config(config_dir: str | Path) -> ConfigArg:
    """``--config`` of a stage whose configs are YAML files in ``config_dir`` (read by
    :func:`lewel_bench.config.load_config`)."""
    from .config import load_config

    return ConfigArg(config_dir, loader=lambda spec, overrides: load_config(spec, config_dir, overrides))


def parse_stage_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse with ``key=value`` overrides allowed anywhere on the line."""
    return parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))


INTERRUPTED = ("interrupted (Ctrl-C): files are written whole or not at all, so nothing is half-written; "
               "the same command resumes or starts again")


def _close_progress_bars() -> None:
    """Close the open tqdm bars (a loop that stopped leaves its bar without a newline), so the line that follows
    stands on its own and last."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        with contextlib.suppress(Exception):  # a bar that cannot be closed must not hide the message
            bar.close()


def _exit(name: str, message: str, status: int) -> CommandExit:
    line = message if message.startswith(f"{name}: ") else f"{name}: {message}"
    _close_progress_bars()
    print(line, file=sys.stderr, flush=True)
    return CommandExit(line, status)


def cli_entry(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command line's ``main(argv)`` (every stage and tool): a :class:`LewelError` becomes one line
    ``<name>: <message>`` on stderr and its exit status (2 bad input, 1 a failed run), Ctrl-C one line and
    status 130; never a traceback. The exit is a :class:`~lewel_bench.errors.CommandExit` (a ``SystemExit``
    whose ``code`` is the status and whose ``str`` is the line). Anything else is a bug and keeps its
    traceback."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*a: Any, **k: Any) -> Any:
            quiet_forked_children()
            try:
                return fn(*a, **k)
            except LewelError as e:
                log.debug("%s failed", name, exc_info=True)
                raise _exit(name, one_line(e), e.exit_status) from None
            except KeyboardInterrupt:
                raise _exit(name, INTERRUPTED, EXIT_INTERRUPTED) from None
        wrapped.command_name = name  # type: ignore[attr-defined]
        return wrapped
    return deco


# --------------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------------
def digest(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (first ``n`` hex digits)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _drop(cfg: Mapping[str, Any], keys: Iterable[str], prefix: str = "") -> dict:
    keys = list(keys)
    out = {}
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        if full in keys or k == "_meta":
            continue
        out[k] = _drop(v, keys, full + ".") if isinstance(v, Mapping) else v
    return out


def identity_config(cfg: Mapping[str, Any]) -> dict:
    """The config as it determines the result: ``_meta`` and the ``_neutral_`` keys left out."""
    neutral = (cfg.get("_meta") or {}).get("neutral", [])
    return json.loads(json.dumps(_drop(cfg, neutral), default=str))


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 8) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (at most ``limit``, then a count)."""
    a, b = _flat(old), _flat(new)
    diff = [f"{k}: {_short(a.get(k, '<absent>'))} -> {_short(b.get(k, '<absent>'))}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    return diff[:limit] + ([f"... {len(diff) - limit} more"] if len(diff) > limit else [])


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:28] + "..." + s[-28:]


@dataclass
class RunIdentity:
    """Everything that determines a run's result (see the module docstring)."""

    stage: str
    code_version: int
    config: dict
    data: dict
    checkpoint_sha256: str | None = None  # None: a stage that starts from no checkpoint (pretraining)
    seed: int | None = None               # None: the seed is the config's own ``seed`` key (pretraining)
    extra: dict = field(default_factory=dict)
    pretrain_group: str = ""
    checkpoint_source: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {"stage": self.stage, "code_version": self.code_version, "config": self.config,
             "data": {k: self.data.get(k) for k in ("name", "fingerprint")}}
        if self.checkpoint_sha256 is not None:
            d["checkpoint_sha256"] = self.checkpoint_sha256
        if self.checkpoint_source:
            d["checkpoint_source"] = self.checkpoint_source
        if self.seed is not None:
            d["seed"] = self.seed
        return {**d, **({"extra": self.extra} if self.extra else {})}

    @property
    def run_id(self) -> str:
        return digest(self.as_dict())

    @property
    def group(self) -> str:
        """Same for runs that differ only in their seeds (eval seed, pretraining seed): what may be averaged."""
        d = self.as_dict()
        if self.seed is None:
            d["config"] = {k: v for k, v in d["config"].items() if k != "seed"}
        d.pop("seed", None)
        if self.checkpoint_sha256 is not None:
            d["checkpoint_sha256"] = self.pretrain_group or self.checkpoint_sha256
        return digest(d)

    def sweep(self, key: str) -> dict[str, Any]:
        """``{"key", "value", "group"}`` of a sweep over config ``key``: the group of the runs that differ only
        in the seeds and in that key's value (a :class:`StageError` when the config has no such key)."""
        try:
            node = get_key(self.config, key, "the run's config")
        except ConfigError as e:
            raise StageError(f"--sweep {key}: {e}") from None
        parts = key.split(".")
        d = self.as_dict()
        d.pop("seed", None)
        d["checkpoint_sha256"] = self.pretrain_group or self.checkpoint_sha256
        cfg = json.loads(json.dumps(d["config"]))
        leaf = cfg
        for part in parts[:-1]:
            leaf = leaf[part]
        leaf[parts[-1]] = "<swept>"
        return {"key": key, "value": node, "group": digest({**d, "config": cfg})}


def pretrain_group(bb: Any) -> str:
    """The pretraining recipe a checkpoint came from, without its seed (from the checkpoint's meta): random-
    init backbones of one arch share one; a checkpoint without the suite's meta is its own (its sha256)."""
    meta = getattr(bb, "meta", None) or {}
    if getattr(bb, "source_format", "") == "random":
        return f"random:{bb.arch}"
    return str(meta.get("group") or "")


def checkpoint_source(bb: Any) -> dict[str, str]:
    """Which encoder of the checkpoint file a run took: ``{"layout", "prefix"}`` (none for a random init)."""
    layout = getattr(bb, "layout", "")
    return {"layout": layout, "prefix": bb.prefix} if layout else {}


# --------------------------------------------------------------------------------------------------
# output folder
# --------------------------------------------------------------------------------------------------
def checkpoint_label(bb: Any) -> str:
    """A folder name for a checkpoint: ``<exp>`` of ``runs/<exp>/...``, else its meta ``exp`` or file stem;
    ``random_<arch>`` for a random-init baseline."""
    if getattr(bb, "source_format", "") == "random":
        return f"random_{bb.arch}"
    runs = runs_dir().resolve()
    path = Path(bb.path).resolve()
    if runs in path.parents:
        return path.relative_to(runs).parts[0]
    return str((bb.meta or {}).get("exp") or path.stem)


def config_name(spec: str) -> str:
    return Path(spec).stem if str(spec).endswith((".yaml", ".yml", ".py")) else str(spec)


def default_out_dir(bb: Any, stage: str, config: str, identity: RunIdentity) -> Path:
    """``runs/<checkpoint>/<stage>/<config>-<data>-s<seed>-<run_id[:8]>`` (see the module docstring)."""
    data = str(identity.data.get("name") or "data").replace("/", "_")
    return runs_dir() / checkpoint_label(bb) / stage / \
        f"{config_name(config)}-{data}-s{identity.seed}-{identity.run_id[:8]}"


def on_main_rank(is_main: bool, work: Callable[[], Any]) -> Any:
    """``work()`` on the main rank only (checks and writes that one process does), its result broadcast to every
    rank; a :class:`LewelError` it raises is raised on every rank (the other ranks: a :class:`StageError` with
    its message), so that no rank waits for one that has stopped."""
    from .dist import broadcast_object

    err: LewelError | None = None
    result = None
    if is_main:
        try:
            result = work()
        except LewelError as e:
            err = e
    msg, result = broadcast_object((one_line(err) if err is not None else None, result))
    if err is not None:
        raise err
    if msg is not None:
        raise StageError(msg)
    return result


class FolderLock:
    """A run's hold on its output folder: an exclusive POSIX record lock (``fcntl.lockf``) on ``<out>/.lock``.

    The kernel releases it when the process ends, however it ends (kill -9, a SLURM requeue), so a re-run or
    a requeued job takes the folder over; a second run started while the first holds it is refused, naming
    the holder (pid, host, start time: written into the lock file by the holder). A record lock, not
    ``flock``: forked loader workers do not inherit it, so a killed run's workers cannot keep it alive.
    Multi-process runs: only the main process locks. Shared file systems: NFS carries these locks to the
    server (NFSv4 natively, v3 through lockd), so runs on two nodes exclude each other; where the file
    system cannot lock (an NFS mount with ``nolock``, Lustre without ``flock``), the run warns and goes on
    unlocked. A lock left by a node that crashed is the server's to expire (NFSv4: its lease, about 90 s).
    """

    NAME = ".lock"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StageError` naming the folder and its holder."""
        if self._fd is not None:
            return
        make_dir(self.folder, "output folder")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StageError(f"output folder {self.folder}: cannot create it or its lock file "
                             f"({e.strerror or e}); choose another --out") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise StageError(f"{self.folder} is in use by another run ({self.holder()}): two runs never share "
                                 f"a folder; wait for that one to end, or choose another --out") from None
            log.warning("%s cannot be locked (%s): the file system does not support locks; another run started "
                        "into this folder at the same time would not be refused", self.path, e.strerror or e)
            return
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)  # in place: a replaced file would be another lock
        self._fd = fd

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it."""
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its holder did not say who it is"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the record lock
            self._fd = None

    def __del__(self) -> None:
        self.release()


class RunFolder:
    """A run's output folder bound to its identity (see the module docstring).

    ``state_files``: the names (or glob patterns) of the stage's saved state (checkpoints, results) that
    ``--fresh`` removes. ``per_identity``: the stage's default folder is per identity (the evaluations), so a
    refusal may suggest leaving ``--out`` out.
    """

    def __init__(self, out: Path, identity: RunIdentity, state_files: Sequence[str] = (RESULT_FILE,),
                 per_identity: bool = True) -> None:
        self.out, self.identity = Path(out), identity
        self.state_files = tuple(dict.fromkeys((*state_files, RESULT_FILE, IDENTITY_FILE)))
        self.per_identity = per_identity
        self.lock = FolderLock(self.out)

    @property
    def remedy(self) -> str:
        """What a refused run can do (the end of every refusal)."""
        default = " (or none: the default folder is per identity)" if self.per_identity else ""
        return f"choose another --out{default}, or pass --fresh to discard it"

    def _state_paths(self) -> list[Path]:
        """The saved-state files present (``state_files`` may hold glob patterns such as ``iter_*.pth``)."""
        found: list[Path] = []
        for pattern in self.state_files:
            found += [p for p in sorted(self.out.glob(pattern)) if p.is_file() and p not in found]
        return found

    def saved_identity(self) -> dict | None:
        """``identity.json`` of the folder (None when there is none)."""
        p = self.out / IDENTITY_FILE
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StageError(f"{p} cannot be read ({e}); delete it to start this run over") from None

    def other_run(self, saved: Mapping[str, Any], where: Path | None = None) -> StageError:
        """The refusal of a folder (or of its file ``where``) that holds the run of identity ``saved``: what
        differs, or that a newer version of the code wrote it."""
        own = self.identity.as_dict()
        where = self.out if where is None else where
        theirs, ours = saved.get("code_version"), own["code_version"]
        if isinstance(theirs, int) and theirs > ours:
            return StageError(f"{where} was written by a newer version of the {own['stage']} code (code version "
                              f"{theirs}; this code: {ours}): update the code to use it, or {self.remedy}")
        diff = differences(saved, own)
        return StageError(f"{where} holds another run with other settings ({'; '.join(diff) or 'run id differs'}): "
                          f"{self.remedy}")

    def check(self, fresh: bool) -> None:
        """Refuse a folder that holds another run (it only reads)."""
        if fresh or not self.out.is_dir():
            return
        saved = self.saved_identity()
        if saved is None:
            left = [p.name for p in self._state_paths()]
            if left:
                raise StageError(f"{self.out} holds a run without an identity file ({', '.join(left)}; written by an "
                                 f"older version): pass --fresh to discard it, or choose another --out")
            return
        if saved.get("run_id") != self.identity.run_id:
            raise self.other_run(saved.get("identity", {}))

    def prepare(self, fresh: bool) -> None:
        """Main rank, holding the folder: create it, remove stale temporary files (and with ``fresh`` the saved
        state), write ``identity.json``."""
        make_dir(self.out, "output folder")
        remove_stale_temp(self.out)
        if fresh:
            for p in self._state_paths():
                p.unlink()
                log.info("--fresh: removed %s", p)
        atomic_write_json(self.out / IDENTITY_FILE, {"run_id": self.identity.run_id, "group": self.identity.group,
                                                     "identity": self.identity.as_dict()})

    def open(self, fresh: bool, is_main: bool = True) -> None:
        """On the main rank: hold the folder (:class:`FolderLock`), check it (see :meth:`check`), :meth:`prepare`
        it; the other ranks raise what it met."""
        def work() -> None:
            self.lock.acquire()
            self.check(fresh)
            self.prepare(fresh)

        on_main_rank(is_main, work)

    def finished(self) -> dict | None:
        """The result of this very run if it has finished (``result.json`` with this ``run_id``)."""
        p = self.out / RESULT_FILE
        if not p.is_file():
            return None
        try:
            res = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return res if res.get("run_id") == self.identity.run_id else None

    def write_result(self, metrics: Mapping[str, Any], record: str | None, **extra: Any) -> None:
        atomic_write_json(self.out / RESULT_FILE, {"run_id": self.identity.run_id, "metrics": dict(metrics),
                                                   "record": record, **extra})

    def write_record(self, records_dir: str | Path | None) -> Path:
        """Write the record that ``result.json`` keeps (``pending_record``) into ``records_dir`` and note its path
        there. A record that cannot be written is a :class:`~lewel_bench.errors.StorageError` naming
        ``result.json`` (which keeps the metrics and the record) and what to do."""
        from .records import default_records_dir, write_record

        path = self.out / RESULT_FILE
        res = json.loads(path.read_text())
        rec = res["pending_record"]
        where = Path(records_dir) if records_dir else default_records_dir()
        try:
            check_path(where, "out_dir", "records folder")
            written = write_record(rec, where)
        except (LewelError, OSError) as e:
            metrics = ", ".join(f"{k} {v}" for k, v in (rec.get("metrics") or {}).items())
            raise StorageError(f"the result ({metrics}) is kept in {path}, but its record cannot be written: "
                               f"{one_line(e)}; run the same command again once the records folder is writable "
                               f"(or pass --records-dir): it writes the record without running again") from None
        res.pop("pending_record")
        res["record"] = str(written)
        atomic_write_json(path, res)
        return written


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """What every evaluation starts from: config, backbone, devices, data, identity, output folder."""

    name: str
    cfg: dict
    bb: Any
    info: Any
    out: Path
    data_root: Path
    seed: int
    start_time: str
    identity: RunIdentity | None = None
    folder: RunFolder | None = None
    sweep_key: str | None = None
    row: str | None = None
    records_dir: str | None = None
    _writer: Any = field(default=None, repr=False)

    @property
    def data(self) -> dict:
        return self.identity.data if self.identity else {}

    @property
    def writer(self) -> Any:
        """The run's :class:`~lewel_bench.tblog.MetricWriter` (``<out>/tb`` when the config's
        ``log.tensorboard`` is on; a no-op otherwise and on non-main ranks), opened on first use."""
        if self._writer is None:
            from .tblog import MetricWriter

            self._writer = MetricWriter.for_run(self.out, self.cfg, self.info.is_main, self.name)
        return self._writer

    def finished(self) -> dict | None:
        """The finished result of this run, logged, or None. Asked with another ``--row`` than its record's, the
        record is written again with that row (:meth:`relabel`)."""
        res = self.folder.finished() if self.folder else None
        if res:
            if res.get("pending_record") and self.info.is_main:  # its record could not be written last time
                path = self.folder.write_record(self.records_dir)
                log.info("%s: writing the record of the finished run -> %s", self.name, path)
                res = {k: v for k, v in res.items() if k != "pending_record"} | {"record": str(path)}
            if self.row and self.row != res.get("row") and self.info.is_main:
                res = self.relabel(res)
            log.info("%s: already finished (%s): %s; pass --fresh to run it again", self.name,
                     self.out / RESULT_FILE, res.get("metrics"))
        return res

    def relabel(self, res: dict) -> dict:
        """Write the finished run's record again with this ``--row`` (beside the old one, which the tables then
        skip as the same run recorded earlier) and note it in ``result.json``; returns the updated result."""
        from .records import now_iso, write_record

        old = res.get("record")
        try:
            rec = json.loads(Path(str(old)).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError) as e:
            raise StageError(f"{self.out}: the finished run's record {old} cannot be read ({e}) to give it --row "
                             f"{self.row}: pass --fresh to run it again") from None
        rec = {k: v for k, v in rec.items() if not k.startswith("_")}
        rec.update(row=self.row, end_time=now_iso(), relabelled_from=str(old))
        path = write_record(rec, Path(str(old)).parent)
        self.folder.write_result(res.get("metrics") or {}, str(path), row=self.row)
        log.info("%s: finished run recorded again with row %s: %s", self.name, self.row, path)
        return {**res, "record": str(path), "row": self.row}

    def finish(self, eval_name: str, protocol: str, metrics: Mapping[str, Any], records_dir: str | Path | None = None,
               config: Mapping[str, Any] | None = None, **extra: Any) -> Path | None:
        """Write the result record and ``result.json`` (main rank). A non-finite metric writes a ``failed``
        record and raises :class:`~lewel_bench.errors.NonFiniteError` (non-zero exit); the run is then not
        marked finished."""
        from .records import non_finite_metrics, record_for_backbone, write_record

        if not self.info.is_main:
            return None
        bad = non_finite_metrics(metrics)
        status = {"status": "failed", "failure": f"non-finite metric(s): "
                  f"{', '.join(f'{k}={metrics[k]!r}' for k in bad)}"} if bad else {"status": "ok"}
        clean = {k: (None if k in bad else v) for k, v in metrics.items()}
        ident = self.identity
        meta = self.cfg.get("_meta") or {}
        rec = record_for_backbone(
            self.bb, eval=eval_name, protocol=protocol, metrics=clean, seed=self.seed,
            config=identity_config(self.cfg) if config is None else dict(config), start_time=self.start_time,
            dataset=self.data.get("name", "unknown"), data=self.data, data_root=str(self.data_root),
            run_id=ident.run_id if ident else None, group=ident.group if ident else None,
            pretrain_group=(ident.pretrain_group or ident.checkpoint_sha256) if ident else None,
            world_size=getattr(self.info, "world_size", 1), overrides=meta.get("overrides", []),
            result_overrides=changing_overrides(meta.get("overrides", []), meta.get("neutral", [])),
            **({"protocol_version": ident.code_version} if ident else {}), **({"row": self.row} if self.row else {}),
            **({"sweep": ident.sweep(self.sweep_key)} if ident and self.sweep_key else {}), **status, **extra)
        self.writer.scalars(clean, int(extra.get("epochs") or 0), f"eval/{eval_name}_{protocol}")
        self.writer.close()
        if bad:
            path = write_record(rec, records_dir)
            raise NonFiniteError(f"{eval_name} {protocol}: {status['failure']}; recorded as a failed run in {path}")
        if self.folder:  # the result first, in the run folder: a record that cannot be written loses nothing
            self.folder.write_result(metrics, None, pending_record=rec, **({"row": self.row} if self.row else {}))
            path = self.folder.write_record(records_dir)
        else:
            path = write_record(rec, records_dir)
        log.info("%s %s: %s -> record %s", eval_name, protocol,
                 ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()), path)
        return path


#: ``--row``: a method name and optional pretraining epochs (``mocov2_800ep``, ``supervised``)
ROW = re.compile(r"[A-Za-z0-9][\w.+-]*?(_\d+ep)?")


def check_row(row: str | None) -> str | None:
    """``--row`` as given, or a :class:`StageError` saying the form it must have."""
    if row is None:
        return None
    if not ROW.fullmatch(str(row)):
        raise StageError(f"--row {row!r}: expected METHOD or METHOD_<N>ep, the method and pretraining epochs of a "
                         f"paper row (e.g. mocov2_800ep)")
    return str(row)


def changing_overrides(overrides: Sequence[str], neutral: Sequence[str]) -> list[str]:
    """The overrides that change a run's result: those of keys that are not ``_neutral_`` (nor below one)."""
    def is_neutral(key: str) -> bool:
        return any(key == n or key.startswith(n + ".") for n in neutral)

    return [str(o) for o in overrides if not is_neutral(str(o).split("=", 1)[0].strip())]


def open_stage(name: str, args: argparse.Namespace, cfg: dict, bb: Any, info: Any, data_root: Path,
               data_parts: Sequence[str], code_version: int, start_time: str, extra: Mapping[str, Any] | None = None,
               state_files: Sequence[str] = (), identity_cfg: Mapping[str, Any] | None = None) -> Stage:
    """Identity (data fingerprinted on the main rank, shared with the others), folder (checked on every rank,
    opened on the main one), the :class:`Stage`. ``identity_cfg``: the config as it determines the result
    when it is not ``cfg`` (segmentation: mmseg's resolved config)."""
    from .data.identity import data_identity
    from .dist import barrier, broadcast_object
    from .utils import keep_freed_memory

    if getattr(getattr(info, "device", None), "type", "cpu") == "cpu":
        keep_freed_memory()  # CPU training steps reuse freed pages (lewel_bench.utils.keep_freed_memory)

    data = broadcast_object(data_identity(data_root, data_parts) if info.is_main else None)
    ident = RunIdentity(stage=name, code_version=int(code_version),
                        config=dict(identity_cfg) if identity_cfg is not None else identity_config(cfg),
                        data=data, checkpoint_sha256=bb.sha256, seed=int(args.seed), extra=dict(extra or {}),
                        pretrain_group=pretrain_group(bb), checkpoint_source=checkpoint_source(bb))
    sweep_key = getattr(args, "sweep", None)
    if sweep_key:
        ident.sweep(sweep_key)  # the key must be in the config: refused before any work
    row = check_row(getattr(args, "row", None))
    out = Path(args.out) if args.out else default_out_dir(bb, name, args.config, ident)
    check_path(out, "out_dir", "output folder" if args.out is None else "--out")
    records_dir = getattr(args, "records_dir", None)
    if info.is_main:  # refused before any work, not after it
        from .records import default_records_dir

        check_path(records_dir or default_records_dir(), "out_dir", "--records-dir" if records_dir else
                   "records folder (--records-dir; default results/records or $LEWEL_RESULTS_DIR/records)")
    folder = RunFolder(out, ident, state_files)
    folder.open(args.fresh, is_main=info.is_main)
    barrier()
    log.info("%s: run %s (group %s), data %s [%s], out %s", name, ident.run_id, ident.group, data["name"],
             data["fingerprint"][:12], out)
    return Stage(name=name, cfg=cfg, bb=bb, info=info, out=out, data_root=Path(data_root), seed=int(args.seed),
                 start_time=start_time, identity=ident, folder=folder, sweep_key=sweep_key, row=row,
                 records_dir=records_dir)
