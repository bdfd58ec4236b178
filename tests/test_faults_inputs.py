"""Trust at the edges: every input of every command line is taken correctly or refused in one line naming it.

The rules, each applied to every command line the code holds (not to a list of cases): every path argument
(missing, a file for a folder and the reverse, under a file, a symlink loop, read-only; spaces and non-ASCII
characters taken as they are), every seed and number (a range check naming the key; ``--seed`` checked in one
place), every config source (syntax errors with file and line, duplicate keys refused, list and mapping
overrides), every image mode a reader may meet, segmentation masks, Ctrl-C, the make variables (quoted paths,
counts, the venv), a result whose record cannot be written, and the detectron2 backend's settings (every key of
the protocol config reaches detectron2 or is refused, naming it).

The command lines are found in the code: every package with a ``__main__.py`` (its ``cli.main``) and every
module with a ``__main__`` block; their arguments are read from their own parsers. A stage, a tool or an
argument added later is covered by these tests without touching this file.
"""
from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import d2_cfg, make_imagenet, records_in
from lewel_bench.args import (
    SEED_MAX,
    ArgumentParser,
    CheckpointArg,
    ConfigArg,
    Number,
    PathArg,
    check_path,
    path_actions,
    seed_arg,
)
from lewel_bench.config import ConfigError
from lewel_bench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REFUSED, CommandExit, PathError
from lewel_bench.utils import REPO_ROOT

PACKAGES = sorted(d.name for d in REPO_ROOT.iterdir() if (d / "__init__.py").is_file() and d.name != "tests")


def command_modules() -> list[str]:
    """Every command line: each package's ``__main__.py`` (its ``cli.main`` when the package has a ``cli.py``), and
    every module with a ``__main__`` block (tools, the launcher, the stand-alone detectron2 entry point)."""
    out = set()
    for p in PACKAGES:
        for f in (REPO_ROOT / p).rglob("*.py"):
            mod = ".".join(f.relative_to(REPO_ROOT).with_suffix("").parts)
            if f.name == "__main__.py":
                out.add(mod.rsplit(".", 1)[0] + ".cli" if (f.parent / "cli.py").is_file() else mod)
            elif re.search(r'^if __name__ == "__main__":', f.read_text(), re.MULTILINE):
                out.add(mod)
    return sorted(out)


#: make's helpers: they print their own "make ...: <message>" line and exit 2 (no cli_entry)
MAKE_HELPERS = {"pretrain.experiments", "lewel_bench.chain"}


class _Parsed(BaseException):
    """Raised instead of parsing: carries the parser a command line built."""


def parser_of(module: str) -> ArgumentParser:
    """The parser ``module.main`` builds, caught when it starts parsing (nothing of the command runs)."""
    mod = importlib.import_module(module)

    def catch(self: Any, *a: Any, **k: Any) -> Any:
        raise _Parsed(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ArgumentParser, "parse_known_args", catch)
        try:
            mod.main(["--", "x"] if module == "lewel_bench.launch" else [])
        except _Parsed as got:
            return got.args[0]
    raise AssertionError(f"{module}.main returned without parsing its arguments with lewel_bench.args.ArgumentParser")


COMMANDS = command_modules()
PARSERS = {m: parser_of(m) for m in COMMANDS}


def _arg_name(action: Any) -> str:
    return action.option_strings[0] if action.option_strings else (action.metavar or action.dest)


def _call(module: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, list[str]]:
    """Run ``module.main(argv)`` in this process: (exit status, message, the stderr lines that are not logs)."""
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not re.search(r"\b(INFO|WARNING|DEBUG)\b", ln)]
    return int(e.value.code), str(e.value), lines


def test_the_command_lines_are_found_and_all_share_the_parser_and_the_entry() -> None:
    assert {"eval_knn.cli", "eval_linear.cli", "eval_semisup.cli", "eval_detection.cli", "eval_segmentation.cli",
            "pretrain.cli", "lewel_bench.launch", "tools.make_tables", "tools.convert_to_mmseg"} <= set(COMMANDS)
    for m in COMMANDS:
        assert isinstance(PARSERS[m], ArgumentParser), m
        if m not in MAKE_HELPERS:
            assert getattr(importlib.import_module(m).main, "command_name", None), f"{m}.main lacks cli_entry"


# ================================================================================================
# paths
# ================================================================================================
@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of hostile paths: a file, a folder, a symlink loop, a folder with spaces and non-ASCII
    characters, and (when this machine can make one) a read-only folder."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "afile").write_text("x\n")
    (d / "adir").mkdir()
    os.symlink(d / "loop", d / "loop")
    nice = d / "dir with spaces ü"
    nice.mkdir()
    (nice / "ok.yaml").write_text("a: 1\n")
    (nice / "ok.py").write_text("a = 1\n")
    ro = d / "ro"
    ro.mkdir()
    paths = {"dir": d, "nice": nice}
    if os.geteuid() != 0:
        ro.chmod(0o555)
        paths["ro"] = ro
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, check=False).returncode == 0:
        paths["ro"] = ro
    yield paths
    if os.geteuid() == 0 and "ro" in paths:
        subprocess.run(["umount", str(ro)], check=False)


#: path kind -> (case, path relative to the hostile folder, what the message says)
BAD_PATHS: dict[str, list[tuple[str, str, str]]] = {
    "dir": [("missing", "nope", "no such folder"), ("a file", "afile", "is a file, expected a folder"),
            ("under a file", "afile/x", "afile is a file, not a folder"), ("symlink loop", "loop", "a symlink loop")],
    "file": [("missing", "nope.yaml", "no such file"), ("a folder", "adir", "is a folder, expected a file"),
             ("under a file", "afile/x.yaml", "afile is a file, not a folder"),
             ("symlink loop", "loop", "a symlink loop")],
    "out_dir": [("a file", "afile", "is a file, expected a folder"),
                ("under a file", "afile/x", "afile is a file, not a folder"),
                ("symlink loop", "loop/x", "a symlink loop"), ("read-only", "ro/x", "read-only file system|not writable")],
    "out_file": [("a folder", "adir", "is a folder, expected a file"),
                 ("under a file", "afile/x.png", "afile is a file, not a folder"),
                 ("symlink loop", "loop/x.png", "a symlink loop"),
                 ("read-only", "ro/x.png", "read-only file system|not writable")],
}
#: a valid value of each kind, for the positionals before the one tried
GOOD = {"dir": "adir", "file": "afile", "out_dir": "adir/new", "out_file": "adir/new.png"}

PATH_CASES = [pytest.param(m, _arg_name(a), kind, case, rel, expect, id=f"{m}:{_arg_name(a)}:{case}")
              for m in COMMANDS for a in path_actions(PARSERS[m])
              for kind in [a.type.kind] for case, rel, expect in BAD_PATHS[kind]]


def _argv_for(module: str, name: str, value: str, base: Path) -> list[str]:
    """``[name, value]`` for an option; for a positional, valid values for the positionals before it."""
    parser = PARSERS[module]
    action = next(a for a in parser._actions if _arg_name(a) == name)
    if action.option_strings:
        return [name, value]
    before = []
    for a in parser._actions:
        if a is action:
            break
        if not a.option_strings and isinstance(a.type, PathArg):
            before.append("random:resnet18" if isinstance(a.type, CheckpointArg) else str(base / GOOD[a.type.kind]))
    return [*before, value]


