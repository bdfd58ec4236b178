"""What a table row may hold: only runs in the paper's settings fill a paper row (its backbone, no overrides
that change the result but the paper's own, a finished pretraining); anything else gets a row of its own saying
why; records of another schema or protocol version are listed, never averaged; one run recorded twice counts
once; a published checkpoint's record fills the comparison row its ``--row`` names."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eval_detection.declaration import PROTOCOL_VERSION as DETECTION_VERSION
from helpers import make_imagenet, records_in
from lewel_bench.records import make_record, write_record
from lewel_bench.utils import REPO_ROOT
from tools import make_tables as mt

PAPER = REPO_ROOT / "results" / "paper"
VOC = {"AP": 57.0, "AP50": 82.0, "AP75": 63.0}


def _rec(d: Path, name: str, **kw) -> Path:
    base = dict(method="lewel_m", pretrain_exp="lewel_m", pretrain_epochs=200, eval="voc_det", protocol="c4_24k",
                metrics=VOC, seed=0, checkpoint_sha256="c" * 64, config={"solver": {"base_lr": 0.02}},
                start_time="2026-01-01T00:00:00+00:00", dataset="VOCdevkit",
                data={"name": "VOCdevkit", "fingerprint": "v" * 64}, status="ok", arch="resnet50", group=f"g-{name}",
                pretrain_group=f"recipe-{name}")
    rec = make_record(**{**base, **kw})
    path = write_record(rec, d)
    return path.rename(d / f"{name}.json")


def _row(df: pd.DataFrame, label: str) -> pd.Series:
    sel = df[df["label"].str.startswith(label)]
    assert len(sel) == 1, (label, list(df["label"]))
    return sel.iloc[0]


def test_only_the_papers_settings_fill_a_paper_row(tmp_path: Path) -> None:
    d = tmp_path / "records"
    d.mkdir()
    _rec(d, "paper", metrics={**VOC, "AP": 57.5})
    _rec(d, "r18", metrics={**VOC, "AP": 30.0}, arch="resnet18")                      # another backbone
    _rec(d, "shrunk", metrics={**VOC, "AP": 20.0}, overrides=["solver.base_lr=0.5", "data.num_workers=2"],
         result_overrides=["solver.base_lr=0.5"])                                       # shrinking overrides
    _rec(d, "neutral", metrics={**VOC, "AP": 57.3}, overrides=["data.num_workers=2"], result_overrides=[],
         group="g-paper", pretrain_group="recipe-paper")                                # a neutral override: one run
    _rec(d, "unfinished", metrics={**VOC, "AP": 40.0}, pretrain_epochs=1, pretrain_iters=37, pretrain_complete=False,
         group="g-paper", pretrain_group="recipe-paper")  # the same recipe and evaluation group, 1 epoch trained
    tables, unmatched = mt.make_tables(d, PAPER, tmp_path / "t")
    assert unmatched.empty, unmatched
    t3 = tables["table3_voc"]
    paper = t3[(t3["label"] == "LEWEL_M") & (t3["epochs"] == 200)].iloc[0]
    assert (paper["det_AP.ours"], paper["det_AP.n"]) == (57.4, 2)  # the paper-setting run and its neutral twin
    assert _row(t3, "lewel_m (ours, 200 ep, VOCdevkit, resnet18")["det_AP.ours"] == 30.0
    shrunk = _row(t3, "lewel_m (ours, 200 ep, VOCdevkit, with solver.base_lr=0.5")
    assert shrunk["det_AP.ours"] == 20.0 and shrunk["notes"] == "with solver.base_lr=0.5"
    unfinished = _row(t3, "lewel_m (ours, 1 ep, VOCdevkit, unfinished pretraining (37 it)")
    assert unfinished["det_AP.ours"] == 40.0 and unfinished["det_AP.n"] == 1   # never averaged with the finished
    assert t3["det_AP.n"].fillna(0).sum() == 5


def test_a_records_overrides_without_result_overrides_count_when_their_key_is_in_its_config(tmp_path: Path) -> None:
    """Records written before result_overrides: an override of a key of the identity config changes the result,
    one of a key the identity config left out (neutral) does not."""
    d = tmp_path / "records"
    d.mkdir()
    _rec(d, "old-neutral", overrides=["data.num_workers=2"])
    _rec(d, "old-lr", overrides=["solver.base_lr=0.5"], metrics={**VOC, "AP": 11.0})
    tables, _ = mt.make_tables(d, PAPER, tmp_path / "t")
    t3 = tables["table3_voc"]
    assert t3[(t3["label"] == "LEWEL_M") & (t3["epochs"] == 200)]["det_AP.ours"].iloc[0] == 57.0
    assert _row(t3, "lewel_m (ours, 200 ep, VOCdevkit, with solver.base_lr=0.5")["det_AP.ours"] == 11.0


def test_the_papers_own_overrides_fill_its_rows_and_no_other(tmp_path: Path) -> None:
    """MCL's C4 runs train at most 1200 px: its Table 12 takes them; LEWEL's Table 4 does not."""
    d = tmp_path / "records"
    d.mkdir()
    coco = {"bbox_AP": 40.5, "bbox_AP50": 60.0, "bbox_AP75": 43.0, "segm_AP": 35.0, "segm_AP50": 57.0,
            "segm_AP75": 37.0}
    _rec(d, "mcl-c4", method="mcl", pretrain_exp="mcl", pretrain_epochs=100, eval="coco", protocol="c4_1x",
         metrics=coco, dataset="coco", result_overrides=["model.max_size_train=1200"])
    tables, _ = mt.make_tables(d, PAPER, tmp_path / "t")
    t12 = tables["mcl_table12_coco_c4"]
    assert t12[t12["label"] == "MCL"]["x1_bbox_AP.ours"].iloc[0] == 40.5
    assert t12["notes"].isna().all()


@pytest.mark.parametrize("change, reason", [
    ({"schema": 2}, "record schema 2: this code reads schema 1..1"),
    ({"schema": "one"}, "record schema 'one'"),
    ({"protocol_version": 99}, f"protocol version 99 of eval 'voc_det': this code's is {DETECTION_VERSION}"),
    ({"row": "not a row!"}, "row 'not a row!': expected <method>[_<N>ep]"),
])
def test_records_of_another_schema_or_version_are_listed_never_averaged(tmp_path: Path, change, reason) -> None:
    d = tmp_path / "records"
    d.mkdir()
    _rec(d, "ok", group="g", pretrain_group="r")
    path = _rec(d, "other", metrics={**VOC, "AP": 99.0}, group="g", pretrain_group="r")
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, **change}))
    tables, unmatched = mt.make_tables(d, PAPER, tmp_path / "t")
    assert list(unmatched["file"].map(lambda f: Path(f).name)) == ["other.json"]
    assert reason in unmatched["reason"].iloc[0]
    t3 = tables["table3_voc"]
    assert t3[t3["label"] == "LEWEL_M"]["det_AP.ours"].max() == 57.0 and t3["det_AP.n"].fillna(0).sum() == 1


def test_one_run_recorded_twice_counts_once(tmp_path: Path) -> None:
    d = tmp_path / "records"
    d.mkdir()
    _rec(d, "first", run_id="run-1", end_time="2026-01-01T01:00:00+00:00", metrics={**VOC, "AP": 50.0})
    _rec(d, "again", run_id="run-1", end_time="2026-01-02T01:00:00+00:00", metrics={**VOC, "AP": 56.0},
         group="g-first", pretrain_group="recipe-first")
    tables, unmatched = mt.make_tables(d, PAPER, tmp_path / "t")
    t3 = tables["table3_voc"]
    paper = t3[(t3["label"] == "LEWEL_M") & (t3["epochs"] == 200)].iloc[0]
    assert (paper["det_AP.ours"], paper["det_AP.n"]) == (56.0, 1) and unmatched.empty


def test_a_published_checkpoint_fills_the_row_its_row_names(tmp_path: Path) -> None:
    """MoCo v2's 800-epoch release in MCL Table 11 and DenseCL's in LEWEL Table 4, beside the paper's values;
    a row no table has becomes a row of its own, named."""
    d = tmp_path / "records"
    d.mkdir()
    ret = {"bbox_AP": 38.0, "bbox_AP50": 57.5, "bbox_AP75": 40.9}
    ext = dict(method="unknown", pretrain_exp="moco_v2_800ep_pretrain", pretrain_epochs=None, dataset="coco",
               eval="coco", transfer={"trunk": 265})
    _rec(d, "mocov2", protocol="retinanet_1x", metrics=ret, row="mocov2_800ep", **ext)
    fpn = {"bbox_AP": 40.1, "bbox_AP50": 59.5, "bbox_AP75": 44.0, "segm_AP": 36.3, "segm_AP50": 56.9, "segm_AP75": 39.0}
    _rec(d, "densecl", protocol="fpn_1x", metrics=fpn, row="densecl_200ep", **ext)
    _rec(d, "swav", protocol="retinanet_1x", metrics=ret, row="swav_800ep", **ext)
    tables, unmatched = mt.make_tables(d, PAPER, tmp_path / "t")
    assert unmatched.empty, unmatched
    t11 = tables["mcl_table11_retinanet"]
    moco = t11[(t11["label"] == "MoCo v2") & (t11["dataset"] == "paper")].iloc[0]
    assert (moco["x1_bbox_AP.paper"], moco["x1_bbox_AP.ours"], moco["x1_bbox_AP.diff"]) == (37.9, 38.0, 0.1)
    assert moco["notes"] == "row mocov2_800ep (--row)"
    assert _row(t11, "swav (ours, 800 ep, coco, row swav_800ep (--row)")["x1_bbox_AP.ours"] == 38.0
    t4 = tables["table4_coco"]
    dense = t4[t4["label"] == "DenseCL [40]"].iloc[0]
    assert (dense["bbox_AP.ours"], dense["bbox_AP.diff"]) == (40.1, -0.2)


def test_row_is_a_label_of_the_record_not_of_the_run(tmp_path: Path) -> None:
    """``--row`` goes into the record, not into the run's identity; a finished run asked with another row is
    recorded again with it (nothing recomputed) and the tables count that record only."""
    import eval_knn.cli as knn_cli

    a = make_imagenet(tmp_path / "a")
    rec = tmp_path / "records"
    args = ["--config", "mini", "--ckpt", "random:resnet18", "--data", str(a), "--records-dir", str(rec),
            "--out", str(tmp_path / "run"), "batch_size=8", "data.crop_size=32", "data.resize_size=36",
            "data.num_workers=0"]
    knn_cli.main(args + ["--row", "supervised"])
    knn_cli.main(args + ["--row", "random_0ep"])
    knn_cli.main(args)   # no --row: the finished run as it is
    first, second = sorted(records_in(rec), key=lambda r: r["end_time"] + str(r.get("relabelled_from", "")))
    assert (first["row"], second["row"]) == ("supervised", "random_0ep")
    assert first["run_id"] == second["run_id"] and first["metrics"] == second["metrics"]
    assert second["relabelled_from"].endswith(".json") and second["protocol_version"] == 1
    assert second["result_overrides"] == ["data.crop_size=32", "data.resize_size=36"]  # batch size, workers: neutral
    assert json.loads((tmp_path / "run" / "result.json").read_text())["row"] == "random_0ep"
    _, um = mt.make_tables(rec, PAPER, tmp_path / "t")
    other = pd.read_csv(tmp_path / "t" / "other_results.csv")
    assert um.empty and list(other["n"]) == [1] and list(other["method"]) == ["random"]
    with pytest.raises(SystemExit, match=r"--row 'two words': expected METHOD or METHOD_<N>ep"):
        knn_cli.main(args + ["--row", "two words", "--fresh"])
