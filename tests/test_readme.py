"""A newcomer's run: the README's own commands, in the order it gives them, on the (test) mini data.

The commands are read from README.md itself (every indented line starting with ``make``), so the front page cannot
drift from the suite. The test appends only tiny overrides through the variables every target documents (``ARGS``,
``MINI``, ``TABLES_ARGS``, ``REPORT_DIR``) and sends runs and records to temporary folders; ``make test`` (this suite)
is not run from inside itself, and the SLURM chain is checked with ``make -n`` (no cluster here). A published
checkpoint the README names is written by the test in the layout its name says (random weights, its code's names).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import torch

from helpers import records_in
from lewel_bench.utils import REPO_ROOT

#: per target, the tiny overrides appended to the README's command (small images, one epoch, a few images)
TINY = {
    "pretrain": [("ARGS=epochs=1 data.max_images=48 batch_size=8 aug.size=32 data.num_workers=0 num_threads=1 "
                  "knn.every=0 model.hidden=64 model.dim=32 ckpt.every_iters=100 tqdm_interval=60")],
    "eval-linear": ["ARGS=epochs=1 cached_views=1 data.crop_size=32 data.resize_size=36 data.num_workers=0"],
    "eval-knn": ["ARGS=k=3 data.crop_size=32 data.resize_size=36 data.num_workers=0"],
}
#: the published checkpoints the README names, and the layout their names say (written by the test)
PUBLISHED = {"moco_v2_800ep_pretrain.pth.tar": "moco"}
SLURM_SECTION = "Run a paper chain on SLURM"


def readme_commands() -> list[tuple[str, list[str]]]:
    """(section, the command's words) of every indented ``make`` line of README.md, in order."""
    out, section = [], ""
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("    make "):
            out.append((section, shlex.split(line, comments=True)))
    return out


def write_moco(path: Path) -> None:
    """A MoCo v2 ``checkpoint_*.pth.tar``: ``state_dict`` of the DDP-wrapped model (``module.encoder_q`` /
    ``encoder_k`` with the MLP head as ``fc``, the queue), ``epoch``, ``arch``, the optimiser (random weights)."""
    import torchvision

    sd = {}
    for enc in ("encoder_q", "encoder_k"):
        r = torchvision.models.resnet18()
        r.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
        sd.update({f"module.{enc}.{k}": v for k, v in r.state_dict().items()})
    sd["module.queue"] = torch.randn(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
               path)


def test_the_readme_commands_run_in_order_from_pretraining_to_the_report(mini_data: Path, tmp_path: Path) -> None:
    commands = readme_commands()
    targets = [c[1] for _, c in commands]
    # the first screen: set-up, pretraining, evaluating one's own and a published checkpoint, tables, the report
    for needed in ("pretrain", "test", "eval-linear", "eval-knn", "tables", "report", "all"):
        assert needed in targets, f"README.md gives no `make {needed}` command"
    assert targets.index("pretrain") < targets.index("eval-linear") < targets.index("tables") < targets.index("report")

    mini = tmp_path / "mini"  # the test mini data (its stamp: make generates nothing)
    mini.mkdir()
    for p in mini_data.iterdir():
        (mini / p.name).symlink_to(p)
    runs, results = tmp_path / "runs", tmp_path / "results"
    env = {**os.environ, "LEWEL_RUNS_DIR": str(runs), "LEWEL_RESULTS_DIR": str(results)}
    extra = {"tables": [f"TABLES_ARGS=--out {tmp_path / 'tables'}"], "report": [f"REPORT_DIR={tmp_path / 'report'}"]}
    logs = {}
    for section, words in commands:
        target = words[1]
        if target == "test":
            continue  # this suite
        dry = section == SLURM_SECTION or words[1] == "-n"
        args = []
        for w in words[2:]:
            name, _, value = w.partition("=")
            if name == "CKPT" and value in PUBLISHED:
                assert PUBLISHED[value] == "moco", f"the test writes no {PUBLISHED[value]} checkpoint yet"
                path = tmp_path / value
                if not path.exists():
                    write_moco(path)
                w = f"CKPT={path}"
            elif name == "CKPT" and not value.startswith(("random:", "supervised:")) and not (REPO_ROOT / value).exists():
                raise AssertionError(f"README.md: `{' '.join(words)}` names {value}: add it to PUBLISHED with its layout")
            args.append(w)
        cmd = ["make", "--no-print-directory", *(["-n"] if dry else []), target, *args, f"MINI={mini}",
               *TINY.get(target, []), *extra.get(target, [])]
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
        print(f"{time.perf_counter() - t:6.1f} s  {' '.join(words)}")
        assert r.returncode == 0, f"{' '.join(words)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        logs[" ".join(words)] = r.stdout + r.stderr

    # what the README says the commands do
    out = logs["make pretrain EXP=lewel_m"]
    assert re.search(r"^pretrain lewel_m: backbone \S*lewel_m/backbone\.pth$", out, re.MULTILINE), out[-2000:]
    assert (runs / "lewel_m" / "backbone.pth").is_file()
    recs = records_in(results / "records")
    linear = [r for r in recs if r["eval"] == "linear"]
    knn = [r for r in recs if r["eval"] == "knn"]
    assert [r["method"] for r in linear] == ["lewel_m"] and linear[0]["status"] == "ok"
    assert [(r["source_layout"], r["prefix"]) for r in knn] == [("moco", "state_dict.module.encoder_q.")]
    assert "layout: moco" in logs["make inspect CKPT=moco_v2_800ep_pretrain.pth.tar"]
    assert (tmp_path / "tables" / "README.md").is_file()
    page = (tmp_path / "report" / "index.html").read_text()
    assert "lewel_m" in page and "moco" in page
    # the SLURM chain: every step submitted through the launcher as a SLURM job, chained with afterok
    (chain,) = [k for k in logs if k.startswith("make all ")]
    assert "--launcher slurm" in logs[chain] and "afterok" in logs[chain], logs[chain][-3000:]
    shutil.rmtree(runs, ignore_errors=True)
