"""Faults and bad input, tried as a hostile user would: every case ends in its clean outcome.

Silent wrong results (another dataset / seed / config reusing a result, colliding folders, tables mixing
data, NaN checkpoints and backbones, shifted labels, failed runs recorded as numbers, unchecked config
values), clear one-line errors instead of tracebacks (unreadable checkpoints, bad images, annotations and
records, a full disk, stage errors), files (stale temporary files, the umask) and the one stage contract
(same flags everywhere, make targets passing ARGS). The kill -9 and resume tests live in
``test_pretrain_resume.py``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import eval_knn.cli as knn_cli
from helpers import make_imagenet, records_in
from lewel_bench.checkpoint import BackboneError, load_backbone, random_backbone, save_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.data import BadImageError, DataError, DataLayoutError, ImageNetFolder, VOCDetection, read_coco_json
from lewel_bench.errors import StorageError
from lewel_bench.io import atomic_torch_save, atomic_write_json, remove_stale_temp
from lewel_bench.models import build_backbone
from lewel_bench.records import make_record, write_record
from lewel_bench.utils import REPO_ROOT, runs_dir

TINY = ["batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"]
PRETRAIN_TINY = ["arch=resnet18", "aug.size=32", "batch_size=8", "epochs=1", "data.max_images=48",
                 "data.num_workers=0", "num_threads=1", "ckpt.every_iters=2", "knn.every=0", "model.hidden=64",
                 "model.dim=32", "model.pred_hidden=64", "tqdm_interval=60"]


def run_knn(root: Path, records: Path, *extra: str, ckpt: str = "random:resnet18") -> None:
    knn_cli.main(["--config", "mini", "--ckpt", ckpt, "--data", str(root), "--records-dir", str(records),
                  *TINY, *extra])


# ================================================================================================
# silent wrong results
# ================================================================================================
def test_other_data_or_seed_is_another_run_never_a_stale_result(tmp_path: Path) -> None:
    a, b = make_imagenet(tmp_path / "a", seed=0), make_imagenet(tmp_path / "b", seed=1, n_train=7)
    rec = tmp_path / "records"
    run_knn(a, rec)
    run_knn(b, rec)                      # same config, default output folder: another dataset
    run_knn(a, rec, "--seed", "1")      # another seed
    recs = records_in(rec)
    assert len(recs) == 3
    assert len({r["run_id"] for r in recs}) == 3 and len({r["data"]["fingerprint"] for r in recs}) == 2
    assert {r["seed"] for r in recs} == {0, 1}
    folders = sorted(p.name for p in (runs_dir() / "random_resnet18" / "eval_knn").iterdir())
    assert len(folders) >= 3
    run_knn(a, rec)                      # the very same run: reported as finished, no second record
    assert len(records_in(rec)) == 3


def test_explicit_folder_of_another_run_is_refused_naming_what_differs(tmp_path: Path) -> None:
    a, b = make_imagenet(tmp_path / "a", seed=0), make_imagenet(tmp_path / "b", seed=1, n_train=7)
    rec, out = tmp_path / "records", tmp_path / "out"
    run_knn(a, rec, "--out", str(out))
    for extra, differs in (([], r"data\.fingerprint: [0-9a-f.]+ -> [0-9a-f.]+"), (["--seed", "1"], r"seed: 0 -> 1"),
                           (["k=5"], r"config\.k: 20 -> 5")):
        with pytest.raises(SystemExit, match=r"holds another run .*" + differs):
            run_knn(b if not extra else a, rec, "--out", str(out), *extra)
    assert len(records_in(rec)) == 1
    result = json.loads((out / "result.json").read_text())
    run_knn(b, rec, "--out", str(out), "--fresh")  # --fresh: discard the folder's run and start over
    assert len(records_in(rec)) == 2 and json.loads((out / "result.json").read_text())["run_id"] != result["run_id"]


def test_folder_of_an_older_version_is_refused_not_counted_as_finished(tmp_path: Path) -> None:
    a, out = make_imagenet(tmp_path / "a"), tmp_path / "out"
    out.mkdir()
    atomic_write_json(out / "result.json", {"fingerprint": "0123", "metrics": {"top1": 48.0}})
    with pytest.raises(SystemExit, match="without an identity file .*result.json.*--fresh"):
        run_knn(a, tmp_path / "records", "--out", str(out))
    assert not records_in(tmp_path / "records")


def test_detection_folders_follow_checkpoint_and_data_not_exp(mini_data: Path, tmp_path: Path) -> None:
    from eval_detection.cli import main as det_main

    out = tmp_path / "det"
    out.mkdir()
    atomic_write_json(out / "metrics.json", {"metrics": {"AP": 20.4}})  # an old finished marker, no identity
    with pytest.raises(SystemExit, match="without an identity file .*metrics.json"):
        det_main(["--config", "mini_voc_c4_24k", "--ckpt", "random:resnet18", "--data",
                  str(mini_data / "VOCdevkit"), "--out", str(out), "--backend", "torchvision"])
    dry = _dry("eval-voc-det", "CKPT=random:resnet18")
    stage = [line for line in dry.splitlines() if "-- eval_detection" in line]
    assert stage and all("--ckpt random:resnet18" in line and "--out" not in line for line in stage), dry
    # the stage derives its folder from the run, never from EXP


def _record(tmp: Path, top1: float, seed: int, fingerprint: str, group: str, **extra) -> None:
    rec = make_record(method="lewel_b", pretrain_exp="lewel_b", pretrain_epochs=100, eval="linear",
                      protocol="lewel_b_sgd", metrics={"top1": top1, "top5": 90.0}, seed=seed,
                      checkpoint_sha256="0" * 64, config={}, start_time="2026-01-01T00:00:00+00:00",
                      dataset="ILSVRC2012", data={"name": "ILSVRC2012", "fingerprint": fingerprint},
                      group=group, **extra)
    write_record(rec, tmp / "records")


def test_tables_never_average_across_data_or_settings(tmp_path: Path) -> None:
    from tools import make_tables as mt

    _record(tmp_path, 72.0, 0, "a" * 64, "g1")
    _record(tmp_path, 73.0, 1, "a" * 64, "g1")   # another seed of the same run group: averaged
    _record(tmp_path, 60.0, 0, "b" * 64, "g2")   # other data: its own row
    _record(tmp_path, 50.0, 0, "a" * 64, "g3")   # other settings: its own row
    tables, _ = mt.make_tables(tmp_path / "records", REPO_ROOT / "results" / "paper", tmp_path / "t")
    t1 = tables["table1_linear"]
    paper = t1[(t1["label"] == "LEWEL_B") & (t1["dataset"] == "paper")].iloc[0]
    assert paper["ep100_top1.ours"] == 72.5 and paper["ep100_top1.n"] == 2 and paper["group"] == "g1"
    assert paper["data"] == "ILSVRC2012:aaaaaaaa"
    ours = t1[(t1["method"] == "lewel_b") & (t1["source"] == "ours")]
    got = sorted((r["ep100_top1.ours"], r["ep100_top1.n"], r["group"]) for _, r in ours.iterrows())
    assert got == [(50.0, 1, "g3"), (60.0, 1, "g2")]
    assert all("group" in label for label in ours["label"])  # the rows say what sets them apart


def test_nan_in_a_buffer_stops_pretraining_and_keeps_the_last_finite_checkpoint(mini_data: Path,
                                                                                tmp_path: Path, monkeypatch) -> None:
    from pretrain.cli import main
    from pretrain.methods.byol import BYOL

    orig = BYOL.update_target

    def poisoned(self, m):
        orig(self, m)
        if self.iteration == 3:  # after the step of iteration 3; every loss stays finite
            self.online.backbone.bn1.running_mean[0] = float("nan")

    monkeypatch.setattr(BYOL, "update_target", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit, match=r"holds NaN or inf at iteration 4 .*online\.backbone\.bn1\.running_mean.*"
                                         r"Last good checkpoint: .* at iteration 2"):
        main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *PRETRAIN_TINY])
    ck = torch.load(out / "checkpoint.pth", weights_only=False)
    assert ck["iteration"] == 2
    assert all(torch.isfinite(v).all() for part in ("model", "target") for v in ck[part].values()
               if v.is_floating_point())
    assert not (out / "backbone.pth").exists()


def test_non_finite_backbone_is_refused_everywhere(tmp_path: Path) -> None:
    from tools.convert_to_detectron2 import main as to_d2
    from tools.convert_to_mmseg import main as to_mmseg

    sd = build_backbone("resnet18").state_dict()
    sd["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save({"state_dict": sd, "meta": {"arch": "resnet18"}}, bad)
    with pytest.raises(BackboneError, match=r"NaN or inf .*layer2\.0\.conv1\.weight"):
        load_backbone(bad)
    with pytest.raises(BackboneError, match="NaN or inf"):
        save_backbone(tmp_path / "out.pth", sd, {"arch": "resnet18"})
    for conv, dst in ((to_d2, "x.pkl"), (to_mmseg, "x_mmseg.pth")):
        with pytest.raises(SystemExit, match=r"layer2\.0\.conv1\.weight"):
            conv([str(bad), str(tmp_path / dst)])
        assert not (tmp_path / dst).exists()
    a = make_imagenet(tmp_path / "a")
    with pytest.raises(SystemExit, match=r"checkpoint refused: .*NaN or inf"):
        run_knn(a, tmp_path / "records", ckpt=str(bad))
    assert not records_in(tmp_path / "records")


def test_empty_or_missing_class_folder_is_refused_naming_it(tmp_path: Path) -> None:
    a = make_imagenet(tmp_path / "a")
    for f in (a / "train" / "n00000001").iterdir():
        f.unlink()
    with pytest.raises(DataLayoutError, match=r"without images in train/: n00000001"):
        ImageNetFolder(a, "val")
    with pytest.raises(SystemExit, match=r"without images in train/: n00000001"):
        run_knn(a, tmp_path / "records")
    shutil.rmtree(a / "train" / "n00000001")
    with pytest.raises(DataLayoutError, match=r"in val/ but not train/: n00000001"):
        ImageNetFolder(a, "train")
    assert not records_in(tmp_path / "records")


def test_non_finite_metric_is_a_failed_record_and_tables_skip_it(tmp_path: Path) -> None:
    from lewel_bench.dist import DistInfo
    from lewel_bench.stage import RunFolder, RunIdentity, Stage
    from tools import make_tables as mt

    bb = random_backbone("resnet18")
    ident = RunIdentity("eval_detection", 1, {}, {"name": "coco", "fingerprint": "c" * 64}, bb.sha256, 0)
    st = Stage("eval_detection", {}, bb, DistInfo(), tmp_path / "run", tmp_path, 0, "2026-01-01T00:00:00+00:00",
               ident, RunFolder(tmp_path / "run", ident))
    st.folder.open(fresh=False)
    with pytest.raises(Exception, match=r"non-finite metric\(s\): bbox_AP=nan.*failed run"):
        st.finish("coco", "fpn_1x", {"bbox_AP": float("nan"), "bbox_AP50": 1.0}, tmp_path / "records")
    (rec,) = records_in(tmp_path / "records")
    assert rec["status"] == "failed" and rec["metrics"] == {"bbox_AP": None, "bbox_AP50": 1.0}
    assert not (tmp_path / "run" / "result.json").exists()  # not finished: a re-run tries again
    _, um = mt.make_tables(tmp_path / "records", REPO_ROOT / "results" / "paper", tmp_path / "t")
    assert list(um["reason"]) == ["failed run, skipped: non-finite metric(s): bbox_AP=nan"]
    t4 = pd_read(tmp_path / "t" / "table4_coco.csv")
    assert t4["bbox_AP.n"].fillna(0).sum() == 0


def pd_read(p: Path):
    import pandas as pd

    return pd.read_csv(p)


@pytest.mark.parametrize("override,key", [("amp=maybe", "amp"), ("channels_last=sometimes", "channels_last"),
                                          ("data.max_images=abc", "data.max_images"), ("batch_size=0", "batch_size"),
                                          ("optim.name=adam", "optim.name")])
def test_config_values_are_type_checked(override: str, key: str, mini_data: Path, tmp_path: Path) -> None:
    from pretrain.cli import main

    with pytest.raises(SystemExit) as e:
        main(["lewel_m_mini", "--data", str(mini_data / "imagenet"), "--out", str(tmp_path / "o"), override])
    msg = str(e.value.code)
    assert f"override {override!r}" in msg and f"{key} must be" in msg and "\n" not in msg
    assert not (tmp_path / "o").exists()


def test_every_shipped_config_passes_its_schema() -> None:
    dirs = ["pretrain/configs", "eval_linear/configs", "eval_semisup/configs", "eval_knn/configs",
            "eval_detection/configs/torchvision"]
    n = 0
    for d in dirs:
        for p in sorted((REPO_ROOT / d).glob("*.yaml")):
            if p.stem.startswith("_"):
                continue
            cfg = load_config(p.stem, REPO_ROOT / d)
            assert cfg["_meta"]["schema"], f"{p} declares no schema"
            n += 1
    assert n >= 40
    with pytest.raises(ConfigError, match=r"key 'extra' is not declared in the config schema"):
        bad = REPO_ROOT / "eval_knn" / "configs"
        tmp = Path(os.environ["LEWEL_RUNS_DIR"]) / "cfg"
        tmp.mkdir(exist_ok=True)
        (tmp / "k.yaml").write_text(f"_base_: {bad / 'k20.yaml'}\nextra: 1\n")
        load_config("k", tmp)


# ================================================================================================
# clear errors instead of tracebacks
# ================================================================================================
@pytest.fixture(scope="module")
def pretrained_run(mini_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny BYOL run (6 iterations)."""
    from pretrain.cli import main

    out = tmp_path_factory.mktemp("pre") / "run"
    main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *PRETRAIN_TINY])
    return out


