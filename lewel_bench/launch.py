"""Run a stage's ``main(argv)`` locally or on SLURM (through submitit).

Usage::

    python -m lewel_bench.launch [--config LAUNCH.yaml] [--launcher local|slurm] [--nproc N]
        [--partition P --nodes N --gpus-per-node G --cpus-per-task C --mem-gb M --time T
         --account A --job-name J --dependency afterok:ID --folder DIR --wait --job-id-file F]
        -- <stage> [stage args]

``<stage>`` is a package with ``<stage>/cli.py:main(argv)`` (pretrain, eval_linear, ...) or a module
with a ``main(argv)`` (``tools.make_tables``, ``tools.convert_to_mmseg``, ...).

* local: calls ``main(argv)`` in this process; with ``--nproc N > 1`` spawns N local processes
  torchrun-style (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
* slurm: submits one job through ``submitit.AutoExecutor(cluster="slurm")`` with one task per GPU
  (``tasks_per_node = gpus_per_node``); each task gets its DDP rendezvous from the SLURM environment
  (``StageJob`` exports the torchrun variables from submitit's ``JobEnvironment``). On preemption or time
  limit, submitit calls ``StageJob.checkpoint()``, which returns a ``DelayedSubmission`` of the same call:
  the job is requeued and, since every stage resumes from its output folder, it continues from the last
  checkpoint. The job id is printed on stdout (and appended to ``--job-id-file``); ``--wait`` waits for
  the result.

Options come from, in increasing priority: built-in defaults, a launcher YAML (``--config``, e.g.
``launch/slurm.yaml``: top-level ``launcher`` and a ``slurm:`` mapping with the option names below),
then the command line. No cluster names live in this module.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .args import COUNT, NON_NEGATIVE, ArgumentParser, Number, PathArg
from .errors import EXIT_FAILED, CommandExit, LewelError
from .stage import cli_entry

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"^<.*>$")


class LaunchError(LewelError, ValueError):
    """Bad launcher options or config (the message names the option / file)."""


# --------------------------------------------------------------------------- stages
def stage_main(stage: str) -> Callable[[list[str]], None]:
    """``<stage>.cli.main`` for a stage package, else ``<stage>.main`` for a module (tools.*)."""
    errors = []
    for modname in (f"{stage}.cli", stage):
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            # only swallow "this module does not exist", not a missing dependency inside it
            if e.name and (modname == e.name or modname.startswith(e.name + ".")):
                errors.append(f"{modname}: {e}")
                continue
            raise
        fn = getattr(mod, "main", None)
        if callable(fn):
            return fn
        errors.append(f"{modname}: no main(argv)")
    raise LaunchError(f"unknown stage {stage!r}: " + "; ".join(errors))


def run_stage(stage: str, argv: Sequence[str]) -> Any:
    """Import and call the stage's ``main(argv)``."""
    return stage_main(stage)(list(argv))


# --------------------------------------------------------------------------- options
@dataclass
class SlurmOptions:
    """What ``sbatch`` gets; ``time`` is minutes or ``[D-]HH:MM[:SS]``."""
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None     # default: one task per GPU (1 without GPUs)
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time: str | int = "24:00:00"
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str | None = None
    dependency: str | None = None
    folder: str = "runs/_slurm/%j"
    signal_delay_s: int = 120
    max_requeues: int = 20
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)


def parse_time_minutes(t: str | float) -> int:
    """Minutes from ``90``, ``"90"``, ``"HH:MM:SS"``, ``"HH:MM"`` or ``"D-HH:MM:SS"``."""
    if isinstance(t, (int, float)):
        return max(1, int(t))
    s = str(t).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise LaunchError(f"--time {t!r}: expected minutes or [D-]HH:MM[:SS]")
    days, a, b, c = m.groups()
    if b is None and days is None:          # plain minutes
        return max(1, int(a))
    hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    return max(1, total)


