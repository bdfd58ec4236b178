"""Experiment configs are data: YAML files with ``_base_`` inheritance, a schema, and validated overrides.

A config file may name a ``_base_`` (a path relative to itself, or a list of them); its keys are
deep-merged over the base. Command-line overrides are ``dotted.key=value`` strings whose value is
parsed as YAML (``lr=0.1``, ``aug.scale=[0.2,1.0]``, ``amp=false``). Overriding a key that the config
does not define is an error that lists the closest known keys, so a typo never silently does nothing.
A mapping value sets the keys it names and keeps the others (``optim={lr: 0.1}`` is ``optim.lr=0.1``:
each key is checked as if given alone), unless the schema types the key ``map`` or ``any`` (then the
mapping is the value); a list is one value (checked against the key's type). Without a schema an override
keeps the key's type (an int may become a float, a list stays a list, null and a value are
interchangeable). :func:`override_values` is the one override parser: every stage uses it, the
segmentation stage for mmengine's Python configs too.

Every YAML file the suite reads goes through :func:`load_yaml_text`: a syntax error names the file and the
line, and a key given twice in one mapping is refused (YAML would silently keep the last one).

Schema: a config (usually its base file) declares the type and allowed values of every key once, under
``_schema_`` (dotted key -> type expression, inherited through ``_base_`` like any key), e.g.::

    _schema_:
      epochs: int >= 1
      amp: bool | auto
      optim.name: sgd | lars
      data.max_images: int >= 1 | null
      aug.scale: list[float >= 0]{2}

Type expressions: alternatives separated by ``|``; each is ``null``, ``bool``, ``str``, ``any``, ``map``
(a free-form mapping), ``seed`` (an integer in ``0 .. 2**32 - 1``, :data:`lewel_bench.args.SEED_MAX`: the one
range of every seed), ``int`` / ``float`` with optional bounds (``>= 0``, ``> 0``, ``<= 1``, ``< 1``),
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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .args import SEED_MAX
from .errors import LewelError


class ConfigError(LewelError, ValueError):
    """A config file or an override is malformed; the message names the file or key."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader's own error follows
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {first}); YAML would keep the last "
                f"silently: keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML ``text`` read from ``where`` (a file, an override): a syntax error or a duplicate key is a
    :class:`ConfigError` naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}{at}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None


def load_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """A YAML file through :func:`load_yaml_text` (a missing or unreadable file is a :class:`ConfigError`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    return load_yaml_text(text, f"{what} {path}")


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
    data = load_yaml_file(path)
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


def parse_override(item: str) -> tuple[str, Any]:
    """``"dotted.key=value"`` -> ``(key, value)`` with the value read as YAML (:func:`load_yaml_text`)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has no key before '='")
    return key, _numbers(load_yaml_text(raw, f"override {item!r}") if raw.strip() != "" else "")


def _same_kind(old: Any, new: Any) -> bool:
    """An override without a schema keeps the key's type (int <-> float, list <-> tuple, null <-> anything)."""
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if _is_number(old) or _is_number(new):
        return _is_number(old) and _is_number(new)
    if isinstance(old, (list, tuple)) or isinstance(new, (list, tuple)):
        return isinstance(old, (list, tuple)) and isinstance(new, (list, tuple))
    if isinstance(old, Mapping) or isinstance(new, Mapping):
        return isinstance(old, Mapping) and isinstance(new, Mapping)
    return type(old) is type(new)


def _kind(v: Any) -> str:
    return "null" if v is None else {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list",
                                    dict: "mapping"}.get(type(v), type(v).__name__)


