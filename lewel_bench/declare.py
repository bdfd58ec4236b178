"""What an evaluation and a method declare about themselves, once, beside their code; and how the suite finds it.

**An evaluation** declares its record vocabulary and how the chain runs it in a module ``declaration`` of its own
package, next to its ``PROTOCOL_VERSION``::

    # eval_knn/declaration.py
    PROTOCOL_VERSION = 1
    EVALUATIONS = (Evaluation(name="knn", version=PROTOCOL_VERSION, protocols=("k20",), metrics=("top1",),
                              primary="top1", cli="eval_knn", steps=(Step("knn", "k20", config="k20", mini="mini"),)),)

Found without a list (:func:`evaluations`): every top-level package named ``eval_*`` that has a ``declaration``
module, in the suite's tree or anywhere on ``sys.path`` (an evaluation defined in another folder is found once that
folder is on ``PYTHONPATH``), and the pretraining stage's own records (``pretrain``). The tables and the report take
``KNOWN_PROTOCOLS`` / ``PRIMARY`` from here; the chain planner (:mod:`lewel_bench.chain`) takes the steps.

**A method** declares its paper in its config, under the key ``paper`` (never part of a run's identity), read by
:func:`paper_of`: the chain of evaluations of its paper (steps of the evaluations' catalogues, each with the
settings the paper uses: another config, a probe feature, the transfer mode), the tables it fills, the steps
``make demo`` leaves out, and how ``make bench-pretrain`` judges its cost. What is about the method's *code* (whether it
has alignment maps) is a class attribute of the method instead.

A malformed declaration is a :class:`DeclarationError` naming the module or config file and the key.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import LewelError
from .paths import REPO_ROOT

log = logging.getLogger(__name__)

#: Top-level packages whose ``declaration`` module declares evaluations: ``eval_*``, and the pretraining stage
#: (its training-speed records and the benchmark's cost records).
EVAL_PREFIX = "eval_"
OTHER_DECLARING = ("pretrain",)
DECLARATION = "declaration"


class DeclarationError(LewelError, ValueError):
    """A declaration is malformed or two declare the same name; the message names the module / file and key."""


# --------------------------------------------------------------------------------------------------
# evaluations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """A named way to run an evaluation in the chain (``make all CHAIN_EVALS=<name>``): the protocol it records,
    its config on real data (``config``) and on the embedded mini data (``mini``), extra command-line arguments."""

    name: str
    protocol: str
    config: str
    mini: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Knob:
    """A make variable the evaluation reads when the chain runs it (given on the ``make all`` line). Its value,
    when not empty, becomes: ``flag`` -> ``<flag> <value>``; ``override`` -> ``<key>=<value>``; ``sweep`` (a config
    key) -> one run per whitespace-separated value, each ``<key>=<value> --sweep <key>``; ``seeds`` -> runs with
    ``--seed 0`` .. ``--seed N-1``."""

    var: str
    flag: str = ""
    override: str = ""
    sweep: str = ""
    seeds: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Evaluation:
    """One ``eval`` of the records: its vocabulary, its tables' primary metric, and how the chain runs it.

    ``cli``: the stage module ``lewel_bench.launch`` runs (``<cli>.cli.main`` or ``<cli>.main``); None: the chain
    does not run it (records written by another stage). ``data_var``: the make variable naming its data root (the
    chain falls back to ``DATA``, then to ``<mini data>/<mini_data>``). ``options``: what a method's chain entry
    may set besides the config (``{"transfer": "--transfer {}"}``: the entry's ``transfer: bundle`` becomes
    ``--transfer bundle``). ``tables``: a ``tables.yaml`` this evaluation ships (its own paper tables, CSVs beside
    it); the suite's paper tables are in ``results/paper/tables.yaml``. The tables an evaluation feeds are those
    whose cells name it (:func:`lewel_bench.tables.spec.tables_fed_by`), not listed twice.
    """

    name: str
    version: int
    protocols: tuple[str, ...]
    metrics: tuple[str, ...]
    primary: str
    cli: str | None = None
    data_var: str = "DATA"
    mini_data: str = "imagenet"
    steps: tuple[Step, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    knobs: tuple[Knob, ...] = ()
    tables: str | None = None
    tables_optional: bool = False   # records no table takes are other results (kNN, speed), not unmatched
    doc: str = ""
    module: str = ""          # the declaring module (filled in when found)

    def check(self, where: str) -> None:
        """Refuse an inconsistent declaration (a :class:`DeclarationError` naming ``where`` and the field)."""
        def bad(msg: str) -> DeclarationError:
            return DeclarationError(f"{where}: evaluation {self.name!r}: {msg}")

        if not re.fullmatch(r"[a-z0-9_]+", self.name or ""):
            raise bad("name must be lower-case letters, digits and _")
        if not isinstance(self.version, int) or self.version < 1:
            raise bad(f"version must be an int >= 1 (its PROTOCOL_VERSION), got {self.version!r}")
        for what, seq in (("protocols", self.protocols), ("metrics", self.metrics)):
            if not seq or not all(isinstance(x, str) and x for x in seq) or len(set(seq)) != len(seq):
                raise bad(f"{what} must be a non-empty tuple of distinct names, got {seq!r}")
        if self.primary not in self.metrics:
            raise bad(f"primary {self.primary!r} is not one of its metrics {list(self.metrics)}")
        for s in self.steps:
            if s.protocol not in self.protocols:
                raise bad(f"step {s.name!r} records protocol {s.protocol!r}, not one of {list(self.protocols)}")
            if not self.cli:
                raise bad(f"step {s.name!r} needs cli (the stage module the chain runs)")
        for k in self.knobs:
            if sum(bool(x) for x in (k.flag, k.override, k.sweep, k.seeds)) != 1:
                raise bad(f"knob {k.var!r} must set exactly one of flag, override, sweep, seeds")


def _declaring_packages() -> list[str]:
    """``eval_*`` packages (and :data:`OTHER_DECLARING`) with a ``declaration`` module: the suite's tree first, then
    every ``sys.path`` entry."""
    names: list[str] = []
    for p in sorted(REPO_ROOT.glob(f"*/{DECLARATION}.py")):
        if p.parent.name.startswith(EVAL_PREFIX) or p.parent.name in OTHER_DECLARING:
            names.append(p.parent.name)
    for m in pkgutil.iter_modules():
        if m.ispkg and m.name.startswith(EVAL_PREFIX) and m.name not in names:
            path = getattr(m.module_finder, "path", None)
            if path and (Path(path) / m.name / f"{DECLARATION}.py").is_file():
                names.append(m.name)
    return names


def _as_tuple(obj: Any) -> tuple:
    return tuple(obj) if isinstance(obj, (list, tuple)) else (obj,)


@lru_cache(maxsize=1)
def evaluations() -> dict[str, Evaluation]:
    """Every declared evaluation by its record name (found as the module docstring says; cached)."""
    found: dict[str, Evaluation] = {}
    for pkg in _declaring_packages():
        mod_name = f"{pkg}.{DECLARATION}"
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise DeclarationError(f"{mod_name}: cannot be imported ({e})") from None
        decls = getattr(mod, "EVALUATIONS", None)
        if decls is None:
            raise DeclarationError(f"{mod_name}: no EVALUATIONS (a tuple of lewel_bench.declare.Evaluation)")
        for ev in _as_tuple(decls):
            if not isinstance(ev, Evaluation):
                raise DeclarationError(f"{mod_name}: EVALUATIONS holds {ev!r}, not an Evaluation")
            ev.check(mod_name)
            if ev.name in found:
                raise DeclarationError(f"{mod_name}: evaluation {ev.name!r} is also declared by "
                                       f"{found[ev.name].module}")
            found[ev.name] = _with_module(ev, mod_name)
    steps: dict[str, str] = {}
    for ev in found.values():
        for s in ev.steps:
            if s.name in steps:
                raise DeclarationError(f"{ev.module}: step {s.name!r} is also declared by {steps[s.name]}")
            steps[s.name] = ev.module
    return found


def _with_module(ev: Evaluation, module: str) -> Evaluation:
    from dataclasses import replace

    return replace(ev, module=module)


def known_protocols() -> dict[str, set[str]]:
    """eval -> its protocols (the record vocabulary the tables accept)."""
    return {name: set(ev.protocols) for name, ev in evaluations().items()}


def primary_metrics() -> dict[str, str]:
    """eval -> the metric the best point of a sweep is chosen by."""
    return {name: ev.primary for name, ev in evaluations().items()}


def steps() -> dict[str, tuple[Evaluation, Step]]:
    """Every chain step of every evaluation by name."""
    return {s.name: (ev, s) for ev in evaluations().values() for s in ev.steps}


# --------------------------------------------------------------------------------------------------
# a method's paper (the ``paper`` key of its config)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainEntry:
    """One evaluation of a paper's chain: a step of an evaluation's catalogue with the paper's settings."""

    step: str
    name: str
    config: str | None = None
    mini: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    real_args: tuple[str, ...] = ()   # on real data only (a setting of the paper's full-size protocol)


