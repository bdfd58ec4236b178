"""Experiment names: which config ``make pretrain EXP=<name>`` runs, with and without ``DATA``; where configs are.

``python -m pretrain.experiments resolve EXP [--full] [--path]`` prints the config the make targets run: on the
embedded mini data (no ``DATA``) ``EXP`` is a method recipe with a mini version (``lewel_m`` ->
``lewel_m_mini``); with ``DATA`` (``--full``) it is a full-data config (``lewel_m``, ``lewel_b_400ep``,
``mocov2_in100``, ...). An unknown name exits with status 2 and suggests close names, listing only the
names that mode accepts (never the internal ``_base`` / ``_mini`` files). ``list [--full]`` prints them;
``figures EXP`` the figure targets the method has (``curves``, and ``align-maps`` when its class has alignment
maps). Imports no torch (but ``figures``): the make targets call it before anything heavy.

Configs are found in ``pretrain/configs`` and in the folders of ``$LEWEL_CONFIG_PATH`` (separated like
``PATH``): a method defined outside the suite keeps its configs in its own folder (their ``custom_imports`` name
its code). A suite config is printed by name, any other by path (``--path``: always the path).
"""
from __future__ import annotations

import difflib
import os
import sys
from functools import lru_cache
from pathlib import Path

from lewel_bench.errors import LewelError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MINI_SUFFIX = "_mini"
#: ``make pretrain``'s default experiment (the Makefile's ``EXP``), for tools that need one.
DEFAULT_EXP = "lewel_m"
CONFIG_PATH_ENV = "LEWEL_CONFIG_PATH"


def config_dirs() -> list[Path]:
    """``pretrain/configs``, then every folder of ``$LEWEL_CONFIG_PATH``."""
    extra = [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p.strip()]
    return [CONFIG_DIR, *extra]


def config_files(dirs: list[Path] | None = None) -> dict[str, Path]:
    """Every experiment config by name (not the internal ``_*.yaml`` bases); the first folder wins."""
    out: dict[str, Path] = {}
    for d in (config_dirs() if dirs is None else dirs):
        for p in sorted(d.glob("*.yaml")):
            if not p.stem.startswith("_"):
                out.setdefault(p.stem, p)
    return out


def configs(config_dir: Path | None = None) -> list[str]:
    """Every experiment config name."""
    return sorted(config_files(None if config_dir is None else [config_dir]))


def experiments(full: bool, config_dir: Path | None = None) -> list[str]:
    """The ``EXP`` names accepted: full-data configs (``full``), else the mini recipes' names."""
    names = configs(config_dir)
    if full:
        return [n for n in names if not n.endswith(MINI_SUFFIX)]
    return [n[: -len(MINI_SUFFIX)] for n in names if n.endswith(MINI_SUFFIX)]


def resolve(exp: str, full: bool, config_dir: Path | None = None) -> str:
    """The config name ``EXP`` selects; ``ValueError`` with close names when there is none."""
    names = experiments(full, config_dir)
    if exp in names:
        return exp if full else exp + MINI_SUFFIX
    close = difflib.get_close_matches(exp, names, n=4, cutoff=0.4)
    mode = ("with DATA (a full-data config)" if full else
            "on the embedded mini data (a recipe with a mini version; DATA=/path selects the full-data configs)")
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    other = experiments(not full, config_dir)
    also = (f" ('{exp}' exists {'without' if full else 'with'} DATA.)" if exp in other else "")
    raise ValueError(f"unknown experiment EXP={exp!r} {mode}.{hint}{also} Experiments: {' '.join(names)}")


def config_path(name: str) -> Path:
    """The file of the experiment config ``name`` (a name of :func:`configs`, or a path to a YAML file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    files = config_files()
    if name not in files:
        close = difflib.get_close_matches(name, list(files), n=3, cutoff=0.4)
        raise ValueError(f"unknown experiment config {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                   else ""))
    return files[name]


def shown(name: str, path: bool = False) -> str:
    """How the make targets pass a config: its name when it is the suite's, else its path."""
    p = config_path(name)
    return str(p) if path or p.parent != CONFIG_DIR else name


def method_configs() -> dict[str, dict]:
    """The paper config of every method: ``<method>.yaml`` whose ``method`` key is its own name (with ``_base_``
    resolved, no schema check), by method name."""
    from lewel_bench.config import load_yaml_config

    out = {}
    for name, p in config_files().items():
        if name.endswith(MINI_SUFFIX):
            continue
        cfg = load_yaml_config(p)
        if cfg.get("method") == name:
            out[name] = cfg
    return out


def variants() -> dict[str, str]:
    """Experiment name -> the variant its config declares (``paper.variant``, e.g. ``multi``, inherited through
    ``_base_``), where it has one. Each file is parsed once (per config path)."""
    return dict(_variants(os.environ.get(CONFIG_PATH_ENV, "")))


@lru_cache(maxsize=4)
def _variants(config_path: str) -> dict[str, str]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    own: dict[Path, dict] = {}

    def variant(path: Path, seen: tuple = ()) -> str:
        path = path.resolve()
        if path in seen or not path.is_file():
            return ""
        if path not in own:
            own[path] = yaml.load(path.read_text(), Loader=loader) or {}
        doc = own[path]
        mine = (doc.get("paper") or {}).get("variant") if isinstance(doc.get("paper"), dict) else None
        if mine is not None:
            return str(mine)
        bases = doc.get("_base_") or []
        for b in reversed([bases] if isinstance(bases, str) else bases):  # the last base wins, as in a merge
            v = variant(path.parent / b, seen + (path,))
            if v is not None and v != "":
                return v
        return ""

    return {name: v for name, p in config_files().items() if (v := variant(p))}


def figures(exp: str, full: bool) -> list[str]:
    """The figure targets for ``EXP``'s method: ``curves``, and ``align-maps`` when its class has alignment maps."""
    from lewel_bench.config import load_yaml_config

    from .methods import method_class

    cfg = load_yaml_config(config_path(resolve(exp, full)))
    return ["curves", *(["align-maps"] if method_class(cfg).has_alignment_maps else [])]


def main(argv: list[str] | None = None) -> int:
    from lewel_bench.args import ArgumentParser

    p = ArgumentParser(prog="python -m pretrain.experiments", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve", help="print the config EXP selects")
    r.add_argument("exp")
    r.add_argument("--full", action="store_true", help="DATA is set: full-data configs")
    r.add_argument("--path", action="store_true", help="print the config's file path")
    ls = sub.add_parser("list", help="list the EXP names")
    ls.add_argument("--full", action="store_true")
    fg = sub.add_parser("figures", help="the figure targets of EXP's method")
    fg.add_argument("exp")
    fg.add_argument("--full", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "list":
        print(" ".join(experiments(a.full)))
        return 0
    try:
        if a.cmd == "figures":
            print(" ".join(figures(a.exp, a.full)))
        else:
            print(shown(resolve(a.exp, a.full), a.path))
    except (ValueError, LewelError) as e:
        print(f"make pretrain: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
