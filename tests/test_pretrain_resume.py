"""End-to-end pretraining on a tiny subset: outputs, kill -9 and resume equality, NaN stop, CLI errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from lewel_bench.utils import REPO_ROOT

TINY = ["arch=resnet18", "aug.size=32", "batch_size=8", "epochs=2", "data.max_images=48", "data.num_workers=0",
        "num_threads=1", "ckpt.every_iters=2", "knn.every=1", "knn.max_train_images=40", "knn.max_val_images=20",
        "model.hidden=64", "model.dim=32", "model.pred_hidden=64", "tqdm_interval=60"]


def _cmd(data: Path, out: Path, exp: str = "lewel_b_mini", extra=("model.target=eman",)):
    return [sys.executable, "-m", "pretrain", exp, "--data", str(data / "imagenet"), "--out", str(out), *TINY, *extra]


def _losses(out: Path) -> dict[int, float]:
    lines = [json.loads(lv) for lv in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in lines if "loss" in r}


@pytest.mark.slow
def test_kill_and_resume_equals_unbroken_run(mini_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(mini_data, ref), check=True, cwd=REPO_ROOT, env=env, capture_output=True)
    want = _losses(ref)
    assert sorted(want) == list(range(1, 13))  # 48 images / 8 = 6 iterations x 2 epochs

    # outputs of a finished run
    ck = torch.load(ref / "checkpoint.pth", weights_only=False)
    assert ck["meta"]["format"] == "lewel-bench/pretrain" and ck["iteration"] == 12
    for key in ("model", "target", "optimizer", "scaler", "rng", "config", "epoch", "queue"):
        assert key in ck
    bb = torch.load(ref / "backbone.pth", weights_only=False)
    assert bb["meta"]["method"] == "lewel_b" and bb["meta"]["epochs"] == 2 and bb["meta"]["arch"] == "resnet18"
    missing, unexpected = torchvision.models.resnet18().load_state_dict(bb["state_dict"], strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert any("knn_top1" in lv for lv in (ref / "metrics.jsonl").read_text().splitlines())

    run = tmp_path / "killed"
    p = subprocess.Popen(_cmd(mini_data, run), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:  # kill mid-epoch, after the iteration-4 checkpoint
        if (run / "metrics.jsonl").exists() and max(_losses(run) or [0]) >= 5:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert max(_losses(run)) < 12, "the run finished before it could be killed"
    subprocess.run(_cmd(mini_data, run), check=True, cwd=REPO_ROOT, env=env, capture_output=True)
    got = _losses(run)
    assert sorted(got) == sorted(want)
    assert got == want  # bit-identical per-iteration losses
    # a finished run re-run does nothing but report
    r = subprocess.run(_cmd(mini_data, run), check=True, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert "checkpoint" in r.stdout and _losses(run) == want


@pytest.mark.slow
def test_nan_loss_stops_with_last_good_checkpoint(mini_data, tmp_path, monkeypatch):
    from pretrain.cli import main
    from pretrain.methods.byol import BYOL

    orig = BYOL.forward

    def poisoned(self, views):
        loss, logs = orig(self, views)
        return (loss * float("nan") if self.iteration == 3 else loss), logs

    monkeypatch.setattr(BYOL, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit, match=r"loss is nan at iteration 3 .*Last good checkpoint: .* at iteration 2"):
        main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *TINY[:-1], "knn.every=0"])
    ck = torch.load(out / "checkpoint.pth", weights_only=False)
    assert ck["iteration"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_pretraining_runs_with_batched_augmentation(mini_data, tmp_path):
    """``aug.batched`` (the CUDA default): workers crop and flip, the loop runs the photometric ops."""
    from pretrain.cli import main

    out = tmp_path / "batched"
    main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *TINY, "aug.batched=true",
          "knn.every=0", "epochs=1"])
    got = _losses(out)
    assert sorted(got) == list(range(1, 7)) and all(np.isfinite(v) for v in got.values())


def test_cli_errors(mini_data, tmp_path, capfd):
    from pretrain.cli import main

    # each error ends the command with one line naming the problem (SystemExit's message: exit status 1)
    with pytest.raises(SystemExit) as e:
        main(["lewel_q", "--data", str(mini_data / "imagenet"), "--out", str(tmp_path / "a")])
    assert "lewel_q" in str(e.value.code) and "lewel_m" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["lewel_m_mini", "--data", str(mini_data / "imagenet"), "--out", str(tmp_path / "b"), "optim.lrr=0.1"])
    assert "optim.lr" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["lewel_m_mini", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")])
    assert "nowhere" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["lewel_m", "--out", str(tmp_path / "d")])
    assert "--data" in str(e.value.code)
    assert all(not (tmp_path / d).exists() for d in "abcd")
