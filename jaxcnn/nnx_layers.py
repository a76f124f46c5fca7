"""Flax NNX modules: thin holders of parameters that call `jaxcnn.functional`.

Each layer of jaxcnn is written once, here; `jaxcnn.layers` derives its Flax Linen form, which holds the
same parameters (`kernel`, `bias`, `scale` as `nnx.Param`; BatchNorm's `mean`, `var` as `nnx.BatchStat`)
under the same names and shapes, so weights move between the two APIs as they are. As in `flax.nnx`, a
layer is built with its input size and `rngs`, and created initialised:

    from flax import nnx
    from jaxcnn import nnx_layers

    conv = nnx_layers.Conv(1, 6, 5, padding=2, rngs=nnx.Rngs(0))
    y = conv(x)  # x (N, 28, 28, 1) -> (N, 28, 28, 6)

The module is named `nnx_layers` so that it shadows neither `flax.nnx` nor `flax.linen` (imported `as nn`).
Dropout and BatchNorm follow NNX's modes: `model.train()` / `model.eval()`, or `nnx.view(model,
deterministic=..., use_running_average=...)`, or the matching argument of their call. Shapes are
channels-last, as in `jaxcnn.functional`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype

from jaxcnn import functional as F
from jaxcnn._validate import choice, int_tuple, integer, number
from jaxcnn.functional._args import Padding, Size
from jaxcnn.functional.pool import OutputSize

Initializer = Callable[..., jax.Array]
Dtype = Any
# A call's keys: Rngs, a stream, a key, or a function making one (the Linen form's make_rng).
CallRngs = nnx.Rngs | nnx.RngStream | Callable[[], jax.Array] | jax.Array | None

# Who is told of each layer call (`observe_calls`): a context variable, so threads do not see each other's.
_OBSERVERS: contextvars.ContextVar[tuple[Callable, ...]] = contextvars.ContextVar("observers", default=())


@contextlib.contextmanager
def observe_calls(observer: Callable[[nnx.Module, jax.Array, jax.Array], None]) -> Iterator[None]:
    """Within the block, `observer(layer, inputs, outputs)` follows every call of a layer of this module
    (as `flax.linen.intercept_methods` does for Linen): how `jaxcnn.summary` tabulates an NNX model and
    `jaxcnn.visualize` reads its feature maps."""
    token = _OBSERVERS.set((*_OBSERVERS.get(), observer))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def _observed(call):
    @functools.wraps(call)
    def observed_call(layer, x, *args, **kwargs):
        y = call(layer, x, *args, **kwargs)
        for observer in _OBSERVERS.get():
            observer(layer, x, y)
        return y

    return observed_call


default_kernel_init = nnx.initializers.lecun_normal()
zeros_init = nnx.initializers.zeros_init()
ones_init = nnx.initializers.ones_init()


def _conv_kernel_shape(
    kernel_size, in_features: int, out_features: int, groups: int, spatial_dims: int
) -> tuple[int, ...]:
    """`(*window, in_features // groups, out_features)` of a convolution, its arguments checked."""
    integer(groups, "groups", minimum=1)
    window = int_tuple(kernel_size, spatial_dims, "kernel_size")
    if in_features % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={in_features}")
    if out_features % groups:
        raise ValueError(f"groups={groups} must divide the output channels C_out={out_features}")
    return (*window, in_features // groups, out_features)


def _spatial_dims(kernel_size: int | Sequence[int], spatial_dims: int) -> int:
    """How many spatial dims a `kernel_size` describes: its length, or `spatial_dims` for an int."""
    return (
        len(kernel_size)
        if isinstance(kernel_size, Sequence)
        else integer(spatial_dims, "spatial_dims", minimum=1)
    )


def _geometry(layer) -> dict:
    """The arguments of `jaxcnn.functional` that every convolution layer keeps as attributes."""
    return dict(
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        padding_mode=layer.padding_mode,
        precision=layer.precision,
    )


def _array(variable: nnx.Variable | None) -> jax.Array | None:
    """The array a parameter holds, or None for one the layer does without (`use_bias=False`)."""
    return None if variable is None else variable[...]


class Conv(nnx.Module):
    """N-d convolution (cross-correlation): `(*batch, *spatial, in_features)` ->
    `(*batch, *out_spatial, out_features)`, any number of batch dims (none included).

    Parameters `kernel` `(*kernel_size, in_features // groups, out_features)` and `bias` `(out_features,)`.
    The spatial rank is the length of `kernel_size`, or `spatial_dims` (default 2) when it is an int.
    `stride`, `padding`, `dilation`, `groups`, `padding_mode`, `precision` and `impl` are those of
    `jaxcnn.functional.conv`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: Padding = "SAME",
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        use_bias: bool = True,
        spatial_dims: int = 2,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = zeros_init,
        precision: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        integer(in_features, "in_features", minimum=1)
        integer(out_features, "out_features", minimum=1)
        spatial_dims = _spatial_dims(kernel_size, spatial_dims)
        kernel_shape = _conv_kernel_shape(kernel_size, in_features, out_features, groups, spatial_dims)
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size = kernel_shape[:-2]
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.padding_mode = choice(padding_mode, "padding_mode", F.PADDING_MODES)
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.precision, self.impl = precision, choice(impl, "impl", F.CONV_IMPLS)
        self.kernel_init, self.bias_init = kernel_init, bias_init  # for a new head: models.replace_head
        self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = promote_dtype(x, self.kernel[...], _array(self.bias), dtype=self.dtype)
        return F.conv(x, kernel, bias, groups=self.groups, impl=self.impl, **_geometry(self))


