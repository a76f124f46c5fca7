"""Flax Linen modules: thin holders of parameters that call `jaxcnn.functional`.

Parameter names follow Flax (`kernel`, `bias`, `scale`; BatchNorm statistics `mean`, `var` in
the `batch_stats` collection), so checkpoints and habits carry over from `flax.linen`.
Shapes are channels-last, as in `jaxcnn.functional`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _layer_calls
from jaxcnn import functional as F
from jaxcnn._validate import int_tuple, integer

Initializer = Callable[..., jax.Array]
Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]
Dtype = Any


def _convolve(layer: nn.Module, x: jax.Array, kernel_shape_of: Callable, call: Callable) -> jax.Array:
    """`call(layer, x, kernel, bias)` with the layer's `kernel` (of shape `kernel_shape_of(kernel_size,
    C_in, features, groups, spatial_dims)`) and `bias`, made on the first call, once `x` is known."""
    spatial_dims = _layer_calls.spatial_dims_of(layer.kernel_size, default=max(jnp.ndim(x) - 2, 1))
    kernel_shape = kernel_shape_of(
        layer.kernel_size, jnp.shape(x)[-1], layer.features, layer.groups, spatial_dims
    )
    if layer.is_initializing():  # checks the arguments before any parameter is made (later calls check them)
        jax.eval_shape(
            lambda x, kernel: call(layer, x, kernel, None),
            jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32),
            jax.ShapeDtypeStruct(kernel_shape, jnp.float32),
        )
    kernel = layer.param("kernel", layer.kernel_init, kernel_shape, layer.param_dtype)
    bias = (
        layer.param("bias", layer.bias_init, (layer.features,), layer.param_dtype) if layer.use_bias else None
    )
    return call(layer, x, kernel, bias)


class Conv(nn.Module):
    """N-d convolution (cross-correlation); the spatial rank follows `kernel_size` or the input.

    Input `(*batch, *spatial, C_in)`, output `(*batch, *out_spatial, features)`; parameters
    `kernel` `(*kernel_size, C_in // groups, features)` and `bias` `(features,)`.
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = "SAME"
    dilation: int | Sequence[int] = 1
    groups: int = 1
    padding_mode: str = "zeros"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    precision: Any = None
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _convolve(self, x, _layer_calls.conv_kernel_shape, _layer_calls.conv)


class ConvTranspose(nn.Module):
    """N-d transposed convolution (`jaxcnn.functional.conv_transpose`), the NNX `ConvTranspose`'s twin.

    Input `(*batch, *spatial, C_in)`, output `(*batch, *out_spatial, features)`; parameters `kernel`
    `(*kernel_size, features // groups, C_in)` (the kernel of the convolution it transposes) and `bias`
    `(features,)`. `padding` defaults to 0 (PyTorch's); Flax's strings are accepted too.
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    output_padding: int | Sequence[int] = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    padding_mode: str = "zeros"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    precision: Any = None
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _convolve(self, x, _layer_calls.conv_transpose_kernel_shape, _layer_calls.conv_transpose)


class ConvLocal(nn.Module):
    """Locally connected convolution (unshared weights), the NNX `ConvLocal`'s twin; sized by its input.

    Input `(*batch, *spatial, C_in)`, output `(*batch, *out_spatial, features)`; parameters `kernel`
    `(*out_spatial, C_in * prod(kernel_size), features)` and `bias` `(*out_spatial, features)`. An int
    `kernel_size` spans every spatial dim of the input (all but its first and last dims), as `Conv`'s.
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = "SAME"
    dilation: int | Sequence[int] = 1
    padding_mode: str = "zeros"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spatial_dims = _layer_calls.spatial_dims_of(self.kernel_size, default=max(jnp.ndim(x) - 2, 1))
        window = int_tuple(self.kernel_size, spatial_dims, "kernel_size")
        kernel_shape = F.conv_local_kernel_shape(
            jnp.shape(x)[-spatial_dims - 1 :], window, self.features, stride=self.stride,
            padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode,
        )  # fmt: skip
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias_shape = (*kernel_shape[:-2], self.features)
        bias = self.param("bias", self.bias_init, bias_shape, self.param_dtype) if self.use_bias else None
        return _layer_calls.conv_local(self, x, kernel, bias)


class Dense(nn.Module):
    """Fully connected layer over the last axis: `(..., D_in)` -> `(..., features)`."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        integer(self.features, "features", minimum=1)
        kernel = self.param("kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        )
        return _layer_calls.dense(self, x, kernel, bias)


class MaxPool(nn.Module):
    """Max pooling, `(*batch, *spatial, C)` -> `(*batch, *out_spatial, C)`; stride defaults to the window."""

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: Padding = "VALID"
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False
    impl: str = "auto"

    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer_calls.max_pool(self, x)


class MinPool(nn.Module):
    """Min pooling (`jaxcnn.functional.min_pool`); attributes and shapes as `MaxPool`'s."""

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: Padding = "VALID"
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer_calls.min_pool(self, x)


class AvgPool(nn.Module):
    """Average pooling with PyTorch's `count_include_pad` and `ceil_mode` semantics."""

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: Padding = "VALID"
    count_include_pad: bool = True
    ceil_mode: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer_calls.avg_pool(self, x)


class GlobalAvgPool(nn.Module):
    """Mean over all spatial dims: `(N, *spatial, C)` -> `(N, C)`, or `(N, 1, ..., 1, C)` with `keepdims`."""

    keepdims: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_avg_pool(x, keepdims=self.keepdims)


class GlobalMaxPool(nn.Module):
    """Maximum over all spatial dims: `(N, *spatial, C)` -> `(N, C)` (`(N, 1, ..., 1, C)`: `keepdims`)."""

    keepdims: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_max_pool(x, keepdims=self.keepdims)


class AdaptiveAvgPool(nn.Module):
    """Average pooling to a fixed `output_size` (PyTorch bins): `(N, *output_size, C)`."""

    output_size: int | Sequence[int | None]

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nn.Module):
    """Max pooling to a fixed `output_size` (PyTorch bins): `(N, *output_size, C)`."""

    output_size: int | Sequence[int | None]

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.adaptive_max_pool(x, self.output_size)


