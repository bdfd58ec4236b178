"""Experiment configs are data: YAML files with ``_base_`` inheritance, a schema, and validated overrides.

A config file may name a ``_base_`` (a path relative to itself, or a list of them); its keys are
deep-merged over the base. Command-line overrides are ``dotted.key=value`` strings whose value is
parsed as YAML (``lr=0.1``, ``aug.scale=[0.2,1.0]``, ``amp=false``). Overriding a key that the config
does not define is an error that lists the closest known keys, so a typo never silently does nothing.

Schema: a config (usually its base file) declares the type and allowed values of every key once, under
``_schema_`` (dotted key -> type expression, inherited through ``_base_`` like any key), e.g.::

    _schema_:
      epochs: int >= 1
      amp: bool | auto
      optim.name: sgd | lars
      data.max_images: int >= 1 | null
      aug.scale: list[float >= 0]{2}

Type expressions: alternatives separated by ``|``; each is ``null``, ``bool``, ``str``, ``any``, ``map``
(a free-form mapping), ``int`` / ``float`` with optional bounds (``>= 0``, ``> 0``, ``<= 1``, ``< 1``),
``list[<expression>]`` with an optional length ``{n}`` or ``{min,max}``, or a literal word (``auto``,
``sgd``). A config with a schema is checked when loaded: a key the schema does not declare, or a value
outside its type, is a :class:`ConfigError` naming the key, the file or override, what was expected and
what was given (``amp=maybe`` is refused, not read as true). ``_neutral_`` lists the keys that do not
change a run's result (logging, worker counts, checkpoint intervals): they are left out of the run's
identity (:mod:`lewel_bench.stage`), so changing them never invalidates a saved state.
"""
from __future__ import annotations

import copy
import difflib
import math
import operator
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


from .errors import LewelError


class ConfigError(LewelError, ValueError):
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


def get_key(cfg: Mapping, key: str, what: str = "config") -> Any:
    """The value at dotted ``key``; :class:`ConfigError` naming the key when the config has none."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{what} has no key {key!r}")
        node = node[part]
    return node


def apply_overrides(cfg: dict, overrides: Iterable[str], source: str = "config",
                    schema: "Schema | None" = None) -> dict:
    """Apply ``dotted.key=value`` overrides; unknown keys raise ``ConfigError`` with close matches.

    With a ``schema``, each value is checked against its key's type at once (the error names the override).
    """
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
        if schema is not None and schema.covers(key):
            schema.check_value(key, value, f"override {item!r}")
        elif _is_number(node[parts[-1]]) and not _is_number(value):
            raise ConfigError(f"override {item!r}: {key} is a number ({node[parts[-1]]!r} in {source}), "
                              f"got {value!r}")
        node[parts[-1]] = value
    return cfg


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------
_BOUND = re.compile(r"(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_LIST = re.compile(r"^list\[(.+)\](?:\{(\d+)(?:,(\d+))?\})?$")
_WORD = re.compile(r"^[A-Za-z0-9_.+\-/]+$")
_KINDS = ("null", "bool", "str", "any", "map")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def _split_top(text: str, sep: str = "|") -> list[str]:
    """Split ``text`` on ``sep`` outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{" and 1 or 0
        depth -= ch in "]}" and 1 or 0
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur]]


class TypeExpr:
    """A parsed type expression (see the module docstring); ``accepts(value)`` says whether it fits."""

    def __init__(self, text: str, where: str = "schema") -> None:
        self.text = str(text).strip()
        self.alts: list[tuple] = []
        for alt in _split_top(self.text):
            self.alts.append(self._parse(alt, where))

    def _parse(self, alt: str, where: str) -> tuple:
        if alt in _KINDS:
            return (alt,)
        m = _LIST.match(alt)
        if m:
            lo = int(m.group(2)) if m.group(2) else None
            hi = int(m.group(3)) if m.group(3) else lo
            return ("list", TypeExpr(m.group(1), where), lo, hi)
        head = alt.split()[0] if alt.split() else ""
        if head in ("int", "float"):
            rest = alt[len(head):].strip()
            bounds = _BOUND.findall(rest)
            if _BOUND.sub("", rest).strip(" ,"):
                raise ConfigError(f"{where}: cannot read the type {alt!r} (bounds are like '>= 0', '< 1')")
            return (head, [(op, float(v)) for op, v in bounds])
        if _WORD.match(alt):
            return ("literal", alt)
        raise ConfigError(f"{where}: cannot read the type {alt!r}")

    @staticmethod
    def _in_bounds(v: float, bounds: list[tuple[str, float]]) -> bool:
        return all(_OPS[op](v, b) for op, b in bounds)

    def _fits(self, alt: tuple, v: Any) -> bool:
        kind = alt[0]
        if kind == "null":
            return v is None
        if kind == "bool":
            return isinstance(v, bool)
        if kind == "str":
            return isinstance(v, str)
        if kind == "any":
            return True
        if kind == "map":
            return isinstance(v, Mapping)
        if kind == "literal":
            return isinstance(v, str) and v == alt[1]
        if kind == "int":
            return isinstance(v, int) and not isinstance(v, bool) and self._in_bounds(v, alt[1])
        if kind == "float":
            return _is_number(v) and math.isfinite(v) and self._in_bounds(float(v), alt[1])
        if kind == "list":
            _, elem, lo, hi = alt
            if not isinstance(v, (list, tuple)):
                return False
            if lo is not None and not lo <= len(v) <= hi:
                return False
            return all(elem.accepts(x) for x in v)
        raise AssertionError(kind)

    def accepts(self, v: Any) -> bool:
        return any(self._fits(a, v) for a in self.alts)

    def __str__(self) -> str:
        return self.text