def load_launch_config(path: str | Path) -> dict:
    """Read a launcher YAML: ``{launcher: slurm, nproc: 1, slurm: {partition: ..., ...}}``."""
    from .config import ConfigError, load_yaml_file

    p = Path(path)
    try:
        data = load_yaml_file(p, "launcher config") or {}
    except ConfigError as e:
        raise LaunchError(str(e)) from None
    if not isinstance(data, dict):
        raise LaunchError(f"launcher config {p}: expected a mapping at the top level")
    unknown = set(data) - {"launcher", "nproc", "slurm"}
    if unknown:
        raise LaunchError(f"launcher config {p}: unknown keys {sorted(unknown)} (expected launcher, nproc, slurm)")
    slurm = data.get("slurm") or {}
    known = {f.name for f in fields(SlurmOptions)}
    bad = set(slurm) - known
    if bad:
        import difflib
        hints = {k: difflib.get_close_matches(k, known, n=2) for k in bad}
        raise LaunchError(f"launcher config {p}: unknown slurm keys {hints} (known: {sorted(known)})")
    for k, v in slurm.items():
        if isinstance(v, str) and PLACEHOLDER.match(v.strip()):
            raise LaunchError(f"launcher config {p}: slurm.{k} is still the placeholder {v!r}; "
                              f"set it for your cluster (or pass --{k.replace('_', '-')})")
    return data


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m lewel_bench.launch",
                                description="Run a stage locally or on SLURM: ... -- <stage> [args]")
    p.add_argument("--config", type=PathArg("file"), help="launcher YAML (e.g. launch/slurm.yaml)")
    p.add_argument("--launcher", choices=["local", "slurm"])
    p.add_argument("--nproc", type=COUNT, help="local: number of processes (torchrun-style); default 1")
    g = p.add_argument_group("slurm")
    g.add_argument("--partition")
    g.add_argument("--nodes", type=COUNT)
    g.add_argument("--gpus-per-node", type=NON_NEGATIVE, dest="gpus_per_node")
    g.add_argument("--tasks-per-node", type=COUNT, dest="tasks_per_node",
                   help="default: gpus-per-node (one task per GPU), 1 without GPUs")
    g.add_argument("--cpus-per-task", type=COUNT, dest="cpus_per_task")
    g.add_argument("--mem-gb", type=Number(float, lo=0, lo_open=True), dest="mem_gb")
    g.add_argument("--time", help="minutes or [D-]HH:MM[:SS]")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--constraint")
    g.add_argument("--job-name", dest="job_name")
    g.add_argument("--dependency", help="e.g. afterok:123 or afterok:123:124")
    g.add_argument("--folder", help="submitit log folder (%%j = job id)")
    g.add_argument("--signal-delay-s", type=NON_NEGATIVE, dest="signal_delay_s")
    g.add_argument("--max-requeues", type=NON_NEGATIVE, dest="max_requeues")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the job and re-raise its error")
    p.add_argument("--job-id-file", dest="job_id_file", type=PathArg("out_file"), help="slurm: append the job id to this file")
    return p


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    parser = build_parser()
    i = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:i])  # the options are checked first, then the stage's place
    if i == len(argv):
        parser.error("no '--' before the stage: python -m lewel_bench.launch [options] -- <stage> [args]")
    return args, argv[i + 1:]