class ConvTranspose(nnx.Module):
    """N-d transposed convolution, `jaxcnn.functional.conv_transpose`: `(*batch, *spatial, in_features)` ->
    `(*batch, *out_spatial, out_features)`, each out size `(W - 1)*S - 2P + D*(F - 1) + output_padding + 1`.

    Parameters `kernel` `(*kernel_size, out_features // groups, in_features)`, the kernel of the
    convolution (`out_features` -> `in_features`) it transposes (PyTorch's `(in_features, out_features //
    groups, *kernel_size)` weight permuted as a convolution's), and `bias` `(out_features,)`. `padding`
    (default 0, PyTorch's) and the other arguments are those of `conv_transpose`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: Padding = 0,
        output_padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        use_bias: bool = True,
        spatial_dims: int = 2,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = zeros_init,
        precision: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        integer(in_features, "in_features", minimum=1)
        integer(out_features, "out_features", minimum=1)
        spatial_dims = _spatial_dims(kernel_size, spatial_dims)
        # the kernel of the convolution (out_features -> in_features) it transposes
        kernel_shape = _conv_kernel_shape(kernel_size, out_features, in_features, groups, spatial_dims)
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size = kernel_shape[:-2]
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups
        self.padding_mode = choice(padding_mode, "padding_mode", F.PADDING_MODES)
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.precision, self.impl = precision, choice(impl, "impl", F.CONV_IMPLS)
        self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = promote_dtype(x, self.kernel[...], _array(self.bias), dtype=self.dtype)
        return F.conv_transpose(
            x, kernel, bias, output_padding=self.output_padding, groups=self.groups, impl=self.impl,
            **_geometry(self),
        )  # fmt: skip


class ConvLocal(nnx.Module):
    """Locally connected convolution (unshared weights, Flax's `ConvLocal`), `jaxcnn.functional.conv_local`:
    `(*batch, *input_size, in_features)` -> `(*batch, *out_spatial, out_features)`.

    Built for one input size (`input_size`, the spatial sizes): parameters `kernel` `(*out_spatial,
    in_features * prod(kernel_size), out_features)` and `bias` `(*out_spatial, out_features)`, as Flax's.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        input_size: Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "SAME",
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = zeros_init,
        precision: Any = None,
        rngs: nnx.Rngs,
    ):
        integer(in_features, "in_features", minimum=1)
        integer(out_features, "out_features", minimum=1)
        input_size = tuple(input_size)
        window = int_tuple(kernel_size, len(input_size), "kernel_size")
        kernel_shape = F.conv_local_kernel_shape(
            (*input_size, in_features), window, out_features, stride=stride, padding=padding,
            dilation=dilation, padding_mode=padding_mode,
        )  # fmt: skip
        self.in_features, self.out_features, self.input_size = in_features, out_features, input_size
        self.kernel_size, self.stride, self.padding, self.dilation = window, stride, padding, dilation
        self.padding_mode = padding_mode
        self.use_bias, self.dtype, self.param_dtype, self.precision = use_bias, dtype, param_dtype, precision
        self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
        bias_shape = (*kernel_shape[:-2], out_features)
        self.bias = nnx.Param(bias_init(rngs.params(), bias_shape, param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = promote_dtype(x, self.kernel[...], _array(self.bias), dtype=self.dtype)
        return F.conv_local(x, kernel, bias, window=self.kernel_size, **_geometry(self))


class Dense(nnx.Module):
    """Fully connected layer over the last axis: `(..., in_features)` -> `(..., out_features)`.

    Parameters `kernel` `(in_features, out_features)` and `bias` `(out_features,)`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = zeros_init,
        precision: Any = None,
        rngs: nnx.Rngs,
    ):
        integer(in_features, "in_features", minimum=1)
        integer(out_features, "out_features", minimum=1)
        self.in_features, self.out_features = in_features, out_features
        self.use_bias, self.dtype, self.param_dtype, self.precision = use_bias, dtype, param_dtype, precision
        self.kernel_init, self.bias_init = kernel_init, bias_init  # for a new head: models.replace_head
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = promote_dtype(x, self.kernel[...], _array(self.bias), dtype=self.dtype)
        return F.dense(x, kernel, bias, precision=self.precision)


class MaxPool(nnx.Module):
    """Max pooling, `(*batch, *spatial, C)` -> `(*batch, *out_spatial, C)`, as `jaxcnn.functional.max_pool`
    (`dilation`, PyTorch's `ceil_mode`, floating or integer inputs)."""

    def __init__(
        self,
        window: Size,
        stride: Size | None = None,
        padding: Padding = "VALID",
        *,
        dilation: Size = 1,
        ceil_mode: bool = False,
        impl: str = "auto",
    ):
        self.window, self.stride, self.padding = window, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self.impl = choice(impl, "impl", F.MAX_POOL_IMPLS)

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.max_pool(
            x, self.window, self.stride, self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode,
            impl=self.impl,
        )  # fmt: skip


class MinPool(nnx.Module):
    """Min pooling, `jaxcnn.functional.min_pool`; arguments and shapes as `MaxPool`'s."""

    def __init__(
        self,
        window: Size,
        stride: Size | None = None,
        padding: Padding = "VALID",
        *,
        dilation: Size = 1,
        ceil_mode: bool = False,
    ):
        self.window, self.stride, self.padding = window, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.min_pool(
            x, self.window, self.stride, self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode
        )


class AvgPool(nnx.Module):
    """Average pooling with PyTorch's `count_include_pad` and `ceil_mode` (`jaxcnn.functional.avg_pool`)."""

    def __init__(
        self,
        window: Size,
        stride: Size | None = None,
        padding: Padding = "VALID",
        count_include_pad: bool = True,
        *,
        ceil_mode: bool = False,
    ):
        self.window, self.stride, self.padding = window, stride, padding
        self.count_include_pad, self.ceil_mode = count_include_pad, ceil_mode

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.avg_pool(
            x, self.window, self.stride, self.padding, self.count_include_pad, ceil_mode=self.ceil_mode
        )


class GlobalAvgPool(nnx.Module):
    """Mean over all spatial dims: `(N, *spatial, C)` -> `(N, C)`, or `(N, 1, ..., 1, C)` with `keepdims`."""

    def __init__(self, *, keepdims: bool = False):
        self.keepdims = keepdims

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_avg_pool(x, keepdims=self.keepdims)


class GlobalMaxPool(nnx.Module):
    """Maximum over all spatial dims: `(N, *spatial, C)` -> `(N, C)` (`(N, 1, ..., 1, C)`: `keepdims`)."""

    def __init__(self, *, keepdims: bool = False):
        self.keepdims = keepdims

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_max_pool(x, keepdims=self.keepdims)


class AdaptiveAvgPool(nnx.Module):
    """Average pooling to a fixed `output_size` (PyTorch bins): `(N, *output_size, C)`."""

    def __init__(self, output_size: OutputSize):
        self.output_size = output_size

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nnx.Module):
    """Max pooling to a fixed `output_size` (PyTorch bins): `(N, *output_size, C)`."""

    def __init__(self, output_size: OutputSize):
        self.output_size = output_size

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return F.adaptive_max_pool(x, self.output_size)


class Flatten(nnx.Module):
    """`(N, ...)` -> `(N, prod(...))`."""

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.reshape(x, (jnp.shape(x)[0], -1))


class Dropout(nnx.Module):
    """Inverted dropout: zeroes each element with probability `rate` and scales the rest by 1/(1 - rate)
    unless `deterministic` (evaluation).

    Keys come from the `rng_collection` stream of `rngs` (forked at construction, as `nnx.Dropout`), or
    from the `rngs` argument of the call (a key, a stream, an `nnx.Rngs`, or a function that returns a key,
    called only when a mask is drawn: how the Linen form draws from `make_rng`), which takes precedence.
    `broadcast_dims`: axes that share one draw (`jaxcnn.functional.dropout`).
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = number(rate, "rate", minimum=0.0, below=1.0)
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic, self.rng_collection = deterministic, rng_collection
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs[rng_collection]
        self.rngs = rngs.fork() if isinstance(rngs, nnx.RngStream) else nnx.data(None)

    @_observed
    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: CallRngs = None
    ) -> jax.Array:
        key = self._key(deterministic, rngs)
        return F.dropout(x, self.rate, key=key, deterministic=key is None, broadcast_dims=self.broadcast_dims)

    def _key(self, deterministic: bool | None, rngs) -> jax.Array | None:
        """The key of this call, or None when it is deterministic (or drops nothing)."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0:
            return None
        rngs = self.rngs if rngs is None else rngs
        if rngs is None:
            raise ValueError(
                "Dropout needs random keys when not deterministic: construct it with "
                "rngs=nnx.Rngs(dropout=...) or pass rngs= to the call, or evaluate with model.eval()"
            )
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs[self.rng_collection]
        return rngs() if callable(rngs) else rngs  # a stream, or the Linen form's make_rng

    def set_view(self, deterministic: bool | None = None) -> None:
        """For `nnx.view(model, deterministic=...)`."""
        if deterministic is not None:
            self.deterministic = deterministic


class DropPath(Dropout):
    """Stochastic depth: `Dropout` with one draw per example (`jaxcnn.functional.drop_path`), for the
    residual branch of a block; the same arguments, keys and modes as `Dropout` (`model.train()`,
    `model.eval()`), and `reseed_dropout` restarts it too. `(N, ...)` -> `(N, ...)`."""

    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)

    @_observed
    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: CallRngs = None
    ) -> jax.Array:
        key = self._key(deterministic, rngs)
        return F.drop_path(x, self.rate, key=key, deterministic=key is None)