class Schema:
    """Dotted key -> :class:`TypeExpr`; a key typed ``map`` or ``any`` covers everything below it."""

    def __init__(self, entries: Mapping[str, Any], where: str = "schema") -> None:
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{where}: _schema_ must be a mapping of dotted keys to types")
        self.where = where
        self.types = {str(k): TypeExpr(v, f"{where}: _schema_.{k}") for k, v in entries.items()}

    def __bool__(self) -> bool:
        return bool(self.types)

    def _owner(self, key: str) -> str | None:
        """The schema key that types ``key``: itself, or a ``map`` / ``any`` ancestor."""
        if key in self.types:
            return key
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):
            anc = ".".join(parts[:i])
            if anc in self.types and any(a[0] in ("map", "any") for a in self.types[anc].alts):
                return anc
        return None

    def covers(self, key: str) -> bool:
        return self._owner(key) is not None

    def check_value(self, key: str, value: Any, source: str) -> None:
        owner = self._owner(key)
        if owner is None:
            close = difflib.get_close_matches(key, list(self.types), n=3, cutoff=0.6)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(f"{source}: key {key!r} is not declared in the config schema{hint}")
        if owner == key and not self.types[key].accepts(value):
            raise ConfigError(f"{source}: {key} must be {self.types[key]}, got {value!r}")

    def validate(self, cfg: Mapping[str, Any], source: str, prefix: str = "") -> None:
        """Check every leaf of ``cfg`` (a mapping with a schema entry of its own counts as a leaf)."""
        for k, v in cfg.items():
            key = f"{prefix}{k}"
            if key == "_meta":
                continue
            if isinstance(v, Mapping) and v and key not in self.types:
                if self._owner(key) is None:
                    self.validate(v, source, key + ".")
                continue
            self.check_value(key, v, source)


def resolve_config_path(name: str | Path, config_dir: str | Path) -> Path:
    """A config given by name (``lewel_m``) is looked up as ``<config_dir>/<name>.yaml``; a path is used as is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = Path(config_dir) / f"{name}.yaml"
    if cand.exists():
        return cand
    avail = sorted(q.stem for q in Path(config_dir).glob("*.yaml") if not q.stem.startswith("_"))
    close = difflib.get_close_matches(str(name), avail, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown experiment {str(name)!r}: no {cand}. Available: {', '.join(avail)}.{hint}")


def load_config(name: str | Path, config_dir: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Load the experiment ``name`` from ``config_dir``, check it against its schema, apply ``overrides``.

    ``cfg["_meta"]`` holds ``config_path``, the ``overrides`` as given and the ``neutral`` keys (see the
    module docstring).
    """
    path = resolve_config_path(name, config_dir)
    cfg = load_yaml_config(path)
    schema = Schema(cfg.pop("_schema_", None) or {}, str(path))
    neutral = cfg.pop("_neutral_", None) or []
    if not isinstance(neutral, list) or not all(isinstance(k, str) for k in neutral):
        raise ConfigError(f"{path}: _neutral_ must be a list of dotted keys")
    if schema:
        schema.validate(cfg, str(path))
    cfg = apply_overrides(cfg, overrides, source=str(path), schema=schema if schema else None)
    cfg["_meta"] = {"config_path": str(path), "overrides": list(overrides), "neutral": list(neutral),
                    "schema": bool(schema)}
    return cfg