def test_every_command_line_has_its_paths_declared() -> None:
    assert len(PATH_CASES) > 100
    declared = {(m, _arg_name(a)) for m in COMMANDS for a in path_actions(PARSERS[m])}
    for m, name in [("eval_knn.cli", "--data"), ("eval_knn.cli", "--ckpt"), ("eval_knn.cli", "--out"),
                    ("eval_knn.cli", "--records-dir"), ("eval_segmentation.cli", "--config"), ("pretrain.cli", "config"),
                    ("pretrain.cli", "--out"), ("tools.make_tables", "--records"), ("tools.convert_to_mmseg", "output"),
                    ("lewel_bench.launch", "--job-id-file"), ("tools.make_in100", "--imagenet")]:
        assert (m, name) in declared, (m, name)
    # an argument whose name says it is a path but whose type does not check it
    named = {"data", "out", "ckpt", "records", "json", "imagenet", "paper", "runs", "tables", "bench", "record", "input",
             "output", "subset"}
    for m in COMMANDS:
        for a in PARSERS[m]._actions:
            if (a.dest in named or a.dest.endswith(("_dir", "_file", "_root"))) and a.nargs not in ("+", 0):
                assert isinstance(a.type, PathArg), f"{m} {_arg_name(a)}: a path argument without a path type"


@pytest.mark.parametrize("module,name,kind,case,rel,expect", PATH_CASES)
def test_bad_paths_are_refused_in_one_line_naming_the_argument(module: str, name: str, kind: str, case: str,
                                                               rel: str, expect: str, hostile: dict[str, Path],
                                                               capsys: pytest.CaptureFixture) -> None:
    if case == "read-only" and "ro" not in hostile:
        pytest.skip("no read-only folder can be made here (root without mount)")
    value = str(hostile["dir"] / rel)
    status, msg, lines = _call(module, _argv_for(module, name, value, hostile["dir"]), capsys)
    assert status == EXIT_REFUSED and len(lines) == 1 and lines[0] == msg, (msg, lines)
    assert f"argument {name}: " in msg and value in msg and re.search(expect, msg), msg


@pytest.mark.parametrize("module,name", [(m, _arg_name(a)) for m in COMMANDS for a in path_actions(PARSERS[m])])
def test_paths_with_spaces_and_non_ascii_characters_are_taken_as_they_are(module: str, name: str,
                                                                          hostile: dict[str, Path]) -> None:
    action = next(a for a in PARSERS[module]._actions if _arg_name(a) == name)
    nice = hostile["nice"]
    value = {"dir": nice, "file": nice / ("ok.py" if isinstance(action.type, ConfigArg) and ".py" in
                                          action.type.suffixes else "ok.yaml"),
             "out_dir": nice / "new ü", "out_file": nice / "new ü.png"}[action.type.kind]
    assert action.type(str(value)) == str(value)


def test_check_path_names_what_is_wrong(hostile: dict[str, Path]) -> None:
    d = hostile["dir"]
    assert check_path(d / "new" / "deeper", "out_dir") == d / "new" / "deeper"
    assert check_path("~", "dir") == Path.home()
    with pytest.raises(PathError, match=r"^--x: an empty path"):
        check_path("", "dir", "--x")
    dangling = d / "dangling"
    os.symlink(d / "gone", dangling)
    with pytest.raises(PathError, match="a broken symlink"):
        check_path(dangling, "file")
    # a checkpoint spec is a file, or random:<arch>, or supervised:<file> (its file checked)
    spec = CheckpointArg()
    assert spec("random:resnet50") == "random:resnet50"
    with pytest.raises(Exception, match="no such file"):
        spec(f"supervised:{d / 'nope.pth'}")


def test_a_default_output_folder_under_a_file_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    root = make_imagenet(tmp_path / "in")
    (tmp_path / "runs").write_text("not a folder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEWEL_RUNS_DIR", str(tmp_path / "runs"))
        status, msg, _lines = _call("eval_knn.cli", ["--config", "mini", "--ckpt", "random:resnet18", "--data",
                                                   str(root)], capsys)
    assert status == EXIT_REFUSED and "output folder" in msg and "runs is a file, not a folder" in msg, msg


# ================================================================================================
# numbers and seeds
# ================================================================================================
SEED_ACTIONS = [(m, a) for m in COMMANDS for a in PARSERS[m]._actions if a.dest == "seed"]


def test_every_seed_is_checked_in_one_place() -> None:
    assert {m for m, _ in SEED_ACTIONS} >= {"eval_knn.cli", "eval_linear.cli", "eval_semisup.cli", "eval_detection.cli",
                                            "eval_segmentation.cli", "tools.convert_to_mmseg", "tools.make_mini_data"}
    assert all(a.type is seed_arg for _, a in SEED_ACTIONS), [(m, a.type) for m, a in SEED_ACTIONS if a.type is not seed_arg]
    assert seed_arg("0") == 0 and seed_arg(str(SEED_MAX)) == SEED_MAX


@pytest.mark.parametrize("module", sorted({m for m, _ in SEED_ACTIONS}))
@pytest.mark.parametrize("value", ["-1", str(SEED_MAX + 1), str(2**70), "1.5", "abc", ""])
def test_bad_seeds_are_refused_naming_the_key(module: str, value: str, capsys) -> None:
    status, msg, lines = _call(module, ["--seed", value], capsys)
    assert status == EXIT_REFUSED and len(lines) == 1
    assert "argument --seed: expected an integer in 0..4294967295" in msg, msg


def test_the_config_seed_key_has_the_same_range(mini_data: Path, tmp_path: Path, capsys) -> None:
    from lewel_bench.config import load_config
    from pretrain.experiments import CONFIG_DIR

    assert load_config("byol_mini", CONFIG_DIR, [f"seed={SEED_MAX}"])["seed"] == SEED_MAX
    for value in ("-1", str(SEED_MAX + 1)):
        status, msg, _ = _call("pretrain.cli", ["byol_mini", "--data", str(mini_data / "imagenet"), "--out",
                                                str(tmp_path / "o"), f"seed={value}"], capsys)
        assert status == EXIT_REFUSED and "seed must be seed (an integer in 0..4294967295)" in msg, msg


NUMBER_ACTIONS = [(m, a) for m in COMMANDS for a in PARSERS[m]._actions
                  if isinstance(a.type, Number) or a.type in (int, float)]


def test_every_number_argument_has_a_range() -> None:
    plain = [(m, _arg_name(a)) for m, a in NUMBER_ACTIONS if not isinstance(a.type, Number)]
    assert not plain, f"numbers without a range check: {plain}"
    assert len(NUMBER_ACTIONS) >= 30


@pytest.mark.parametrize("module,action", [pytest.param(m, a, id=f"{m}:{_arg_name(a)}") for m, a in NUMBER_ACTIONS])
def test_numbers_out_of_range_are_refused_naming_the_key(module: str, action: Any, capsys) -> None:
    t: Number = action.type
    bad = [str(t.lo) if t.lo_open else str(t.lo - 1)] if t.lo is not None else []
    bad += [str(t.hi + 1)] if t.hi is not None else []
    for value in bad + ["x", "nan" if t.kind is float else "1.5"]:
        status, msg, lines = _call(module, [action.option_strings[0], value], capsys)
        assert status == EXIT_REFUSED and len(lines) == 1, (value, lines)
        assert f"argument {action.option_strings[0]}: expected {t.text}, got" in msg, msg


