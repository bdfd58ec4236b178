"""Speed options of the training loop: compile (in place, checkpoints keep their keys), the CPU allocator
policy (freed memory reused rather than faulted in again), and the thread policy."""
from __future__ import annotations

import resource

import torch

from lewel_bench.config import load_config
from lewel_bench.utils import keep_freed_memory
from pretrain.cli import CONFIG_DIR
from pretrain.methods import METHODS
from pretrain.train import compile_networks


def test_compile_is_in_place_and_off_by_default() -> None:
    cfg = load_config("lewel_b_mini", CONFIG_DIR)
    assert cfg["compile"] == "auto"
    m = METHODS.get("lewel_b")(cfg)
    keys = list(m.state_dict())
    assert compile_networks(m, "auto") == [] and compile_networks(m, False) == []
    assert compile_networks(m, True) == ["online", "predictor", "predictor_aligned", "target"]
    assert list(m.state_dict()) == keys  # nothing renamed (no _orig_mod.)


def test_freed_memory_is_reused_not_faulted_in_again(monkeypatch) -> None:
    monkeypatch.setenv("LEWEL_MALLOC", "system")
    assert keep_freed_memory() is False
    monkeypatch.delenv("LEWEL_MALLOC")
    assert keep_freed_memory() is True  # glibc (Linux)

    def faults_of_big_temporaries() -> int:
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            torch.empty(48 << 20, dtype=torch.uint8).fill_(1)  # 48 MiB: above glibc's mmap threshold
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

    faults_of_big_temporaries()
    assert faults_of_big_temporaries() < 2000  # 5 fresh mappings would fault in 5 x 12k pages
