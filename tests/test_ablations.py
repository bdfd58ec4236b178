"""`make ablations`: every row of LEWEL Tables 5-7 has a config (and a mini one); the chain pretrains, evaluates
(linear + VOC seg) and fills the tables, here end to end on tiny data (one row per table); Fig. 3's sweep
points (`--sweep` at pretraining) fill Fig. 3's tables and stay apart from the experiment's own rows."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers import make_imagenet
from lewel_bench.config import load_config
from lewel_bench.utils import REPO_ROOT
from tools.make_tables import read_paper_csv

PAPER = REPO_ROOT / "results" / "paper"
CONFIGS = REPO_ROOT / "pretrain" / "configs"
ABLATION_TABLES = ("table5_components", "table6_heads", "table7_num_aligned", "fig3a_beta", "fig3b_aligned_dim")


def _dry(*args: str) -> list[str]:
    r = subprocess.run(["make", "-n", "RUNS=runs", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.replace('"', "").splitlines()  # the recipes quote every path (a path may hold spaces): compared without the quotes


def _rows(name: str) -> list[dict]:
    return read_paper_csv(PAPER / f"{name}.csv")[0].to_dict("records")


def test_every_ablation_row_has_a_config_and_a_mini_config_that_change_what_the_row_says() -> None:
    exps = {r["exp"] for t in ABLATION_TABLES for r in _rows(t)}
    for e in sorted(exps):
        full, mini = load_config(e, CONFIGS), load_config(e + "_mini", CONFIGS)
        assert full["epochs"] == 240 and full["arch"] == "resnet50", e  # the IN-100 protocol (Sec. 4.4)
        assert mini["method"] == full["method"] and mini["arch"] == "resnet18", e  # same recipe, mini sizes
        for k in ("dim", "groups", "coupling", "global_branch", "align", "sem_projector", "extra_p", "beta"):
            assert mini["model"].get(k) == full["model"].get(k), (e, k)
    for r in _rows("table6_heads"):
        m = load_config(r["exp"], CONFIGS)["model"]
        assert m["dim"] == r["d"], r
        assert (m.get("extra_p", False) or m.get("sem_projector", False)) == r["extra_p"], r
    for r in _rows("table7_num_aligned"):
        m = load_config(r["exp"], CONFIGS)["model"]
        assert m["dim"] == r["d"] and m.get("groups") == (None if pd.isna(r["h"]) or r["h"] is None else r["h"]), r
    t5 = {r["exp"]: r for r in _rows("table5_components")}
    m = load_config("lewel_m_in100_align_only", CONFIGS)["model"]
    assert not m["global_branch"] and not t5["lewel_m_in100_align_only"]["global"]
    assert load_config("lewel_m_in100_uncoupled", CONFIGS)["model"]["coupling"] == "uncoupled"


def test_make_ablations_dry_run_is_the_chain_of_every_row() -> None:
    lines = _dry("ablations", "DATA=/in100", "VOC_DATA=/voc")
    pre = [ln for ln in lines if "-- pretrain " in ln]
    exps = {r["exp"] for t in ABLATION_TABLES[:3] for r in _rows(t)}
    assert {re.search(r"--exp (\S+)", ln).group(1) for ln in pre} == exps and len(pre) == len(exps) == 18
    assert all("--data /in100" in ln for ln in pre)
    assert sum("-- eval_linear --config auto" in ln and "--data /in100" in ln for ln in lines) == 18
    assert sum("-- eval_segmentation --config voc12aug" in ln and "--data /voc" in ln for ln in lines) == 18
    tables = [i for i, ln in enumerate(lines) if "-- tools.make_tables" in ln]
    assert len(tables) == 1 and tables[0] > max(i for i, ln in enumerate(lines) if "-- eval_segmentation" in ln)
    slurm = _dry("ablations", "DATA=/in100", "VOC_DATA=/voc", "LAUNCHER=slurm", "ABLATIONS=lewel_m_in100_no_p")
    launches = [ln for ln in slurm if "lewel_bench.launch" in ln]
    assert "--job-id-file runs/lewel_m_in100_no_p/chain/pretrain.id" in launches[0]
    assert all("--dependency afterok" in ln for ln in launches[1:])
    tab = next(ln for ln in slurm if "DEPENDENCY=afterok:" in ln and re.search(r"\btables\b", ln))
    assert "chain/linear.id" in tab and "chain/voc-seg.id" in tab
    fig3 = _dry("ablations-fig3", "DATA=/in100", "VOC_DATA=/voc")
    pre = [ln for ln in fig3 if "-- pretrain " in ln]
    assert len(pre) == 9 and all("--exp lewel_m_in100 " in ln for ln in pre)
    assert any("model.beta=0.3 --sweep model.beta" in ln and "--out runs/lewel_m_in100-beta0.3" in ln for ln in pre)
    assert any("model.sem_dim=64 --sweep model.sem_dim" in ln for ln in pre)
    r = subprocess.run(["make", "ablations", "DATA=/in100"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "needs VOC_DATA" in r.stderr


PRETRAIN_TINY = ("aug.size=32 batch_size=8 epochs=1 data.num_workers=0 num_threads=1 knn.every=0 model.hidden=64 "
                 "tqdm_interval=60 ckpt.every_iters=100")
LINEAR_TINY = "epochs=1 batch_size=8 data.crop_size=32 data.resize_size=36 data.num_workers=0"


def test_make_ablations_smoke_chain_fills_the_tables_with_mini_rows(mini_data: Path, tmp_path: Path) -> None:
    mini = tmp_path / "mini"
    make_imagenet(mini / "imagenet", classes=3, n_train=8, n_val=3)
    (mini / "VOCdevkit").symlink_to(mini_data / "VOCdevkit")
    shutil.copy(mini_data / ".complete", mini / ".complete")  # the mini stamp: make generates nothing here
    runs, results, tables = tmp_path / "runs", tmp_path / "results", tmp_path / "tables"
    env = {**os.environ, "LEWEL_RUNS_DIR": str(runs), "LEWEL_RESULTS_DIR": str(results)}
    common = [f"MINI={mini}", f"ARGS={PRETRAIN_TINY}",
              f"ABLATION_LINEAR_ARGS={LINEAR_TINY}", "ABLATION_SEG_ARGS=train_cfg.max_iters=1",
              f"TABLES_ARGS=--out {tables}"]
    r = subprocess.run(["make", "--no-print-directory", "ablations", *common,
                        "ABLATIONS=lewel_m_in100_uncoupled mocov2_in100_extra_p lewel_b_in100_h2"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for name, exp in (("table5_components", "lewel_m_in100_uncoupled"), ("table6_heads", "mocov2_in100_extra_p"),
                      ("table7_num_aligned", "lewel_b_in100_h2")):
        t = pd.read_csv(tables / f"{name}.csv")
        mini_rows = t[t["dataset"] == "mini"]
        assert list(mini_rows["exp"]) == [exp], (name, t[["label", "exp", "dataset"]])
        row = mini_rows.iloc[0]  # one row per pretraining run: both evaluations in it
        assert row["in100_top1.n"] == 1 and row["voc_mIoU.n"] == 1 and 0 <= row["in100_top1.ours"] <= 100
        assert row["source"] == "ours" and pd.isna(row["in100_top1.diff"])  # never compared with the paper
        assert (t[t["dataset"] == "paper"]["in100_top1.n"] == 0).all()  # mini never fills a paper row
    assert not pd.read_csv(tables / "unmatched.csv").shape[0]
    assert "lewel_m_in100_uncoupled" not in pd.read_csv(tables / "table1_linear.csv")["label"].str.cat()


def test_a_pretraining_sweep_point_fills_fig3_and_not_the_experiments_own_rows(mini_data: Path, tmp_path: Path) -> None:
    import eval_linear.cli as linear_cli
    import pretrain.cli as pretrain_cli
    from tools import make_tables as mt

    data = mini_data / "imagenet"
    out, rec = tmp_path / "beta0.3", tmp_path / "records"
    tiny = [*PRETRAIN_TINY.split(), "data.max_images=24"]
    with pytest.raises(SystemExit, match=r"--sweep model\.betta: the config has no key 'model\.betta'"):
        pretrain_cli.main(["lewel_m_in100_mini", "--data", str(data), "--out", str(out), "--sweep", "model.betta"])
    pretrain_cli.main(["lewel_m_in100_mini", "--exp", "lewel_m_in100", "--data", str(data), "--out", str(out),
                       "--records-dir", str(rec), "model.beta=0.3", "--sweep", "model.beta", *tiny])
    linear_cli.main(["--config", "mini", "--ckpt", str(out / "backbone.pth"), "--data", str(data),
                     "--records-dir", str(rec), *LINEAR_TINY.split()])
    records = [json.loads(p.read_text()) for p in rec.glob("linear-*.json")]
    assert [r["pretrain_sweep"] for r in records] == [{"key": "model.beta", "value": 0.3}]
    tables, unmatched = mt.make_tables(rec, PAPER, tmp_path / "tables")
    f3 = tables["fig3a_beta"]
    row = f3[f3["dataset"] == "mini"].iloc[0]
    assert row["pretrain_sweep"] == "model.beta=0.3" and row["in100_top1.n"] == 1 and "model.beta=0.3" in row["label"]
    for name in ("table5_components", "table6_heads", "fig3b_aligned_dim", "table1_linear"):
        assert (tables[name]["dataset"] == "paper").all(), name  # neither lewel_m_in100's rows nor Table 1's
    assert unmatched.empty
