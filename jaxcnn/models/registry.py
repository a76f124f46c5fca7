"""Model registry: `create_nnx(name)` and `create(name)` (Linen), `available()`, `@register(name)`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx
from flax.core import FrozenDict

from jaxcnn._registry import Registry
from jaxcnn._validate import integer
from jaxcnn.models._common import check_out_indices
from jaxcnn.models.bridge import LinenModel

# -> an nnx.Module or a flax.linen.Module (which one: `_builds_nnx`), hence Any for a type checker
Factory = Callable[..., Any]
_F = TypeVar("_F", bound=Factory)  # a factory keeps its own type through @register
MODELS: Registry[Factory] = Registry("model")
_BUILT_BY_THE_REGISTRY = {"num_classes", "input_shape", "rngs", "parent", "name"}


def _target(factory: Factory) -> Callable[..., Any]:
    return factory.func if isinstance(factory, functools.partial) else factory


def _builds_nnx(factory: Factory) -> bool:
    target = _target(factory)
    return isinstance(target, type) and issubclass(target, nnx.Module)


def is_nnx(name: str) -> bool:
    """Whether the registered model `name` is a Flax NNX module (every zoo model) rather than a Linen one."""
    return _builds_nnx(MODELS.get(name))


@overload
def register(name: str, factory: None = None, *, overwrite: bool = False) -> Callable[[_F], _F]: ...
@overload
def register(name: str, factory: _F, *, overwrite: bool = False) -> _F: ...
def register(name: str, factory: Factory | None = None, *, overwrite: bool = False) -> Any:
    """Adds a model to the registry, as a decorator or a call.

        @register("my_net")
        class MyNet(nnx.Module):
            def __init__(self, num_classes=10, *, input_shape=(28, 28, 1), rngs): ...

        register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock))

    The factory is an NNX Module class taking `num_classes`, `input_shape` (one image's `(H, W, C)`,
    with a default) and `rngs`, or a Linen Module class taking `num_classes`, or a `functools.partial` of
    either.

    Raises:
      TypeError: `name` is not a non-empty string, or the factory is not callable.
      ValueError: `name` is taken, unless `overwrite=True` or it is the same definition again (a re-run
        notebook cell).
    """
    return MODELS.register(name, factory, overwrite=overwrite)


def available() -> list[str]:
    """Names accepted by `create` and `create_nnx`, sorted."""
    return MODELS.names()


def _accepted_arguments(factory: Factory) -> set[str]:
    target = _target(factory)
    if dataclasses.is_dataclass(target):  # a Linen module
        names = {f.name for f in dataclasses.fields(target) if f.init}
    else:  # an NNX module (whose metaclass hides the signature of its __init__) or a function
        # mypy warns that a subclass may change __init__: the class's own is the one wanted here.
        init = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
        names = set(inspect.signature(init).parameters)
        names.discard("self")
    return names - _BUILT_BY_THE_REGISTRY  # a partial's keywords are defaults: create may override them


def arguments(name: str) -> set[str]:
    """The keyword arguments `create(name, ...)` accepts besides `num_classes`."""
    return _accepted_arguments(MODELS.get(name))


def _checked(name: str, num_classes, kwargs) -> Factory:
    factory = MODELS.get(name)
    integer(num_classes, "num_classes", minimum=1)
    unknown = sorted(set(kwargs) - _accepted_arguments(factory))
    if unknown:
        raise ValueError(
            f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(_accepted_arguments(factory)))}"
        )
    return factory


def _returning_features(factory: Factory, out_indices: tuple[int, ...] | None, **kwargs) -> nnx.Module:
    """`factory(**kwargs)`, a zoo model whose call returns its feature maps `out_indices` (None: all)."""
    model = factory(**kwargs)
    model.out_indices = check_out_indices(model, out_indices)
    return model


def _backbone(name: str, factory: Factory, features_only: bool, out_indices) -> Factory:
    """`factory`, or with `features_only` one whose models return feature maps (timm's arguments)."""
    if not features_only:
        if out_indices is not None:
            raise ValueError("out_indices selects feature maps: it needs features_only=True")
        return factory
    if not _builds_nnx(factory):
        raise ValueError(f"model {name!r} is a Linen module: features_only needs a zoo (NNX) model")
    if out_indices is not None and not isinstance(out_indices, (str, bytes)):
        out_indices = tuple(out_indices) if isinstance(out_indices, Sequence) else out_indices
    return functools.partial(_returning_features, factory, out_indices)


def create(
    name: str,
    *,
    num_classes: int = 10,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a registered model as a Flax Linen module: `model.init(key, x)`, then
    `model.apply(variables, x, train=False, rngs=...)` on channels-last images `(N, H, W, C)` gives
    logits `(N, num_classes)`. The zoo's models are NNX modules used through `bridge.LinenModel`.

    With `features_only` (timm's), the model returns its feature maps instead: a list of `(N, H_i, W_i,
    C_i)`, those of `out_indices` (indices of `ZooModel.feature_maps`; default all); `feature_info`
    gives their channels and strides. The classifier's weights are still there (unused).

    Raises:
      ValueError: unknown name (the message lists `available()`), a non-positive
        `num_classes`, or a keyword the model does not take (the message lists those it does).
    """
    base = _checked(name, num_classes, kwargs)
    factory = _backbone(name, base, features_only, out_indices)
    if _builds_nnx(base):
        return LinenModel(factory, FrozenDict(num_classes=num_classes, **kwargs))
    return factory(num_classes=num_classes, **kwargs)


def create_nnx(
    name: str,
    *,
    num_classes: int = 10,
    rngs: nnx.Rngs,
    input_shape: Sequence[int] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> nnx.Module:
    """Builds a registered model as a Flax NNX module, initialised from `rngs`: `model(x)` on channels-last
    images `(N, H, W, C)` gives logits `(N, num_classes)`; `model.train()` / `model.eval()` switch Dropout
    and BatchNorm.

    Args:
      input_shape: one image's `(H, W, C)`; default: the model's own (e.g. (28, 28, 1) for lenet5,
        (224, 224, 3) for resnet18). Required for a model registered as a Linen module, which is wrapped
        by `flax.nnx.bridge.ToNNX` and initialised on a zero image (call it with `train=`).
      features_only, out_indices: the model returns those feature maps instead of logits (see `create`).

    Raises:
      ValueError: as `create`.
    """
    base = _checked(name, num_classes, kwargs)
    factory = _backbone(name, base, features_only, out_indices)
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs, e.g. nnx.Rngs(0), got {type(rngs).__name__}")
    if _builds_nnx(base):
        shape = {} if input_shape is None else {"input_shape": tuple(input_shape)}
        return factory(num_classes=num_classes, **shape, **kwargs, rngs=rngs)
    if input_shape is None:
        raise ValueError(f"model {name!r} is a Linen module: create_nnx needs its input_shape (H, W, C)")
    model = nnx.bridge.ToNNX(factory(num_classes=num_classes, **kwargs), rngs=rngs)
    return nnx.bridge.lazy_init(model, jnp.zeros((1, *input_shape), jnp.float32), train=False)
