"""The chain planner: a method's declared paper chain -> the command lines ``make all`` runs.

``make all EXP=<method>`` pretrains, converts, runs the evaluations of the method's ``paper.chain``
(:mod:`lewel_bench.declare`) and builds the tables. This module writes the evaluation part: for every step, the
stage command of its evaluation (``<cli> --config <config> --ckpt <ckpt> --data <root>`` plus the step's and the
paper's arguments and the make variables the evaluation reads), prefixed by the launcher with, on SLURM, an
``afterok`` dependency on the pretraining and conversion jobs and the job id file ``<chain dir>/<step>.id``.

On real data (the evaluation's data variable, e.g. ``COCO_DATA``, else ``DATA``, is given) a step runs its real
config, else its mini config on ``<mini>/<mini folder>``. Nothing here knows a method or an evaluation by name.

    python -m lewel_bench.chain vars                              the make variables the evaluations read
    python -m lewel_bench.chain steps --config CFG [--only "a b"] [--demo]
    python -m lewel_bench.chain lines --config CFG --ckpt CKPT --mini data/mini [--data ROOT] [--var K=V ...]
                                      --launch "python -m lewel_bench.launch ..." [--chain-dir DIR]
    python -m lewel_bench.chain show --config CFG ...              the plan in words
    python -m lewel_bench.chain ablations --paper results/paper [--sweeps]
                                      the runs of the ablation tables: experiments, or <folder>:<exp>:<key>=<value>

``CFG`` is the method's config file (``pretrain/configs/<exp>.yaml``: ``python -m pretrain.experiments resolve
--path EXP``). ``lines`` separates lines with the ASCII record separator (``--sep``), which ``make`` turns into
recipe lines (a ``$(shell ...)`` would join newlines).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .declare import (
    DeclarationError,
    Evaluation,
    PlannedStep,
    evaluations,
    paper_of,
    resolve_chain,
)
from .errors import LewelError

RECORD_SEP = "\x1e"
#: The chain's evaluations wait for these steps (their job id files under the chain folder).
AFTER = ("pretrain", "convert")


def chain_vars(evals: Mapping[str, Evaluation] | None = None) -> list[str]:
    """Every make variable an evaluation reads in the chain: data roots and knobs (``DATA`` always)."""
    evals = evaluations() if evals is None else evals
    out = ["DATA"]
    for ev in evals.values():
        if not ev.steps:
            continue
        for v in (ev.data_var, *(k.var for k in ev.knobs)):
            if v not in out:
                out.append(v)
    return out


def data_root(ev: Evaluation, variables: Mapping[str, str], mini: str) -> tuple[str, bool]:
    """(the data root of ``ev``, whether it is real data): its variable, else ``DATA``, else the mini folder."""
    given = (variables.get(ev.data_var) or variables.get("DATA") or "").strip()
    return (given, True) if given else (str(Path(mini) / ev.mini_data), False)


def config_of(ps: PlannedStep, real: bool) -> str:
    e, s = ps.entry, ps.step
    return (e.config or s.config) if real else (e.mini or s.mini)


def stage_commands(ps: PlannedStep, ckpt: str, mini: str, variables: Mapping[str, str]) -> list[list[str]]:
    """The stage command(s) of one step (several for a seeds or a sweep knob)."""
    ev = ps.evaluation
    root, real = data_root(ev, variables, mini)
    argv = [str(ev.cli), "--config", config_of(ps, real), "--ckpt", ckpt, "--data", root]
    for key, value in ps.entry.options.items():
        argv += [a.format(value) for a in shlex.split(ev.options[key])]
    argv += [*ps.step.args, *ps.entry.args, *(ps.entry.real_args if real else ())]
    runs: list[list[str]] = [[]]
    for k in ev.knobs:
        value = str(variables.get(k.var) or "").strip()
        if not value:
            continue
        if k.flag:
            argv += [k.flag, value]
        elif k.override:
            argv.append(f"{k.override}={value}")
        elif k.seeds:
            try:
                n = int(value)
            except ValueError:
                raise DeclarationError(f"{k.var}={value!r}: expected a number of seeds") from None
            if n < 1:
                raise DeclarationError(f"{k.var}={value!r}: expected a number of seeds >= 1")
            runs = [r + ["--seed", str(s)] for r in runs for s in range(n)]
        elif k.sweep:
            runs = [r + [f"{k.sweep}={v}", "--sweep", k.sweep] for r in runs for v in value.split()]
    return [argv + r for r in runs]


def describe(ps: PlannedStep, mini: str, variables: Mapping[str, str]) -> str:
    """One line saying what a step runs on which data (and, on the mini data, the real config)."""
    root, real = data_root(ps.evaluation, variables, mini)
    cfg = config_of(ps, real)
    other = "" if real else f" (real data: config {config_of(ps, True)})"
    opts = "".join(f", {k} {v}" for k, v in ps.entry.options.items())
    return (f"== chain step {ps.name}: eval {ps.evaluation.name}, config {cfg}{other}{opts}, "
            f"data {root if real else 'the embedded mini data'}")


def make_lines(planned: Sequence[PlannedStep], ckpt: str, mini: str, variables: Mapping[str, str], launch: str,
               chain_dir: str | None) -> list[str]:
    """Recipe lines: per step an ``@echo`` saying what it runs, then its launcher command(s)."""
    lines = []
    for ps in planned:
        lines.append("@echo " + shlex.quote(describe(ps, mini, variables)))
        dep = ""
        if chain_dir:
            ids = " ".join(shlex.quote(str(Path(chain_dir) / f"{s}.id")) for s in AFTER)
            dep = (f" --dependency afterok:$(cat {ids} 2>/dev/null | paste -sd: -) --job-id-file "
                   f"{shlex.quote(str(Path(chain_dir) / f'{ps.name}.id'))}")
        for argv in stage_commands(ps, ckpt, mini, variables):
            lines.append(f"{launch}{dep} -- {shlex.join(argv)}")
    return lines


def _plan(args: argparse.Namespace) -> list[PlannedStep]:
    from .config import ConfigError, load_yaml_config

    if not args.config:
        raise DeclarationError("no method config (EXP names no experiment?)")
    try:
        cfg = load_yaml_config(args.config)
    except ConfigError as e:
        raise DeclarationError(str(e)) from None
    only = args.only.split() if args.only and args.only.strip() else None
    return resolve_chain(paper_of(cfg, args.config), only, args.demo, args.config)


def _variables(items: Sequence[str], data: str | None) -> dict[str, str]:
    out = {"DATA": data or ""}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise DeclarationError(f"--var {it!r}: expected NAME=VALUE")
        out[k.strip()] = v
    if data is not None:
        out["DATA"] = data
    return out


def main(argv: list[str] | None = None) -> int:
    from .args import ArgumentParser  # one-line errors, exit 2

    p = ArgumentParser(prog="python -m lewel_bench.chain", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("vars", help="the make variables the evaluations read")
    ab = sub.add_parser("ablations", help="the runs the ablation tables (key exp) have rows for")
    ab.add_argument("--paper", required=True, help="the folder of tables.yaml")
    ab.add_argument("--sweeps", action="store_true", help="the sweep points: <folder>:<exp>:<key>=<value>")
    for name in ("steps", "lines", "show", "check"):
        s = sub.add_parser(name)
        s.add_argument("--config", default="", help="the method's config file")
        s.add_argument("--only", default=None, help="step names (CHAIN_EVALS); default: the paper's chain")
        s.add_argument("--demo", action="store_true", help="the paper's chain without its demo_skip steps (make demo)")
        if name in ("lines", "show"):
            s.add_argument("--ckpt", required=True)
            s.add_argument("--mini", default="data/mini")
            s.add_argument("--data", default=None)
            s.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
        if name == "lines":
            s.add_argument("--launch", required=True, help="the launcher command the stage commands follow")
            s.add_argument("--chain-dir", default=None, help="SLURM: job id files here, afterok on pretrain + convert")
            s.add_argument("--sep", default=RECORD_SEP)
    args = p.parse_args(argv)
    try:
        if args.cmd == "vars":
            print(" ".join(chain_vars()))
            return 0
        if args.cmd == "ablations":
            from .tables.spec import ablation_runs, table_specs

            runs = ablation_runs(table_specs(Path(args.paper)))
            print(" ".join(f"{r.folder}:{r.exp}:{r.sweep}" if args.sweeps else r.exp for r in runs
                           if bool(r.sweep) == args.sweeps))
            return 0
        planned = _plan(args)
        if args.cmd in ("steps", "check"):
            if args.cmd == "steps":
                print(" ".join(ps.name for ps in planned))
            return 0
        variables = _variables(args.var, args.data)
        if args.cmd == "show":
            for ps in planned:
                print(describe(ps, args.mini, variables))
                for a in stage_commands(ps, args.ckpt, args.mini, variables):
                    print("   ", shlex.join(a))
            return 0
        sys.stdout.write(args.sep.join(make_lines(planned, args.ckpt, args.mini, variables, args.launch,
                                                  args.chain_dir)))
        return 0
    except LewelError as e:
        print(f"make all: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
