"""A minimal registry (in the spirit of detectron2 / mmengine): names map to builders, no if-chains."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import LewelError

T = TypeVar("T")


class RegistryError(LewelError, KeyError):
    """An unknown name was asked of a registry; the message lists the known ones and close matches."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps a name to a callable. ``@REG.register("name")`` adds one; ``REG.get("name")`` finds it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._items))}){hint}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
