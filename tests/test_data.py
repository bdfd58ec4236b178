"""Mini benchmark generator and dataset readers (lewel_bench.data)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lewel_bench.data import (
    SHAPE_CLASSES,
    WNIDS,
    DataLayoutError,
    ImageNetFolder,
    VOCDetection,
    coco_paths,
    generate_mini,
    parse_subset_file,
    voc_palette,
    voc_segmentation_pairs,
)
from lewel_bench.data.mini import DEFAULT_SIZES
from lewel_bench.data.mini import TEST_SIZES as MINI_TEST_SIZES

MINI_TEST_SEED = 0  # the seed of the mini_data fixture (tests/conftest.py)

log = logging.getLogger(__name__)


def tree_hash(root: Path) -> str:
    """sha256 over (relative path, content) of every file except the ``.complete`` marker."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".complete":
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_ground_truth_scores_ap_1(mini_data: Path, split: str) -> None:
    """pycocotools loads the json; its ground truth fed back as detections scores AP 1.0 (bbox, segm)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann_file, img_dir = coco_paths(mini_data / "coco", split)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(SHAPE_CLASSES)
    assert gt.getCatIds() == list(range(1, 11))
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns and all(a["iscrowd"] == 0 and isinstance(a["segmentation"], list) for a in anns)
    for img in gt.loadImgs(gt.getImgIds()):
        with Image.open(img_dir / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"])
    for iou_type in ("bbox", "segm"):
        dets = []
        for a in anns:
            d = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, "bbox": a["bbox"]}
            if iou_type == "segm":
                d = {**d, "segmentation": gt.annToRLE(a)}
                d.pop("bbox")
            dets.append(d)
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(dets)
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), (iou_type, ev.stats[:3])
        assert ev.stats[1] == pytest.approx(1.0) and ev.stats[2] == pytest.approx(1.0)


def test_coco_masks_match_boxes(mini_data: Path) -> None:
    """Each polygon mask (pycocotools raster) lies inside its bbox (1 px slack for rasterisation)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_paths(mini_data / "coco", "train")[0]))
    for a in gt.loadAnns(gt.getAnnIds()):
        m = gt.annToMask(a)
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert xs.min() >= x - 1 and ys.min() >= y - 1 and xs.max() <= x + w and ys.max() <= y + h
        assert abs(int(m.sum()) - a["area"]) <= 0.25 * a["area"]


def test_coco_reader(mini_data: Path) -> None:
    """The detection stage's COCO reader on the mini data: every val image, the shape classes, valid boxes."""
    from eval_detection.datasets import coco_class_names, load_coco

    ann, images = coco_paths(mini_data / "coco", "val")
    samples, skips, coco = load_coco(ann, images, train=False)
    assert len(samples) == MINI_TEST_SIZES["coco_val"] and coco_class_names(coco) == tuple(SHAPE_CLASSES)
    r = samples[0]
    assert r.file.is_file() and r.boxes.shape == (len(r.labels), 4) and not skips
    assert np.all(r.boxes[:, 2:] > r.boxes[:, :2])
    cats = [coco.anns[a["id"]]["category_id"] for a in r.anns]
    assert list(r.labels) == [c - 1 for c in cats]


# ----------------------------------------------------------------------------------------------
# VOC
# ----------------------------------------------------------------------------------------------
def _xml_objects(path: Path) -> tuple[tuple[int, int], list[tuple[str, list[int]]]]:
    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    objs = []
    for o in root.findall("object"):
        assert o.findtext("pose") == "Unspecified" and o.findtext("truncated") == "0"
        assert o.findtext("difficult") == "0"
        objs.append((o.findtext("name"), [int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]))
    return size, objs


