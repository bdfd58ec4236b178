"""ImageNet-100 (CMC classes): the shipped class list, the symlink builder and its CLI."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lewel_bench.data import DataLayoutError, ImageNetFolder
from lewel_bench.data.in100 import IN100_WNIDS, MANIFEST, build_in100, load_wnids

REPO = Path(__file__).resolve().parents[1]
OTHER_WNIDS = ("n01440764", "n01443537", "n15075141")  # IN-1k classes outside the subset
SPLITS = ("train", "val")


def _jpeg_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def fake_imagenet(root: Path, wnids: tuple[str, ...] = IN100_WNIDS + OTHER_WNIDS, per_class: int = 2,
                  jpeg: bool = False) -> Path:
    """``root/<split>/<wnid>/<wnid>_<i>.JPEG`` for every wnid (tiny real JPEGs with ``jpeg``)."""
    data = _jpeg_bytes() if jpeg else b"not a jpeg"
    for split in SPLITS:
        for wnid in wnids:
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(per_class):
                (d / f"{wnid}_{i}.JPEG").write_bytes(data)
    return root


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_imagenet(tmp_path / "imagenet")


def test_wnid_list_is_cmc_100() -> None:
    assert len(IN100_WNIDS) == 100 and len(set(IN100_WNIDS)) == 100
    assert list(IN100_WNIDS) == sorted(IN100_WNIDS)
    assert all(re.fullmatch(r"n\d{8}", w) for w in IN100_WNIDS)
    assert {"n02869837", "n01749939", "n02090622", "n13040303"} <= set(IN100_WNIDS)
    text = (REPO / "lewel_bench/data/imagenet100.txt").read_text().splitlines()
    assert text[0].startswith("#") and "CMC" in text[0]
    assert text[1:] == list(IN100_WNIDS)  # the file itself is sorted, one wnid per line


def test_load_wnids_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# header\nn01440764\nn0144076\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: 'n0144076' is not a WordNet id"):
        load_wnids(bad)
    bad.write_text("n01440764\nn01440764\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: 'n01440764' is listed twice"):
        load_wnids(bad)
    bad.write_text("n01440764\n")
    with pytest.raises(ValueError, match=r"bad\.txt: 1 wnids, expected 100"):
        load_wnids(bad)


def test_build_links_exactly_the_100_classes(source: Path, tmp_path: Path) -> None:
    before = _tree(source)
    out = build_in100(source, tmp_path / "in100")
    assert out == (tmp_path / "in100").resolve()
    for split in SPLITS:
        assert sorted(os.listdir(out / split)) == list(IN100_WNIDS)
        for wnid in IN100_WNIDS:
            links = sorted((out / split / wnid).iterdir())
            assert [p.name for p in links] == [f"{wnid}_0.JPEG", f"{wnid}_1.JPEG"]
            for p in links:
                assert p.is_symlink()
                assert p.resolve() == (source / split / wnid / p.name).resolve()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"] == str(source.resolve()) and manifest["splits"] == list(SPLITS)
    assert manifest["images"] == {"train": 200, "val": 200}
    assert _tree(source) == before  # nothing written inside the source


def test_hardlink_mode(source: Path, tmp_path: Path) -> None:
    out = build_in100(source, tmp_path / "in100", splits=("val",), link="hardlink")
    p = out / "val" / IN100_WNIDS[0] / f"{IN100_WNIDS[0]}_0.JPEG"
    assert not p.is_symlink() and p.stat().st_ino == (source / "val" / IN100_WNIDS[0] / p.name).stat().st_ino
    assert not (out / "train").exists()


def test_missing_classes_refused_before_creating_anything(tmp_path: Path) -> None:
    src = fake_imagenet(tmp_path / "imagenet")
    gone = IN100_WNIDS[:3]
    for wnid in gone:
        for f in (src / "val" / wnid).iterdir():
            f.unlink()
        (src / "val" / wnid).rmdir()
    empty = IN100_WNIDS[5]
    for f in (src / "train" / empty).iterdir():
        f.unlink()
    out = tmp_path / "in100"
    with pytest.raises(DataLayoutError) as e:
        build_in100(src, out)
    msg = str(e.value)
    assert str(src.resolve()) in msg
    assert "val: 3 of the 100 classes missing: " + ", ".join(gone) in msg
    assert "train: 1 class folder(s) without images" in msg and empty in msg
    assert not out.exists()


def test_many_missing_classes_named_first_ten_and_count(tmp_path: Path) -> None:
    src = fake_imagenet(tmp_path / "imagenet", wnids=IN100_WNIDS[12:])
    out = tmp_path / "in100"
    out.mkdir()  # an empty out folder is accepted, and stays empty on refusal
    with pytest.raises(DataLayoutError, match=r"train: 12 of the 100 classes missing: "
                       + re.escape(", ".join(IN100_WNIDS[:10])) + r" \.\.\. and 2 more"):
        build_in100(src, out)
    assert list(out.iterdir()) == []


def test_second_build_is_a_noop(source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = build_in100(source, tmp_path / "in100")
    stamp = (out / MANIFEST).stat().st_mtime_ns
    tree = _tree(out)
    caplog.set_level("INFO", logger="lewel_bench.data.in100")
    assert build_in100(source, out) == out
    assert "nothing to do" in caplog.text
    assert (out / MANIFEST).stat().st_mtime_ns == stamp and _tree(out) == tree
    with pytest.raises(DataLayoutError, match=r"differs from this one in .*splits"):
        build_in100(source, out, splits=("train",))


def test_foreign_or_unsafe_out_refused(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataLayoutError, match=rf"'{re.escape(str(out.resolve()))}' is not empty and has no "
                                              rf"readable \{MANIFEST}"):
        build_in100(source, out)
    assert _tree(out) == ["notes.txt"]
    with pytest.raises(DataLayoutError, match="inside the ImageNet root"):
        build_in100(source, source / "in100")
    assert not (source / "in100").exists()


def test_cli_exit_2_one_line(tmp_path: Path) -> None:
    src = fake_imagenet(tmp_path / "imagenet", wnids=OTHER_WNIDS)
    r = subprocess.run([sys.executable, "-m", "tools.make_in100", "--imagenet", str(src),
                        "--out", str(tmp_path / "in100")], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "ERROR" in lines[0] and "100 of the 100 classes missing" in lines[0]
    assert not (tmp_path / "in100").exists()


def test_imagenet_folder_reads_the_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.make_in100 as cli

    monkeypatch.setattr(cli, "setup_logging", lambda: None)  # keep pytest's logging setup
    src = fake_imagenet(tmp_path / "imagenet", jpeg=True)
    out = tmp_path / "in100"
    cli.main(["--imagenet", str(src), "--out", str(out)])
    for split in SPLITS:
        ds = ImageNetFolder(out, split)
        assert ds.classes == list(IN100_WNIDS) and len(ds) == 200
        img, target = ds[len(ds) - 1]
        assert img.size == (8, 8) and target == 99
