"""Flax Linen forms of the layers of `jaxcnn.nnx_layers`, where each layer is written once.

    conv = layers.Conv(6, 5, padding=2)
    variables = conv.init(key, x)  # x (N, 28, 28, 1): params {"kernel": (5, 5, 1, 6), "bias": (6,)}
    y = conv.apply(variables, x)   # (N, 28, 28, 6)

Each class is derived from its NNX layer (`_linen_form`), as the zoo's Linen models are (`models.bridge`):
its attributes are the NNX layer's arguments, less `rngs` and those the input decides (`in_features`,
`num_features`, `spatial_dims`, `input_size`), with Flax Linen's `features` for `out_features`. Each call
builds the NNX layer, whose initializers are Linen's `param`: Linen makes the weights with its own keys
and keeps them (`params`: `kernel`, `bias`, `scale`; `batch_stats`: BatchNorm's `mean`, `var`), under the
NNX layer's names and shapes, so the two forms hold the same weights and compute the same thing. A mode
the NNX call may override (Dropout's `deterministic`, BatchNorm's `use_running_average`) is given at
construction or call, not both, as in `flax.linen`; Dropout draws from the `rng_collection` stream only
when it draws a mask. Shapes are channels-last, as in `jaxcnn.functional`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers

_LINEN_NAMES = {"out_features": "features"}  # what Flax Linen calls an NNX argument


class _NoKeys:
    """The `rngs` of an NNX layer that its Linen form builds: no key is drawn, since the initializers it
    is given are Linen's `param`, which draws its own."""

    @staticmethod
    def params() -> None:
        return None


def _linen_param(module: nn.Module, name: str, init: Callable) -> Callable:
    """An NNX initializer `(key, shape, dtype)` for the parameter `name` that Linen holds: made by
    `module.param(name, init, shape, dtype)` (with Linen's key) where the variables lack it, read from them
    otherwise, its shape checked here (Linen's `param` would check it by tracing `init` on every call).

    Raises:
      ValueError: the variables hold it in another shape than this input needs.
    """

    def initializer(_key, shape, dtype):
        if not module.has_variable("params", name):
            return module.param(name, init, shape, dtype)
        value = nn.meta.unbox(module.get_variable("params", name))
        if jnp.shape(value) != tuple(shape):
            path = "/".join((*module.path, name))
            raise ValueError(f"params {path} has shape {jnp.shape(value)}; this input needs {tuple(shape)}")
        return value

    return initializer


class _LinenForm(nn.Module):
    """The call of every Linen form: the NNX layer `_nnx_class`, built from the attributes and the input."""

    _nnx_class: ClassVar[type[nnx.Module]]
    _arguments: ClassVar[dict[str, str]]  # NNX argument -> the attribute that holds it
    _sizes: ClassVar[dict[str, Callable]]  # NNX argument -> its value for an input: (x, arguments) -> value
    _modes: ClassVar[tuple[str, ...]]  # arguments the NNX call may override
    _needs_rngs: ClassVar[bool]  # the NNX layer is built with `rngs`
    _draws_keys: ClassVar[bool]  # the NNX call takes `rngs`

    @nn.compact
    def __call__(self, x: jax.Array, **modes) -> jax.Array:
        """The NNX layer's output for `x`; `modes`: those of `_modes` not given at construction."""
        layer = self._build(self._nnx_arguments(x, modes))
        statistics = {name: v for name, v in vars(layer).items() if isinstance(v, nnx.BatchStat)}
        held = {}
        for name, statistic in statistics.items():  # Linen's batch_stats in the layer's place
            held[name] = self.variable("batch_stats", name, statistic.get_value).value
            statistic.set_value(held[name])
        keys = {"rngs": functools.partial(self.make_rng, self.rng_collection)} if self._draws_keys else {}
        y = layer(x, **keys)
        if not self.is_initializing():
            for name, statistic in statistics.items():
                if statistic.get_value() is not held[name]:  # the call moved it (BatchNorm in training)
                    self.put_variable("batch_stats", name, statistic.get_value())
        return y

    def _nnx_arguments(self, x: jax.Array, modes: dict[str, Any]) -> dict[str, Any]:
        """The NNX layer's arguments: the attributes, the modes merged, the sizes of `x`, and initializers
        that are Linen's parameters."""
        arguments = {name: getattr(self, attribute) for name, attribute in self._arguments.items()}
        for mode in self._modes:
            arguments[mode] = nn.merge_param(mode, arguments[mode], modes.pop(mode, None))
        if modes:
            raise TypeError(f"{type(self).__name__} takes no call argument {', '.join(modes)}")
        arguments |= {name: size(x, arguments) for name, size in self._sizes.items()}
        for name in [name for name in arguments if name.endswith("_init")]:  # kernel_init -> kernel
            arguments[name] = _linen_param(self, name.removesuffix("_init"), arguments[name])
        return arguments

    def _build(self, arguments: dict[str, Any]) -> nnx.Module:
        """The NNX layer; its argument errors name the attributes of this form."""
        try:
            return self._nnx_class(**arguments, **({"rngs": _NoKeys()} if self._needs_rngs else {}))
        except (TypeError, ValueError) as error:
            for name, linen_name in _LINEN_NAMES.items():
                if str(error).startswith(f"{name} "):
                    raise type(error)(linen_name + str(error).removeprefix(name)) from None
            raise