def override_values(cfg: Mapping, overrides: Iterable[str], source: str = "config",
                    schema: Schema | None = None) -> dict[str, Any]:
    """``key=value`` overrides as ``{dotted key: value}`` leaves, each checked against ``cfg`` (the key exists)
    and the ``schema`` (or, without one, the key's current type); see the module docstring for mappings and
    lists. The one override parser of the suite (YAML configs and mmengine's Python configs alike)."""
    known = set(flatten_keys(cfg))
    out: dict[str, Any] = {}

    def unknown(key: str, item: str) -> ConfigError:
        close = difflib.get_close_matches(key, sorted(known), n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        return ConfigError(f"unknown key {key!r} in override {item!r} for {source}.{hint}")

    def put(key: str, value: Any, item: str) -> None:
        if key not in known:
            raise unknown(key, item)
        old = get_key(cfg, key)
        declared = schema is not None and schema.covers(key)
        whole = declared and (schema._owner(key) != key or schema.is_container(key))
        if isinstance(value, Mapping) and isinstance(old, Mapping) and not whole:
            if not value:
                raise ConfigError(f"override {item!r}: an empty mapping for {key} sets nothing (give key: value "
                                  f"pairs, e.g. {key}.<key>=<value>)")
            for k, v in value.items():
                put(f"{key}.{k}", v, item)
            return
        if declared:
            schema.check_value(key, value, f"override {item!r}")
        elif isinstance(old, Mapping) and not isinstance(value, Mapping):
            raise ConfigError(f"override {item!r}: {key} is a mapping in {source} (keys "
                              f"{', '.join(map(str, list(old)[:6]))}), got {_kind(value)} {value!r}; set its keys "
                              f"({key}.<key>=<value>)")
        elif not _same_kind(old, value):
            raise ConfigError(f"override {item!r}: {key} is {_kind(old)} ({old!r} in {source}), got "
                              f"{_kind(value)} {value!r}")
        out[key] = value

    for item in overrides:
        key, value = parse_override(item)
        put(key, value, item)
    return out


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The dotted keys the overrides set (a mapping value sets its leaves: ``optim={lr: 1}`` -> ``optim.lr``)."""
    def leaves(key: str, value: Any) -> list[str]:
        if isinstance(value, Mapping) and value:
            return [k for sub, v in value.items() for k in leaves(f"{key}.{sub}", v)]
        return [key]

    return [k for item in overrides for k in leaves(*parse_override(item))]


def set_key(cfg: dict, key: str, value: Any) -> None:
    """Set the value at dotted ``key`` (its parents exist)."""
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: Iterable[str], source: str = "config",
                    schema: Schema | None = None) -> dict:
    """A copy of ``cfg`` with the ``dotted.key=value`` overrides (:func:`override_values`) applied; an unknown
    key is a ``ConfigError`` with close matches, a value of the wrong type one naming the override."""
    cfg = copy.deepcopy(cfg)
    for key, value in override_values(cfg, overrides, source, schema).items():
        set_key(cfg, key, value)
    return cfg


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------
_BOUND = re.compile(r"(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_LIST = re.compile(r"^list\[(.+)\](?:\{(\d+)(?:,(\d+))?\})?$")
_WORD = re.compile(r"^[A-Za-z0-9_.+\-/]+$")
_KINDS = ("null", "bool", "str", "any", "map", "seed")
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
        if kind == "seed":
            return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= SEED_MAX
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
        return re.sub(r"\bseed\b", f"seed (an integer in 0..{SEED_MAX})", self.text)


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

    def is_container(self, key: str) -> bool:
        """``key`` is declared ``map`` or ``any``: a mapping override is its whole value."""
        return key in self.types and any(a[0] in ("map", "any") for a in self.types[key].alts)

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


def check_python_config(path: str | Path, _seen: tuple = ()) -> None:
    """Refuse a Python config (mmengine's ``.py`` configs) with a syntax error or a literal mapping that gives a
    key twice (``{'lr': 0.1, 'lr': 0.2}``: Python keeps the last silently), naming the file and the line;
    its ``_base_`` files (literal relative paths) are checked too."""
    import ast

    path = Path(path).resolve()
    if path in _seen or not path.is_file():
        return
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"config file {path}, line {e.lineno}: not valid Python: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({e})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            seen: dict[Any, int] = {}
            for k in node.keys:
                if isinstance(k, ast.Constant):
                    if k.value in seen:
                        raise ConfigError(f"config file {path}, line {k.lineno}: key {k.value!r} is given twice in "
                                          f"one mapping (first on line {seen[k.value]}); Python would keep the last "
                                          f"silently: keep one")
                    seen[k.value] = k.lineno
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for b in [bases] if isinstance(bases, str) else list(bases):
                if isinstance(b, str) and not b.startswith(("mmseg::", "mmdet::", "mmpretrain::")):
                    check_python_config(path.parent / b, _seen + (path,))


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