class LayerNorm(nnx.Module):
    """Layer normalisation over the last axis (channels): parameters
    `scale` and `bias` `(num_features,)`; ConvNeXt's LayerNorm on channels-last maps. `epsilon` defaults
    to 1e-6, ConvNeXt's (PyTorch's `nn.LayerNorm` default is 1e-5)."""

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        use_scale: bool = True,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer = ones_init,
        bias_init: Initializer = zeros_init,
        rngs: nnx.Rngs,
    ):
        channels = (integer(num_features, "num_features", minimum=1),)
        self.num_features, self.epsilon = num_features, number(epsilon, "epsilon", minimum=0.0)
        self.dtype, self.param_dtype = dtype, param_dtype
        self.scale = nnx.Param(scale_init(rngs.params(), channels, param_dtype)) if use_scale else None
        self.bias = nnx.Param(bias_init(rngs.params(), channels, param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array) -> jax.Array:
        (x,) = promote_dtype(x, dtype=self.dtype)
        return F.layer_norm(x, _array(self.scale), _array(self.bias), epsilon=self.epsilon)


class BatchNorm(nnx.Module):
    """Batch normalisation over every axis but the last (channels).

    Training (`use_running_average=False`, the default, as in `flax.nnx`) normalises with the batch's
    statistics and moves the running `mean`/`var` (`nnx.BatchStat`): `new = momentum * old +
    (1 - momentum) * batch`; evaluation uses the running ones. With `axis_name` (under `pmap`), the
    batch statistics are taken over all devices. Defaults match PyTorch (its momentum 0.1 is 0.9 here).
    A `frozen` layer (`training.finetune` freezes those whose parameters it freezes) always normalises with
    its running statistics and never moves them, in training too (timm's FrozenBatchNorm2d, Keras's
    non-trainable BatchNormalization).
    """

    frozen: bool = False

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        axis_name: str | None = None,
        use_scale: bool = True,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer = ones_init,
        bias_init: Initializer = zeros_init,
        rngs: nnx.Rngs,
    ):
        channels = (integer(num_features, "num_features", minimum=1),)
        self.num_features = num_features
        self.use_running_average, self.axis_name = use_running_average, axis_name
        self.momentum = number(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.epsilon = number(epsilon, "epsilon", minimum=0.0)
        self.dtype, self.param_dtype = dtype, param_dtype
        self.mean = nnx.BatchStat(jnp.zeros(channels, jnp.float32))
        self.var = nnx.BatchStat(jnp.ones(channels, jnp.float32))
        self.scale = nnx.Param(scale_init(rngs.params(), channels, param_dtype)) if use_scale else None
        self.bias = nnx.Param(bias_init(rngs.params(), channels, param_dtype)) if use_bias else None

    @_observed
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average or self.frozen:
            statistics = self.mean[...], self.var[...]
        else:  # the batch's, which move the running ones: new = momentum * old + (1 - momentum) * batch
            statistics = batch_mean, batch_var = F.batch_moments(x, axis_name=self.axis_name)
            self.mean[...] = self.momentum * self.mean[...] + (1 - self.momentum) * batch_mean
            self.var[...] = self.momentum * self.var[...] + (1 - self.momentum) * batch_var
        (x,) = promote_dtype(x, dtype=self.dtype)
        return F.batch_norm(x, *statistics, _array(self.scale), _array(self.bias), epsilon=self.epsilon)

    def set_view(self, use_running_average: bool | None = None) -> None:
        """For `nnx.view(model, use_running_average=...)`."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


def reseed_dropout(model: nnx.Module, key: jax.Array) -> None:
    """Restarts the key stream of every `Dropout` in `model` from `key`: the i-th one (in graph order)
    from `fold_in(key, i)`, its count at 0.

    A train step calls it with a key made from (seed, step), so the masks of a step do not depend on how
    many steps ran before in this process: a resumed run draws what an uninterrupted one would. (Unlike
    `nnx.reseed`, it does not depend on the tag of the stream a layer forked from.)
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # raw uint32 key data, e.g. jax.random.PRNGKey
        key = jax.random.wrap_key_data(key)
    streams = [m.rngs for _, m in nnx.iter_graph(model) if isinstance(m, Dropout) and m.rngs is not None]
    for index, stream in enumerate(streams):  # set_value: a stream of an abstract model holds no array yet
        stream.key.set_value(jax.random.fold_in(key, index))
        stream.count.set_value(jnp.zeros((), jnp.uint32))


def has_dropout(model: nnx.Module) -> bool:
    """Whether `model` holds a `Dropout` that draws random keys (rate > 0)."""
    return any(isinstance(m, Dropout) and m.rate > 0 for _, m in nnx.iter_graph(model))
