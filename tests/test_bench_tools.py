"""The benchmark scripts run end to end on a tiny setting and print their tables (timings are not asserted)."""
import re

import pytest
from PIL import Image

from lewel_bench.errors import LewelError
from lewel_bench.utils import REPO_ROOT


def test_bench_pretrain_prints_ratios(capsys):
    from tools.bench_pretrain import main

    main(["--arch", "resnet18", "--size", "32", "--batch", "2", "--reps", "1", "--warmup", "0",
          "--methods", "byol", "lewel_b", "--set", "lewel_b:model.reassociate=never"])
    out = capsys.readouterr().out
    assert "lewel_b:model.reassociate=never" in out
    rows = dict(re.findall(r"^\| (\w+ / \w+) \| ([0-9.]+) \|", out, re.MULTILINE))
    assert set(rows) == {"lewel_b / byol", "byol / supervised"} and all(float(v) > 0 for v in rows.values())
    flops = dict(re.findall(r"^\| (\w+) \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \|", out, re.MULTILINE))
    assert float(flops["lewel_b"]) > float(flops["byol"]) > float(flops["supervised"])  # coupled head, two views


def test_a_fixed_cost_target_below_the_flop_ratio_is_judged_against_the_flop_ratio() -> None:
    """A method's fixed target (a cost share at the paper's size) below the FLOP ratio of the size benchmarked
    cannot be met by any step: it is judged against the FLOP ratio and says so; a target against another code's
    step is never relaxed; a target above the floor stays as declared."""
    from tools.bench_pretrain import FLOOR, ratio_limit

    assert ratio_limit(1.24, 1.696) == (1.696, "<= 1.696 (FLOP floor; the declared 1.24 is below it at this size)")
    assert ratio_limit(1.24, 1.1) == (1.24, "<= 1.24")
    assert ratio_limit(0.9, 1.0, scaled=False) == (0.9, "<= 0.9")
    assert ratio_limit(FLOOR, 1.5) == (1.5, "<= 1.500 (FLOP floor)")


