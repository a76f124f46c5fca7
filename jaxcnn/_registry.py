"""A registry: names to things of one kind (models, datasets, optimizers, schedules, parallel strategies).

    OPTIMIZERS = Registry("optimizer")

    @OPTIMIZERS.register("sgd")
    def sgd(learning_rate, settings): ...

    OPTIMIZERS.get("sgd"), OPTIMIZERS.names()

Each kind keeps one registry, and every list of accepted names (in messages, in config checks) comes from it,
so a user's entry (`register("my_dataset")`) is accepted everywhere a built-in one is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _origin(entry) -> tuple[str, str]:
    target = entry.func if isinstance(entry, functools.partial) else entry
    return getattr(target, "__module__", ""), getattr(target, "__qualname__", repr(target))


class Registry(Generic[T]):
    """Names to entries of one `kind` (used in messages: "unknown optimizer 'sgdd'")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False):
        """Adds `entry` under `name`, as a decorator (`@registry.register("name")`) or a call.

        Registering a taken name raises, unless `overwrite=True` or it is the same definition again (a
        re-run notebook cell).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if not callable(entry):
                raise TypeError(f"the {self.kind} {name!r} must be callable, got {type(entry).__name__}")
            previous = self._entries.get(name)
            if previous is not None and not overwrite and _origin(previous) != _origin(entry):
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered ({'.'.join(_origin(previous))}); "
                    "pick another name or pass overwrite=True"
                )
            if previous is not None:
                logging.info("Replacing registered %s %r", self.kind, name)
            self._entries[name] = entry
            return entry

        return add if entry is None else add(entry)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry of `name`; ValueError listing the registered names otherwise."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} name {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


Factory = Callable[..., T]