def test_make_counts_are_checked(tmp_path: Path) -> None:
    for value in ("-1", "0", "abc", "1.5"):
        r = subprocess.run(["make", "-n", "eval-voc-det", f"SEEDS={value}"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=False)
        assert r.returncode == 2 and f"SEEDS='{value}': expected a positive integer" in r.stderr, r.stderr
    r = subprocess.run(["make", "-n", "eval-knn", "MINI=data/my mini"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "MINI='data/my mini': this path names make targets" in r.stderr
    r = subprocess.run([sys.executable, "-m", "lewel_bench.launch", "--nproc", "0", "--", "eval_knn"], cwd=REPO_ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "argument --nproc: expected an integer >= 1, got 0" in r.stderr


# ================================================================================================
# config sources
# ================================================================================================
CONFIG_ACTIONS = [pytest.param(m, a, id=m) for m in COMMANDS for a in PARSERS[m]._actions
                  if isinstance(a.type, ConfigArg) and a.type.loader is not None]


def _default_config(action: Any) -> str:
    if action.default:
        return action.default
    return min(p.stem for p in action.type.config_dir.glob("*.yaml") if not p.stem.startswith("_"))


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def test_every_stage_with_a_config_declares_its_loader() -> None:
    assert {p.id for p in CONFIG_ACTIONS} >= {"eval_knn.cli", "eval_linear.cli", "eval_semisup.cli",
                                              "eval_detection.cli", "eval_segmentation.cli", "pretrain.cli"}


@pytest.mark.parametrize("module,action", CONFIG_ACTIONS)
def test_config_files_with_syntax_errors_or_duplicate_keys_are_refused(module: str, action: Any, tmp_path: Path,
                                                                       capsys) -> None:
    py = ".py" in action.type.suffixes
    bad = {"syntax": ("x = dict(a=1,\nb = 2\n" if py else "a: 1\nb: [1, 2\nc: 3\n", r"line \d+.*: not valid"),
           "duplicate": ("lr = 0.1\nopt = {'lr': 0.1,\n       'lr': 0.2}\n", (r"line 3: key 'lr' is given twice in one "
                         r"mapping \(first on line 2\)")) if py else
                        ("a: 1\nb:\n  c: 1\n  c: 2\n", r"line 4 column 3: .*key 'c' is given twice \(first on line 3\)")}
    for name, (text, expect) in bad.items():
        f = tmp_path / f"{name}{action.type.suffixes[0]}"
        f.write_text(text)
        with pytest.raises(ConfigError, match=rf"{re.escape(str(f))}.*{expect}"):
            action.type.loader(str(f), [])
    # through the command line: one line, exit 2, naming the file
    argv = [str(tmp_path / f"syntax{action.type.suffixes[0]}")]
    argv = argv if not action.option_strings else ["--config", *argv]
    argv += ["--ckpt", "random:resnet18"] if "--ckpt" in PARSERS[module]._option_string_actions else []
    argv += ["--data", str(tmp_path)] if "--data" in PARSERS[module]._option_string_actions else []
    status, msg, lines = _call(module, argv, capsys)
    assert status == EXIT_REFUSED and len(lines) == 1 and "syntax" in msg and re.search(r"line \d+", msg), lines


@pytest.mark.parametrize("module,action", CONFIG_ACTIONS)
def test_list_and_mapping_overrides_are_checked_in_every_stage(module: str, action: Any) -> None:
    load = action.type.loader
    name = _default_config(action)
    cfg = load(name, [])
    tree = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
    key, value = next((k, v) for k, v in _leaves(tree) if isinstance(v, int) and not isinstance(v, bool)
                      and "." in k and not k.startswith("_"))
    parent, leaf = key.rsplit(".", 1)
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} .*got .*\[1, 2\]"):
        load(name, [f"{key}=[1, 2]"])                      # a list for a number
    with pytest.raises(ConfigError, match=rf"unknown key '{re.escape(parent)}\.no_such_key'"):
        load(name, [f"{parent}={{no_such_key: 1}}"])      # a mapping naming a key the config lacks
    with pytest.raises(ConfigError, match=rf"{re.escape(parent)} is a mapping"):
        load(name, [f"{parent}=3"])                        # a number for a mapping
    with pytest.raises(ConfigError, match="given twice"):
        load(name, [f"{parent}={{{leaf}: 1, {leaf}: 2}}"])  # a mapping with a duplicate key
    got = load(name, [f"{parent}={{{leaf}: {value + 1}}}"])  # a mapping sets the keys it names, keeps the others
    got = got.to_dict() if hasattr(got, "to_dict") else got
    assert dict(_leaves(got))[key] == value + 1
    assert {k: v for k, v in _leaves(got) if k != key and not k.startswith("_")} == \
        {k: v for k, v in _leaves(tree) if k != key and not k.startswith("_")}


def test_every_yaml_reader_uses_the_strict_loader() -> None:
    """No ``yaml.safe_load`` / ``yaml.load`` of a file a user writes, outside lewel_bench/config.py."""
    allowed = {"lewel_bench/config.py", "eval_detection/detectron2_backend.py",  # detectron2's own dump
               "lewel_bench/report/runs.py", "lewel_bench/report/curves.py",  # the config.yaml a run wrote
               "pretrain/experiments.py"}  # a quick look at the configs' variants (load_config reads them strictly)
    found = [str(f.relative_to(REPO_ROOT)) for p in PACKAGES for f in (REPO_ROOT / p).rglob("*.py")
             if re.search(r"yaml\.(safe_)?load\(", f.read_text())]
    assert set(found) <= allowed, set(found) - allowed
    from lewel_bench.launch import LaunchError, load_launch_config

    f = Path(os.environ["LEWEL_RUNS_DIR"]) / "launch.yaml"
    f.write_text("launcher: local\nlauncher: slurm\n")
    with pytest.raises(LaunchError, match=r"launch.yaml, line 2 column 1: .*key 'launcher' is given twice"):
        load_launch_config(f)


# ================================================================================================
# images and masks
# ================================================================================================
def _modes(d: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """One image per PIL mode real datasets hold, with the grey / RGB content it must read as."""
    rng = np.random.default_rng(0)
    g = (rng.random((24, 40)) * 200 + 20).astype(np.uint8)
    rgb = np.stack([g, 255 - g, g // 2], -1)
    grey = np.stack([g] * 3, -1)
    out = {}

    def put(name: str, img: Image.Image, ref: np.ndarray, ext: str = "png") -> None:
        p = d / f"{name}.{ext}"
        img.save(p)
        out[name] = (p, ref)

    put("L", Image.fromarray(g, "L"), grey)
    put("RGBA", Image.fromarray(np.dstack([rgb, np.full_like(g, 128)]), "RGBA"), rgb)
    put("LA", Image.fromarray(np.dstack([g, np.full_like(g, 255)]), "LA"), grey)
    pal = Image.fromarray(rgb).quantize(256)
    put("P", pal, np.asarray(pal.convert("RGB")))
    put("1", Image.fromarray(g > 120), np.stack([(g > 120) * 255] * 3, -1).astype(np.uint8))
    put("I;16", Image.fromarray(g.astype(np.uint16) * 257), grey)
    put("I", Image.fromarray(g.astype(np.int32) * 257, "I"), grey, "tif")
    put("F", Image.fromarray(g.astype(np.float32) / 255, "F"), grey, "tif")
    put("CMYK", Image.fromarray(rgb).convert("CMYK"), rgb, "jpg")
    return out


def test_every_image_mode_is_read_as_its_content_never_blank(tmp_path: Path) -> None:
    from lewel_bench.data import BadImageError, read_image

    for mode, (path, ref) in _modes(tmp_path).items():
        assert Image.open(path).mode == mode, mode
        img = np.asarray(read_image(path), np.float64)
        assert img.shape == ref.shape and img.std() > 20, (mode, img.std())       # never a blank image
        tol = 12 if path.suffix == ".jpg" else 1
        assert np.abs(img - ref).mean() < tol, (mode, np.abs(img - ref).mean())  # its content
    odd = tmp_path / "wide.tif"
    Image.fromarray(np.full((8, 8), 70000, np.int32), "I").save(odd)
    with pytest.raises(BadImageError, match=r"wide.tif: mode I with values 70000..70000: no known range"):
        read_image(odd)


def test_every_reader_decodes_through_the_one_reader() -> None:
    """Images are opened in one place (lewel_bench.data.read_image); the others use it (the VOC annotation reader
    only reads a size, the mini generator writes)."""
    opened = {str(f.relative_to(REPO_ROOT)) for p in PACKAGES for f in (REPO_ROOT / p).rglob("*.py")
              if re.search(r"Image\.open\(", f.read_text())}
    assert opened <= {"lewel_bench/data/imagenet.py", "lewel_bench/data/voc.py"}, opened
    for f in ("pretrain/data.py", "eval_detection/datasets.py", "tools/visualize_alignment.py"):
        assert "read_image" in (REPO_ROOT / f).read_text(), f


def test_an_imagenet_folder_reads_a_16bit_image(tmp_path: Path) -> None:
    from lewel_bench.data import ImageNetFolder

    root = make_imagenet(tmp_path / "in")
    p = root / "val" / "n00000000" / "n00000000_16bit.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(p)
    ds = ImageNetFolder(root, "val")
    img = np.asarray(ds[[s for s, _ in ds.samples].index(str(p))][0])
    assert img.std() > 20 and img.max() > 200


def _mask_case(tmp_path: Path, name: str, mask: np.ndarray, img_hw: tuple[int, int] = (20, 30)) -> dict:
    img = tmp_path / f"{name}.jpg"
    Image.new("RGB", img_hw[::-1]).save(img)
    m = tmp_path / f"{name}.png"
    Image.fromarray(mask).save(m)
    return {"img_path": str(img), "seg_map_path": str(m), "ori_shape": img_hw, "reduce_zero_label": False,
            "seg_fields": [], "label_map": None}


def test_segmentation_masks_are_checked_as_they_are_read(tmp_path: Path) -> None:
    import eval_segmentation.mmseg_ext as ext
    from lewel_bench.data import DataError

    load = ext.CheckedLoadAnnotations(num_classes=11)
    ok = np.zeros((20, 30), np.uint8)
    ok[2:5, 3:9] = 10
    ok[0, :] = 255
    res = load.transform(_mask_case(tmp_path, "ok", ok))
    assert (res["gt_seg_map"] == ok).all()
    cases = {"size": (np.zeros((21, 30), np.uint8), r"mask .*size.png is 30x21 but its image .*size.jpg is 30x20"),
             "labels": (np.where(ok == 10, 12, ok).astype(np.uint8), (r"mask .*labels.png: labels 12 are outside 0..10 "
                                                                       r"and 255 \(ignore\)")),
             "colour": (np.zeros((20, 30, 3), np.uint8), r"colour.png has 3 channels"),
             "wide": (np.full((20, 30), 300, np.uint16), r"wide.png holds labels 300..300 .*0..255")}
    for name, (mask, expect) in cases.items():
        with pytest.raises(DataError, match=expect):
            load.transform(_mask_case(tmp_path, name, mask))
    # reduce_zero_label: label 0 is ignored and k becomes k - 1, so 11 is the last class and 12 is refused
    zero = ext.CheckedLoadAnnotations(num_classes=11, reduce_zero_label=True)
    case = _mask_case(tmp_path, "zero", np.where(ok == 10, 11, ok).astype(np.uint8))
    assert set(np.unique(zero.transform({**case, "reduce_zero_label": True})["gt_seg_map"])) == {10, 255}
    with pytest.raises(DataError, match=r"labels 11 .*after reduce_zero_label"):
        zero.transform({**_mask_case(tmp_path, "zero12", np.where(ok == 10, 12, ok).astype(np.uint8)),
                        "reduce_zero_label": True})
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="garbage.jpg cannot be read"):
        ext.CheckedLoadImageFromFile().transform({"img_path": str(bad)})
    # the segmentation images (OpenCV, BGR): every mode read as its content; 32-bit TIFFs refused, named
    (tmp_path / "modes").mkdir()
    for mode, (path, ref) in _modes(tmp_path / "modes").items():
        if mode in ("I", "F"):
            with pytest.raises(OSError, match=rf"{mode}.tif cannot be read"):
                ext.CheckedLoadImageFromFile().transform({"img_path": str(path)})
            continue
        img = ext.CheckedLoadImageFromFile().transform({"img_path": str(path)})["img"][..., ::-1]
        assert img.std() > 20 and np.abs(img.astype(np.float64) - ref).mean() < (12 if mode == "CMYK" else 1), mode


def test_every_segmentation_pipeline_checks_train_and_test_masks() -> None:
    from eval_segmentation import cli

    for name, depths in cli.CONFIGS.items():
        for depth in depths:
            cfg = cli.read_config(name, [], depth)
            assert cli.checked_pipelines(cfg) >= 4, name
            for key in ("train_dataloader", "test_dataloader"):
                steps = [s["type"] for d in cli.walk_dicts(cfg.get(key)) for s in d.get("pipeline") or []]
                assert "CheckedLoadAnnotations" in steps and "LoadAnnotations" not in steps, (name, key, steps)
                assert "CheckedLoadImageFromFile" in steps and "LoadImageFromFile" not in steps


def test_a_bad_validation_mask_stops_segmentation_naming_the_file(tmp_path: Path, capsys) -> None:
    from lewel_bench.data.mini import DEFAULT_SIZES, write_voc
    from test_segmentation import MINI_CFG, TINY_CFG

    root = tmp_path / "VOCdevkit"
    sizes = {**DEFAULT_SIZES, "det_min_size": 64, "det_max_size": 96, "max_objects": 2}
    write_voc(root / "VOC2012", 2012, seed=0, splits={"train": 2, "val": 2, "aug": 2}, det=sizes)
    val = (root / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    m = root / "VOC2012" / "SegmentationClass" / f"{val}.png"
    arr = np.asarray(Image.open(m))
    Image.fromarray(arr[:-3]).save(m)  # 3 rows short: another size than its image
    cfg = tmp_path / "fcn_r18-d8_tiny.py"
    cfg.write_text(TINY_CFG.format(mini=str(MINI_CFG).replace("r50", "r18")))
    argv = ["--config", str(cfg), "--ckpt", "random:resnet18", "--data", str(root), "--out", str(tmp_path / "o"),
            "--records-dir", str(tmp_path / "rec"), "train_cfg.max_iters=1", "total_batch_size=2"]
    status, msg, lines = _call("eval_segmentation.cli", argv, capsys)
    h, w = arr.shape
    assert status == EXIT_REFUSED and f"mask {m} is {w}x{h - 3} but its image" in msg and f"is {w}x{h}" in msg, msg
    assert lines[-1] == msg and not records_in(tmp_path / "rec")


# ================================================================================================
# a result whose record cannot be written; Ctrl-C
# ================================================================================================
KNN_TINY = ["batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"]


def test_a_result_whose_record_cannot_be_written_is_kept_and_recorded_on_the_next_run(tmp_path: Path, capsys,
                                                                                     monkeypatch) -> None:
    import eval_knn.cli as knn
    from lewel_bench import records
    from lewel_bench.errors import StorageError

    root, out, rec = make_imagenet(tmp_path / "in"), tmp_path / "out", tmp_path / "rec"
    argv = ["--config", "mini", "--ckpt", "random:resnet18", "--data", str(root), "--out", str(out),
            "--records-dir", str(rec), *KNN_TINY]
    real = records.write_record

    def full_disk(*a: Any, **k: Any) -> Any:
        raise StorageError(f"no space left on device while writing {rec}/x.json (ENOSPC)")

    monkeypatch.setattr(records, "write_record", full_disk)
    status, msg, lines = _call("eval_knn.cli", argv, capsys)
    result = json.loads((out / "result.json").read_text())
    assert status == EXIT_FAILED and lines == [msg]
    assert f"the result (top1 {result['metrics']['top1']}) is kept in {out / 'result.json'}" in msg
    assert "no space left on device" in msg and "run the same command again" in msg
    assert result["pending_record"]["metrics"] == result["metrics"] and not records_in(rec)
    monkeypatch.setattr(records, "write_record", real)
    monkeypatch.setattr(knn.C, "extract_features_all_ranks", lambda *a, **k: pytest.fail("ran again"))
    knn.main(argv)  # the same command: the record is written, nothing runs again
    (written,) = records_in(rec)
    assert written["metrics"] == result["metrics"] and written["run_id"] == result["run_id"]
    assert "pending_record" not in json.loads((out / "result.json").read_text())


def test_an_unwritable_records_folder_is_refused_before_any_work(tmp_path: Path, hostile, capsys) -> None:
    root = make_imagenet(tmp_path / "in")
    (tmp_path / "afile").write_text("x")
    for records_dir in ([str(tmp_path / "afile" / "rec")] + ([str(hostile["ro"] / "rec")] if "ro" in hostile else [])):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LEWEL_RESULTS_DIR", records_dir)  # the default records folder: <it>/records
            status, msg, _lines = _call("eval_knn.cli", ["--config", "mini", "--ckpt", "random:resnet18", "--data",
                                                        str(root), "--out", str(tmp_path / "o"), *KNN_TINY], capsys)
        assert status == EXIT_REFUSED and "records folder" in msg and records_dir in msg, msg
        assert not (tmp_path / "o").exists()


def test_cli_entry_exit_statuses() -> None:
    from lewel_bench.errors import LewelError, NonFiniteError
    from lewel_bench.stage import cli_entry

    def raising(e: BaseException) -> Callable[[], None]:
        @cli_entry("toy")
        def main() -> None:
            raise e
        return main

    for exc, status, text in ((LewelError("bad input"), EXIT_REFUSED, "toy: bad input"),
                              (NonFiniteError("loss is nan"), EXIT_FAILED, "toy: loss is nan"),
                              (KeyboardInterrupt(), EXIT_INTERRUPTED, "toy: interrupted (Ctrl-C)"),
                              (LewelError("toy: already named"), EXIT_REFUSED, "toy: already named")):
        with pytest.raises(CommandExit) as e:
            raising(exc)()
        assert e.value.code == status and str(e.value).startswith(text) and str(e.value.code) == str(e.value)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        raising(ZeroDivisionError())()


def _interrupt(argv: list[str], when: str, env: dict, timeout: float = 300) -> tuple[int, str]:
    """Start ``python -m <argv>``, send Ctrl-C (SIGINT) once a stderr line holds ``when``; (status, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    err, t0 = [], time.time()
    while time.time() - t0 < timeout:
        line = p.stderr.readline()
        if not line:
            break
        err.append(line)
        if when in line:
            time.sleep(0.3)
            os.killpg(p.pid, signal.SIGINT)  # the whole process group, as a terminal's Ctrl-C
            break
    _, rest = p.communicate(timeout=120)
    return p.returncode, "".join(err) + rest


@pytest.mark.parametrize("stage", ["eval_knn", "pretrain"])
def test_ctrl_c_ends_a_stage_with_one_line_and_nothing_half_written(stage: str, mini_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if stage == "eval_knn":
        argv = ["eval_knn", "--config", "mini", "--ckpt", "random:resnet18", "--data", str(mini_data / "imagenet"),
                "--out", str(out), "--records-dir", str(tmp_path / "rec"), "data.num_workers=1"]
        when = "run "
    else:
        argv = ["pretrain", "byol_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), "data.num_workers=1",
                "knn.every=0", "tqdm_interval=60"]
        when = "iterations"
    status, err = _interrupt(argv, when, env)
    err = re.sub(r"[^\n]*\d+%\|[^\n]*?(it/s|s/it)[^\n]*?\]", "", err)  # tqdm's bars (a bar leaves no newline)
    lines = [ln for ln in err.splitlines() if ln.strip() and not re.search(r"\b(INFO|WARNING)\b", ln)]
    assert status == EXIT_INTERRUPTED and "Traceback" not in err, err[-3000:]
    # an evaluation stops at once; pretraining finishes its step and saves it (the same command resumes it)
    said = (f"{stage}: interrupted (Ctrl-C)" if stage == "eval_knn" else
            "pretrain: byol_mini: stopped by SIGINT (Ctrl-C) after iteration ")
    assert len(lines) == 1 and lines[0].startswith(said), err[-3000:]
    assert not [p for p in out.rglob(".*.tmp")] and not (out / "result.json").exists()
    if stage == "pretrain":
        assert "the state is saved in" in lines[0] and (out / "checkpoint.pth").is_file()
    assert not records_in(tmp_path / "rec")


# ================================================================================================
# make: quoted paths, real runs with spaces, the venv
# ================================================================================================
def _make_targets() -> list[str]:
    out = subprocess.run(["make", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return [ln.split("\t")[0] for ln in out.splitlines() if "\t" in ln]


SPACED = "/tmp/a dir ü"


@pytest.mark.parametrize("target", [t for t in _make_targets() if t not in ("test", "venv", "data", "help")])
def test_make_recipes_quote_every_path(target: str) -> None:
    variables = {v: f"{SPACED}/{v.lower()}" for v in ("DATA", "OUT", "CKPT", "RUNS", "VOC_DATA", "COCO_DATA", "SUBSET",
                                                      "IMAGENET", "FIGURES_DIR", "ALIGN_IMAGES", "REPORT_DIR", "BENCH",
                                                      "LAUNCH_CONFIG", "SLURM_FOLDER")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEWEL_")}
    r = subprocess.run(["make", "-n", "--no-print-directory", target, *[f"{k}={v}" for k, v in variables.items()]],
                       cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    commands = [ln for ln in r.stdout.replace("\\\n", " ").splitlines() if re.search(r"-m (lewel_bench\.launch|tools\.|pretrain|tensorboard)", ln)]
    assert commands, r.stdout[-2000:]
    for ln in commands:
        words = shlex.split(re.sub(r"\$\([^()]*\)", "X", ln))  # the shell's command substitutions aside
        # a path is one word: an unquoted one would be cut at its space into "/tmp/a", "dir", "ü/..."
        assert not [w for w in words if w.endswith("/tmp/a") or w == "dir" or w.startswith("ü/")], ln
    assert not Path(SPACED).exists(), f"make -n {target} wrote under {SPACED}"  # a dry run changes nothing


def test_make_runs_a_stage_with_spaces_and_non_ascii_characters_in_its_paths(tmp_path: Path) -> None:
    from lewel_bench.checkpoint import random_backbone, save_backbone

    d = tmp_path / "my runs ü"
    root = make_imagenet(d / "image net")
    bb = random_backbone("resnet18")
    save_backbone(d / "back bone.pth", bb.state_dict, {"arch": "resnet18", "method": "byol", "exp": "x", "epochs": 1})
    env = dict(os.environ, LEWEL_RESULTS_DIR=str(d / "results é"))
    r = subprocess.run(["make", "eval-knn", f"CKPT={d / 'back bone.pth'}", f"DATA={root}", f"OUT={d / 'out put'}",
                        f"ARGS={' '.join(KNN_TINY)}"], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = records_in(d / "results é" / "records")
    assert rec["eval"] == "knn" and (d / "out put" / "result.json").is_file()


def test_make_never_rebuilds_the_venv_because_a_file_is_newer_and_swaps_a_new_one_in() -> None:
    os.utime(REPO_ROOT / "requirements.txt")  # a checkout: newer, the same content
    r = subprocess.run(["make", "-q", "venv"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, "make venv would rebuild the venv for a newer requirements.txt"
    dry = subprocess.run(["make", "-n", "venv", "VENV=/tmp/some_x"], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    new = [i for i, ln in enumerate(dry) if 'venv "/tmp/some_x.new"' in ln]
    swap = [i for i, ln in enumerate(dry) if 'mv "/tmp/some_x.new" "/tmp/some_x"' in ln]
    assert new and swap and new[0] < swap[0], dry
    removed = [ln for ln in dry if re.search(r'rm -rf "?/tmp/some_x"?(\s|$)', ln)]
    assert not removed, removed  # the old venv is moved aside only once the new one is complete


# ================================================================================================
# the detectron2 backend: every key of the protocol config reaches detectron2 or is refused
# ================================================================================================
def _d2_built(cfg_file: str, opts: list[str]) -> dict:
    """The detectron2 config the backend builds (its YAML with the overrides merged as ``merge_from_list`` does:
    each value ``literal_eval``'d, strings kept), without detectron2."""
    cfg = d2_cfg(cfg_file)
    for k, v in zip(opts[::2], opts[1::2]):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            pass
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return cfg


def _get(d: dict, key: str) -> Any:
    for p in key.split("."):
        d = d[p]
    return d


def _norm(v: Any) -> Any:
    """Lists for tuples, floats for numbers; on a CPU the backend runs BN for SyncBN (as it always did)."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if v == "SyncBN" and not _cuda():
        return "BN"
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _close(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


#: protocol key -> (detectron2 key, value detectron2 must hold for the config, an override to try) for the keys
#: every detector reads; written out here, independently of the backend's table.
def _sizes_retinanet(c: dict) -> list:
    m = c["model"]
    n = m["retinanet_scales_per_octave"]
    return [[x * 2 ** (i / n) for i in range(n)] for x in m["retinanet_anchor_sizes"]]


COMMON: dict[str, tuple[str, Callable[[dict], Any], Any]] = {
    "model.min_size_train": ("INPUT.MIN_SIZE_TRAIN", lambda c: c["model"]["min_size_train"], [800]),
    "model.max_size": ("INPUT.MAX_SIZE_TEST", lambda c: c["model"]["max_size"], 1000),
    "model.max_size_train": ("INPUT.MAX_SIZE_TRAIN", lambda c: c["model"].get("max_size_train") or c["model"]["max_size"], 1200),
    "model.min_size_test": ("INPUT.MIN_SIZE_TEST", lambda c: c["model"]["min_size_test"], 700),
    "model.aspect_ratios": ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", lambda c: [c["model"]["aspect_ratios"]], [1.0, 2.0]),
    "model.detections_per_img": ("TEST.DETECTIONS_PER_IMAGE", lambda c: c["model"]["detections_per_img"], 50),
    "solver.ims_per_batch": ("SOLVER.IMS_PER_BATCH", lambda c: c["solver"]["ims_per_batch"], 8),
    "solver.base_lr": ("SOLVER.BASE_LR", lambda c: c["solver"]["base_lr"], 0.05),
    "solver.momentum": ("SOLVER.MOMENTUM", lambda c: c["solver"]["momentum"], 0.8),
    "solver.weight_decay": ("SOLVER.WEIGHT_DECAY", lambda c: c["solver"]["weight_decay"], 5e-4),
    "solver.max_iter": ("SOLVER.MAX_ITER", lambda c: c["solver"]["max_iter"], 70000),
    "solver.steps": ("SOLVER.STEPS", lambda c: c["solver"]["steps"], [100, 200]),
    "solver.gamma": ("SOLVER.GAMMA", lambda c: c["solver"]["gamma"], 0.5),
    "solver.warmup_iters": ("SOLVER.WARMUP_ITERS", lambda c: c["solver"]["warmup_iters"], 500),
    "solver.warmup_factor": ("SOLVER.WARMUP_FACTOR", lambda c: c["solver"]["warmup_factor"], 0.01),
    "solver.checkpoint_period": ("SOLVER.CHECKPOINT_PERIOD", lambda c: c["solver"]["checkpoint_period"], 123),
    "solver.log_period": ("LEWEL.LOG_PERIOD", lambda c: c["solver"]["log_period"], 7),
    "solver.no_decay": ("SOLVER.WEIGHT_DECAY_NORM", lambda c: 0.0 if "norm" in c["solver"]["no_decay"] else
                        c["solver"]["weight_decay"], ["bias"]),
    "test.precise_bn_iters": ("TEST.PRECISE_BN.NUM_ITER", lambda c: max(1, c["test"]["precise_bn_iters"]), 33),
    "mask": ("MODEL.MASK_ON", lambda c: c["mask"], None),  # set per arch below
    "num_workers": ("DATALOADER.NUM_WORKERS", lambda c: c["num_workers"], 3),
    "amp": ("SOLVER.AMP.ENABLED", lambda c: c["amp"], True),
}
RCNN = {
    "model.rpn_batch_per_image": ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", lambda c: c["model"]["rpn_batch_per_image"], 64),
    "model.roi_batch_per_image": ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", lambda c: c["model"]["roi_batch_per_image"], 128),
    "model.box_score_thresh": ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", lambda c: c["model"]["box_score_thresh"], 0.1),
    "model.box_nms_thresh": ("MODEL.ROI_HEADS.NMS_THRESH_TEST", lambda c: c["model"]["box_nms_thresh"], 0.6),
    "model.smooth_l1_beta": ("MODEL.RPN.SMOOTH_L1_BETA", lambda c: c["model"]["smooth_l1_beta"], 0.5),
}
#: detectron2 keys set from the same protocol key as the one above (checked beside it)
RCNN_ALSO = {"model.smooth_l1_beta": ("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", lambda c: c["model"]["smooth_l1_beta"])}
BY_ARCH: dict[str, dict[str, tuple[str, Callable[[dict], Any], Any]]] = {
    "c4": {**RCNN,
           "model.anchor_sizes": ("MODEL.ANCHOR_GENERATOR.SIZES", lambda c: [c["model"]["anchor_sizes"]], [64, 128]),
           "model.rpn_pre_nms_train": ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", lambda c: c["model"]["rpn_pre_nms_train"], 5000),
           "model.rpn_post_nms_train": ("MODEL.RPN.POST_NMS_TOPK_TRAIN", lambda c: c["model"]["rpn_post_nms_train"], 900),
           "model.rpn_pre_nms_test": ("MODEL.RPN.PRE_NMS_TOPK_TEST", lambda c: c["model"]["rpn_pre_nms_test"], 3000),
           "model.rpn_post_nms_test": ("MODEL.RPN.POST_NMS_TOPK_TEST", lambda c: c["model"]["rpn_post_nms_test"], 500),
           "model.pooler_resolution": ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", lambda c: c["model"]["pooler_resolution"], 7)},
    "fpn": {**RCNN,
            "model.fpn_anchor_sizes": ("MODEL.ANCHOR_GENERATOR.SIZES", lambda c: [[a] for a in c["model"]["fpn_anchor_sizes"]],
                                       [16, 32, 64, 128, 256]),
            "model.fpn_rpn_pre_nms_train": ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", lambda c: c["model"]["fpn_rpn_pre_nms_train"], 900),
            "model.fpn_rpn_post_nms_train": ("MODEL.RPN.POST_NMS_TOPK_TRAIN", lambda c: c["model"]["fpn_rpn_post_nms_train"], 800),
            "model.fpn_rpn_pre_nms_test": ("MODEL.RPN.PRE_NMS_TOPK_TEST", lambda c: c["model"]["fpn_rpn_pre_nms_test"], 700),
            "model.fpn_rpn_post_nms_test": ("MODEL.RPN.POST_NMS_TOPK_TEST", lambda c: c["model"]["fpn_rpn_post_nms_test"], 600),
            "model.fpn_norm": ("MODEL.FPN.NORM", lambda c: {"bn": "SyncBN", "none": ""}[c["model"]["fpn_norm"]], "none")},
    "retinanet": {
        "model.retinanet_anchor_sizes": ("MODEL.ANCHOR_GENERATOR.SIZES", _sizes_retinanet, [8.0, 16.0, 32.0, 64.0, 128.0]),
        "model.retinanet_scales_per_octave": ("MODEL.ANCHOR_GENERATOR.SIZES", _sizes_retinanet, 2),
        "model.retinanet_iou_thresholds": ("MODEL.RETINANET.IOU_THRESHOLDS", lambda c: c["model"]["retinanet_iou_thresholds"], [0.3, 0.6]),
        "model.retinanet_topk_candidates": ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", lambda c: c["model"]["retinanet_topk_candidates"], 500),
        "model.retinanet_prior_prob": ("MODEL.RETINANET.PRIOR_PROB", lambda c: c["model"]["retinanet_prior_prob"], 0.02),
        "model.retinanet_box_loss": ("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA",
                                     lambda c: {"l1": 0.0, "smooth_l1": 1 / 9, "giou": 0.0}[c["model"]["retinanet_box_loss"]],
                                     "smooth_l1"),
        "model.retinanet_head_norm": ("MODEL.RETINANET.NORM", lambda c: {"none": "", "gn": "GN"}[c["model"]["retinanet_head_norm"]], "gn"),
        "model.box_score_thresh": ("MODEL.RETINANET.SCORE_THRESH_TEST", lambda c: c["model"]["box_score_thresh"], 0.1),
        "model.box_nms_thresh": ("MODEL.RETINANET.NMS_THRESH_TEST", lambda c: c["model"]["box_nms_thresh"], 0.6),
        "model.fpn_norm": ("MODEL.FPN.NORM", lambda c: {"bn": "SyncBN", "none": ""}[c["model"]["fpn_norm"]], "none")},
}
#: keys that are the run's structure, reaching detectron2 otherwise (checked below): the record's labels, the
#: detectron2 file, the detector, the data (its dataset names and, for COCO, the registered paths), the classes
STRUCTURE = {"eval", "protocol", "dataset", "detectron2_config", "arch", "data.format", "data.classes", "data.train",
             "data.test", "solver.steps_rule"}
#: keys detectron2 has no setting for: refused unless they hold what detectron2 runs
FIXED = {"test.batch": 2, "test.max_images": 5, "data.use_07_metric": False}
#: detectron2's defaults (detectron2/config/defaults.py) of the keys the protocol files leave to it
D2_DEFAULTS = {"INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice", "INPUT.MAX_SIZE_TRAIN": 1333, "INPUT.MIN_SIZE_TEST": 800,
               "INPUT.MAX_SIZE_TEST": 1333, "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
               "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]], "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 12000,
               "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000, "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
               "MODEL.RPN.POST_NMS_TOPK_TEST": 1000, "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
               "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
               "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 14,
               "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 1000, "MODEL.RETINANET.PRIOR_PROB": 0.01,
               "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1", "MODEL.RETINANET.NORM": "",
               "MODEL.RETINANET.SCORE_THRESH_TEST": 0.05, "MODEL.RETINANET.NMS_THRESH_TEST": 0.5,
               "TEST.DETECTIONS_PER_IMAGE": 100, "TEST.PRECISE_BN.NUM_ITER": 200, "SOLVER.MOMENTUM": 0.9,
               "SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.WEIGHT_DECAY_NORM": 0.0, "SOLVER.WEIGHT_DECAY_BIAS": 1e-4,
               "SOLVER.GAMMA": 0.1, "SOLVER.WARMUP_FACTOR": 0.001, "SOLVER.WARMUP_ITERS": 1000,
               "SOLVER.WARMUP_METHOD": "linear", "SOLVER.AMP.ENABLED": False, "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
               "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0}
#: what binds the protocol to one run, or is not a result setting (the checkpoint period, the log period)
RUN_KEYS = {"MODEL.WEIGHTS", "OUTPUT_DIR", "SEED", "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES",
            "MODEL.DEVICE", "MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM",
            "SOLVER.CHECKPOINT_PERIOD", "LEWEL.LOG_PERIOD"}


def _protocol_configs() -> list[str]:
    from eval_detection.protocol import CONFIG_DIR

    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _opts(name: str, overrides: list[str] = ()) -> tuple[dict, list[str]]:
    from eval_detection.detectron2_backend import d2_opts_for
    from eval_detection.protocol import CONFIG_DIR, resolve_steps
    from lewel_bench.config import load_config

    cfg = load_config(name, CONFIG_DIR, list(overrides))
    cfg["solver"]["steps"] = resolve_steps(cfg["solver"], name)
    return cfg, d2_opts_for(cfg, ["a", "b", "c"], Path("w.pkl"), Path("out"), 0)


def _expected(arch: str) -> dict[str, tuple[str, Callable[[dict], Any], Any]]:
    exp = {**COMMON, **BY_ARCH[arch]}
    if arch == "retinanet":
        exp.pop("mask")
    else:
        exp["mask"] = ("MODEL.MASK_ON", lambda c: c["mask"], None)
    return exp


@pytest.mark.parametrize("name", _protocol_configs())
def test_every_key_of_the_protocol_config_reaches_detectron2_or_is_declared(name: str) -> None:
    from eval_detection.protocol import UNUSED_MODEL_KEYS

    cfg, opts = _opts(name)
    arch = cfg["arch"]
    built = _d2_built(cfg["detectron2_config"], opts)
    exp = _expected(arch)
    unused = {f"model.{k}" for k in UNUSED_MODEL_KEYS[arch]}
    for key, _ in _leaves({k: v for k, v in cfg.items() if k != "_meta"}):
        structure = any(key == s or key.startswith(s + ".") for s in STRUCTURE)
        refused = key in FIXED or (key == "mask" and arch == "retinanet")  # RetinaNet: mask=true is refused
        assert key in exp or structure or refused or key in unused or \
            (key in ("amp", "num_workers") and cfg[key] == "auto"), f"{name}: {key} neither reaches detectron2 nor is refused"
    for key, (d2_key, value, _) in exp.items():
        if key in ("amp", "num_workers") and cfg[key] == "auto":
            continue  # auto: the detectron2 file's choice (fp32, its workers), not set
        assert _close(_get(built, d2_key), value(cfg)), (name, key, d2_key, _get(built, d2_key), value(cfg))
    if arch != "retinanet":
        for key, (d2_key, value) in RCNN_ALSO.items():
            assert _close(_get(built, d2_key), value(cfg)), (name, key, d2_key, _get(built, d2_key), value(cfg))
    d = cfg["data"]
    train, test = ("coco_2017_train",), ("coco_2017_val",)
    if d["format"] == "voc":
        train, test = tuple(f"voc_{y}_{s}" for y, s in d["train"]), (f"voc_{d['test'][0]}_{d['test'][1]}",)
    assert tuple(_get(built, "DATASETS.TRAIN")) == train and tuple(_get(built, "DATASETS.TEST")) == test
    if not name.startswith("mini_"):  # the paper's protocols: everything passed is what detectron2 ran before
        yaml_cfg = d2_cfg(cfg["detectron2_config"])
        for k, v in zip(opts[::2], opts[1::2]):
            if k in RUN_KEYS or k.startswith("DATASETS.") or k == "MODEL.MASK_ON":
                continue
            try:
                before = _get(yaml_cfg, k)
            except KeyError:
                assert k in D2_DEFAULTS, f"{name}: {k} is neither in the detectron2 file nor a known default"
                before = D2_DEFAULTS[k]
            assert _close(_value(v), before), (name, k, v, before)


@pytest.mark.parametrize("name", [n for n in _protocol_configs() if not n.startswith("mini_")])
def test_every_override_reaches_detectron2_key_by_key(name: str) -> None:
    from eval_detection.protocol import CONFIG_DIR
    from lewel_bench.config import load_config

    base = load_config(name, CONFIG_DIR)
    for key, (d2_key, value, new) in _expected(base["arch"]).items():
        try:
            _get(base, key)
        except KeyError:
            continue  # not a key of this config (model.max_size_train of the VOC protocol)
        if new is None:
            continue
        text = json.dumps(new) if not isinstance(new, str) else new
        over = [f"{key}={text}"]
        if key == "solver.steps" and base["solver"].get("steps_rule", "explicit") != "explicit":
            over.append("solver.steps_rule=explicit")
        cfg, opts = _opts(name, over)
        got = _get(_d2_built(cfg["detectron2_config"], opts), d2_key)
        assert _close(got, value(cfg)), (name, key, got, value(cfg))
        assert key == "solver.no_decay" or _get(cfg, key) == new, (name, key)
    # the case: a learning rate, a warm-up and the train sizes reach detectron2
    cfg, opts = _opts(name, ["solver.base_lr=0.05", "solver.warmup_iters=500", "model.min_size_train=[800]"])
    built = _d2_built(cfg["detectron2_config"], opts)
    assert (built["SOLVER"]["BASE_LR"], built["SOLVER"]["WARMUP_ITERS"], built["INPUT"]["MIN_SIZE_TRAIN"]) == (0.05, 500, (800,))


def test_what_detectron2_cannot_run_is_refused_naming_the_key_and_the_backend(mini_data: Path, capsys) -> None:
    from eval_detection.detectron2_backend import check_for_detectron2
    from eval_detection.protocol import CONFIG_DIR, check_overrides
    from lewel_bench.config import load_config

    for key, value in FIXED.items():
        cfg = load_config("voc_c4_24k", CONFIG_DIR, [f"{key}={json.dumps(value)}"])
        with pytest.raises(ConfigError, match=rf"{key}=.* is not possible with the detectron2 backend"):
            check_for_detectron2(cfg)
    with pytest.raises(ConfigError, match=r"solver.no_decay \['ndim1'\] is not possible with the detectron2 backend"):
        check_for_detectron2(load_config("coco_c4_1x", CONFIG_DIR, ["solver.no_decay=[ndim1]"]))
    with pytest.raises(ConfigError, match=r"arch=fpn is not possible with the detectron2 backend: it runs "
                                          r"coco_R_50_C4_1x.yaml, a c4 detector"):
        check_for_detectron2(load_config("coco_c4_1x", CONFIG_DIR, ["arch=fpn"]))
    # a key the detector does not read: refused in both backends
    for name, key in (("coco_fpn_1x", "model.pooler_resolution=7"), ("coco_retinanet_1x", "model.rpn_pre_nms_train=9"),
                      ("coco_fpn_1x", "model.anchor_sizes=[16]"), ("coco_retinanet_1x", "mask=true")):
        with pytest.raises(ConfigError, match=rf"{key.split('=')[0]}.*{'RetinaNet has no mask' if 'mask' in key else 'does not read it'}"):
            check_overrides(load_config(name, CONFIG_DIR, [key]), name)
    # through the command line, before any work: one line, exit 2
    status, msg, lines = _call("eval_detection.cli", ["--config", "mini_voc_c4_24k", "--ckpt", "random:resnet18",
                                                      "--data", str(mini_data / "VOCdevkit"), "--backend", "detectron2",
                                                      "test.batch=2"], capsys)
    assert status == EXIT_REFUSED and lines == [msg] and "test.batch=2 is not possible with the detectron2 backend" in msg
