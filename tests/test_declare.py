"""Declared once: the evaluations' declarations (found by package name, also outside the repository), the
methods' paper declarations in their configs, and the chain planner that `make all` runs from them."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lewel_bench import declare
from lewel_bench.chain import chain_vars, stage_commands
from lewel_bench.config import load_yaml_config
from lewel_bench.declare import DeclarationError, paper_of, resolve_chain
from lewel_bench.utils import REPO_ROOT
from pretrain.experiments import config_files

#: the record vocabulary the tables knew before the evaluations declared it (it must not shrink)
VOCABULARY = {
    "linear": {"lewel_b_sgd", "lewel_m_lars", "cgh_sgd", "mcl_sgd", "mini"}, "semisup": {"1pct", "10pct"},
    "knn": {"k20"}, "voc_det": {"c4_24k"}, "voc_seg": {"fcn_d8_20k"},
    "coco": {"c4_1x", "c4_2x", "fpn_1x", "fpn_2x", "retinanet_1x", "retinanet_2x", "retinanet_6x"},
    "pretrain": {"time_per_epoch"}, "cost": {"step_time"}}
PRIMARY = {"linear": "top1", "semisup": "top1", "knn": "top1", "voc_det": "AP", "voc_seg": "mIoU", "coco": "bbox_AP",
           "pretrain": "images_per_s"}


@pytest.fixture
def fresh_declarations():
    """Forget the found declarations before and after (a test adds a folder to sys.path), and its modules."""
    declare.evaluations.cache_clear()
    yield
    declare.evaluations.cache_clear()
    for name in [m for m in sys.modules if m.split(".")[0].endswith("_xyz")]:
        del sys.modules[name]


def test_every_evaluation_is_declared_beside_its_protocol_version() -> None:
    evals = declare.evaluations()
    assert {n: set(e.protocols) for n, e in evals.items()} == VOCABULARY
    assert {n: e.primary for n, e in evals.items() if n in PRIMARY} == PRIMARY
    for pkg in sorted(p.name for p in REPO_ROOT.glob("eval_*") if (p / "__init__.py").is_file()):
        decl = importlib.import_module(f"{pkg}.declaration")
        assert any(e.module == decl.__name__ for e in evals.values()), pkg
        # the stage code reads the version its declaration states (one number, declared once)
        stage = importlib.import_module(f"{pkg}.protocol" if pkg == "eval_detection" else f"{pkg}.cli")
        assert stage.PROTOCOL_VERSION is decl.PROTOCOL_VERSION
        assert all(e.version == decl.PROTOCOL_VERSION for e in evals.values() if e.module == decl.__name__)


def _write_eval(root: Path, pkg: str, body: str) -> None:
    (root / pkg).mkdir(parents=True)
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "declaration.py").write_text("from lewel_bench.declare import Evaluation, Step\n" + body)


def test_an_evaluation_outside_the_repository_is_found_on_the_path(tmp_path, monkeypatch, fresh_declarations):
    _write_eval(tmp_path, "eval_outside_xyz", "PROTOCOL_VERSION = 3\nEVALUATIONS = (Evaluation(name='outside', "
                "version=PROTOCOL_VERSION, protocols=('p1',), metrics=('m',), primary='m', cli='eval_outside_xyz', "
                "steps=(Step('outside-p1', 'p1', config='full', mini='mini'),)),)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    evals = declare.evaluations()
    assert evals["outside"].version == 3 and evals["outside"].module == "eval_outside_xyz.declaration"
    assert declare.known_protocols()["outside"] == {"p1"} and declare.primary_metrics()["outside"] == "m"
    assert "outside-p1" in declare.steps()


@pytest.mark.parametrize("body, message", [
    ("EVALUATIONS = (Evaluation(name='linear', version=1, protocols=('x',), metrics=('m',), primary='m'),)\n",
     r"evaluation 'linear' is also declared by eval_linear.declaration"),
    ("EVALUATIONS = (Evaluation(name='bad', version=1, protocols=('x',), metrics=('m',), primary='top9'),)\n",
     r"eval_bad_xyz.declaration: evaluation 'bad': primary 'top9' is not one of its metrics"),
    (("EVALUATIONS = (Evaluation(name='bad', version=1, protocols=('x',), metrics=('m',), primary='m', cli='e', "
      "steps=(Step('s', 'y', config='c', mini='c'),)),)\n"), r"step 's' records protocol 'y', not one of \['x'\]"),
    ("X = 1\n", r"eval_bad_xyz.declaration: no EVALUATIONS"),
])
def test_a_wrong_declaration_is_refused_naming_its_module(tmp_path, monkeypatch, fresh_declarations, body, message):
    _write_eval(tmp_path, "eval_bad_xyz", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DeclarationError, match=message):
        declare.evaluations()


def _configs_of(ev: declare.Evaluation) -> set[str]:
    """The configs an evaluation's stage can load by name (its configs folder; segmentation's name table)."""
    pkg = importlib.import_module(ev.cli)
    folder = Path(pkg.__file__).parent / "configs"
    names = {p.stem for p in folder.rglob("*") if p.suffix in (".yaml", ".py")}
    cli = importlib.import_module(f"{ev.cli}.cli")
    return names | set(getattr(cli, "CONFIGS", {})) | ({"auto"} if ev.name == "linear" else set())


def _method_configs() -> dict[str, dict]:
    return {n: load_yaml_config(p) for n, p in config_files().items()}


def test_every_shipped_chain_names_known_steps_and_configs() -> None:
    configs = _method_configs()
    for name, cfg in configs.items():
        paper = paper_of(cfg, name)
        for demo in (False, True):
            for ps in resolve_chain(paper, demo=demo, where=name):
                known = _configs_of(ps.evaluation)
                for c in (ps.entry.config or ps.step.config, ps.entry.mini or ps.step.mini):
                    assert c in known, (name, ps.name, c)
                cmd = stage_commands(ps, "ckpt.pth", "data/mini", {})[0]
                assert cmd[0] == ps.evaluation.cli
    # the tables a paper declares exist, and have a row of the method (or of its experiments)
    from lewel_bench.tables import read_paper_csv, table_specs

    specs = {s.name: s for s in table_specs(REPO_ROOT / "results" / "paper")}
    for name in ("lewel_m", "lewel_b", "mocov2", "byol", "cgh", "mcl"):
        tables = paper_of(configs[name], name).tables
        assert tables, name
        for t in tables:
            df, _ = read_paper_csv(specs[t].csv)
            rows = set(df["method"]) if "method" in df else set()
            exps = {e.split("_in100")[0] for e in df["exp"]} if "exp" in df else set()
            assert name in rows | exps, (name, t)


def test_mcl_chain_is_its_appendix_protocols() -> None:
    paper = paper_of(_method_configs()["mcl_mini"], "mcl_mini")
    planned = resolve_chain(paper)
    assert [ps.name for ps in planned] == ["coco-retinanet-1x", "coco-retinanet-2x", "coco-retinanet-6x", "coco-c4-1x",
                                          "coco-c4-2x", "linear"]
    real = {ps.name: stage_commands(ps, "m.pth", "data/mini", {"DATA": "/in1k", "COCO_DATA": "/coco"})[0]
            for ps in planned}
    assert real["coco-retinanet-6x"][:3] == ["eval_detection", "--config", "coco_retinanet_6x"]
    assert "--transfer" in real["coco-retinanet-1x"] and real["coco-retinanet-1x"][-1] == "bundle"
    assert "model.max_size_train=1200" in real["coco-c4-2x"] and "--transfer" not in real["coco-c4-2x"]
    assert real["linear"][:3] == ["eval_linear", "--config", "mcl_sgd"] and "/in1k" in real["linear"]
    mini = stage_commands(planned[3], "m.pth", "data/mini", {})[0]
    assert mini[:3] == ["eval_detection", "--config", "mini_coco_c4_1x"] and "model.max_size_train=1200" not in mini
    assert [ps.name for ps in resolve_chain(paper, demo=True)] == ["coco-retinanet-1x", "coco-c4-1x", "linear"]


def test_knobs_repeat_seeds_and_sweeps_and_pass_flags() -> None:
    steps = declare.steps()
    ev, st = steps["voc-det"]
    ps = declare.PlannedStep("voc-det", ev, st, declare.ChainEntry("voc-det", "voc-det"))
    cmds = stage_commands(ps, "c.pth", "m", {"SEEDS": "2", "BACKEND": "torchvision", "VOC_DATA": "/voc"})
    assert [c[c.index("--seed") + 1] for c in cmds] == ["0", "1"] and all("/voc" in c for c in cmds)
    assert all(c[c.index("--backend") + 1] == "torchvision" for c in cmds)
    ev, st = steps["voc-seg"]
    ps = declare.PlannedStep("voc-seg", ev, st, declare.ChainEntry("voc-seg", "voc-seg"))
    cmds = stage_commands(ps, "c.pth", "m", {"LRS": "0.01 0.02"})
    assert [c[-3:] for c in cmds] == [["optim_wrapper.optimizer.lr=0.01", "--sweep", "optim_wrapper.optimizer.lr"],
                                      ["optim_wrapper.optimizer.lr=0.02", "--sweep", "optim_wrapper.optimizer.lr"]]
    assert cmds[0][cmds[0].index("--data") + 1] == "m/VOCdevkit"  # no data root given: the mini data
    assert {"DATA", "VOC_DATA", "COCO_DATA", "SEEDS", "BACKEND", "SUBSET", "LRS", "MAX_SIZE_TRAIN"} <= set(chain_vars())


@pytest.mark.parametrize("paper, message", [
    ({"chain": [{"step": "coco-c4-1x", "transfr": "bundle"}]},
     r"coco takes no option transfr \(its options: transfer\)"),
    ({"chain": ["linear", "no-such-step"]},
     r"step 'no-such-step' names unknown step 'no-such-step'; known: .*coco-c4-1x"),
    ({"chain": ["linear", "linear"]}, r"paper.chain names linear twice"),
    ({"chain": [], "tabels": []}, r"paper has unknown key\(s\) tabels"),
    ({"chain": [], "cost": {"against": [{"baseline": "byol", "gpu": "fast", "cpu": 1}]}},
     r"paper.cost.against\[0\].gpu: expected a number > 0 or 'floor'"),
])
def test_a_wrong_paper_declaration_names_the_key(paper, message) -> None:
    with pytest.raises(DeclarationError, match=message):
        resolve_chain(paper_of({"paper": paper}, "x.yaml"), where="x.yaml")


# ----------------------------------------------------------------------------- through make
def _make_n(*args: str, env: dict | None = None) -> tuple[list[str], str]:
    env = {**{k: v for k, v in os.environ.items() if k != "LEWEL_RUNS_DIR"}, **(env or {})}
    r = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=180, env=env, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout.splitlines(), r.stderr


def _unquoted(lines: list[str]) -> list[str]:
    """make's recipes quote every path; the assertions read the words."""
    return [ln.replace('"', "").replace("'", "") for ln in lines]