@pytest.mark.parametrize("year", [2007, 2012])
def test_voc_xml_png_and_lists_agree(mini_data: Path, year: int) -> None:
    """XML boxes bound the pixels of their class in SegmentationClass (255 ignored); lists are consistent."""
    d = mini_data / "VOCdevkit" / f"VOC{year}"
    main = {s: (d / "ImageSets/Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}
    seg_lists = {p.stem: p.read_text().split() for p in (d / "ImageSets/Segmentation").glob("*.txt")}
    assert sorted(main["trainval"]) == sorted(main["train"] + main["val"])
    assert not set(main["train"]) & set(main["val"])
    if year == 2007:
        test = (d / "ImageSets/Main/test.txt").read_text().split()
        assert len(test) == MINI_TEST_SIZES["voc07_test"] and not set(test) & set(main["trainval"])
        assert set(seg_lists) == {"train", "val", "trainval", "test"}
    else:
        assert set(seg_lists) == {"train", "val", "trainval", "aug"}
        aug = seg_lists["aug"]
        # like the 10,582-image list: train + extra images, never val
        assert set(seg_lists["train"]) < set(aug) and not set(aug) & set(seg_lists["val"])
        assert len(aug) == MINI_TEST_SIZES["voc12_train"] + MINI_TEST_SIZES["voc12_aug"]
        pairs = voc_segmentation_pairs(mini_data / "VOCdevkit", 2012, "aug", "SegmentationClassAug")
        assert len(pairs) == len(aug)
        for img, ann in pairs:
            with Image.open(ann) as a:
                assert a.mode == "L" and set(np.unique(np.asarray(a))) <= set(range(len(SHAPE_CLASSES) + 1))
    assert sorted(seg_lists["trainval"]) == sorted(seg_lists["train"] + seg_lists["val"])
    palette = voc_palette()
    ids = sorted(set(seg_lists["trainval"]) | set(seg_lists.get("test", [])))
    n_objects = 0
    for i in ids:
        (w, h), objs = _xml_objects(d / "Annotations" / f"{i}.xml")
        assert 1 <= len(objs) <= MINI_TEST_SIZES["max_objects"]
        with Image.open(d / "JPEGImages" / f"{i}.jpg") as im:
            assert im.size == (w, h) and im.mode == "RGB"
        with Image.open(d / "SegmentationClass" / f"{i}.png") as png:
            assert png.mode == "P" and png.getpalette()[:30] == palette[:30]
            lab = np.asarray(png)
        assert lab.shape == (h, w) and 255 in lab
        if year == 2012:
            with Image.open(d / "SegmentationClassAug" / f"{i}.png") as a:
                aug_lab = np.asarray(a)
            keep = lab != 255
            assert np.array_equal(aug_lab[keep], lab[keep])
        covered = np.zeros_like(lab, bool)
        for name, (x0, y0, x1, y1) in objs:
            c = SHAPE_CLASSES.index(name) + 1
            box = np.zeros_like(covered)
            box[y0 - 1:y1, x0 - 1:x1] = True
            assert (lab[box] == c).sum() > 0, f"{i}: no {name} pixels inside its box"
            covered |= box & (lab == c)
            n_objects += 1
        fg = (lab != 0) & (lab != 255)
        assert np.array_equal(fg, covered), f"{i}: class pixels outside the boxes of their class"
    assert n_objects > len(ids)


def _write_voc(root: Path, xml_objects: dict[str, list[tuple[str, list[int]]]], missing_jpg: str | None = None) -> Path:
    d = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for i, objs in xml_objects.items():
        body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                       f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objs)
        (d / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height><depth>3</depth></size>{body}</annotation>")
        if i != missing_jpg:
            Image.new("RGB", (50, 40)).save(d / "JPEGImages" / f"{i}.jpg")
    (d / "ImageSets/Main/test.txt").write_text("".join(f"{i}\n" for i in xml_objects))
    return root


def test_voc_reader_bad_input_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Partly-outside boxes are clipped, fully-outside boxes and unknown classes skipped, all counted."""
    root = _write_voc(tmp_path / "ok", {"a": [("circle", [1, 1, 10, 10]), ("square", [40, 30, 70, 60])],
                                        "b": [("circle", [60, 50, 80, 60]), ("dog", [1, 1, 5, 5])]})
    with caplog.at_level(logging.WARNING):
        ds = VOCDetection(root, 2007, "test", ["circle", "square"])
    assert ds.stats["clipped_box"] == 1 and ds.stats["skipped_box_outside"] == 1
    assert ds.stats["skipped_unknown_class"] == 1 and ds.stats["objects"] == 2
    np.testing.assert_array_equal(ds[0]["boxes"], [[0, 0, 10, 10], [39, 29, 50, 40]])
    assert list(ds[0]["labels"]) == [0, 1] and len(ds[1]["labels"]) == 0
    assert "clipped_box" in caplog.text and "dog" in caplog.text
    # VOC<year> itself is accepted as root
    assert len(VOCDetection(root / "VOC2007", 2007, "test", ["circle"])) == 2
    bad = _write_voc(tmp_path / "bad", {"a": [("circle", [1, 1, 10, 10])], "b": []}, missing_jpg="b")
    with pytest.raises(DataLayoutError, match=r"listed in test\.txt .*JPEGImages/b\.jpg' does not exist"):
        VOCDetection(bad, 2007, "test", ["circle"])


def test_voc_reader_on_mini(mini_data: Path) -> None:
    ds = VOCDetection(mini_data / "VOCdevkit", 2007, "trainval", SHAPE_CLASSES)
    assert len(ds) == MINI_TEST_SIZES["voc07_trainval"] and sum(ds.stats[k] for k in ds.stats if "box" in k) == 0
    r = ds[0]
    assert r["boxes"].dtype == np.float32 and np.all(r["boxes"][:, :2] >= 0)
    assert np.all(r["boxes"][:, 2] <= r["width"]) and np.all(r["boxes"][:, 3] <= r["height"])


# ----------------------------------------------------------------------------------------------
# ImageNet layout and subsets
# ----------------------------------------------------------------------------------------------
def test_imagenet_layout_and_subsets(mini_data: Path) -> None:
    """Subset files are class-balanced and exactly 1% / 10% of train; the reader selects them."""
    root = mini_data / "imagenet"
    train = ImageNetFolder(root, "train")
    val = ImageNetFolder(root, "val")
    per_class = MINI_TEST_SIZES["imagenet_train_per_class"]
    assert train.classes == list(WNIDS) and len(train) == per_class * 10
    assert len(val) == MINI_TEST_SIZES["imagenet_val_per_class"] * 10
    img, target = train[0]
    assert img.size == (MINI_TEST_SIZES["imagenet_size"],) * 2 and target == 0
    for pct in (1, 10):
        names = parse_subset_file(root / f"{pct}percent.txt")
        assert len(names) * 100 == len(train) * pct and len(set(names)) == len(names)
        counts = Counter(n.split("_")[0] for n in names)
        assert sorted(counts) == list(WNIDS) and set(counts.values()) == {per_class * pct // 100}
        sub = ImageNetFolder(root, "train", subset_file=root / f"{pct}percent.txt")
        assert len(sub) == len(names) and Counter(sub.targets) == Counter({i: per_class * pct // 100 for i in range(10)})
    assert set(parse_subset_file(root / "1percent.txt")) != set(parse_subset_file(root / "10percent.txt")[:10])


def test_reader_errors(mini_data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_imagenet"
    with pytest.raises(DataLayoutError, match=r"no_such_imagenet.*does not exist.*<root>/train/<wnid>/\*\.JPEG"):
        ImageNetFolder(missing, "train")
    with pytest.raises(DataLayoutError, match=r"malformed.*<root>/val/<wnid>/\*\.JPEG"):
        ImageNetFolder(mini_data, "val")  # the mini root, not its imagenet/ folder
    with pytest.raises(DataLayoutError, match=r"VOC2012/Annotations"):
        VOCDetection(mini_data / "imagenet", 2012, "train", SHAPE_CLASSES)
    with pytest.raises(DataLayoutError, match=r"instances_val2017\.json"):
        coco_paths(mini_data, "val")
    sub = tmp_path / "1percent.txt"
    sub.write_text(f"{WNIDS[0]}_0.JPEG\n\n{WNIDS[1]}_99999.JPEG\n")
    with pytest.raises(ValueError, match=rf"1percent\.txt:3: '{WNIDS[1]}_99999\.JPEG' is not an image"):
        ImageNetFolder(mini_data / "imagenet", "train", subset_file=sub)
    with pytest.raises(DataLayoutError, match="subset file"):
        ImageNetFolder(mini_data / "imagenet", "train", subset_file=tmp_path / "nope.txt")


def test_raw_pixel_linear_probe_near_chance(mini_data: Path) -> None:
    """A linear classifier on (downsampled) raw pixels stays near chance: learning is needed."""
    import torch

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = ImageNetFolder(mini_data / "imagenet", split)
        xs = [np.asarray(Image.open(p).convert("RGB").resize((16, 16), Image.BILINEAR), np.float32).reshape(-1)
              for p, _ in ds.samples]
        return torch.from_numpy(np.stack(xs)), torch.tensor(ds.targets)

    (xtr, ytr), (xva, yva) = load("train"), load("val")
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 5-10x faster than 2 threads on a busy 2-core machine
    accs = {}
    for wd in (1e-3, 1e-1):  # report the best of two regularisations (optimistic for the probe)
        lin = torch.nn.Linear(xtr.shape[1], 10)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=100, line_search_fn="strong_wolfe")

        def closure(opt=opt, lin=lin, wd=wd) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(xtr), ytr) + wd * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            accs[wd] = (lin(xva).argmax(1) == yva).float().mean().item()
            train_acc = (lin(xtr).argmax(1) == ytr).float().mean().item()
        log.warning("raw-pixel linear probe wd=%g: val top1 %.3f (train %.3f, chance 0.100)", wd, accs[wd], train_acc)
    torch.set_num_threads(threads)
    print(f"raw-pixel linear probe val top1 {accs} (chance 0.100)")
    assert max(accs.values()) < 0.25


# ----------------------------------------------------------------------------------------------
# Generator: determinism, completion marker, sizes
# ----------------------------------------------------------------------------------------------
def test_same_seed_identical_other_seed_different(mini_data: Path, tmp_path: Path) -> None:
    """Same seed -> byte-identical tree (also with 2 worker processes); another seed -> different files."""
    again = generate_mini(tmp_path / "again", seed=MINI_TEST_SEED, workers=2, **MINI_TEST_SIZES)
    assert tree_hash(again) == tree_hash(mini_data)
    other = generate_mini(tmp_path / "other", seed=MINI_TEST_SEED + 1, workers=1, **MINI_TEST_SIZES)
    files = sorted(str(p.relative_to(other)) for p in other.rglob("*") if p.is_file() and p.suffix in (".JPEG", ".jpg"))
    differ = [f for f in files if (other / f).read_bytes() != (mini_data / f).read_bytes()]
    assert len(differ) == len(files)
    assert tree_hash(other) != tree_hash(mini_data)
    info = json.loads((mini_data / ".complete").read_text())
    assert info["seed"] == MINI_TEST_SEED and info["sizes"] == {**DEFAULT_SIZES, **MINI_TEST_SIZES}


def test_generate_resumes_and_refuses_foreign_folder(tmp_path: Path) -> None:
    small = dict(MINI_TEST_SIZES, imagenet_val_per_class=1, voc07_trainval=2, voc07_test=1, voc12_train=1,
                 voc12_val=1, voc12_aug=1, coco_train=1, coco_val=1, imagenet_size=32)
    out = generate_mini(tmp_path / "m", seed=3, **small)
    marker = out / ".complete"
    stamp = marker.stat().st_mtime_ns
    generate_mini(out, seed=3, **small)  # complete: nothing to do
    assert marker.stat().st_mtime_ns == stamp
    # an interrupted run (no .complete, a stray file in an owned folder) is redone from scratch
    marker.unlink()
    (out / "coco" / "stray.txt").write_text("x")
    generate_mini(out, seed=3, **small)
    assert marker.exists() and not (out / "coco" / "stray.txt").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="not made by generate_mini.*thesis.tex"):
        generate_mini(foreign, seed=0, **small)
    with pytest.raises(ValueError, match="multiple of 100"):
        generate_mini(tmp_path / "bad", seed=0, **dict(small, imagenet_train_per_class=150))
    with pytest.raises(ValueError, match="unknown mini-data size"):
        generate_mini(tmp_path / "bad2", seed=0, voc_train=3)
    shutil.rmtree(out)