@dataclass(frozen=True)
class CostTarget:
    """``make bench-pretrain``: this method's step time / ``baseline``'s must stay at or below ``gpu`` (on a GPU) and
    ``cpu`` (on a CPU); ``floor`` = the pair's FLOP ratio."""

    baseline: str
    gpu: float | str
    cpu: float | str


@dataclass(frozen=True)
class Paper:
    """What a method's config declares about its paper (see the module docstring)."""

    name: str
    chain: tuple[ChainEntry, ...]
    tables: tuple[str, ...] = ()
    demo_skip: tuple[str, ...] = ()   # chain steps make demo leaves out (the longest on the mini data)
    cost: tuple[CostTarget, ...] = ()
    cost_overrides: tuple[str, ...] = ()
    variant: str = ""         # a variant of the method its paper's tables have rows for (``multi``: multi-crop)

    def entry(self, name: str) -> ChainEntry | None:
        return next((e for e in self.chain if e.name == name), None)


PAPER_KEYS = ("name", "chain", "demo_skip", "tables", "cost", "variant")
_ENTRY_KEYS = ("step", "name", "config", "mini", "args", "real_args")


def _entry(item: Any, where: str) -> ChainEntry:
    if isinstance(item, str):
        return ChainEntry(step=item, name=item)
    if not isinstance(item, Mapping) or "step" not in item:
        raise DeclarationError(f"{where}: expected a step name or a mapping with 'step', got {item!r}")
    for k in ("step", "name", "config", "mini"):
        if k in item and not isinstance(item[k], str):
            raise DeclarationError(f"{where}.{k}: expected a string, got {item[k]!r}")
    return ChainEntry(step=item["step"], name=item.get("name") or item["step"], config=item.get("config"),
                      mini=item.get("mini"), options={k: v for k, v in item.items() if k not in _ENTRY_KEYS},
                      args=_strings(item.get("args"), f"{where}.args"),
                      real_args=_strings(item.get("real_args"), f"{where}.real_args"))


