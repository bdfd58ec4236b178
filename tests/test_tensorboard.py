"""TensorBoard logging (``log.tensorboard``): pretraining and evaluations write event files under their run
folder, LEWEL logs its alignment maps as images, and logging never changes a result."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import eval_knn.cli as knn_cli
import eval_linear.cli as linear_cli
import pretrain.cli as pretrain_cli
from lewel_bench.tblog import MetricWriter, alignment_grid, log_options

TINY = ["arch=resnet18", "aug.size=32", "batch_size=8", "epochs=2", "data.max_images=32", "data.num_workers=0",
        "num_threads=1", "knn.every=1", "knn.max_train_images=40", "knn.max_val_images=20", "model.hidden=64",
        "model.dim=32", "model.queue_size=64", "tqdm_interval=60", "log_every=1"]


def _events(folder: Path) -> EventAccumulator:
    files = list(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return ea


def _losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]


def test_pretraining_writes_scalars_and_alignment_maps_without_changing_the_run(mini_data: Path, tmp_path: Path) -> None:
    data = str(mini_data / "imagenet")
    runs = {}
    for tb in ("true", "false"):
        out = tmp_path / f"tb_{tb}"
        # random maps draw from the training generator: the image logging must not consume its numbers
        pretrain_cli.main(["lewel_m_mini", "--data", data, "--out", str(out), "--records-dir", str(tmp_path / "rec"),
                           *TINY, "model.align=random", f"log.tensorboard={tb}", "log.images_every=1"])
        runs[tb] = out
    assert _losses(runs["true"]) == _losses(runs["false"]) and len(_losses(runs["true"])) == 8
    assert not (runs["false"] / "tb").exists()
    ea = _events(runs["true"] / "tb")
    tags = ea.Tags()
    for t in ("train/loss", "train/loss_g", "train/loss_a", "train/lr", "train/momentum", "train/images_per_s",
              "monitor/knn_top1"):
        assert t in tags["scalars"], (t, tags["scalars"])
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(1, 9))
    assert [round(e.value, 5) for e in ea.Scalars("train/loss")] == [round(v, 5) for v in _losses(runs["true"])]
    imgs = ea.Images("alignment_maps")
    assert [e.step for e in imgs] == [4, 8] and imgs[0].width == 4 * 32 and imgs[0].height == 4 * 32
    # same run identity with and without TensorBoard (log is neutral): the folder of one resumes as the other
    ident = [json.loads((runs[k] / "identity.json").read_text())["run_id"] for k in ("true", "false")]
    assert ident[0] == ident[1]


def test_evaluations_write_their_metrics(mini_data: Path, tmp_path: Path) -> None:
    data = str(mini_data / "imagenet")
    small = ["batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"]
    knn_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", data, "--out", str(tmp_path / "knn"),
                  "--records-dir", str(tmp_path / "rec"), *small, "log.tensorboard=true"])
    ea = _events(tmp_path / "knn" / "tb")
    assert "eval/knn_k20/top1" in ea.Tags()["scalars"], ea.Tags()["scalars"]
    linear_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", data, "--out", str(tmp_path / "lin"),
                     "--records-dir", str(tmp_path / "rec"), *small, "epochs=2", "cached_views=1",
                     "log.tensorboard=true"])
    ea = _events(tmp_path / "lin" / "tb")
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2]
    rec = json.loads(next((tmp_path / "rec").glob("linear-*.json")).read_text())
    assert ea.Scalars("eval/linear_mini/top1")[0].value == pytest.approx(rec["metrics"]["top1"])
    assert "log" not in rec["config"]  # neutral: not part of the result's identity
    linear_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", data, "--out", str(tmp_path / "lin2"),
                     "--records-dir", str(tmp_path / "rec"), *small, "epochs=2", "cached_views=1"])
    assert not (tmp_path / "lin2" / "tb").exists()  # mini configs: off unless asked


def test_writer_options_and_the_alignment_picture(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert log_options({}) == {"tensorboard": True, "wandb": False, "images_every": 10}
    off = MetricWriter.for_run(tmp_path / "off", {"log": {"tensorboard": False}})
    off.scalars({"a": 1.0}, 0)
    assert not off.active and not (tmp_path / "off").exists()
    assert not MetricWriter.for_run(tmp_path / "r1", {}, is_main=False).active  # only the main rank writes
    w = MetricWriter(tmp_path / "w")
    w.scalars({"a": 1.0, "nan": float("nan"), "flag": True, "text": "x"}, 3, "p")
    w.close()
    assert _events(tmp_path / "w" / "tb").Tags()["scalars"] == ["p/a"]  # finite numbers only
    try:
        import wandb  # noqa: F401
    except ImportError:
        with caplog.at_level(logging.WARNING):
            MetricWriter(tmp_path / "wb", tensorboard=False, wandb=True)
        assert "wandb package is not installed" in caplog.text
    maps = torch.zeros(2, 8, 2, 2)
    maps[:, :, 0, 0] = 1.0  # every map peaks at the top-left cell
    grid = alignment_grid(torch.full((2, 3, 16, 16), 0.5), maps, k=3)
    assert grid.shape == (3, 32, 64)
    assert grid[0, 0, 16] > grid[0, 15, 31] and grid[1, 0, 16] < 0.5  # red where W is, the image elsewhere
