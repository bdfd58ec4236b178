"""Benchmark records and the page generated from them: a benchmark tool and a timed command write records (machine,
date, commit, the exact command, the numbers), the page and the README's spans are rendered from them, the
committed page is what the committed records give, and `make help` groups every target."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lewel_bench import benchmarks as B
from lewel_bench.utils import REPO_ROOT


def test_a_benchmark_tool_writes_a_record_and_the_page_shows_its_numbers(tmp_path: Path, capsys) -> None:
    from tools.bench_loader import main

    rec_dir = tmp_path / "records"
    main(["--synthetic", "48", "--workers", "0", "--batch", "4", "--batches", "2", "--size", "32", "--device", "cpu",
          "--modes", "pil", "--bench-record", str(rec_dir), "--bench-note", "tiny run"])
    out = capsys.readouterr().out
    printed = re.search(r"^\| pil \| 0 \| (\d+) \|", out, re.MULTILINE).group(1)
    (rec,) = B.read_records(rec_dir)
    # the command reproduces the run, without the record options
    assert rec["command"] == ("python -m tools.bench_loader --synthetic 48 --workers 0 --batch 4 --batches 2 --size 32 "
                              "--device cpu --modes pil")
    assert rec["name"] == "bench_loader" and rec["device"] == "cpu" and rec["note"] == "tiny run"
    assert rec["machine"]["cores"] >= 1 and rec["machine"]["cpu"] and rec["machine"]["torch"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", rec["commit"]) and rec["date"][:2] == "20"
    (table,) = rec["tables"]
    assert table["rows"] == [["pil", 0, printed, printed]]
    page = B.render_page(B.read_records(rec_dir), "records")
    cpu = page[page.index("## CPU benchmarks"):page.index("## GPU benchmarks")]
    assert "    " + rec["command"] in cpu and f"| pil | 0 | {printed} | {printed} |" in cpu and "Note: tiny run" in cpu
    assert f"commit: `{rec['commit'][:12]}" in cpu and f"`records/{rec['_file']}`" in cpu
    assert "No GPU figure has a record yet." in page


def _record(d: Path, name: str, date: str, value: float, device: str = "cpu", **kw) -> Path:
    return B.write_record(d, name=name, tool="tools.bench_pretrain", command=f"python -m tools.bench_pretrain --x {value}",
                          tables=[B.Table("t", ["a", "b"], [["ratio", value]])], device=device, date=date,
                          commit="a" * 40, machine_info={"cpu": "test CPU", "cores": 2}, **kw)


def test_the_page_shows_the_newest_record_per_name_and_gpu_records_in_their_own_section(tmp_path: Path) -> None:
    _record(tmp_path, "bench_pretrain", "2026-01-01T00:00:00+00:00", 1.5)
    _record(tmp_path, "bench_pretrain", "2026-02-01T00:00:00+00:00", 1.25, summary="1.25 on two cores")
    _record(tmp_path, "bench_pretrain", "2025-12-01T00:00:00+00:00", 1.125, device="NVIDIA X1",
            source="transcribed from an older page")
    recs = B.read_records(tmp_path)
    page = B.render_page(recs, "r")
    cpu, gpu = page.split("## GPU benchmarks")
    assert "| ratio | 1.25 |" in cpu and "1.5" not in cpu and "1 earlier record(s)" in cpu
    assert "| ratio | 1.125 |" in gpu and "**NVIDIA X1**" in gpu and "Source: transcribed from an older page" in gpu
    text = "took <!-- bench:bench_pretrain -->old<!-- /bench --> here"
    assert B.fill_blocks(text, recs) == ("took <!-- bench:bench_pretrain -->1.25 on two cores (`python -m "
                                         "tools.bench_pretrain --x 1.25`, 2 CPU cores, 2026-02-01, commit aaaaaaa)"
                                         "<!-- /bench --> here")
    assert B.fill_blocks("<!-- bench:nothing --><!-- /bench -->", recs) == (
        "<!-- bench:nothing -->(no record named nothing yet: see docs/benchmarks.md)<!-- /bench -->")


def test_a_malformed_record_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from tools.bench_page import main

    (tmp_path / "x.json").write_text(json.dumps({"schema": 1, "name": "x"}))
    with pytest.raises(SystemExit) as e:
        main(["--records", str(tmp_path), "--out", str(tmp_path / "page.md"), "--no-readme"])
    assert e.value.code == 2 and f"{tmp_path / 'x.json'}: missing field(s) tool, command" in str(e.value)


def test_bench_command_records_the_time_the_output_and_the_result_records_it_wrote(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from tools.bench_command import main

    results = tmp_path / "results"
    monkeypatch.setenv("LEWEL_RESULTS_DIR", str(results))
    write = ("import json, os, pathlib; d = pathlib.Path(os.environ['LEWEL_RESULTS_DIR'], 'records'); "
             "d.mkdir(parents=True); (d / 'r.json').write_text(json.dumps({'eval': 'knn', 'protocol': 'mini', "
             "'method': 'random', 'seed': 0, 'metrics': {'top1': 48.04}, 'data': {'name': 'mini'}})); "
             "print('wrote', d / 'r.json')")
    main(["--name", "tiny", "--bench-record", str(tmp_path / "b"), "--", sys.executable, "-c", write])
    (rec,) = B.read_records(tmp_path / "b")
    assert rec["tool"] == "tools.bench_command" and rec["command"].startswith(sys.executable + " -c ")
    timing, results_table = rec["tables"]
    assert timing["rows"][0][1] == 0 and timing["rows"][0][2] == "wrote $LEWEL_RESULTS_DIR/records/r.json"
    assert results_table["rows"] == [["knn", "mini", "random", "mini", 0, "top1 48.0", "ok"]]
    assert rec["summary"] == timing["rows"][0][0]
    with pytest.raises(SystemExit) as e:
        main(["--name", "fails", "--bench-record", str(tmp_path / "b"), "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert e.value.code == 1 and "exited with status 3" in str(e.value)
    failed = [r for r in B.read_records(tmp_path / "b") if r["name"] == "fails"]
    assert failed[0]["summary"].endswith("FAILED (exit status 3)")


def test_the_committed_page_and_readme_are_what_the_committed_records_and_declarations_give() -> None:
    """Every committed record is valid, docs/benchmarks.md is rendered from them, and the README's measured spans and
    methods table are up to date (`make benchmarks-page` regenerates them)."""
    r = subprocess.run([sys.executable, "-m", "tools.bench_page", "--check"], cwd=REPO_ROOT, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.findall(r"<!-- bench:([\w.-]+) -->", readme), "the README's measured numbers come from records"
    # no number in the README outside the generated spans but those of names (Table 1, ResNet-50, ...)
    outside = re.sub(r"<!-- (bench:[\w.-]+|methods) -->.*?<!-- /(bench|methods) -->", "", readme, flags=re.DOTALL)
    assert not re.findall(r"\b\d+(\.\d+)? ?(s|min|minutes|seconds|images/s|x)\b", outside)


def test_make_help_groups_every_target_and_names_variables_the_make_files_declare() -> None:
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    groups = [ln for ln in out.splitlines() if ln and not ln.startswith(" ") and "\t" not in ln]
    assert groups[:6] == ["Set-up", "Pretraining", "Evaluations", "Checkpoints: inspect and convert", "Chains",
                          "Tables and report"] and "Benchmarks" in groups and "Other" not in groups
    targets = [ln.split("\t")[0] for ln in out.splitlines() if "\t" in ln]
    make_files = [REPO_ROOT / "Makefile", *sorted((REPO_ROOT / "mk").glob("*.mk"))]
    declared = {m for f in make_files for m in re.findall(r"^([a-zA-Z0-9_-]+):.*## ", f.read_text(), re.MULTILINE)}
    assert sorted(targets) == sorted(declared)
    assigned = {m for f in make_files for m in re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:?+]?=", f.read_text(), re.MULTILINE)}
    assigned |= {m for f in make_files for m in re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", f.read_text())}  # read only
    named = set()
    for f in make_files:
        for ln in re.findall(r"^##@ .*? \| (.*)$", f.read_text(), re.MULTILINE):
            named |= set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", re.sub(r"\([^()]*\)", "", ln)))
    assert named and not named - assigned, f"##@ lines name variables no make file assigns or reads: {named - assigned}"
    # every user-facing variable a make file declares with ?= is named in some group
    user = {m for f in make_files for m in re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", f.read_text(), re.MULTILINE)}
    assert not user - named, f"variables no `make help` group names: {sorted(user - named)}"
