"""Pretraining methods, one builder file each on a shared base; ``METHODS.get(name)(cfg)`` builds one.

A method defined outside the suite registers itself in :data:`METHODS` when its module is imported: a config
names such modules in ``custom_imports`` (:func:`import_custom`, like mmengine's ``custom_imports``).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from lewel_bench.config import ConfigError

from . import byol, cgh, lewel, mcl, mocov2  # noqa: F401  (registration)
from .base import METHODS, SSLMethod


def import_custom(cfg: Mapping[str, Any]) -> None:
    """Import the modules the config's ``custom_imports`` names (each registers its methods)."""
    names = cfg.get("custom_imports") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"custom_imports must be a list of module names, got {names!r}")
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"custom_imports: cannot import {name!r} ({e}); put the folder that holds it on "
                              f"PYTHONPATH") from None


def method_class(cfg: Mapping[str, Any]) -> type[SSLMethod]:
    """The class of the config's ``method`` (after its ``custom_imports``); an unknown name lists the known."""
    import_custom(cfg)
    return METHODS.get(str(cfg.get("method")))
