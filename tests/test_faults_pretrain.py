"""Pretraining against interruption and bad input: each case ends cleanly, before a step is wasted or with its
work saved.

An epoch without a batch is refused before training; a checkpoint and a backbone say how far their run got;
a folder is held by one run at a time (the lock dies with the process: kill -9 and a requeue still resume); a
checkpoint of a newer version of the code is refused naming both versions; SIGTERM / SIGUSR2 / Ctrl-C finish
the step, save it and end with one line and the status 128 + the signal, and the resumed run logs the losses of
an unbroken one (one process and two DDP processes); every split a run reads is checked before its first step;
``--fresh`` discards a folder's run. The kill -9 resume test lives in ``test_pretrain_resume.py``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lewel_bench.utils import REPO_ROOT

TINY = ["arch=resnet18", "aug.size=32", "batch_size=8", "epochs=2", "data.max_images=48", "data.num_workers=0",
        "num_threads=1", "knn.every=1", "knn.max_train_images=40", "knn.max_val_images=20", "model.hidden=64",
        "model.dim=32", "model.pred_hidden=64", "tqdm_interval=60"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
IPE = 6  # 48 images / batch 8


def _args(data: Path, out: Path, *extra: str, exp: str = "byol_mini") -> list[str]:
    return [exp, "--data", str(data), "--out", str(out), "--records-dir", str(out.parent / "records"), *TINY, *extra]


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pretrain", *_args(data, out, *extra)]


def _lines(out: Path) -> list[dict]:
    p = out / "metrics.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def _losses(out: Path) -> dict[int, float]:
    return {r["iter"]: r["loss"] for r in _lines(out) if "loss" in r}


def _knn(out: Path) -> list[tuple[int, float]]:
    return [(r["iter"], r["knn_top1"]) for r in _lines(out) if "knn_top1" in r]


def _ck(out: Path) -> dict:
    return torch.load(out / "checkpoint.pth", weights_only=False)


def _wait(p: subprocess.Popen, out: Path, until: int, timeout: float = 300) -> None:
    """Until ``out``'s metrics hold a loss of iteration >= ``until`` (the process must still run)."""
    deadline = time.time() + timeout
    while max(_losses(out) or [0]) < until:
        assert p.poll() is None, f"the run ended before iteration {until}: {p.communicate()}"
        assert time.time() < deadline, "the run did not get there in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def data(mini_data: Path) -> Path:
    return mini_data / "imagenet"


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unbroken tiny BYOL run (2 epochs x 6 iterations, kNN after each epoch) in a process of its own."""
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cmd(data, out), check=True, cwd=REPO_ROOT, env=ENV, capture_output=True)
    assert sorted(_losses(out)) == list(range(1, 13)) and [i for i, _ in _knn(out)] == [6, 12]
    return out


# ================================================================================================
# refused before the first step
# ================================================================================================
def test_an_epoch_without_a_batch_is_refused_before_anything_is_written(data: Path, tmp_path: Path) -> None:
    """Before: 10 images at batch 64 logged "0 iterations", wrote an untrained backbone.pth, then crashed."""
    from pretrain.cli import main

    out = tmp_path / "none"
    with pytest.raises(SystemExit) as e:
        main(["lewel_m_mini", "--data", str(data), "--out", str(out), "data.max_images=10", "data.num_workers=0"])
    msg = str(e.value.code)
    assert "10 training images" in msg and "data.max_images=10" in msg and "batch_size 64" in msg, msg
    assert "64 per process x 1 process(es)" in msg and "no iteration" in msg and "\n" not in msg
    assert not out.exists()


def test_every_split_the_run_reads_is_checked_before_its_first_step(data: Path, tmp_path: Path) -> None:
    """Before: a data root without val/ trained a whole epoch, then stopped at the first kNN pass."""
    import shutil

    from pretrain.cli import main

    root = tmp_path / "root"
    shutil.copytree(data / "train", root / "train")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["byol_mini", "--data", str(root), "--out", str(out), *TINY])
    msg = str(e.value.code)
    assert "kNN monitor (knn.every=1" in msg and str(root / "val") in msg and "\n" not in msg, msg
    assert not out.exists()
    # the alignment-map images read the kNN split too (LEWEL, TensorBoard on), also without the monitor
    with pytest.raises(SystemExit, match=r"alignment-map images \(log.images_every=1\) read it: .*val"):
        main(["lewel_m_mini", "--data", str(root), "--out", str(out), *TINY[:6], "knn.every=0",
              "log.tensorboard=true", "log.images_every=1"])
    # without either, no split but train/ is needed
    main(["byol_mini", "--data", str(root), "--out", str(out), *TINY, "knn.every=0", "epochs=1",
          "--records-dir", str(tmp_path / "records")])
    assert sorted(_losses(out)) == list(range(1, 7))
    # the records folder the run writes into at its end: a file in its place is refused before training
    (tmp_path / "rec_file").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"--records-dir: .*rec_file: is a file, expected a folder"):
        main(["byol_mini", "--data", str(root), "--out", str(tmp_path / "o2"), *TINY, "knn.every=0",
              "--records-dir", str(tmp_path / "rec_file")])
    assert not (tmp_path / "o2").exists()


def test_a_checkpoint_of_a_newer_code_version_is_refused_naming_both(data: Path, reference: Path,
                                                                    tmp_path: Path) -> None:
    """Before: a checkpoint whose state version was raised was resumed by the older code."""
    import shutil

    from pretrain.cli import main
    from pretrain.state import CODE_VERSION, STATE_VERSION

    out = tmp_path / "newer"
    shutil.copytree(reference, out)
    (out / "result.json").unlink()  # not finished: the checkpoint is read
    ck = _ck(out)
    torch.save({**ck, "state_version": STATE_VERSION + 7}, out / "checkpoint.pth")
    before = (out / "checkpoint.pth").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(_args(data, out))
    msg = str(e.value.code)
    assert f"newer version of the pretraining code (state layout {STATE_VERSION + 7}; this code reads layouts up " \
           f"to {STATE_VERSION})" in msg and str(out / "checkpoint.pth") in msg and "--fresh" in msg, msg
    assert (out / "checkpoint.pth").read_bytes() == before  # left as it is
    newer = {**ck["meta"]["identity"], "code_version": CODE_VERSION + 1}
    torch.save({**ck, "meta": {**ck["meta"], "identity": newer}}, out / "checkpoint.pth")
    before = (out / "checkpoint.pth").read_bytes()
    with pytest.raises(SystemExit, match=rf"newer version of the pretrain code \(code version {CODE_VERSION + 1}; "
                                         rf"this code: {CODE_VERSION}\)"):
        main(_args(data, out))
    assert (out / "checkpoint.pth").read_bytes() == before
    # an identity file alone (a run stopped before its first checkpoint) is held to the same rule
    (out / "checkpoint.pth").unlink()
    ident = json.loads((out / "identity.json").read_text())
    ident["identity"]["code_version"] = CODE_VERSION + 1
    ident["run_id"] = "another"
    (out / "identity.json").write_text(json.dumps(ident))
    with pytest.raises(SystemExit, match=rf"code version {CODE_VERSION + 1}; this code: {CODE_VERSION}"):
        main(_args(data, out))
    assert json.loads((out / "identity.json").read_text()) == ident


def test_fresh_discards_the_folders_run_and_starts_over(data: Path, reference: Path, tmp_path: Path) -> None:
    import shutil

    from pretrain.cli import main

    out = tmp_path / "other"
    shutil.copytree(reference, out)
    with pytest.raises(SystemExit, match=r"holds another run with other settings \(config\.epochs: 2 -> 1; "
                                         r"config\.optim\.lr: 0\.05 -> 0\.1\)"
                                         r": choose another --out, or pass --fresh to discard it"):
        main(_args(data, out, "optim.lr=0.1", "epochs=1"))
    (out / "checkpoint.pth").write_bytes(b"garbage" * 10)  # unreadable: refused, or discarded with --fresh
    with pytest.raises(SystemExit, match=r"cannot be read.*it is left as it is: .*--fresh"):
        main(_args(data, out, "optim.lr=0.1", "epochs=1"))
    main(_args(data, out, "optim.lr=0.1", "epochs=1", "--fresh"))
    ck = _ck(out)
    assert ck["config"]["optim"]["lr"] == 0.1 and ck["iteration"] == IPE and sorted(_losses(out)) == list(range(1, 7))
    assert json.loads((out / "identity.json").read_text())["run_id"] == ck["meta"]["run_id"]


# ================================================================================================
# how far a run got
# ================================================================================================
def test_checkpoint_and_backbone_say_how_far_the_run_got(reference: Path) -> None:
    """Before: an unfinished run's files said only the planned epochs (a 3-epoch run killed after 1 read as 3)."""
    ck = _ck(reference)
    assert (ck["epoch"], ck["iteration"], ck["epoch_end_pending"]) == (2, 12, False)
    assert {k: ck["meta"][k] for k in ("epochs", "epochs_trained", "iterations_trained", "complete")} == \
        {"epochs": 2, "epochs_trained": 2, "iterations_trained": 12, "complete": True}
    bb = torch.load(reference / "backbone.pth", weights_only=False)["meta"]
    assert {k: bb[k] for k in ("epochs", "epochs_trained", "iterations_trained", "complete")} == \
        {"epochs": 2, "epochs_trained": 2, "iterations_trained": 12, "complete": True}
    ident = json.loads((reference / "identity.json").read_text())
    assert bb["group"] == ident["group"] == ck["meta"]["group"] and bb["run_id"] == ident["run_id"]


