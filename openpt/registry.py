"""Name -> class registries for templates, verbalizers and backbones."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from .errors import OpenPTError

T = TypeVar("T")


class UnknownNameError(OpenPTError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of classes, filled by the :meth:`register` decorator.

    Example:
        >>> VERBALIZERS = Registry("verbalizer")
        >>> @VERBALIZERS.register("manual")
        ... class Manual: ...
        >>> VERBALIZERS.get("manual") is Manual
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a class under ``name``; a duplicate name fails."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}")

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Look up ``name``; unknown names fail with the close matches and all valid names."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._items, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} type {name!r}{hint}; expected one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


TEMPLATES: Registry = Registry("template")
VERBALIZERS: Registry = Registry("verbalizer")
BACKBONES: Registry = Registry("backbone")