def test_make_n_all_mcl_shows_mcls_protocols_in_order() -> None:
    lines = _unquoted(_make_n("all", "EXP=mcl")[0])
    evals = [ln for ln in lines if re.search(r"-- eval_", ln)]
    configs = [re.search(r"--config (\S+)", ln).group(1) for ln in evals]
    assert configs == ["mini_coco_retinanet_1x", "mini_coco_retinanet_2x", "mini_coco_retinanet_6x",
                       "mini_coco_c4_1x", "mini_coco_c4_2x", "mini"], evals
    assert all("--transfer bundle" in ln for ln in evals[:3]) and not any("--transfer" in ln for ln in evals[3:])
    says = [ln for ln in lines if "== chain step" in ln]
    assert "real data: config mcl_sgd" in says[-1] and "real data: config coco_retinanet_6x" in says[2]
    assert not any(re.search(r"eval_semisup|eval_segmentation|eval_knn", ln) for ln in lines)
    # with real data: the real configs, MCL's C4 size, its linear recipe; on SLURM each waits for pretraining
    lines = _unquoted(_make_n("all", "EXP=mcl", "DATA=/in1k", "COCO_DATA=/coco", "LAUNCHER=slurm", "PARTITION=p")[0])
    evals = [ln for ln in lines if re.search(r"-- eval_", ln)]
    assert [re.search(r"--config (\S+)", ln).group(1) for ln in evals][-3:] == ["coco_c4_1x", "coco_c4_2x", "mcl_sgd"]
    assert all("--data /coco" in ln for ln in evals[:5]) and "--data /in1k" in evals[5]
    assert all("model.max_size_train=1200" in ln for ln in evals[3:5])
    assert all("--dependency afterok:$(cat runs/mcl/chain/pretrain.id runs/mcl/chain/convert.id" in ln and
               "--job-id-file runs/mcl/chain/" in ln for ln in evals)
    tables = next(ln for ln in lines if "JOB_ID_FILE=runs/mcl/chain/tables.id" in ln)
    assert all(f"chain/{s}.id" in tables for s in ("coco-retinanet-6x", "coco-c4-2x", "linear"))