def resolve_options(args: argparse.Namespace) -> tuple[str, int, SlurmOptions]:
    """Merge defaults < config file < command line; returns (launcher, nproc, slurm options)."""
    cfg = load_launch_config(args.config) if args.config else {}
    launcher = args.launcher or cfg.get("launcher") or "local"
    if launcher not in ("local", "slurm"):
        raise LaunchError(f"launcher must be local or slurm, got {launcher!r}")
    nproc = args.nproc if args.nproc is not None else cfg.get("nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise LaunchError(f"launcher config {args.config}: nproc must be an integer >= 1, got {nproc!r}")
    opts = SlurmOptions(**(cfg.get("slurm") or {}))
    for f in fields(SlurmOptions):
        v = getattr(args, f.name, None)
        if v is not None and v != "":
            setattr(opts, f.name, v)
    if opts.dependency and not re.fullmatch(r"(after|afterok|afterany|afternotok|aftercorr|singleton)(:[0-9_]+)*"
                                            r"([,?][a-z]+(:[0-9_]+)*)*", opts.dependency):
        raise LaunchError(f"--dependency {opts.dependency!r}: expected e.g. afterok:123[:456]")
    return launcher, nproc, opts


# --------------------------------------------------------------------------- local
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(stage: str, argv: list[str], nproc: int = 1) -> None:
    """Run in this process, or spawn ``nproc`` processes with torchrun's environment variables."""
    if nproc <= 1:
        run_stage(stage, argv)
        return
    port = str(_free_port())
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "lewel_bench.launch", "--launcher", "local", "--nproc", "1", "--", stage, *argv]
        procs.append(subprocess.Popen(cmd, env=env))
    log.info("spawned %d local processes for %s (master port %s)", nproc, stage, port)
    failed, interrupted = None, False
    try:
        while procs and failed is None:
            for p in list(procs):
                rc = p.poll()
                if rc is None:
                    continue
                procs.remove(p)
                if rc != 0:
                    failed = rc
                    break
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C reached the ranks too (one terminal process group): each stops on its own
    finally:
        # a rank failed (or we were interrupted): ask the others to stop (SIGTERM: a stage finishes its step and
        # saves it; one already stopping goes on), then wait for them; a further Ctrl-C kills them
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        try:
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        except KeyboardInterrupt:
            for p in procs:
                p.kill()
            interrupted = True
    if interrupted:
        sys.stderr.write(f"{stage}: interrupted (Ctrl-C): the {nproc} local ranks were asked to stop\n")
        raise SystemExit(128 + signal.SIGINT)
    if failed is not None:
        line = f"{stage}: a local rank exited with status {failed}"
        if failed not in (2, 130):  # bad input and Ctrl-C: the rank has said why in one line
            print(line, file=sys.stderr, flush=True)
        raise CommandExit(line, failed if 0 < failed < 256 else EXIT_FAILED)


# --------------------------------------------------------------------------- slurm
def export_dist_env_from_submitit() -> None:
    """Export torchrun-style variables from submitit's ``JobEnvironment`` (one task per GPU)."""
    import submitit

    env = submitit.JobEnvironment()
    os.environ["RANK"] = str(env.global_rank)
    os.environ["WORLD_SIZE"] = str(env.num_tasks)
    os.environ["LOCAL_RANK"] = str(env.local_rank)
    # the sbatch environment is copied from the submitting shell: overwrite, never inherit, these
    os.environ["MASTER_ADDR"] = env.hostnames[0] if env.hostnames else "127.0.0.1"
    os.environ["MASTER_PORT"] = str(20000 + int(re.sub(r"\D.*", "", str(env.job_id)) or 0) % 20000)


class StageJob:
    """The picklable callable submitit runs: ``main(argv)`` of a stage, requeued on preemption/timeout.

    submitit's contract: on SIGUSR2 (preemption, or ``signal_delay_s`` before the time limit) it calls
    ``checkpoint()``; the ``DelayedSubmission`` it returns is pickled and the job is requeued. Stages
    write resumable checkpoints to their output folder and resume by themselves when run again with the
    same arguments, so re-running the same call is all the state a requeue needs.
    """

    def __init__(self, stage: str, argv: Sequence[str], attempt: int = 0) -> None:
        self.stage = stage
        self.argv = list(argv)
        self.attempt = attempt
        self._checkpointed = False

    def __call__(self) -> Any:
        from .utils import setup_logging

        export_dist_env_from_submitit()
        os.environ["LEWEL_LAUNCH_ATTEMPT"] = str(self.attempt)   # 0 first run, 1 after the first requeue, ...
        setup_logging(rank=int(os.environ.get("RANK", "0")))
        log.info("%s attempt %d: %s %s", self.stage, self.attempt, self.stage, " ".join(self.argv))
        try:
            return run_stage(self.stage, self.argv)
        except SystemExit as e:
            # submitit records exceptions, not SystemExit: a stage's ``SystemExit(2)`` would leave no result
            # and ``job.result()`` waiting forever. Only submitit's own exit after a requeue passes through.
            if self._checkpointed:
                raise
            if e.code in (0, None):
                return None
            raise RuntimeError(f"stage {self.stage} exited with status {int(e.code) if isinstance(e.code, int) else 1}: "
                               f"{e}") from e

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        self._checkpointed = True
        log.warning("%s: preempted or at its time limit; requeueing (attempt %d), it resumes from its "
                    "output folder", self.stage, self.attempt + 1)
        return submitit.helpers.DelayedSubmission(StageJob(self.stage, self.argv, self.attempt + 1))

    def __repr__(self) -> str:
        return f"StageJob({self.stage!r}, {self.argv!r}, attempt={self.attempt})"