def test_bench_pretrain_judges_each_ratio_against_its_target_and_skips_missing_externals(capsys, tmp_path,
                                                                                         monkeypatch):
    """On a CPU the LEWEL ratios are judged against their FLOP floor; PASS / MISS follows the numbers in the
    JSON; an external implementation that is not available is skipped with the reason, not faked."""
    import json

    from tools.bench_pretrain import main

    monkeypatch.delenv("LEWEL_OFFICIAL_ROOT", raising=False)
    main(["--arch", "resnet18", "--size", "32", "--batch", "2", "--reps", "1", "--warmup", "0",
          "--methods", "mocov2", "lewel_m", "--external", "official_lewel_b", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert "# skipped official_lewel_b: official_lewel_b: no checkout of the official LEWEL code" in out
    doc = json.loads((tmp_path / "b.json").read_text())
    (r,) = doc["ratios"]
    assert r["ratio"] == "lewel_m / mocov2" and r["target"] == r["flop_floor"]  # CPU: the FLOP floor
    assert r["pass"] == (r["time"] <= r["flop_floor"])
    row = re.search(r"^\| lewel_m / mocov2 \| ([0-9.]+) \| ([0-9.]+) \| [0-9.]+ \| <= [0-9.]+ \(FLOP floor\) \| "
                    r"(PASS|MISS) \|$", out, re.MULTILINE)
    assert row and row.group(3) == ("PASS" if r["pass"] else "MISS"), out
    assert set(doc["methods"]) == {"supervised", "mocov2", "lewel_m"}
    (tmp_path / "fake" / "models").mkdir(parents=True)
    main(["--arch", "resnet18", "--size", "32", "--batch", "2", "--reps", "1", "--warmup", "0", "--methods", "byol",
          "--external", "official_lewel_b", "--official-root", str(tmp_path / "fake")])
    assert "has no models/lewel.py" in capsys.readouterr().out


def test_bench_loader_modes(capsys):
    from tools.bench_loader import main

    main(["--synthetic", "48", "--workers", "0", "--batch", "4", "--batches", "2", "--size", "32",
          "--device", "cpu"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| ([\w-]+) \| 0 \| (\d+) \|", out, re.MULTILINE)
    assert [m for m, _ in rows] == ["pil", "batched-workers", "batched"] and all(int(v) > 0 for _, v in rows)


def test_bench_loader_refuses_too_few_images_before_writing_them(capsys, tmp_path):
    """Too few synthetic images for the batches asked is a usage error naming the arguments, before any image is
    written; a data root with too few images is one line naming it."""
    from tools.bench_loader import main

    with pytest.raises(SystemExit) as e:
        main(["--synthetic", "100", "--workers", "1", "2", "--batch", "32", "--batches", "10"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--synthetic 100 is too few" in err and "needs 384 images" in err, err
    root = tmp_path / "root"
    for i in range(3):
        (root / "train" / "c0").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (i, 0, 0)).save(root / "train" / "c0" / f"{i}.jpg")
    with pytest.raises(SystemExit) as e:
        main(["--data", str(root), "--workers", "0", "--batch", "2", "--batches", "2", "--size", "32",
              "--device", "cpu", "--modes", "pil"])
    assert e.value.code == 2 and "3 training images give 1 batches of --batch 2" in capsys.readouterr().err


def test_make_bench_loader_defaults_are_consistent():
    """`make bench-loader`'s default arguments ask for no more images than they write."""
    import shlex

    from tools.bench_loader import images_needed

    text = (REPO_ROOT / "mk" / "benchmarks.mk").read_text()
    words = shlex.split(re.search(r"^BENCH_LOADER_ARGS\s*\?=(.*)$", text, re.MULTILINE).group(1))
    val = {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}
    after = words[words.index("--workers") + 1:]
    workers = [int(w) for w in after[:next((i for i, w in enumerate(after) if w.startswith("--")), len(after))]]
    assert int(val["--synthetic"]) >= images_needed(int(val.get("--batch", 128)), int(val.get("--batches", 10)),
                                                    max(workers))


def test_bench_e2e_refuses_fewer_images_than_a_batch(capsys, tmp_path):
    """Fewer images than one batch would never yield a batch (the loader cycles through epochs): refused in one
    line, for synthetic images before writing them and for a data root."""
    from tools.bench_e2e import main

    with pytest.raises(SystemExit) as e:
        main(["--synthetic", "4", "--batch", "8"])
    assert e.value.code == 2 and "--synthetic 4 is too few" in capsys.readouterr().err
    root = tmp_path / "root"
    (root / "train" / "c0").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 40), (i, 0, 0)).save(root / "train" / "c0" / f"{i}.jpg")
    with pytest.raises(SystemExit) as e:
        main(["--data", str(root), "--batch", "4", "--size", "32", "--arch", "resnet18", "--methods", "byol",
              "--batched", "on", "--workers", "0", "--iters", "1", "--warmup", "0"])
    assert e.value.code == 2 and "3 training images make no batch of --batch 4" in capsys.readouterr().err


def test_bench_e2e_rows_and_ratios(capsys, tmp_path):
    import json

    from tools.bench_e2e import main

    main(["--synthetic", "16", "--size", "32", "--batch", "4", "--iters", "2", "--warmup", "1", "--arch", "resnet18",
          "--methods", "byol", "lewel_b", "--batched", "on", "--workers", "0", "--threads", "1",
          "--json", str(tmp_path / "e2e.json")])
    out = capsys.readouterr().out
    assert re.search(r"^\| lewel_b / byol \| true \| [0-9.]+ \| 1.044 \|", out, re.MULTILINE), out
    doc = json.loads((tmp_path / "e2e.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["byol", "lewel_b"]
    assert all(0 <= r["loader_wait_share"] <= 1 and r["images_per_s"] > 0 for r in doc["rows"])


def test_bench_pretrain_times_cgh_against_mocov2_and_records_the_ratios(capsys, tmp_path):
    """CGH's ratios to supervised and to MoCo v2 come from one run; --record writes cost records that make_tables
    puts into the CGH cost table (time_rel = step time / supervised step time)."""
    import json

    from tools import make_tables as mt
    from tools.bench_pretrain import main

    main(["--arch", "resnet18", "--size", "32", "--batch", "2", "--reps", "1", "--warmup", "0",
          "--methods", "mocov2", "cgh", "--record", str(tmp_path / "records")])
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| (\w+ / \w+) \| ([0-9.]+) \|", out, re.MULTILINE))
    assert set(rows) == {"cgh / mocov2", "cgh / supervised"} and all(float(v) > 0 for v in rows.values())
    flops = dict(re.findall(r"^\| (\w+) \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \|", out, re.MULTILINE))
    assert float(flops["cgh"]) > float(flops["mocov2"]) > float(flops["supervised"])  # hypercolumn branch, 4 products
    recs = {r["method"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json"))}
    assert set(recs) == {"supervised", "mocov2", "cgh"}
    assert recs["supervised"]["metrics"]["time_rel"] == 1.0 and recs["supervised"]["pretrain_epochs"] is None
    assert (recs["cgh"]["eval"], recs["cgh"]["protocol"], recs["cgh"]["pretrain_epochs"]) == ("cost", "step_time", 200)
    assert recs["cgh"]["config"]["overrides"] == ["model.loss_warmup_epochs=0"]  # timed after its loss warm-up
    ratio = recs["cgh"]["metrics"]["time_rel"] / recs["mocov2"]["metrics"]["time_rel"]
    assert abs(ratio - float(rows["cgh / mocov2"])) < 1e-3
    tables, unmatched = mt.make_tables(tmp_path / "records", mt.PAPER_DIR, tmp_path / "tables")
    t3 = tables["cgh_table3_cost"].set_index("label")
    assert unmatched.empty and t3.loc["CGH", "time_rel.ours"] == round(recs["cgh"]["metrics"]["time_rel"], 2)


def test_bench_threads_policies_and_metrics(tmp_path):
    from tools.bench_threads import images_per_s, policy_env

    fixed = "threads_adapt=false"
    assert policy_env("passive-2") == ({"OMP_WAIT_POLICY": "PASSIVE"}, ["num_threads=2", fixed])
    assert policy_env("active-4") == ({"OMP_WAIT_POLICY": "ACTIVE"}, ["num_threads=4", fixed])
    assert policy_env("threads-1") == ({}, ["num_threads=1", fixed]) and policy_env("auto") == ({}, [])
    with pytest.raises(LewelError, match="expected auto, threads-1, active-N or passive-N"):
        policy_env("lazy-2")
    m = tmp_path / "metrics.jsonl"
    m.write_text("".join(f'{{"iter": {i}, "images_per_s": {v}}}\n' for i, v in enumerate([5.0, 100.0, 100.0, 25.0])))
    # the first (warm-up) iteration is left out; a slow one counts for its time (3 batches in 0.06 batch-s)
    assert images_per_s(m) == pytest.approx(50.0)
    m.write_text('{"iter": 0, "images_per_s": 5.0}\n')
    with pytest.raises(LewelError, match="fewer than two logged iterations"):
        images_per_s(m)
