"""make_tables on a fixture set of records vs hand-computed CSVs; unmatched / malformed reporting; the
paper data files; the `make all` chain as a dry run (local order and SLURM dependencies); the launcher's
option handling."""
from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers import same_cell
from lewel_bench.utils import REPO_ROOT
from tools import make_tables as mt

FIX = Path(__file__).resolve().parent / "fixtures"
VALUE_SUFFIXES = (".paper", ".ours", ".std", ".n", ".diff")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    tables, unmatched = mt.make_tables(FIX / "records", REPO_ROOT / "results" / "paper", out)
    return out, tables, unmatched


def _key(v) -> str:
    """Key cells as text: 3.0 -> '3', NaN -> ''."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _keys(df: pd.DataFrame, keys: list[str]) -> list[tuple]:
    return sorted(tuple(_key(v) for v in row) for row in df[keys].itertuples(index=False))


@pytest.mark.parametrize("name", ["table1_linear", "table2_semisup", "table3_voc", "table4_coco",
                                  "table5_components", "table6_heads", "table8_handcrafted"])
def test_table_matches_hand_computed(built, name):
    out, _tables, _ = built
    got = pd.read_csv(out / f"{name}.csv")
    want = pd.read_csv(FIX / "expected" / f"{name}.csv")
    keys = [c for c in want.columns if not c.endswith(VALUE_SUFFIXES)]
    ours_cols = [c for c in got.columns if c.endswith(".ours")]
    # exactly the expected rows carry any of our numbers
    with_ours = got[got[ours_cols].notna().any(axis=1)]
    assert _keys(with_ours, keys) == _keys(want, keys)
    for _, w in want.iterrows():
        sel = got
        for k in keys:
            sel = sel[sel[k].map(_key) == _key(w[k])]
        assert len(sel) == 1, f"{name}: row {dict(w[keys])} found {len(sel)} times"
        g = sel.iloc[0]
        for c in want.columns:
            if c in keys:
                continue
            assert same_cell(g[c], w[c]), f"{name} row {w['label']!r} column {c}: got {g[c]!r}, expected {w[c]!r}"


def test_paper_rows_and_columns_mirror_the_paper(built):
    _, tables, _ = built
    t1 = tables["table1_linear"]
    paper_rows = t1[t1["dataset"] == "paper"]
    assert list(paper_rows["label"])[:3] == ["InstDisc [42]", "PCL [23]", "SimCLR [7]"]
    assert len(paper_rows) == 11
    lewel_b = paper_rows[paper_rows["label"] == "LEWEL_B"].iloc[0]
    assert (lewel_b["ep100_top1.paper"], lewel_b["ep200_top5.paper"], lewel_b["ep400_top1.paper"]) == (71.9, 91.0, 73.8)
    # the cited and the reproduced BYOL rows are kept apart; ours goes beside the reproduction (*)
    byol = paper_rows[paper_rows["method"] == "byol"].set_index("source")
    assert byol.loc["cited", "ep100_top1.paper"] == 66.5 and byol.loc["reproduced", "ep100_top1.paper"] == 70.6
    assert math.isnan(byol.loc["cited", "ep100_top1.ours"]) and byol.loc["reproduced", "ep100_top1.ours"] == 70.0
    assert len(tables["table2_semisup"][tables["table2_semisup"]["dataset"] == "paper"]) == 10
    assert len(tables["table3_voc"]) == 13 and len(tables["table4_coco"]) == 15
    assert len(tables["table7_num_aligned"]) == 9
    t4 = tables["table4_coco"].set_index("label")
    assert t4.loc["PixelPro [44] (400 ep)", "segm_AP50.paper"] is None or math.isnan(t4.loc["PixelPro [44] (400 ep)", "segm_AP50.paper"])


def test_mini_records_are_labelled_not_mixed(built):
    _, tables, _ = built
    t1 = tables["table1_linear"]
    mini = t1[t1["dataset"] == "mini"]
    assert set(mini["source"]) == {"ours"} and len(mini) == 2
    # a mini lewel_b run never fills the paper's LEWEL_B row
    assert t1[(t1["label"] == "LEWEL_B") & (t1["dataset"] == "paper")]["other_top1.ours"].isna().all()


def test_unmatched_and_malformed_are_reported(built):
    out, _, _unmatched = built
    want = pd.read_csv(FIX / "expected" / "unmatched.csv")
    got = pd.read_csv(out / "unmatched.csv")
    got["name"] = got["file"].map(lambda f: Path(f).name)
    assert sorted(got["name"]) == sorted(want["file"])
    for _, w in want.iterrows():
        reason = got[got["name"] == w["file"]]["reason"].iloc[0]
        assert w["reason"] in reason, (w["file"], reason)
    md = (out / "README.md").read_text()
    assert "72.5 ± 0.7 (n=2)" in md and "bad-protocol.json" in md and "Unmatched records" in md
    other = pd.read_csv(out / "other_results.csv")
    assert set(other["eval"]) == {"knn"}   # fpn_2x is placed in Table 8


def test_strict_exits_nonzero_on_unmatched(tmp_path):
    with pytest.raises(SystemExit) as e:
        mt.main(["--records", str(FIX / "records"), "--out", str(tmp_path / "t"), "--strict"])
    assert e.value.code == 1
    (tmp_path / "empty").mkdir()
    assert mt.main(["--records", str(tmp_path / "empty"), "--out", str(tmp_path / "t2"), "--strict"]) == 0
    with pytest.raises(SystemExit, match=r"argument --records: .*missing: no such folder") as e:  # a typo: refused
        mt.main(["--records", str(tmp_path / "missing"), "--out", str(tmp_path / "t3")])
    assert e.value.code == 2


def test_paper_file_errors_name_file_and_column(tmp_path):
    p = tmp_path / "table1_linear.csv"
    p.write_text("# schema: label:str,method:str,source:str,ep100_top1:float\n"
                 "label,method,source,ep100_top1\nX,x,lewel,abc\n")
    with pytest.raises(mt.PaperFileError, match=r"table1_linear.csv: data row 1, column 'ep100_top1'"):
        mt.read_paper_csv(p)
    p.write_text("label,method\nX,x\n")
    with pytest.raises(mt.PaperFileError, match="no '# schema"):
        mt.read_paper_csv(p)


def test_all_paper_files_parse_with_their_schema():
    for p in sorted((REPO_ROOT / "results" / "paper").glob("table*.csv")):
        df, schema = mt.read_paper_csv(p)
        assert {"label", "source"} <= set(schema), p
        assert set(df["source"]) <= {"lewel", "reproduced", "cited", "original"}, p
        assert len(df) > 0


# ----------------------------------------------------------------------------- the chain (dry run)
def _make_n(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEWEL_RUNS_DIR"}  # the default runs/ folder
    r = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout.replace('"', "").splitlines()  # the recipes quote every path (a path may hold spaces): compared without the quotes


def _first(lines: list[str], pattern: str) -> int:
    for i, ln in enumerate(lines):
        if re.search(pattern, ln):
            return i
    raise AssertionError(f"no line matches {pattern!r} in the dry run:\n" + "\n".join(lines))


CHAIN = [r"-- pretrain\b", r"-- tools\.convert_to_detectron2", r"-- tools\.convert_to_mmseg",
         r"-- eval_linear\b", r"-- eval_semisup\b.*1pct", r"-- eval_semisup\b.*10pct", r"-- eval_detection\b",
         r"-- eval_segmentation\b", r"-- eval_detection\b.*coco", r"-- eval_detection\b.*fpn",
         r"-- tools\.make_tables"]


def test_make_all_dry_run_shows_the_chain_in_order():
    lines = _make_n("all", "EXP=lewel_b")
    pos = [_first(lines, p) for p in CHAIN]
    assert pos == sorted(pos), list(zip(CHAIN, pos))


def test_make_all_slurm_dry_run_chains_jobs_with_afterok():
    lines = _make_n("all", "EXP=lewel_b", "LAUNCHER=slurm", "PARTITION=debug")
    launches = [ln for ln in lines if "lewel_bench.launch" in ln]
    assert launches and all("--launcher slurm" in ln for ln in launches)
    pre = launches[_first(launches, r"-- pretrain\b")]
    assert "--dependency" not in pre and "--job-id-file runs/lewel_b/chain/pretrain.id" in pre
    for pat, step in [(r"-- eval_linear\b", "linear"), (r"-- eval_segmentation\b", "voc-seg"),
                      (r"-- tools\.make_tables", "tables")]:
        ln = launches[_first(launches, pat)]
        assert "--dependency afterok" in ln and f"--job-id-file runs/lewel_b/chain/{step}.id" in ln, ln
    # every dependent submission reads the job ids of the steps it waits for: the evaluations (the planner's
    # lines) those of pretraining and conversion, the tables those of every evaluation
    evals = [ln for ln in launches if re.search(r"-- eval_", ln)]
    assert evals and all("--dependency afterok:$(cat runs/lewel_b/chain/pretrain.id runs/lewel_b/chain/convert.id"
                         in ln for ln in evals), evals
    recipe = [ln for ln in lines if "DEPENDENCY=afterok:" in ln]
    tables = next(ln for ln in recipe if re.search(r"\btables\b", ln))
    for step in ("linear", "semisup1", "semisup10", "voc-det", "voc-seg", "coco-c4-1x", "coco-fpn-1x"):
        assert f"chain/{step}.id" in tables


# ----------------------------------------------------------------------------- launcher options
def test_launcher_options_config_and_placeholders(tmp_path):
    from lewel_bench import launch

    cfg = tmp_path / "l.yaml"
    cfg.write_text("launcher: slurm\nslurm: {partition: gpu, gpus_per_node: 8, time: '1-02:30:00', nodes: 2}\n")
    args, rest = launch.parse_args(["--config", str(cfg), "--nodes", "4", "--", "eval_knn", "--x"])
    launcher, nproc, opts = launch.resolve_options(args)
    assert (launcher, nproc, opts.partition, opts.nodes, opts.gpus_per_node) == ("slurm", 1, "gpu", 4, 8)
    assert launch.parse_time_minutes(opts.time) == 26 * 60 + 30 and rest == ["eval_knn", "--x"]
    assert launch.parse_time_minutes("90") == 90 and launch.parse_time_minutes("02:00:00") == 120
    ex = REPO_ROOT / "launch" / "slurm.yaml"
    with pytest.raises(launch.LaunchError, match="placeholder"):
        launch.resolve_options(launch.parse_args(["--config", str(ex), "--", "x"])[0])
    cfg.write_text("slurm: {partiton: gpu}\n")
    with pytest.raises(launch.LaunchError, match="partition"):
        launch.resolve_options(launch.parse_args(["--config", str(cfg), "--", "x"])[0])
    with pytest.raises(launch.LaunchError, match="unknown stage"):
        launch.stage_main("no_such_stage_xyz")
    assert launch.stage_main("tools.make_tables") is mt.main


def test_stagejob_checkpoint_returns_delayed_submission_of_itself():
    import submitit

    from lewel_bench.launch import StageJob

    job = StageJob("eval_knn", ["--ckpt", "random:resnet18"])
    d = job.checkpoint()
    assert isinstance(d, submitit.helpers.DelayedSubmission)
    assert isinstance(d.function, StageJob) and d.function.argv == job.argv and d.function.attempt == 1


def test_local_nproc_spawns_ranks(tmp_path, monkeypatch):
    """``--nproc 2``: two processes with torchrun's variables (a tiny stage module writes what it sees)."""
    from lewel_bench import launch

    pkg = tmp_path / "rank_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import json, os, sys\n"
        "def main(argv):\n"
        "    keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT']\n"
        "    open(os.path.join(argv[0], os.environ['RANK'] + '.json'), 'w').write(json.dumps({k: os.environ[k] for k in keys}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    launch.main(["--nproc", "2", "--", "rank_probe", str(tmp_path)])
    import json
    seen = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert [s["RANK"] for s in seen] == ["0", "1"] and {s["WORLD_SIZE"] for s in seen} == {"2"}
    assert seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]