# launcher option -> submitit executor parameter (set only when the option is given)
_OPTIONAL_SUBMITIT_PARAMS = (
    ("gpus_per_node", "gpus_per_node", int),
    ("cpus_per_task", "cpus_per_task", int),
    ("mem_gb", "mem_gb", float),
    ("partition", "slurm_partition", str),
    ("account", "slurm_account", str),
    ("qos", "slurm_qos", str),
    ("constraint", "slurm_constraint", str),
    ("dependency", "slurm_dependency", str),
    ("setup", "slurm_setup", list),
)


def make_executor(opts: SlurmOptions, stage: str) -> Any:
    """A submitit executor for ``opts``: one task per GPU, GPUs per node, requeue on timeout."""
    import submitit

    folder = opts.folder
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=opts.max_requeues)
    tasks = int(opts.tasks_per_node) if opts.tasks_per_node else max(1, int(opts.gpus_per_node))
    params: dict[str, Any] = dict(
        name=opts.job_name or f"lewel-{stage.replace('.', '-')}",
        nodes=int(opts.nodes),
        tasks_per_node=tasks,
        timeout_min=parse_time_minutes(opts.time),
        slurm_signal_delay_s=int(opts.signal_delay_s),
    )
    for opt, key, conv in _OPTIONAL_SUBMITIT_PARAMS:
        value = getattr(opts, opt)
        if value:
            params[key] = conv(value)
    additional = dict(opts.additional)
    if opts.dependency:
        # a failed dependency cancels this job instead of leaving it pending forever
        additional.setdefault("kill-on-invalid-dep", "yes")
    if additional:
        params["slurm_additional_parameters"] = additional
    executor.update_parameters(**params)
    return executor


def launch_slurm(stage: str, argv: list[str], opts: SlurmOptions, wait: bool = False,
                 job_id_file: str | None = None) -> Any:
    """Submit ``StageJob(stage, argv)``; print the job id; optionally wait. Returns the submitit Job."""
    stage_main(stage)   # fail on the login node, not in the queue, if the stage does not exist
    executor = make_executor(opts, stage)
    job = executor.submit(StageJob(stage, argv))
    print(job.job_id, flush=True)
    log.info("submitted %s as SLURM job %s (logs: %s)", stage, job.job_id, str(job.paths.stdout))
    if job_id_file:
        from .io import append_line

        append_line(job_id_file, str(job.job_id))
    if wait:
        job.results()   # one result per task
        log.info("job %s finished", job.job_id)
    return job


# --------------------------------------------------------------------------- entry point
def _main(argv: list[str] | None = None) -> Any:
    args, stage_argv = parse_args(sys.argv[1:] if argv is None else argv)
    if not stage_argv:
        raise LaunchError("no stage given after --: python -m lewel_bench.launch [options] -- <stage> [args]")
    if not logging.getLogger().handlers:
        from .utils import setup_logging
        setup_logging(rank=int(os.environ.get("RANK", "0")))
    stage, rest = stage_argv[0], stage_argv[1:]
    launcher, nproc, opts = resolve_options(args)
    if launcher == "local":
        return launch_local(stage, rest, nproc)
    return launch_slurm(stage, rest, opts, wait=args.wait, job_id_file=args.job_id_file)


@cli_entry("lewel_bench.launch")
def main(argv: list[str] | None = None) -> Any:
    """``python -m lewel_bench.launch``: a bad option is one line (exit 2), Ctrl-C one line (130); the stage's own
    errors and exit status pass through."""
    return _main(argv)


if __name__ == "__main__":
    main()
