"""Sweeps (the paper's search for the best fine-tuning learning rate, Sec. 4.3): each point is a run of its
own with its value in the record; the tables report the best point by the eval's primary metric and name it."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import eval_knn.cli as knn_cli
from helpers import make_imagenet, records_in
from lewel_bench.records import make_record, write_record
from lewel_bench.stage import RunIdentity
from lewel_bench.utils import REPO_ROOT


def test_a_sweep_point_records_its_key_value_and_group(tmp_path: Path) -> None:
    a = make_imagenet(tmp_path / "a")
    rec = tmp_path / "records"
    for k in (5, 10):
        knn_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", str(a), "--records-dir", str(rec),
                      "batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0", f"k={k}",
                      "--sweep", "k"])
    r5, r10 = sorted(records_in(rec), key=lambda r: r["sweep"]["value"])
    assert (r5["sweep"]["key"], r5["sweep"]["value"], r10["sweep"]["value"]) == ("k", 5, 10)
    assert r5["sweep"]["group"] == r10["sweep"]["group"] and r5["group"] != r10["group"]
    with pytest.raises(SystemExit, match=r"--sweep optim.lr: the run's config has no key 'optim.lr'"):
        knn_cli.main(["--config", "mini", "--ckpt", "random:resnet18", "--data", str(a), "--sweep", "optim.lr",
                      "--records-dir", str(rec)])


def _det(tmp: Path, lr: float, seed: int, ap: float) -> None:
    ident = RunIdentity("eval_detection", 1, {"solver": {"base_lr": lr, "max_iter": 24000}},
                        {"name": "VOCdevkit", "fingerprint": "v" * 64}, "c" * 64, seed, pretrain_group="pg")
    rec = make_record(method="lewel_b", pretrain_exp="lewel_b", pretrain_epochs=200, eval="voc_det", protocol="c4_24k",
                      metrics={"AP": ap, "AP50": ap + 25, "AP75": ap + 5}, seed=seed, checkpoint_sha256="c" * 64,
                      config=ident.config, start_time="2026-01-01T00:00:00+00:00", dataset="VOCdevkit",
                      data=ident.data, run_id=ident.run_id, group=ident.group, sweep=ident.sweep("solver.base_lr"))
    write_record(rec, tmp / "records")


def test_tables_report_the_best_point_of_a_sweep(tmp_path: Path) -> None:
    from tools import make_tables as mt

    for lr, aps in ((0.01, (55.0, 55.4)), (0.02, (57.0, 57.4)), (0.03, (56.0, 56.2))):
        for seed, ap in enumerate(aps):
            _det(tmp_path, lr, seed, ap)
    tables, _ = mt.make_tables(tmp_path / "records", REPO_ROOT / "results" / "paper", tmp_path / "t")
    t3 = tables["table3_voc"]
    row = t3[(t3["method"] == "lewel_b") & (t3["epochs"] == 200)].iloc[0]
    assert row["det_AP.ours"] == 57.2 and row["det_AP.n"] == 2 and row["sweep"] == "c4_24k: solver.base_lr=0.02"
    assert row["det_AP50.ours"] == 82.2  # every column from the chosen point's runs
    assert not (t3["source"] == "ours").any()  # the other points are not extra rows


def test_make_passes_a_sweep_as_one_run_per_value() -> None:
    out = subprocess.run(["make", "-n", "eval-voc-seg", "LRS=0.01 0.02"], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "for lr in 0.01 0.02" in out and "optim_wrapper.optimizer.lr=$lr --sweep optim_wrapper.optimizer.lr" in out
