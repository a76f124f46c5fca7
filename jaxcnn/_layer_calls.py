"""What a layer does with its parameters, written once for both module APIs.

`jaxcnn.layers` (Flax Linen) and `jaxcnn.nnx_layers` (Flax NNX) hold parameters their own way but name
their attributes alike (`stride`, `padding`, `dtype`, `impl`, ...); the functions here read those
attributes and make the `jaxcnn.functional` calls, so the two APIs compute exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jaxcnn import functional as F
from jaxcnn._validate import int_tuple, integer


def conv_kernel_shape(
    kernel_size, in_features: int, features: int, groups: int, spatial_dims: int
) -> tuple[int, ...]:
    """`(*window, in_features // groups, features)` of a convolution layer, its arguments checked."""
    integer(features, "features", minimum=1)
    integer(groups, "groups", minimum=1)
    window = int_tuple(kernel_size, spatial_dims, "kernel_size")
    if in_features % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={in_features}")
    if features % groups:
        raise ValueError(f"groups={groups} must divide the output channels C_out={features}")
    return (*window, in_features // groups, features)


def spatial_dims_of(kernel_size: int | Sequence[int], default: int) -> int:
    """How many spatial dims a `kernel_size` describes: its length, or `default` for an int."""
    return len(kernel_size) if isinstance(kernel_size, Sequence) else default


def conv_transpose_kernel_shape(
    kernel_size, in_features: int, features: int, groups: int, spatial_dims: int
) -> tuple[int, ...]:
    """`(*window, features // groups, in_features)` of a transposed convolution layer: the kernel of the
    convolution (`features` -> `in_features`) it transposes, its arguments checked."""
    return conv_kernel_shape(kernel_size, features, in_features, groups, spatial_dims)


def _geometry(layer) -> dict:
    """The arguments every convolution layer keeps as attributes of the same names."""
    return dict(
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        padding_mode=layer.padding_mode,
        precision=layer.precision,
    )


def conv(layer, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The layer's convolution of `x` `(*batch, *spatial, C_in)`, in `layer.dtype`."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=layer.dtype)
    return F.conv(x, kernel, bias, groups=layer.groups, impl=layer.impl, **_geometry(layer))


def conv_transpose(layer, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The layer's transposed convolution of `x` `(*batch, *spatial, C_in)`, in `layer.dtype`."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=layer.dtype)
    return F.conv_transpose(
        x, kernel, bias, output_padding=layer.output_padding, groups=layer.groups, impl=layer.impl,
        **_geometry(layer),
    )  # fmt: skip


def conv_local(layer, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The layer's locally connected convolution of `x` `(*batch, *spatial, C_in)`, in `layer.dtype`."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=layer.dtype)
    return F.conv_local(x, kernel, bias, window=layer.kernel_size, **_geometry(layer))


def max_pool(layer, x: jax.Array) -> jax.Array:
    """The layer's max pooling (`window`, `stride`, `padding`, `dilation`, `ceil_mode`, `impl`)."""
    return F.max_pool(
        x, layer.window, layer.stride, layer.padding, dilation=layer.dilation, ceil_mode=layer.ceil_mode,
        impl=layer.impl,
    )  # fmt: skip


def min_pool(layer, x: jax.Array) -> jax.Array:
    """The layer's min pooling (`window`, `stride`, `padding`, `dilation`, `ceil_mode`)."""
    return F.min_pool(
        x, layer.window, layer.stride, layer.padding, dilation=layer.dilation, ceil_mode=layer.ceil_mode
    )


def avg_pool(layer, x: jax.Array) -> jax.Array:
    """The layer's average pooling (`window`, `stride`, `padding`, `count_include_pad`, `ceil_mode`)."""
    return F.avg_pool(
        x, layer.window, layer.stride, layer.padding, layer.count_include_pad, ceil_mode=layer.ceil_mode
    )


def dense(layer, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The layer's `x @ kernel + bias` over the last axis, in `layer.dtype`."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=layer.dtype)
    return F.dense(x, kernel, bias, precision=layer.precision)


def batch_norm(layer, x, mean, var, scale, bias, use_running_average: bool):
    """`(y, new_mean, new_var)`: `x` normalised with the batch's statistics (which also move the running
    ones: `new = momentum * old + (1 - momentum) * batch`) or, with `use_running_average`, the running ones
    (returned unchanged)."""
    if not use_running_average:
        batch_mean, batch_var = F.batch_moments(x, axis_name=layer.axis_name)
        mean, var = (
            layer.momentum * mean + (1 - layer.momentum) * batch_mean,
            layer.momentum * var + (1 - layer.momentum) * batch_var,
        )
        statistics = batch_mean, batch_var
    else:
        statistics = mean, var
    (x,) = promote_dtype(x, dtype=layer.dtype)
    return F.batch_norm(x, *statistics, scale, bias, epsilon=layer.epsilon), mean, var


def layer_norm(layer, x, scale, bias) -> jax.Array:
    """The layer's normalisation of `x` over its last axis, in `layer.dtype`."""
    (x,) = promote_dtype(x, dtype=layer.dtype)
    return F.layer_norm(x, scale, bias, epsilon=layer.epsilon)


def flatten(x: jax.Array) -> jax.Array:
    """`(N, ...)` -> `(N, prod(...))`."""
    return jnp.reshape(x, (jnp.shape(x)[0], -1))