class Flatten(nn.Module):
    """`(N, ...)` -> `(N, prod(...))`."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer_calls.flatten(x)


class Dropout(nn.Module):
    """Inverted dropout; draws from the `dropout` RNG stream unless deterministic. `broadcast_dims`:
    axes that share one draw (`jaxcnn.functional.dropout`)."""

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _key(self, deterministic: bool | None) -> tuple[jax.Array | None, bool]:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        needs_key = not deterministic and self.rate > 0
        return (self.make_rng(self.rng_collection) if needs_key else None), deterministic

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        key, deterministic = self._key(deterministic)
        return F.dropout(
            x, self.rate, key=key, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )


class DropPath(Dropout):
    """Stochastic depth: one dropout draw per example (`jaxcnn.functional.drop_path`), for the residual
    branch of a block. `(N, ...)` -> `(N, ...)`."""

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        key, deterministic = self._key(deterministic)
        return F.drop_path(x, self.rate, key=key, deterministic=deterministic)


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis (channels): parameters `scale` and `bias` `(C,)`.
    `epsilon` defaults to 1e-6, ConvNeXt's."""

    epsilon: float = 1e-6
    use_scale: bool = True
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = nn.initializers.ones_init()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = (jnp.shape(x)[-1],)
        scale = self.param("scale", self.scale_init, channels, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", self.bias_init, channels, self.param_dtype) if self.use_bias else None
        return _layer_calls.layer_norm(self, x, scale, bias)


class BatchNorm(nn.Module):
    """Batch normalisation over every axis but the last (channels).

    Training (`use_running_average=False`) normalises with the batch's statistics and updates
    the running `mean`/`var` in `batch_stats` (`new = momentum * old + (1 - momentum) * batch`);
    evaluation uses the running statistics. With `axis_name` (under `pmap`), the batch
    statistics are taken over all devices. Defaults match PyTorch (momentum 0.1 there is 0.9
    here, epsilon 1e-5).
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: str | None = None
    use_scale: bool = True
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = nn.initializers.ones_init()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        channels = (jnp.shape(x)[-1],)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
        scale = self.param("scale", self.scale_init, channels, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", self.bias_init, channels, self.param_dtype) if self.use_bias else None
        y, mean, var = _layer_calls.batch_norm(
            self, x, running_mean.value, running_var.value, scale, bias, use_running_average
        )
        if not use_running_average and not self.is_initializing():
            running_mean.value, running_var.value = mean, var
        return y