# ----------------------------------------------------------------------------- the CGH supplement's tables
def _rec(d: Path, name: str, **kw) -> None:
    from lewel_bench.records import make_record, write_record

    base = dict(method="cgh", pretrain_exp="cgh", pretrain_epochs=200, seed=0, checkpoint_sha256="x", config={},
                start_time="2026-01-01T00:00:00+00:00", dataset="imagenet", status="ok")
    rec = make_record(**{**base, **kw})
    path = write_record(rec, d)
    path.rename(d / f"{name}.json")


def test_cgh_tables_match_on_feature_variant_and_cost(tmp_path):
    """Hand-made records: two GAP seeds and a hypercolumn probe of CGH, a multi-crop COCO run, cost records and a
    VOC run fill the CGH rows; a mini hypercolumn probe gets an extra row in CGH Table 1 and none in LEWEL's."""
    d = tmp_path / "records"
    d.mkdir()
    lin = dict(eval="linear", protocol="cgh_sgd")
    _rec(d, "gap0", **lin, metrics={"top1": 70.0, "top5": 89.0}, feature="gap", group="g-gap")
    _rec(d, "gap1", **lin, metrics={"top1": 71.0, "top5": 90.0}, feature="gap", group="g-gap", seed=1)
    _rec(d, "hyper", **lin, metrics={"top1": 70.2, "top5": 90.0}, feature="hypercolumn", group="g-hyp")
    _rec(d, "mini-hyper", eval="linear", protocol="mini", metrics={"top1": 50.0, "top5": 95.0}, feature="hypercolumn",
         group="g-mh", dataset="mini", pretrain_exp="cgh_mini", pretrain_epochs=12)
    coco = {"bbox_AP": 38.0, "bbox_AP50": 58.0, "bbox_AP75": 41.0, "segm_AP": 33.0, "segm_AP50": 55.0, "segm_AP75": 35.0}
    _rec(d, "coco", eval="coco", protocol="c4_1x", metrics=coco, group="g-c")
    _rec(d, "coco-multi", eval="coco", protocol="c4_1x", metrics={k: v + 1 for k, v in coco.items()}, group="g-cm",
         pretrain_exp="cgh_multi")
    _rec(d, "voc", eval="voc_det", protocol="c4_24k", metrics={"AP": 55.0, "AP50": 82.0, "AP75": 60.0}, group="g-v")
    for m, ep, t in (("cgh", 200, 1.9), ("mocov2", 200, 1.5), ("supervised", None, 1.0)):
        _rec(d, f"cost-{m}", eval="cost", protocol="step_time", method=m, pretrain_exp=m, pretrain_epochs=ep,
             metrics={"time_rel": t, "step_s": 0.1 * t}, group=f"g-t-{m}", dataset="synthetic")
    tables, unmatched = mt.make_tables(d, REPO_ROOT / "results" / "paper", tmp_path / "out")
    assert unmatched.empty, unmatched

    t1 = tables["cgh_table1_linear"]
    paper = t1[t1["dataset"] == "paper"].set_index("label")
    assert list(paper.index) == ["MoCo-v2", "ReSSL", "CGH", "CGH (hyper)"]
    assert (paper.loc["CGH", "in1k_top1.ours"], paper.loc["CGH", "in1k_top1.n"], paper.loc["CGH", "in1k_top1.diff"]) == \
        (70.5, 2, 0.0)
    assert paper.loc["CGH", "in1k_top1.std"] == pytest.approx(0.71)
    assert (paper.loc["CGH (hyper)", "in1k_top1.ours"], paper.loc["CGH (hyper)", "in1k_top1.diff"]) == (70.2, -0.6)
    extra = t1[t1["dataset"] == "mini"]
    assert list(extra["label"]) == ["cgh (ours, 12 ep, mini, hypercolumn)"] and list(extra["feature"]) == ["hypercolumn"]
    assert extra["in1k_top1.ours"].iloc[0] == 50.0
    # the LEWEL table takes GAP probes only: the hypercolumn probes are in none of its rows
    lewel_t1 = tables["table1_linear"]
    assert not lewel_t1["label"].str.startswith("cgh").any()

    t2 = tables["cgh_table2_coco_c4"].set_index("label")
    assert (t2.loc["CGH", "bbox_AP.ours"], t2.loc["CGH", "bbox_AP.diff"]) == (38.0, -1.0)
    assert (t2.loc["CGH (Multi)", "segm_AP75.ours"], t2.loc["CGH (Multi)", "segm_AP75.diff"]) == (36.0, -0.6)
    assert math.isnan(t2.loc["MoCo-v2 [4]", "bbox_AP.ours"])

    t3 = tables["cgh_table3_cost"].set_index("label")
    assert (t3.loc["CGH", "time_rel.ours"], t3.loc["CGH", "time_rel.diff"]) == (1.9, -0.11)
    assert (t3.loc["MoCo-v2 [4]", "time_rel.ours"], t3.loc["Supervised", "time_rel.ours"]) == (1.5, 1.0)
    assert (t3.loc["CGH", "linear_top1.ours"], t3.loc["CGH", "voc_AP50.ours"], t3.loc["CGH", "voc_AP50.diff"]) == \
        (70.5, 82.0, -0.6)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "### CGH Table 1" in md and "### CGH Table 2" in md and "### CGH Table 3" in md
    # the paper's own "group" column (the table's sections) keeps its name; ours becomes run_group
    assert t2.loc["CGH", "group"] == "asymmetric" and t2.loc["CGH", "run_group"] == "g-c"
    assert "| CGH | cgh | asymmetric | - | 200 | paper | 39.0 | 38.0 | -1.0 |" in md
    assert "| CGH | cgh | 200 | paper | 2.01 | 1.90 | -0.11 |" in md  # time ratios with two decimals