def _number_or_floor(v: Any, where: str) -> float | str:
    if v == "floor":
        return "floor"
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v)
    raise DeclarationError(f"{where}: expected a number > 0 or 'floor', got {v!r}")


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DeclarationError(f"{where}: expected a list of strings, got {v!r}")
    return tuple(v)


def paper_of(cfg: Mapping[str, Any], where: str = "config") -> Paper:
    """The ``paper`` declaration of a method's config (its keys: ``name``, ``chain``, ``tables``, ``demo_skip``,
    ``cost: {against: [{baseline, gpu, cpu}], overrides: [...]}``, ``variant``); entries are checked for their form
    here and against the evaluations' catalogues by :func:`resolve_chain`."""
    doc = cfg.get("paper")
    if not isinstance(doc, Mapping):
        raise DeclarationError(f"{where}: no 'paper' mapping (the method's paper: chain, tables)")
    unknown = sorted(set(doc) - set(PAPER_KEYS))
    if unknown:
        raise DeclarationError(f"{where}: paper has unknown key(s) {', '.join(unknown)} "
                               f"(known: {', '.join(PAPER_KEYS)})")
    chain = doc.get("chain") or []
    if not isinstance(chain, list):
        raise DeclarationError(f"{where}: paper.chain must be a list of steps, got {chain!r}")
    entries = tuple(_entry(x, f"{where}: paper.chain[{i}]") for i, x in enumerate(chain))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DeclarationError(f"{where}: paper.chain names {', '.join(dup)} twice (give one a 'name')")
    cost = doc.get("cost") or {}
    if not isinstance(cost, Mapping) or set(cost) - {"against", "overrides"}:
        raise DeclarationError(f"{where}: paper.cost must be a mapping with 'against' and 'overrides', got {cost!r}")
    targets = []
    for i, t in enumerate(cost.get("against") or []):
        w = f"{where}: paper.cost.against[{i}]"
        if not isinstance(t, Mapping) or set(t) != {"baseline", "gpu", "cpu"}:
            raise DeclarationError(f"{w}: expected {{baseline, gpu, cpu}}, got {t!r}")
        targets.append(CostTarget(str(t["baseline"]), _number_or_floor(t["gpu"], w + ".gpu"),
                                  _number_or_floor(t["cpu"], w + ".cpu")))
    return Paper(name=str(doc.get("name") or ""), chain=entries, tables=_strings(doc.get("tables"), f"{where}: "
                 f"paper.tables"), demo_skip=_strings(doc.get("demo_skip"), f"{where}: paper.demo_skip"),
                 cost=tuple(targets),
                 cost_overrides=_strings(cost.get("overrides"), f"{where}: paper.cost.overrides"),
                 variant=str(doc.get("variant") or ""))