def test_the_run_identity_keeps_its_group_across_seeds() -> None:
    """Pretraining's identity on the stage contract: no checkpoint and no separate seed in it (the seed is the
    config's); the group leaves the seed out, so the tables average runs of one recipe over seeds."""
    from lewel_bench.config import load_config
    from lewel_bench.stage import digest
    from pretrain.cli import CONFIG_DIR
    from pretrain.state import pretrain_identity

    data = {"name": "mini", "fingerprint": "f" * 64, "root": "/x"}
    a, b = (pretrain_identity(load_config("byol_mini", CONFIG_DIR, [f"seed={s}"]), data) for s in (0, 1))
    assert set(a.as_dict()) == {"stage", "code_version", "config", "data"}
    assert a.run_id != b.run_id and a.group == b.group
    d = a.as_dict()
    assert a.run_id == digest(d) and a.group == digest({**d, "config": {k: v for k, v in d["config"].items()
                                                                         if k != "seed"}})


# ================================================================================================
# one run per folder
# ================================================================================================
def test_a_second_run_into_a_held_folder_is_refused_and_kill_9_releases_it(data: Path, reference: Path,
                                                                          tmp_path: Path) -> None:
    """Before: two runs started at once into one --out both ran and interleaved their files. The lock is the
    kernel's and the main process's alone: killed with kill -9 while its loader worker still lives, the run leaves
    a folder that the next run takes over at once and resumes."""
    from lewel_bench.stage import FolderLock

    out = tmp_path / "held"
    first = subprocess.Popen(_cmd(data, out, "data.num_workers=1"), cwd=REPO_ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(first, out, 2)
        first.send_signal(signal.SIGSTOP)  # paused (holding the folder) while the second one starts
        second = subprocess.run(_cmd(data, out), cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 2, second.stderr[-2000:]
        err = second.stderr.strip().splitlines()[-1]
        assert err.startswith("pretrain: ") and f"{out} is in use by another run (pid {first.pid} on " \
            f"{socket.gethostname()} since " in err, err
        assert first.poll() is None  # the first run is left alone
        workers = [int(c) for c in Path(f"/proc/{first.pid}/task/{first.pid}/children").read_text().split()]
        assert workers, "the first run has a loader worker"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert all(Path(f"/proc/{w}").exists() for w in workers)  # still alive: they notice the kill within seconds
    lock = FolderLock(out)
    lock.acquire()  # free at once
    lock.release()
    assert max(_losses(out)) < 12
    third = subprocess.run(_cmd(data, out), cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert third.returncode == 0, third.stderr[-2000:]
    assert _losses(out) == _losses(reference)


def test_an_evaluation_into_a_held_folder_is_refused(tmp_path: Path) -> None:
    """The same rule for every stage's run folder (here eval_knn), the holder named."""
    import eval_knn.cli as knn_cli
    from helpers import make_imagenet

    root = make_imagenet(tmp_path / "d")
    out = tmp_path / "knn"
    hold = ("import sys, time; from pathlib import Path; from lewel_bench.stage import FolderLock; "
            "lock = FolderLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match=rf"{re.escape(str(out))} is in use by another run \(pid {holder.pid} on "):
            knn_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", str(root), "--out", str(out),
                          "--records-dir", str(tmp_path / "records"), "batch_size=8", "data.crop_size=32",
                          "data.resize_size=36", "data.num_workers=0"])
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "identity.json").exists()


# ================================================================================================
# signals: finish the step, save it, say so in one line, resume as if unbroken
# ================================================================================================
def test_sigterm_saves_the_step_and_the_resumed_run_is_unbroken(data: Path, reference: Path, tmp_path: Path) -> None:
    """Before: SIGTERM (scancel, torchrun, a preempting SLURM) ended the run with status 143 and no checkpoint; it
    resumed at the last epoch end. Here a real run gets it mid-epoch, with no periodic checkpoint
    (ckpt.every_iters=0): the one the signal writes is all there is."""
    out = tmp_path / "run"
    p = subprocess.Popen(_cmd(data, out, "ckpt.every_iters=0"), cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _wait(p, out, 2)
    p.send_signal(signal.SIGTERM)
    _stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    stopped = max(_losses(out))
    last = stderr.strip().splitlines()[-1]
    assert last == (f"pretrain: byol_mini: stopped by SIGTERM after iteration {stopped} of 12 (epoch "
                    f"{stopped / IPE:.2f} of 2); the state is saved in {out / 'checkpoint.pth'}: the same command "
                    f"resumes it"), last
    assert 2 <= stopped < IPE and "Traceback" not in stderr  # mid-epoch: the step in progress finished
    ck = _ck(out)
    assert ck["iteration"] == stopped and not ck["epoch_end_pending"]
    assert (ck["meta"]["epochs_trained"], ck["meta"]["iterations_trained"], ck["meta"]["complete"]) == \
        (0, stopped, False)
    assert not (out / "backbone.pth").exists() and not (out / "result.json").exists()
    r = subprocess.run(_cmd(data, out, "ckpt.every_iters=0"), cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _losses(out) == _losses(reference)  # bit-identical per-iteration losses
    assert _knn(out) == _knn(reference)


def test_sigusr2_and_ctrl_c_stop_the_same_way(data: Path, reference: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """submitit's USR2 (before a time limit) and Ctrl-C: the step finishes, is saved, the line and the status say
    which signal; the run resumes as if unbroken."""
    from pretrain.cli import main
    from pretrain.methods.byol import BYOL

    real = BYOL.forward
    out = tmp_path / "run"
    for sig, at in ((signal.SIGUSR2, 2), (signal.SIGINT, 7)):
        def signalled(self, views, sig=sig, at=at):
            if self.iteration == at:
                os.kill(os.getpid(), sig)
            return real(self, views)

        monkeypatch.setattr(BYOL, "forward", signalled)
        with pytest.raises(SystemExit) as e:
            main(_args(data, out, "ckpt.every_iters=0"))
        assert e.value.code == 128 + sig and _ck(out)["iteration"] == at + 1
        name = "SIGUSR2" if sig == signal.SIGUSR2 else "SIGINT (Ctrl-C)"
        assert capfd.readouterr().err.strip().splitlines()[-1].startswith(
            f"pretrain: byol_mini: stopped by {name} after iteration {at + 1} of 12")
    monkeypatch.setattr(BYOL, "forward", real)
    main(_args(data, out, "ckpt.every_iters=0"))
    assert _losses(out) == _losses(reference) and _knn(out) == _knn(reference)


def test_a_stop_during_the_knn_pass_resumes_at_that_epoch_end(data: Path, reference: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal during an epoch end's kNN pass (minutes on ImageNet) cuts it short: the checkpoint keeps the state
    from before the epoch end, marked pending, and the resumed run does that epoch end first."""
    from pretrain import hooks
    from pretrain.cli import main

    real = hooks.extract_features
    calls = []

    def signalled(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the first pass
        return real(*a, **k)

    monkeypatch.setattr(hooks, "extract_features", signalled)
    out = tmp_path / "cut"
    with pytest.raises(SystemExit) as e:
        main(_args(data, out))
    assert e.value.code == 128 + signal.SIGTERM
    ck = _ck(out)
    assert (ck["iteration"], ck["epoch_end_pending"], ck["meta"]["epochs_trained"]) == (IPE, True, 1)
    assert _knn(out) == [] and sorted(_losses(out)) == list(range(1, IPE + 1))
    monkeypatch.setattr(hooks, "extract_features", real)
    main(_args(data, out))
    assert _losses(out) == _losses(reference) and _knn(out) == _knn(reference)


def test_a_stop_after_an_epochs_last_step_and_a_second_ctrl_c(data: Path, reference: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal in the last step of an epoch: saved before the epoch end (pending), resumed exactly. A second
    Ctrl-C stops at once: the step in progress is lost, the last checkpoint stands, and the line says so."""
    from pretrain.cli import main
    from pretrain.methods.byol import BYOL

    real = BYOL.forward
    to_send: list[tuple[int, int]] = []

    def signalled(self, views):
        for it, sig in [s for s in to_send if s[0] == self.iteration]:
            to_send.remove((it, sig))
            os.kill(os.getpid(), sig)
        return real(self, views)

    monkeypatch.setattr(BYOL, "forward", signalled)
    out = tmp_path / "edge"
    to_send[:] = [(IPE - 1, signal.SIGTERM)]  # step 5 is the epoch's last (steps 0..5)
    with pytest.raises(SystemExit) as e:
        main(_args(data, out))
    assert e.value.code == 128 + signal.SIGTERM
    assert (_ck(out)["iteration"], _ck(out)["epoch_end_pending"]) == (IPE, True) and _knn(out) == []
    to_send[:] = [(IPE + 2, signal.SIGINT), (IPE + 2, signal.SIGINT)]  # Ctrl-C twice in step 8
    with pytest.raises(SystemExit) as e:
        main(_args(data, out, "ckpt.every_iters=2"))
    assert e.value.code == 128 + signal.SIGINT
    assert _ck(out)["iteration"] == IPE + 2  # the periodic checkpoint before the lost step
    monkeypatch.setattr(BYOL, "forward", real)
    main(_args(data, out))
    assert _losses(out) == _losses(reference) and _knn(out) == _knn(reference)


def test_a_ctrl_c_before_training_is_one_line(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture) -> None:
    from pretrain import train

    real = train.open_data

    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(train, "open_data", interrupted)
    from pretrain.cli import main

    with pytest.raises(SystemExit) as e:
        main(_args(data, tmp_path / "early"))
    assert e.value.code == 128 + signal.SIGINT
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert err == "pretrain: stopped by SIGINT (Ctrl-C) before the first training step: nothing new to save", err
    assert not (tmp_path / "early" / "checkpoint.pth").exists()


def test_the_handler_installed_before_the_run_runs_after_the_checkpoint(data: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Under submitit (LAUNCHER=slurm) USR2 is submitit's: its handler requeues the job and exits. The run writes
    its checkpoint first, then passes the signal on; the handler's exit is the run's."""
    from pretrain.cli import main
    from pretrain.methods.byol import BYOL

    out = tmp_path / "requeued"
    seen = []

    def submitit_like(signum, frame):
        seen.append((signum, _ck(out)["iteration"]))
        raise SystemExit(-1)

    real = BYOL.forward

    def signalled(self, views):
        if self.iteration == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, views)

    monkeypatch.setattr(BYOL, "forward", signalled)
    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(SystemExit) as e:
            main(_args(data, out, "ckpt.every_iters=0"))
        assert e.value.code == -1 and seen == [(signal.SIGUSR2, 3)]
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored when the run ended
    finally:
        signal.signal(signal.SIGUSR2, old)


@pytest.mark.slow
def test_ddp_processes_stop_at_the_same_step_when_one_is_signalled(data: Path, tmp_path: Path) -> None:
    """Two gloo processes (one epoch of 10 steps). SIGTERM reaching only the second: both stop after the same
    step, the first writes that step's checkpoint, both end with status 143 and one line. Then Ctrl-C to the
    whole process group (a terminal's): the launcher ends with one line and 130, the ranks after one step. The
    twice-resumed pair logs the losses of an unbroken pair."""
    steps = 10

    def launch(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lewel_bench.launch", "--nproc", "2", "--",
                                 *_cmd(data, out, "ckpt.every_iters=0", "epochs=1", "data.max_images=80")[2:]],
                                cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def stop_lines(stderr: str, name: str) -> list[str]:
        assert "Traceback" not in stderr, stderr[-3000:]
        return [x for x in stderr.splitlines() if x.startswith(f"pretrain: byol_mini: stopped by {name}")]

    ref = tmp_path / "ref"
    r = launch(ref)
    assert r.wait(timeout=600) == 0, r.communicate()[1][-3000:]
    out = tmp_path / "run"
    p = launch(out)
    _wait(p, out, 2)
    ranks = {}
    for child in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        ranks[next(e for e in env if e.startswith(b"RANK=")).decode()] = int(child)
    os.kill(ranks["RANK=1"], signal.SIGTERM)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode != 0 and "a local rank exited with status 143" in stderr, stderr[-3000:]
    lines = stop_lines(stderr, "SIGTERM")
    assert len(lines) == 2 and lines[0] == lines[1], lines  # both processes, the same step
    first = _ck(out)["iteration"]
    assert max(_losses(out)) == first and 2 <= first <= 5 and f"after iteration {first} of {steps}" in lines[0]

    p = launch(out)
    _wait(p, out, first + 1)
    os.killpg(p.pid, signal.SIGINT)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 130 and stderr.strip().splitlines()[-1] == \
        "pretrain: interrupted (Ctrl-C): the 2 local ranks were asked to stop", stderr[-3000:]
    lines = stop_lines(stderr, "SIGINT (Ctrl-C)")
    second = _ck(out)["iteration"]
    assert len(lines) == 2 and lines[0] == lines[1] and f"after iteration {second} of {steps}" in lines[0], lines
    assert first < second < steps and max(_losses(out)) == second
    r = launch(out)
    assert r.wait(timeout=600) == 0, r.communicate()[1][-3000:]
    assert _losses(out) == _losses(ref) and _knn(out) == _knn(ref)
