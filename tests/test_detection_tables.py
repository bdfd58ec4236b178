"""MCL's Tables 11-13 (RetinaNet 1x / 2x / 6x, Mask R-CNN C4 1x / 2x, linear) from fixture records against
hand-computed CSVs (tests/fixtures/mcl): paper rows with their cited / reproduced markers, the Supervised and
Rand Init baselines, which weights each row's detector loaded, mini and other-epoch runs in rows of their own."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from helpers import same_cell
from lewel_bench.utils import REPO_ROOT
from tools import make_tables as mt

FIX = Path(__file__).resolve().parent / "fixtures" / "mcl"
VALUE_SUFFIXES = (".paper", ".ours", ".std", ".n", ".diff")
MCL_TABLES = ["mcl_table11_retinanet", "mcl_table12_coco_c4", "mcl_table13_linear"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("mcl_tables")
    tables, unmatched = mt.make_tables(FIX / "records", REPO_ROOT / "results" / "paper", out)
    return out, tables, unmatched


def _key(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@pytest.mark.parametrize("name", MCL_TABLES)
def test_mcl_table_matches_hand_computed(built, name: str) -> None:
    out, _, _ = built
    got = pd.read_csv(out / f"{name}.csv")
    want = pd.read_csv(FIX / "expected" / f"{name}.csv")
    keys = [c for c in want.columns if not c.endswith(VALUE_SUFFIXES)]
    with_ours = got[got[[c for c in got.columns if c.endswith(".ours")]].notna().any(axis=1)]
    assert sorted(tuple(_key(v) for v in r) for r in with_ours[keys].itertuples(index=False)) == \
        sorted(tuple(_key(v) for v in r) for r in want[keys].itertuples(index=False))
    for _, w in want.iterrows():
        sel = got
        for k in keys:
            sel = sel[sel[k].map(_key) == _key(w[k])]
        assert len(sel) == 1, f"{name}: row {dict(w[keys])} found {len(sel)} times"
        g = sel.iloc[0]
        for c in want.columns:
            if c not in keys:
                assert same_cell(g[c], w[c]), f"{name} row {w['label']!r} column {c}: got {g[c]!r}, expected {w[c]!r}"


def test_mcl_tables_keep_the_papers_rows_and_markers(built) -> None:
    out, tables, unmatched = built
    t11, t12, t13 = (tables[n] for n in MCL_TABLES)
    paper = t11[t11["dataset"] == "paper"]
    assert list(paper["label"]) == ["Supervised", "MoCo v2", "MCL"]
    assert list(paper["source"]) == ["reproduced", "reproduced", "mcl"]
    assert paper.set_index("label").loc["MCL", "x6_bbox_AP75.paper"] == 44.5
    paper = t12[t12["dataset"] == "paper"]
    assert len(paper) == 12 and set(paper["source"]) == {"cited", "mcl"}
    simsiam = paper.set_index("label").loc["SimSiam (Chen & He, 2021)"]
    assert simsiam["x1_bbox_AP.paper"] == 39.2 and math.isnan(simsiam["x2_bbox_AP.paper"])  # "-" kept empty
    assert len(t13[t13["dataset"] == "paper"]) == 7
    sup = t13.set_index("label").loc["Supervised"]
    assert sup["ep400_top1.ours"] is None and sup["ep100_top1.n"] == 1  # filled where the paper has a value
    md = (out / "README.md").read_text()
    for title in ("MCL Table 11", "MCL Table 12", "MCL Table 13"):
        assert f"### {title}" in md
    assert "37.3 ± 0.4 (n=2)" in md and "trunk+fpn" in md
    # every fixture record has its place; a RetinaNet run is never an extra row of LEWEL's Mask R-CNN Table 4
    assert unmatched.empty, unmatched
    t4 = tables["table4_coco"]
    assert set(t4["arch"].dropna()) == {"c4", "fpn"} and (t4["label"] == "random (ours, coco)").sum() == 1


def test_mcl_paper_files_parse_with_their_schema() -> None:
    for name in MCL_TABLES:
        df, schema = mt.read_paper_csv(REPO_ROOT / "results" / "paper" / f"{name}.csv")
        assert {"label", "method", "source"} <= set(schema)
        assert set(df["source"]) <= {"mcl", "reproduced", "cited"}
        spec = next(s for s in mt.specs() if s.name == name)
        assert set(spec.cells) <= set(df.columns)  # every value column of the table has a cell spec
        assert set(df.columns) - set(spec.cells) - set(spec.extra_epoch_cells) <= {"label", "method", "source", "epochs"}
