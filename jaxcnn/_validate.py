"""Argument checks shared by every part of jaxcnn: one message per kind of mistake, naming the argument.

Each check returns the value normalised (an int, a float, a tuple) or raises before anything reaches XLA:
`TypeError` for a value of the wrong kind, `ValueError` for one out of range. They take `value: Any`:
whatever a user or a config wrote, which they are there to check.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar


def is_int(value: object) -> bool:
    """An integer that is not a bool (`True` is an int in Python, never a size here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(minimum: float | None = None, maximum: float | None = None, below: float | None = None) -> str:
    """The wanted range for a message, e.g. " >= 0 and < 1"."""
    limits = [f"{op} {v}" for op, v in ((">=", minimum), ("<=", maximum), ("<", below)) if v is not None]
    return " " + " and ".join(limits) if limits else ""


def _outside(
    value: Any, minimum: float | None = None, maximum: float | None = None, below: float | None = None
) -> bool:
    return (
        (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (below is not None and value >= below)
    )


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int in `[minimum, maximum]` (either bound optional)."""
    wanted = "an int" + _bounds(minimum, maximum)
    if not is_int(value):
        raise TypeError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")
    if _outside(value, minimum, maximum):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
) -> float:
    """`value` as a finite float in `[minimum, maximum]` or `[minimum, below)` (bounds optional).

    NaN and infinities are refused: a rate, a norm or a decay of NaN only shows up later as a NaN loss.
    """
    wanted = "a finite number" + _bounds(minimum, maximum, below)
    if not is_number(value):
        raise TypeError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or _outside(value, minimum, maximum, below):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


def boolean(value: Any, name: str) -> bool:
    """`value`, which must be True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """`value`, which must be one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    chosen: str = value
    return chosen


def int_tuple(value: Any, ndim: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or one int per spatial dim, each >= `minimum`, as a tuple of length `ndim`."""
    if is_int(value):
        values = (value,) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != ndim:
            raise ValueError(
                f"{name} must be an int or a tuple of {ndim} ints (one per spatial dim), "
                f"got {value!r} with {len(values)} entries"
            )
        if not all(is_int(v) for v in values):
            raise TypeError(f"{name} must hold ints, got {value!r}")
    else:
        raise TypeError(
            f"{name} must be an int or a tuple of {ndim} ints, got {value!r} ({type(value).__name__})"
        )
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every spatial dim, got {value!r}")
    return tuple(int(v) for v in values)


def shape(value: Any, name: str, *, length: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    """A shape: a tuple (or list) of ints >= `minimum`, of `length` entries when given."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(map(is_int, value)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    if any(d < minimum for d in value):
        raise ValueError(f"{name} must hold ints >= {minimum}, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}")
    return tuple(int(d) for d in value)


_Settings = TypeVar("_Settings", bound="Settings")


class Settings:
    """Base of a config section: a frozen dataclass whose `__post_init__` checks its own fields.

    `jaxcnn.training.default_config()` takes each section's defaults from its dataclass and
    `from_config` reads the section back, so a key's default, check and meaning sit in one class, next
    to the code that uses it. Check messages start with the field's name, which `from_config` prefixes
    with the section's: "config.augment.crop_padding must be an int >= 0, got -1".
    """

    if TYPE_CHECKING:  # every subclass is a dataclass: `dataclasses.fields(cls)` below reads this
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_config(cls: type[_Settings], section: Mapping[str, Any], name: str) -> _Settings:
        """The settings of `config.<name>` (a mapping of this class's fields)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(
                f"config.{name} has unknown keys {', '.join(unknown)}; it has {', '.join(sorted(known))}"
            )
        try:
            return cls(**dict(section))
        except (TypeError, ValueError) as error:
            raise type(error)(f"config.{name}.{error}") from None

    @classmethod
    def resumable(cls) -> set[str]:
        """Fields that may change between the segments of one run (they change what is logged or kept,
        not the training itself): marked `dataclasses.field(..., metadata={"resumable": True})`."""
        return {f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable")}
