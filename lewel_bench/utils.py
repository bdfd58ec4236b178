"""Small shared helpers: logging, seeding, RNG state, git commit, host name, the CPU allocator policy."""
from __future__ import annotations

import ctypes
import logging
import os
import random
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .paths import REPO_ROOT, runs_dir  # noqa: F401 (re-exported)


def setup_logging(level: int = logging.INFO, rank: int = 0) -> None:
    """Root logging to stderr; ranks other than 0 only log warnings."""
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank{rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def get_rng_state() -> dict[str, Any]:
    """Every RNG state a resumed run needs to continue bit-identically."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hostname() -> str:
    return socket.gethostname()


def default_num_workers() -> int:
    """Loader workers: all cores but one per process (at least 0 = load in the main process)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, n // max(local, 1) - 1)


def amp_autocast(device: torch.device, amp: bool):
    """fp16 autocast on CUDA when ``amp`` (AMP: the paper's and the official code's setting); a no-op
    context on CPU, where fp32 is used (bf16 autocast is ~20x slower on the CPUs we run on)."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def amp_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None = None, clip_grad_norm: float | None = None) -> None:
    """One optimiser step: zero_grad, backward of the loss scaled by ``scaler`` (a disabled scaler or
    None: unscaled), optional clipping of the gradients' global norm to ``clip_grad_norm`` (on the unscaled
    gradients), optimiser step, scaler update."""
    optimizer.zero_grad(set_to_none=True)
    params = [p for g in optimizer.param_groups for p in g["params"]] if clip_grad_norm else []
    if scaler is None:
        loss.backward()
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_grad_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if clip_grad_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()


def resolve_auto(value: Any, default: bool) -> bool:
    """A config switch that may say ``auto`` (e.g. ``amp``, ``channels_last``, ``aug.batched``): ``default``
    (usually "on CUDA") for ``auto``, else the value as a bool."""
    return default if value == "auto" else bool(value)


#: On CPU, channels_last convolutions (oneDNN) pay from crops of this size on. Measured (fwd + bwd + SGD,
#: batch 16, 2 threads; channels_last / NCHW time): ResNet-50 0.78 at 224 px, 0.91 at 160, 0.93 at 128,
#: 0.98 at 96, 1.08 at 64; ResNet-18 0.90 at 224, 1.00 at 128, 1.26 at 64.
CPU_CHANNELS_LAST_MIN_SIZE = 128


def channels_last_default(device_type: str, size: int) -> bool:
    """What ``channels_last: auto`` means: on CUDA always, on CPU for crops of at least
    :data:`CPU_CHANNELS_LAST_MIN_SIZE` pixels (below it, NCHW is faster there)."""
    return device_type == "cuda" or (device_type == "cpu" and int(size) >= CPU_CHANNELS_LAST_MIN_SIZE)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel (``mallopt``:
    ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 1 GiB), so that a training step's large temporaries (32 MiB
    head activations and weight-shaped buffers) reuse pages rather than fault in fresh zeroed ones on every
    call. Measured on a LEWEL_B CPU step (ResNet-50, 64 px, batch 32): 293k minor page faults and 0.66 s of
    system time per step before, 106 and 0.004 s after, peak RSS 3.05 -> 3.14 GB. ``LEWEL_MALLOC=system``
    keeps glibc's defaults. Returns whether the policy was applied (glibc on Linux only)."""
    if os.environ.get("LEWEL_MALLOC", "retain") == "system":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
