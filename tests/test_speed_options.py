"""Speed options of the training loop: compile (in place, checkpoints keep their keys), the CPU allocator
policy (freed memory reused rather than faulted in again), and the thread policy."""
from __future__ import annotations

import resource

import pytest
import torch

from lewel_bench.config import load_config
from lewel_bench.utils import keep_freed_memory
from pretrain.augment import view_specs
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


def test_thread_tuner_follows_the_load() -> None:
    """Simulated step times: 2 threads win while the machine is quiet, 1 thread once a competitor takes a
    core (2 threads then 3x slower, 1 thread 2x), and 2 again when it leaves."""
    from lewel_bench.threads import ThreadTuner, candidates

    assert candidates(8) == [8, 4, 2, 1] and candidates(2) == [2, 1] and candidates(1) == [1]
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, every=10, max_every=40, trial_steps=3)
        busy = False

        def run(steps: int) -> list[int]:
            used = []
            for _ in range(steps):
                n = torch.get_num_threads()
                assert n == tuner.current
                used.append(n)
                tuner.step({(False, 2): 1.0, (False, 1): 1.8, (True, 2): 3.0, (True, 1): 2.0}[busy, n])
            return used

        quiet = run(200)
        assert quiet[6:].count(1) <= 3 * 5  # after the first trial, 2 threads but the 1-thread trial steps
        assert tuner.interval == 40 and tuner.switches == 0
        busy = True
        used = run(60)
        assert used[:10].count(2) <= 3 + 3 + 3  # detected within patience, re-measured, then 1 thread
        assert tuner.current == 1 and used[-10:].count(2) <= 3 and tuner.switches == 1
        busy = False  # 1 thread now 1.8 against 2.0 measured: no drift to see; the next timed trial finds 2
        used = run(tuner.interval + 3 * 2 + 10)
        assert used[-10:].count(2) >= 7 and tuner.current == 2 and tuner.switches == 2
        busy = True
        run(60)
        assert tuner.current == 1 and tuner.reference == 2.0
        tuner._begin_trial()  # the next timed trial on a crowded machine: 2 threads take 12 s against 2 s
        assert torch.get_num_threads() == 2
        tuner.step(12.0)
        assert torch.get_num_threads() == 1 and tuner._trial[2] == [12.0]  # not confirmed by more slow steps
        assert ThreadTuner(1).active is False
    finally:
        torch.set_num_threads(before)


def test_channels_last_auto_rule() -> None:
    from lewel_bench.utils import CPU_CHANNELS_LAST_MIN_SIZE, channels_last_default

    assert channels_last_default("cuda", 32) and channels_last_default("cpu", 224)
    assert channels_last_default("cpu", CPU_CHANNELS_LAST_MIN_SIZE) and not channels_last_default("cpu", 64)


@pytest.mark.parametrize("name", ["mocov2", "lewel_m", "byol", "lewel_b", "cgh", "mcl"])
def test_channels_last_computes_the_same_losses(name: str) -> None:
    """The path CPU runs from 128 px crops take: every method's loss in channels_last equals NCHW's, and so do
    its gradients up to fp32 rounding (a layout mix-up would be off by about 100 %; at 32 px with batch 16
    the tiny maps make the BN backward ill-conditioned: both formats are then up to ~1 % from fp64)."""
    size = 32 if name != "mcl" else 64
    cfg = load_config(f"{name}_mini", CONFIG_DIR, [f"aug.size={size}", "batch_size=16"])
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(16, 3, size, size, generator=g) for _ in range(len(view_specs(cfg["aug"])))]
    runs = []
    for cl in (False, True):
        torch.manual_seed(0)
        m = METHODS.get(cfg["method"])(cfg).train()
        m.iters_per_epoch = 10
        xs = views
        if cl:
            m.to(memory_format=torch.channels_last)
            xs = [x.contiguous(memory_format=torch.channels_last) for x in views]
        loss, _ = m(xs)
        loss.backward()
        runs.append((loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = runs
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    assert g1.keys() == g0.keys() and len(g0) > 10
    # a bias right before a BN without affine (MCL's projector) has the gradient 0 in exact arithmetic
    scale = max(float(v.norm()) for v in g0.values())
    worst = max((float((g1[n] - g0[n]).norm() / g0[n].norm()), n) for n in g0 if g0[n].norm() > 1e-6 * scale)
    assert worst[0] < 0.05, f"{name}: channels_last gradient of {worst[1]} off by {worst[0]:.2%}"


def test_pretraining_adapts_its_threads_and_logs_them(mini_data, tmp_path) -> None:
    """``threads_adapt=true`` in a real (tiny) CPU run: the tuner's trials use 2 threads and 1, and every
    metrics row says which count its step ran at."""
    import json

    from pretrain.cli import main

    before = torch.get_num_threads()
    out = tmp_path / "adapt"
    try:
        main(["lewel_m_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), "arch=resnet18",
              "aug.size=32", "batch_size=8", "data.max_images=64", "data.num_workers=0", "epochs=1", "knn.every=0",
              "model.hidden=64", "num_threads=2", "threads_adapt=true", "tqdm_interval=60"])
    finally:
        torch.set_num_threads(before)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and [r["threads"] for r in rows[:6]] == [2, 2, 2, 1, 1, 1]
    assert {r["threads"] for r in rows[6:]} <= {1, 2}
