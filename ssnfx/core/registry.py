"""Registry: the one kind of registry every extension point uses (combiners, methods, layer
kinds, grouping strategies, leaf modules, export formats).

A registry maps names to entries, each entry an object that owns every fact about itself (a
combiner its candidate count, a method its search statistic, a layer kind its initialisation);
callers ask the entry, never compare a registered name. Registering a name again replaces the
entry and counts as registered last.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Named entries of one kind: a dict (iterate it, test ``in``, index it) that registers
    with checks and looks up with an error naming what is known.

    Args:
        kind: what an entry is, for messages (``"combiner"``).
        how: how a user adds one, for messages (``"ssnfx.core.combiners.register_combiner"``).
        check: called with ``(name, entry)`` before registering; raises to refuse.

    Example:
        >>> colours = Registry[str]("colour", "colours.register")
        >>> colours.register("red", "#f00")
        '#f00'
        >>> colours.lookup("blue")
        Traceback (most recent call last):
        ...
        ValueError: unknown colour 'blue'; known: ['red'] (add one with colours.register)
    """

    def __init__(self, kind: str, how: str,
                 check: Callable[[str, T], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.how = how
        self._check = check

    def register(self, name: str, entry: T) -> T:
        """Make ``entry`` known as ``name`` (replacing one so named) and return it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a name, got {name!r}")
        if self._check is not None:
            self._check(name, entry)
        self.pop(name, None)
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``; ValueError naming the known ones otherwise."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self)} (add one "
                             f"with {self.how})") from None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {sorted(self)})"
