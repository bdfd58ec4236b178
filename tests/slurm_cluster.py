"""A throw-away single-node SLURM cluster on localhost for the tests (Debian bookworm packages).

``LocalSlurm(root).start()`` installs ``slurmctld slurmd slurm-client munge`` when missing (root only,
``apt-get update`` first if the plain install fails), writes a munge key and a ``slurm.conf`` under
``root``, starts munged, slurmctld and slurmd in the foreground as child processes, and waits (bounded)
until the node is idle. ``stop()`` ends exactly those processes by PID. Every client command needs
``SLURM_CONF``; ``env()`` returns the variables to export (submitit reads them from ``os.environ``).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from helpers import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"]


class SlurmUnavailable(RuntimeError):
    """The packages cannot be installed or the cluster did not come up (the message says why)."""


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed(timeout: float = 240.0) -> None:
    """Install the SLURM and munge packages if they are missing; raise ``SlurmUnavailable`` if impossible."""
    apt_install(PACKAGES, lambda: not _missing_binaries(), SlurmUnavailable, timeout)


SLURM_CONF = """\
ClusterName=lewel-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge_run/munge.socket.2,cred_expire=10
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
MessageTimeout=20
JobRequeue=1
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class LocalSlurm:
    """munged + slurmctld + slurmd on localhost, all state under ``root``; stopped by PID."""

    def __init__(self, root: str | Path, cpus: int | None = None, mem_mb: int = 4000,
                 ctld_port: int = 16817, slurmd_port: int = 16818) -> None:
        self.root = Path(root).resolve()
        self.cpus = cpus or (os.cpu_count() or 1)
        self.mem_mb = mem_mb
        self.ctld_port, self.slurmd_port = ctld_port, slurmd_port
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self._old_env: dict[str, str | None] = {}

    # ---------------------------------------------------------------- set-up
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_files(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge_run", "munge_etc", "munge_lib", "munge_log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge_run", 0o755)   # the socket folder must be traversable by everyone
        os.chmod(r / "munge_etc", 0o700)   # the key folder must be private
        key = r / "munge_etc" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        import getpass

        self.conf.write_text(SLURM_CONF.format(root=r, cpus=self.cpus, mem_mb=self.mem_mb, user=getpass.getuser(),
                                               ctld_port=self.ctld_port, slurmd_port=self.slurmd_port))

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - the daemon keeps it open
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=dict(os.environ, **self.env()), start_new_session=True)

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with {p.returncode}; see {self.root}/log/\n{self.tail_logs()}")

    def tail_logs(self, n: int = 15) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"== {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def start(self, timeout: float = 90.0) -> LocalSlurm:
        """Start the daemons and wait until the node is idle (at most ``timeout`` seconds)."""
        ensure_installed()
        self._write_files()
        r = self.root
        self._spawn("munged", ["munged", "-F", "-f", f"--socket={r}/munge_run/munge.socket.2",
                               f"--key-file={r}/munge_etc/munge.key", f"--pid-file={r}/munge_run/munged.pid",
                               f"--seed-file={r}/munge_lib/munged.seed", f"--log-file={r}/munge_log/munged.log"])
        deadline = time.monotonic() + timeout
        while not (r / "munge_run" / "munge.socket.2").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable("munged did not create its socket in time")
            time.sleep(0.2)
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        for k, v in self.env().items():
            self._old_env[k] = os.environ.get(k)
            os.environ[k] = v
        while True:
            self._check_alive()
            state = self.node_state()
            if state.startswith("idle"):
                return self
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"node not idle after {timeout:.0f} s (state {state!r})\n{self.tail_logs()}")
            time.sleep(1.0)

    def node_state(self) -> str:
        try:
            out = self.run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
        except (subprocess.SubprocessError, OSError):
            return ""
        return out.stdout.strip().lower()

    # ---------------------------------------------------------------- helpers
    def run(self, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **self.env()), check=False)

    def job_state(self, job_id: str) -> str:
        """The job's state from ``scontrol`` (e.g. RUNNING, PENDING, COMPLETED, FAILED), '' if unknown."""
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)], timeout=15).stdout
        for tok in out.split():
            if tok.startswith("JobState="):
                return tok.split("=", 1)[1]
        return ""

    def job_field(self, job_id: str, field: str) -> str:
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)], timeout=15).stdout
        for tok in out.split():
            if tok.startswith(field + "="):
                return tok.split("=", 1)[1]
        return ""

    def wait_state(self, job_id: str, states: set[str], timeout: float) -> str:
        """Poll until the job reaches one of ``states``; returns the state or raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s (last {state!r})")

    # ---------------------------------------------------------------- tear-down
    def stop(self) -> None:
        """Cancel leftover jobs, then stop slurmd, slurmctld and munged by their PIDs."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--user", str(os.getuid())], timeout=10)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for k, v in self._old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