def test_cgh_paper_files_parse_with_their_schema():
    for p in sorted((REPO_ROOT / "results" / "paper").glob("cgh_*.csv")):
        df, schema = mt.read_paper_csv(p)
        assert {"label", "method", "source"} <= set(schema) and len(df) > 0, p
        assert set(df["source"]) <= {"cgh", "reproduced", "cited", "original"}, p
        assert any(spec.name == p.stem for spec in mt.specs()), p


def test_make_all_cgh_dry_run_runs_its_own_chain():
    lines = _make_n("all", "EXP=cgh")
    chain = [r"-- pretrain cgh_mini\b|-- pretrain \$cfg", r"-- tools\.convert_to_detectron2", r"-- eval_linear\b",
             r"feature=hypercolumn", r"-- eval_detection\b.*coco_c4_1x", r"-- eval_detection\b.*voc_c4_24k",
             r"-- tools\.make_tables"]
    pos = [_first(lines, p) for p in chain]
    assert pos == sorted(pos), list(zip(chain, pos))
    assert not any(re.search(r"eval_semisup|eval_segmentation|coco_fpn", ln) for ln in lines)
    assert any("make pretrain" in ln and "EXP=cgh" in ln for ln in lines)
    # the other experiments keep the LEWEL chain
    assert any(re.search(r"-- eval_segmentation\b", ln) for ln in _make_n("all", "EXP=mocov2"))