def test_unreadable_checkpoint_at_resume_is_refused_and_left_alone(pretrained_run: Path, mini_data: Path,
                                                                   tmp_path: Path) -> None:
    from pretrain.cli import main

    good = (pretrained_run / "checkpoint.pth").read_bytes()
    for name, data in (("zero", b""), ("truncated", good[: len(good) // 3]), ("garbage", b"not a checkpoint\n" * 9)):
        out = tmp_path / name
        out.mkdir()
        (out / "checkpoint.pth").write_bytes(data)
        with pytest.raises(SystemExit) as e:
            main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *PRETRAIN_TINY])
        msg = str(e.value.code)
        assert str(out / "checkpoint.pth") in msg and "\n" not in msg, msg
        assert ("empty (0 bytes)" in msg) if name == "zero" else ("cannot be read" in msg)
        assert (out / "checkpoint.pth").read_bytes() == data  # never overwritten


def test_another_run_in_the_output_folder_is_refused(pretrained_run: Path, mini_data: Path, tmp_path: Path) -> None:
    from pretrain.cli import main

    out = tmp_path / "copy"
    shutil.copytree(pretrained_run, out)
    before = (out / "checkpoint.pth").read_bytes()
    with pytest.raises(SystemExit, match=r"holds experiment 'byol_mini' .*not 'lewel_b_mini'"):
        main(["lewel_b_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *PRETRAIN_TINY])
    # the same experiment with other settings is not resumed with them
    with pytest.raises(SystemExit, match=r"other settings \(config\.optim\.lr: 0\.05 -> 0\.1\)"):
        main(["byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *PRETRAIN_TINY, "optim.lr=0.1"])
    assert (out / "checkpoint.pth").read_bytes() == before


def _bad_jpegs(d: Path) -> dict[str, Path]:
    good = next(d.iterdir()).read_bytes()
    files = {"zero": b"", "truncated": good[: len(good) // 2], "garbage": b"\x00\x01garbage" * 50}
    out = {}
    for name, data in files.items():
        p = d / f"bad_{name}.JPEG"
        p.write_bytes(data)
        out[name] = p
    return out


def test_bad_images_are_named(tmp_path: Path, mini_data: Path) -> None:
    from pretrain.data import ImageFolderList

    a = make_imagenet(tmp_path / "a")
    bad = _bad_jpegs(a / "val" / "n00000000")
    for p in bad.values():
        with pytest.raises(BadImageError, match=str(p)):
            ds = ImageNetFolder(a, "val")
            ds[[s for s, _ in ds.samples].index(str(p))]
    with pytest.raises(SystemExit, match=r"image .*bad_(zero|truncated|garbage)\.JPEG is "):
        run_knn(a, tmp_path / "records")
    # pretraining: an error naming the file by default, or the documented replacement policy
    with pytest.raises(BadImageError, match="bad_garbage.JPEG .*data.bad_images=replace"):
        ImageFolderList(a, "val", cache=True)
    ds = ImageFolderList(a, "val", cache=True, bad_images="replace")
    i = [s for s, _ in ds.samples].index(str(bad["zero"]))
    assert ds.image(i).size == (32, 32)  # the next readable image of the split
    ds = ImageFolderList(a, "val", bad_images="replace")
    assert ds.image(i).size == (32, 32)


def test_voc_xml_with_bad_coordinates_is_refused_naming_the_file(tmp_path: Path) -> None:
    d = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(d / "JPEGImages" / "000001.jpg")
    (d / "ImageSets/Main/train.txt").write_text("000001\n")
    for value, expect in (("nan", "expected a finite number"), ("12a", "expected a number"), ("", "missing <ymin>")):
        (d / "Annotations" / "000001.xml").write_text(
            "<annotation><size><width>40</width><height>30</height></size><object><name>cat</name>"
            f"<bndbox><xmin>1</xmin><ymin>{value}</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
        with pytest.raises(DataError, match=rf"000001\.xml: object 1 \(cat\) <bndbox>: .*{expect}"):
            VOCDetection(tmp_path, 2007, "train", ["cat"])


def test_malformed_coco_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "instances_train2017.json"
    good = {"images": [{"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
    cases = [("{not json", r"not valid JSON: .* line 1"), (json.dumps([1, 2]), "a COCO instances file is a JSON object, got list"),
             (json.dumps({**good, "images": None}), "'images' must be a list"),
             (json.dumps({**good, "annotations": [{**good["annotations"][0], "bbox": [0, 0, float("nan"), 1]}]}),
              r"annotations\[0\] \(id 1\): bbox must be 4 finite numbers"),
             (json.dumps({**good, "annotations": [{**good["annotations"][0], "image_id": 7}]}),
              r"annotations\[0\] \(id 1\): image_id 7 is not an image of this file"),
             (json.dumps({**good, "images": [{"id": 1, "file_name": "1.jpg"}]}), r"images\[0\] needs id, file_name")]
    for text, msg in cases:
        p.write_text(text)
        with pytest.raises(DataError, match=rf"{p.name}: {msg}"):
            read_coco_json(p)
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        read_coco_json(p)


def test_backbone_file_without_state_dict_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "backbone.pth"
    torch.save({"meta": {"format": "lewel-bench/backbone", "arch": "resnet18"}}, p)
    with pytest.raises(BackboneError, match=r"format 'lewel-bench/backbone', but it has no 'state_dict'"):
        load_backbone(p)


def test_tables_report_unreadable_records_instead_of_crashing(tmp_path: Path) -> None:
    from tools import make_tables as mt

    rec = tmp_path / "records"
    rec.mkdir()
    (rec / "latin1.json").write_bytes('{"method": "caf\xe9"}'.encode("latin-1"))
    (rec / "x.json").mkdir()
    (rec / "x.json" / "inner.json").write_text("{}")
    _, um = mt.make_tables(rec, REPO_ROOT / "results" / "paper", tmp_path / "t")
    reasons = dict(zip(um["file"].map(lambda f: Path(f).name), um["reason"]))
    assert "not UTF-8" in reasons["latin1.json"] and "folder named like a record" in reasons["x.json"]
    assert mt.main(["--records", str(rec), "--out", str(tmp_path / "t2")]) == 0


def test_disk_full_during_a_checkpoint_write_names_the_path(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "checkpoint.pth"
    atomic_torch_save({"w": torch.ones(3)}, target)
    before = target.read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(StorageError, match=rf"no space left on device while writing {target} \(ENOSPC\)"):
        atomic_torch_save({"w": torch.randn(1000)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_disk_full_on_a_real_small_file_system(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        atomic_torch_save({"w": torch.ones(10)}, mnt / "checkpoint.pth")
        before = (mnt / "checkpoint.pth").read_bytes()
        with pytest.raises(StorageError, match="no space left on device while writing .*checkpoint.pth"):
            atomic_torch_save({"w": torch.randn(200_000)}, mnt / "checkpoint.pth")
        assert (mnt / "checkpoint.pth").read_bytes() == before
        assert [p.name for p in mnt.iterdir()] == ["checkpoint.pth"]  # the temporary file is gone
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("argv,expect", [
    (["eval_detection", "--config", "nope", "--ckpt", "random:resnet18"], "unknown experiment 'nope'"),
    (["eval_linear", "--config", "mini", "--ckpt", "random:resnet18", "--data", "/no/such/root"],
     "argument --data: /no/such/root: no such folder"),
    (["pretrain", "lewel_m_mini", "--data", ".", "amp=maybe"], "amp must be bool | auto"),
])
def test_stage_errors_are_one_line_without_a_traceback(argv: list[str], expect: str) -> None:
    p = subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0
    lines = [lv for lv in p.stderr.splitlines() if lv.strip() and " INFO " not in lv and " WARNING " not in lv]
    assert "Traceback" not in p.stderr and len(lines) == 1 and expect in lines[0], p.stderr[-2000:]
    assert lines[0].startswith(f"{argv[0]}: ")


# ================================================================================================
# files
# ================================================================================================
def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path: Path) -> None:
    a, out = make_imagenet(tmp_path / "a"), tmp_path / "out"
    run_knn(a, tmp_path / "records", "--out", str(out))
    stale = out / ".checkpoint.pth.k3x_9a1b.tmp"
    stale.write_bytes(b"x" * 1000)
    keep = out / "notes.tmp"
    keep.write_text("mine")
    run_knn(a, tmp_path / "records", "--out", str(out))
    assert not stale.exists() and keep.exists()
    assert remove_stale_temp(tmp_path / "nowhere") == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_keep_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        p = atomic_write_json(tmp_path / "r.json", {"a": 1})
        q = atomic_torch_save({"w": torch.ones(1)}, tmp_path / "c.pth")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777, q.stat().st_mode & 0o777) == (mode, mode)


# ================================================================================================
# one stage contract
# ================================================================================================
def test_every_evaluation_takes_the_same_flags(tmp_path: Path) -> None:
    import eval_detection.cli as det
    import eval_linear.cli as lin
    import eval_segmentation.cli as seg
    import eval_semisup.cli as semi  # noqa: F401 - same parser as linear, plus --subset
    from lewel_bench.stage import parse_stage_args, stage_parser

    d, o = str(tmp_path), str(tmp_path / "o")  # the paths are checked when the line is parsed
    argv = ["epochs=2", "--config", "mini", "--ckpt", "random:resnet18", "k=1", "--data", d, "--out", o,
            "--seed", "3", "--fresh", "data.crop_size=32"]
    parsers = {"common": lambda a: parse_stage_args(stage_parser("x", "", "k20"), a), "detection": det.parse_args,
               "segmentation": seg.parse_args}
    for name, parse in parsers.items():
        a = parse(argv)
        assert (a.config, a.ckpt, a.data, a.out, a.seed, a.fresh) == ("mini", "random:resnet18", d, o, 3, True), name
        assert a.overrides == ["epochs=2", "k=1", "data.crop_size=32"], name
    assert lin.PROTOCOL_VERSION >= 1 and det.PROTOCOL_VERSION >= 1 and seg.PROTOCOL_VERSION >= 1


def _dry(*args: str) -> str:
    out = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return out.replace('"', "")  # the recipes quote every path (a path may hold spaces): compared without the quotes


def test_make_targets_pass_args_to_every_stage_and_say_which_recipe() -> None:
    for target, stage in (("pretrain", "pretrain"), ("eval-linear", "eval_linear"), ("eval-semisup", "eval_semisup"),
                          ("eval-knn", "eval_knn"), ("eval-voc-det", "eval_detection"), ("eval-coco", "eval_detection"),
                          ("eval-voc-seg", "eval_segmentation")):
        out = _dry(target, "ARGS=foo.bar=1")
        cmd = [lv for lv in out.splitlines() if f"-- {stage} " in lv]
        assert len(cmd) == 1 and "foo.bar=1" in cmd[0], (target, out)
        assert "config" in out and ("mini data" in out or "DATA" in out), (target, out)
    real = _dry("eval-linear", "DATA=/imagenet")
    assert "--config auto" in real and "config auto on DATA=/imagenet" in real
    p = subprocess.run(["make", "-n", "eval-linear", "EVAL_ARGS=epochs=1"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert p.returncode != 0 and "EVAL_ARGS is no longer read" in p.stderr


def test_make_pretrain_suggests_names_and_hides_internal_configs() -> None:
    r = subprocess.run([sys.executable, "-m", "pretrain.experiments", "resolve", "lewel"], cwd=REPO_ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "Did you mean: lewel_m, lewel_b" in r.stderr
    assert "_base" not in r.stderr and "_mini" not in r.stderr.split("Experiments:")[1]
    r = subprocess.run([sys.executable, "-m", "pretrain.experiments", "resolve", "lewel_b_400ep"], cwd=REPO_ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "exists with DATA" in r.stderr
    assert subprocess.run([sys.executable, "-m", "pretrain.experiments", "resolve", "lewel_m"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False).stdout.strip() == "lewel_m_mini"
    dry = _dry("pretrain", "EXP=lewel_b", "DATA=/imagenet")
    assert "pretrain.experiments resolve 'lewel_b' --full" in dry and "the full-data config" in dry
