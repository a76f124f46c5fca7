"""A registry: names to things of one kind (models, datasets, optimizers, schedules, parallel strategies,
torchvision families).

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
from typing import Generic, TypeVar, overload

T = TypeVar("T")


def _origin(entry) -> str:
    """Where `entry` was defined, e.g. "jaxcnn.models.lenet.LeNet5": the same for the new objects of a re-run
    notebook cell. A partial's is its function's; a tuple's (a NamedTuple of settings) lists its items'."""
    if isinstance(entry, functools.partial):
        return _origin(entry.func)
    if isinstance(entry, tuple):
        return f"({', '.join(map(_origin, entry))})"
    if hasattr(entry, "__qualname__"):
        return f"{getattr(entry, '__module__', '')}.{entry.__qualname__}"
    return repr(entry)


class Registry(Generic[T]):
    """Names to entries of one `kind` (used in messages: "unknown optimizer 'sgdd'"): callables, or instances
    of `entry_type` where it is given."""

    def __init__(self, kind: str, *, entry_type: type | None = None):
        self.kind = kind
        self.entry_type = entry_type
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str, entry: None = None, *, overwrite: bool = False) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T: ...
    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False) -> T | Callable[[T], T]:
        """Adds `entry` under `name`, as a decorator (`@registry.register("name")`) or a call; returns it.

        Raises:
          TypeError: `name` is not a non-empty string, or `entry` is not callable (not an `entry_type`).
          ValueError: `name` is taken, unless `overwrite=True` or it is the same definition again (a re-run
            notebook cell); the message says where the registered one was defined.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if self.entry_type is None and not callable(entry):
                raise TypeError(f"the {self.kind} {name!r} must be callable, got {type(entry).__name__}")
            if self.entry_type is not None and not isinstance(entry, self.entry_type):
                wanted = self.entry_type.__name__
                raise TypeError(f"the {self.kind} {name!r} must be a {wanted}, got {type(entry).__name__}")
            previous = self._entries.get(name)
            if previous is not None and not overwrite and _origin(previous) != _origin(entry):
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered ({_origin(previous)}); "
                    "pick another name or pass overwrite=True"
                )
            if previous is not None:
                logging.info("Replacing registered %s %r", self.kind, name)
            self._entries[name] = entry
            return entry

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> T:
        """Removes `name` (e.g. a notebook's or a test's own entry) and returns its entry; ValueError listing
        the registered names if there is none."""
        entry = self.get(name)
        del self._entries[name]
        return entry

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
