"""Model registry: `create(name)`, `available()`, `@register(name)`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable

import flax.linen as nn

Factory = Callable[..., nn.Module]
_MODELS: dict[str, Factory] = {}


def _origin(factory: Factory) -> tuple[str, str]:
    target = factory.func if isinstance(factory, functools.partial) else factory
    return getattr(target, "__module__", ""), getattr(target, "__qualname__", repr(target))


def register(name: str, factory: Factory | None = None, *, overwrite: bool = False):
    """Adds a model to the registry, as a decorator or a call.

        @register("my_net")
        class MyNet(nn.Module): ...

        register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2)))

    The factory is a Module class or a `functools.partial` of one, called with
    `num_classes=` and the keyword arguments of `create`. Registering a taken name raises,
    unless `overwrite=True` or it is the same definition again (a re-run notebook cell).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")

    def add(factory: Factory) -> Factory:
        if not callable(factory):
            raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
        previous = _MODELS.get(name)
        if previous is not None and not overwrite and _origin(previous) != _origin(factory):
            raise ValueError(
                f"model name {name!r} is already registered ({'.'.join(_origin(previous))}); "
                "pick another name or pass overwrite=True"
            )
        if previous is not None:
            logging.info("Replacing registered model %r", name)
        _MODELS[name] = factory
        return factory

    return add if factory is None else add(factory)


def available() -> list[str]:
    """Names accepted by `create`, sorted."""
    return sorted(_MODELS)


def _accepted_arguments(factory: Factory) -> set[str]:
    target = factory.func if isinstance(factory, functools.partial) else factory
    if dataclasses.is_dataclass(target):
        names = {f.name for f in dataclasses.fields(target) if f.init}
        return names - {"parent", "name"}
    return set(inspect.signature(target).parameters)


def create(name: str, *, num_classes: int = 10, **kwargs) -> nn.Module:
    """Builds a registered model. Every model is called as `model.apply(variables, x, train=...)`
    on channels-last images `(N, H, W, C)` and returns logits `(N, num_classes)`.

    Raises:
      ValueError: unknown name (the message lists `available()`), a non-positive
        `num_classes`, or a keyword the model does not take (the message lists those it does).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(available())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    factory = _MODELS[name]
    accepted = _accepted_arguments(factory) - {"num_classes"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted))}"
        )
    return factory(num_classes=num_classes, **kwargs)


def arguments(name: str) -> set[str]:
    """The keyword arguments `create(name, ...)` accepts."""
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(available())}")
    return _accepted_arguments(_MODELS[name])