def test_chain_evals_picks_steps_and_refuses_unknown_ones() -> None:
    lines, _ = _make_n("all", "EXP=mcl", "CHAIN_EVALS=linear knn")
    evals = [ln for ln in lines if re.search(r"-- eval_", ln)]
    assert [re.search(r"-- (eval_\w+)", ln).group(1) for ln in evals] == ["eval_linear", "eval_knn"]
    cfg = str(config_files()["mcl_mini"])
    r = subprocess.run([sys.executable, "-m", "lewel_bench.chain", "check", "--config", cfg, "--only", "linear bogus"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "unknown evaluation step 'bogus'; known:" in r.stderr and "\n" == r.stderr[-1:]


def test_make_demo_takes_the_declared_demo_steps_and_figures() -> None:
    lines, _ = _make_n("demo", "DEMO_EXP=cgh")
    assert not any("visualize_alignment" in ln for ln in lines) and any("plot_curves" in ln for ln in lines)
    evals = [re.search(r"-- (eval_\w+)", ln).group(1) for ln in lines if re.search(r"-- eval_", ln)]
    assert evals == ["eval_linear", "eval_linear", "eval_detection", "eval_detection"]
    lines, _ = _make_n("demo")  # LEWEL_M: its chain without the FPN run, and its alignment maps
    assert any("visualize_alignment" in ln for ln in lines)
    configs = [re.search(r"--config (\S+)", ln).group(1) for ln in lines if re.search(r"-- eval_detection", ln)]
    assert configs == ["mini_voc_c4_24k", "mini_coco_c4_1x"]