def _doc(nnx_class: type[nnx.Module], fields: list[str], sizes: list[str], modes: tuple[str, ...]) -> str:
    """The Linen form's docstring: how its arguments differ from the NNX layer's, then the NNX layer's."""
    differences = [f"`{linen}` for `{name}`" for name, linen in _LINEN_NAMES.items() if linen in fields]
    differences += [f"`{name}` from the input" for name in sizes]
    differences += [f"`{mode}` given at construction or call" for mode in modes]
    return (
        f"The Flax Linen form of `jaxcnn.nnx_layers.{nnx_class.__name__}`: its arguments but `rngs`"
        + "".join(f", {difference}" for difference in differences)
        + f".\n\n{inspect.getdoc(nnx_class)}"
    )


def _linen_form(nnx_class: type[nnx.Module], **sizes: Callable) -> type[nn.Module]:
    """The Linen module class of `nnx_class`, named alike. `sizes`: the NNX arguments the input decides,
    each a function `(x, arguments) -> value` of the input and the other arguments."""
    parameters = {  # those of its __init__, if it has one of its own (not *args, **kwargs)
        name: p
        for name, p in list(inspect.signature(nnx_class.__init__).parameters.items())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    rngs = parameters.pop("rngs", None)
    call_parameters = inspect.signature(nnx_class.__call__).parameters
    modes = tuple(name for name in parameters if name in call_parameters)
    fields = {_LINEN_NAMES.get(name, name): p for name, p in parameters.items() if name not in sizes}
    types = inspect.get_annotations(nnx_class.__init__, eval_str=True)
    return type(
        nnx_class.__name__,
        (_LinenForm,),
        {
            "__module__": __name__,
            "__qualname__": nnx_class.__name__,
            "__doc__": _doc(nnx_class, list(fields), list(sizes), modes),
            "__annotations__": {
                field: types.get(p.name, Any) | None if p.name in modes else types.get(p.name, Any)
                for field, p in fields.items()
            },
            **{  # modes default to None, as in flax.linen: given at construction or call
                field: None if p.name in modes else p.default
                for field, p in fields.items()
                if p.default is not p.empty
            },
            "_nnx_class": nnx_class,
            "_arguments": {p.name: field for field, p in fields.items()},
            "_sizes": sizes,
            "_modes": modes,
            "_needs_rngs": rngs is not None and rngs.default is rngs.empty,
            "_draws_keys": "rngs" in call_parameters,
        },
    )


def _channels(x: jax.Array, arguments: dict) -> int:
    return jnp.shape(x)[-1]


def _spatial_dims(x: jax.Array, arguments: dict) -> int:
    """An int `kernel_size` spans every spatial dim of the input: all but its first and last dims."""
    return max(jnp.ndim(x) - 2, 1)


def _input_size(x: jax.Array, arguments: dict) -> tuple[int, ...]:
    kernel_size = arguments["kernel_size"]
    spatial_dims = len(kernel_size) if isinstance(kernel_size, Sequence) else _spatial_dims(x, arguments)
    return jnp.shape(x)[-spatial_dims - 1 : -1]


Conv = _linen_form(nnx_layers.Conv, in_features=_channels, spatial_dims=_spatial_dims)
ConvTranspose = _linen_form(nnx_layers.ConvTranspose, in_features=_channels, spatial_dims=_spatial_dims)
ConvLocal = _linen_form(nnx_layers.ConvLocal, in_features=_channels, input_size=_input_size)
Dense = _linen_form(nnx_layers.Dense, in_features=_channels)
MaxPool = _linen_form(nnx_layers.MaxPool)
MinPool = _linen_form(nnx_layers.MinPool)
AvgPool = _linen_form(nnx_layers.AvgPool)
GlobalAvgPool = _linen_form(nnx_layers.GlobalAvgPool)
GlobalMaxPool = _linen_form(nnx_layers.GlobalMaxPool)
AdaptiveAvgPool = _linen_form(nnx_layers.AdaptiveAvgPool)
AdaptiveMaxPool = _linen_form(nnx_layers.AdaptiveMaxPool)
Flatten = _linen_form(nnx_layers.Flatten)
Dropout = _linen_form(nnx_layers.Dropout)
DropPath = _linen_form(nnx_layers.DropPath)
LayerNorm = _linen_form(nnx_layers.LayerNorm, num_features=_channels)
BatchNorm = _linen_form(nnx_layers.BatchNorm, num_features=_channels)
