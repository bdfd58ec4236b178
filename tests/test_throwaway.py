"""A method and an evaluation defined in this test's own folder, nowhere in the suite: their code, configs and
declarations (the method's config names its module in ``custom_imports`` and declares its paper chain; the
evaluation declares its protocol, chain step and a paper table of its own). `make all` pretrains the method,
runs its declared chain (the new evaluation and one of the suite's) and builds the tables; the new table has the
method's row, the report shows the run, its records and the table; no file of the suite changes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from helpers import make_imagenet
from lewel_bench.utils import REPO_ROOT

METHOD = '''
"""A throwaway method: SimSiam-like (negative cosine, stop-gradient on the other view), no target network."""
import torch.nn.functional as F
from torch import nn

from lewel_bench.models import feature_dim
from pretrain.methods import METHODS
from pretrain.methods.base import Encoder, SSLMethod


@METHODS.register("throwaway_siam")
class ThrowawaySiam(SSLMethod):
    def __init__(self, cfg):
        super().__init__(cfg)
        d = int(cfg["model"]["dim"])
        self.online = Encoder(self.arch, nn.Linear(feature_dim(self.arch), d), pooled=True)
        self.target = self.make_target(self.online)      # kept for the loop's EMA update
        self.predictor = nn.Linear(d, d)

    def forward(self, views):
        z1, z2 = (self.online(v) for v in views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2
        return loss, {"loss_sim": loss.detach()}
'''

CONFIG = '''
_base_: {repo}/pretrain/configs/_base.yaml
method: throwaway_siam
custom_imports: [throwaway_method]
paper:
  name: Throwaway
  chain: [centroid-probe, knn]
  tables: [throwaway_table1]
model: {{dim: 16, momentum: 0.99, momentum_schedule: constant, target: params}}
_schema_:
  model.dim: int >= 1
  model.momentum: float >= 0 <= 1
  model.momentum_schedule: constant | cosine
  model.target: params | eman
'''
MINI = '''
_base_: [throwaway_siam.yaml, {repo}/pretrain/configs/_mini.yaml]
epochs: 1
batch_size: 8
aug: {{size: 32}}
knn: {{every: 0}}
num_threads: 1
data: {{num_workers: 0}}
'''

EVAL_CLI = '''
"""A throwaway evaluation: nearest class centroid of L2-normalised pooled features (top-1 %)."""
from pathlib import Path

import torch

from lewel_bench import classification as C
from lewel_bench.stage import cli_entry, parse_stage_args, stage_parser

from .declaration import PROTOCOL_VERSION

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@cli_entry("eval_throwaway")
def main(argv=None):
    args = parse_stage_args(stage_parser("python -m eval_throwaway", "nearest-centroid probe", "full"), argv)
    st = C.setup_stage("eval_throwaway", args, CONFIG_DIR, PROTOCOL_VERSION)
    if st.finished():
        return
    _, tf = C.transforms_from_config(st.cfg["data"])
    model = C.build_feature_extractor(st.bb)
    feats = {}
    for split in ("train", "val"):
        ds = C.build_imagenet(st.data_root, split, tf)
        feats[split] = C.extract_features_all_ranks(model, C.make_loader(ds, 8, False, 0, 0), st.info.device)
    (f, y), (g, t) = feats["train"], feats["val"]
    centroids = torch.stack([f[y == c].mean(0) for c in range(int(y.max()) + 1)])
    acc = 100.0 * (torch.cdist(g, centroids).argmin(1) == t).double().mean().item()
    st.finish("throwaway", st.cfg["protocol"], {"acc": acc}, args.records_dir)
'''
EVAL_DECL = '''
from pathlib import Path

from lewel_bench.declare import Evaluation, Step

PROTOCOL_VERSION = 1
EVALUATIONS = (Evaluation(
    name="throwaway", version=PROTOCOL_VERSION, cli="eval_throwaway", protocols=("centroid",), metrics=("acc",),
    primary="acc", steps=(Step("centroid-probe", "centroid", config="full", mini="mini"),),
    tables=str(Path(__file__).resolve().parent / "tables.yaml")),)
'''
EVAL_CFG = '''
protocol: centroid
dataset: {dataset}
data: {{crop_size: {crop}, resize_size: {resize}, root: null}}
_schema_:
  protocol: str
  dataset: str
  data.crop_size: int >= 8
  data.resize_size: int >= 8
  data.root: str | null
_neutral_: [data.root]
'''
TABLES = '''
tables:
  - name: throwaway_table1
    title: "Throwaway Table 1: nearest-centroid probe"
    paper: Throwaway
    arch: resnet50
    row_attrs: [epochs]
    cells:
      acc: {eval: throwaway, metric: acc, protocols: [centroid], label: Centroid Acc}
'''
PAPER = '''# The throwaway paper's own numbers (made up for the test).
# schema: label:str,method:str,source:str,epochs:int,acc:float
label,method,source,epochs,acc
Throwaway,throwaway_siam,throwaway,100,50.0
'''


def _tree(root: Path) -> None:
    w = lambda p, s: (root / p).parent.mkdir(parents=True, exist_ok=True) or (root / p).write_text(
        textwrap.dedent(s).lstrip())
    w("code/throwaway_method.py", METHOD)
    w("configs/throwaway_siam.yaml", CONFIG.format(repo=REPO_ROOT))
    w("configs/throwaway_siam_mini.yaml", MINI.format(repo=REPO_ROOT))
    w("code/eval_throwaway/__init__.py", '"""A throwaway evaluation."""\n')
    w("code/eval_throwaway/cli.py", EVAL_CLI)
    w("code/eval_throwaway/declaration.py", EVAL_DECL)
    w("code/eval_throwaway/configs/mini.yaml", EVAL_CFG.format(dataset="mini", crop=32, resize=36))
    w("code/eval_throwaway/configs/full.yaml", EVAL_CFG.format(dataset="imagenet", crop=224, resize=256))
    w("code/eval_throwaway/tables.yaml", TABLES)
    w("code/eval_throwaway/throwaway_table1.csv", PAPER)


def _suite_files() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT, text=True,
                          capture_output=True, check=True).stdout


@pytest.mark.slow
def test_a_method_and_an_evaluation_from_outside_run_the_chain_and_appear_in_tables_and_report(
        mini_data: Path, tmp_path: Path) -> None:
    before = _suite_files()
    _tree(tmp_path)
    mini = tmp_path / "mini"
    make_imagenet(mini / "imagenet", classes=3, n_train=8, n_val=3)
    shutil.copy(mini_data / ".complete", mini / ".complete")  # the mini stamp: make generates nothing here
    runs, results, tables, report = (tmp_path / n for n in ("runs", "results", "tables", "report"))
    env = {**os.environ, "LEWEL_RUNS_DIR": str(runs), "LEWEL_RESULTS_DIR": str(results),
           "LEWEL_CONFIG_PATH": str(tmp_path / "configs"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "code"), os.environ.get("PYTHONPATH", "")])}
    common = ["--no-print-directory", f"MINI={mini}", "EXP=throwaway_siam", f"TABLES_ARGS=--out {tables}"]
    dry = subprocess.run(["make", "-n", "all", *common], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert re.search(r"-- eval_throwaway --config mini --ckpt \S+/throwaway_siam/backbone.pth --data \S+/imagenet",
                     dry.stdout), dry.stdout
    r = subprocess.run(["make", "all", *common, "ARGS=tqdm_interval=60"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=1500, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    t = pd.read_csv(tables / "throwaway_table1.csv")
    ours = t[t["source"] == "ours"]   # a mini run: a row of its own below the paper's
    assert list(ours["label"]) == ["throwaway_siam (ours, 1 ep, mini, resnet18)"], t["label"].tolist()
    assert 0 <= ours["acc.ours"].iloc[0] <= 100 and ours["acc.n"].iloc[0] == 1
    assert t[t["dataset"] == "paper"]["acc.paper"].tolist() == [50.0]
    other = pd.read_csv(tables / "other_results.csv")
    assert sorted(other["eval"]) == ["knn", "pretrain"] and set(other["method"]) == {"throwaway_siam"}  # no table
    assert pd.read_csv(tables / "unmatched.csv").empty
    assert "### Throwaway Table 1: nearest-centroid probe" in (tables / "README.md").read_text()

    r = subprocess.run(["make", "report", f"REPORT_DIR={report}"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    page = (report / "index.html").read_text()
    assert 'id="t-throwaway_table1"' in page and "Throwaway Table 1" in page and "<code>throwaway</code> = Throwaway" \
        in page
    assert 'id="run-throwaway_siam"' in page and page.count(">throwaway_siam<") >= 2  # the run, its records
    assert _suite_files() == before