@dataclass(frozen=True)
class PlannedStep:
    """A chain entry resolved against its evaluation: everything the planner needs to write its command."""

    name: str
    evaluation: Evaluation
    step: Step
    entry: ChainEntry


def resolve_chain(paper: Paper, only: Iterable[str] | None = None, demo: bool = False,
                  where: str = "config") -> list[PlannedStep]:
    """The steps to run: the paper's chain (``demo``: without its ``demo_skip`` steps), or the names in ``only`` (a
    name of the paper's chain takes the paper's settings; any other name a step of an evaluation's catalogue as
    declared).
    An unknown name, step or option is a :class:`DeclarationError` listing the known ones."""
    catalogue = steps()
    if only is not None:
        names = list(only)
    elif demo:
        names = [e.name for e in paper.chain if e.name not in paper.demo_skip]
    else:
        names = [e.name for e in paper.chain]
    known = sorted({e.name for e in paper.chain} | set(catalogue))
    out = []
    for n in names:
        entry = paper.entry(n) or (ChainEntry(step=n, name=n) if n in catalogue else None)
        if entry is None:
            raise DeclarationError(f"{where}: unknown evaluation step {n!r}; known: {' '.join(known)}")
        if entry.step not in catalogue:
            raise DeclarationError(f"{where}: paper.chain step {entry.name!r} names unknown step {entry.step!r}; "
                                   f"known: {' '.join(sorted(catalogue))}")
        ev, st = catalogue[entry.step]
        bad = sorted(set(entry.options) - set(ev.options))
        if bad:
            raise DeclarationError(f"{where}: paper.chain step {entry.name!r}: {ev.name} takes no option "
                                   f"{', '.join(bad)} (its options: {', '.join(sorted(ev.options)) or 'none'})")
        out.append(PlannedStep(entry.name, ev, st, entry))
    return out

