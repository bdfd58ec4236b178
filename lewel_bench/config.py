"""Experiment configs are data: YAML files with ``_base_`` inheritance and validated overrides.

A config file may name a ``_base_`` (a path relative to itself, or a list of them); its keys are
deep-merged over the base. Command-line overrides are ``dotted.key=value`` strings whose value is
parsed as YAML (``lr=0.1``, ``aug.scale=[0.2,1.0]``, ``amp=false``). Overriding a key that the config
does not define is an error that lists the closest known keys, so a typo never silently does nothing.
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or an override is malformed; the message names the file or key."""


#: Scientific notation without a dot (``5e-4``): YAML 1.1 (PyYAML) reads it as a string, we read a float.
_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(obj: Any) -> Any:
    """``obj`` with every string that is a number in scientific notation turned into a float."""
    if isinstance(obj, str) and _SCI_FLOAT.fullmatch(obj):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return _numbers(data)


def load_yaml_config(path: str | Path, _seen: tuple = ()) -> dict:
    """Read one YAML config, resolving ``_base_`` recursively (cycles are an error)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config _base_ cycle: {' -> '.join(map(str, _seen + (path,)))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for b in bases:
        merged = _deep_merge(merged, load_yaml_config(path.parent / b, _seen + (path,)))
    return _deep_merge(merged, data)


def flatten_keys(cfg: Mapping, prefix: str = "") -> list[str]:
    """All dotted keys of a nested mapping (leaves and inner nodes)."""
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, Mapping):
            keys.extend(flatten_keys(v, full + "."))
    return keys


def apply_overrides(cfg: dict, overrides: Iterable[str], source: str = "config") -> dict:
    """Apply ``dotted.key=value`` overrides; unknown keys raise ``ConfigError`` with close matches."""
    cfg = copy.deepcopy(cfg)
    known = flatten_keys(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise ConfigError(f"unknown key {key!r} in override {item!r} for {source}.{hint}")
        try:
            value = _numbers(yaml.safe_load(raw) if raw != "" else "")
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        if _is_number(node[parts[-1]]) and not _is_number(value):
            raise ConfigError(f"override {item!r}: {key} is a number ({node[parts[-1]]!r} in {source}), "
                              f"got {value!r}")
        node[parts[-1]] = value
    return cfg


def resolve_config_path(name: str | Path, config_dir: str | Path) -> Path:
    """A config given by name (``lewel_m``) is looked up as ``<config_dir>/<name>.yaml``; a path is used as is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = Path(config_dir) / f"{name}.yaml"
    if cand.exists():
        return cand
    avail = sorted(q.stem for q in Path(config_dir).glob("*.yaml"))
    close = difflib.get_close_matches(str(name), avail, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown experiment {str(name)!r}: no {cand}. Available: {', '.join(avail)}.{hint}")


def load_config(name: str | Path, config_dir: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Load the experiment ``name`` from ``config_dir`` and apply ``overrides``."""
    path = resolve_config_path(name, config_dir)
    cfg = load_yaml_config(path)
    cfg = apply_overrides(cfg, overrides, source=str(path))
    cfg.setdefault("_meta", {})["config_path"] = str(path)
    return cfg
