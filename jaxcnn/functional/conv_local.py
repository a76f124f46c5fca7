"""Locally connected convolution: a convolution whose weights are not shared, one kernel per output cell."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxcnn._validate import int_tuple
from jaxcnn.functional import _args, _cpu_paths
from jaxcnn.functional import padding as padding_lib
from jaxcnn.functional._args import Padding, Size
from jaxcnn.functional.conv import conv_plan


def conv_local_kernel_shape(
    x_shape: Sequence[int],
    window: Sequence[int],
    features: int,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    padding_mode: str = "zeros",
) -> tuple[int, ...]:
    """`(*out_spatial, C_in * prod(window), features)`: the kernel `conv_local` takes for `x` of `x_shape`
    `(*batch, *spatial, C_in)` with `window` (a tuple: one entry per spatial dim), checked as `conv`'s."""
    window = tuple(window)
    plan = conv_plan(x_shape, (*window, x_shape[-1], features), stride, padding, dilation, 1, padding_mode)
    return (*plan.geometry.out_sizes, x_shape[-1] * math.prod(window), features)


def conv_local(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    window: Size,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Convolution with unshared weights (Flax's `ConvLocal`): output cell `o` has a kernel of its own.

    `y[n, *o, j] = bias[*o, j] + sum_{c, w} x_pad[n, *(o * stride + w * dilation), c] * k[*o, c, w, j]`
    with `k = kernel.reshape(*out_spatial, C_in, prod(window), C_out)` (`w` the window position, row-major).

    Args:
      x: `(*batch, *spatial, C_in)` with as many spatial dims as the kernel has output dims.
      kernel: `(*out_spatial, C_in * prod(window), C_out)`, channel-major along its second-last axis, as
        Flax's `ConvLocal` and `jax.lax.conv_general_dilated_local` hold it.
      bias: `(*out_spatial, C_out)` (one per output cell, as Flax's) or None.
      window: the window, an int or one int per spatial dim.
      stride, padding, dilation, padding_mode, precision: as in `conv` (no groups).

    Returns:
      `(*batch, *out_spatial, C_out)`.
    """
    x = _args.as_float_array(x, "x")
    kernel = _args.as_float_array(kernel, "kernel")
    ndim = kernel.ndim - 2
    if not 1 <= ndim <= 3:
        raise ValueError(
            f"kernel must have shape (*out_spatial, C_in * prod(window), C_out) with 1, 2 or 3 output "
            f"dims, got kernel shape {tuple(kernel.shape)}"
        )
    window = int_tuple(window, ndim, "window")
    c_in, c_out = x.shape[-1], kernel.shape[-1]
    plan = conv_plan(x.shape, (*window, c_in, c_out), stride, padding, dilation, 1, padding_mode)
    geometry = plan.geometry
    expected = (*geometry.out_sizes, c_in * math.prod(window), c_out)
    if kernel.shape != expected:
        raise ValueError(
            f"kernel must have shape (*out_spatial, C_in * prod(window), C_out) = {expected} for x of shape "
            f"{tuple(x.shape)} and window {window}, got {tuple(kernel.shape)}"
        )
    if bias is not None:
        bias = _args.as_float_array(bias, "bias")
        if bias.shape != (*geometry.out_sizes, c_out):
            raise ValueError(
                f"bias must have shape (*out_spatial, C_out) = {(*geometry.out_sizes, c_out)}, "
                f"got {tuple(bias.shape)}"
            )
    dtype = jnp.result_type(x, kernel)
    x = x.astype(dtype)
    taps = math.prod(window)
    # Flax's channel-major rows -> the window-major order of `_cpu_paths.patches`.
    kernel = kernel.reshape(*geometry.out_sizes, c_in, taps, c_out)
    kernel = jnp.swapaxes(kernel, -3, -2).reshape(*geometry.out_sizes, taps * c_in, c_out).astype(dtype)
    spatial = tuple(range(1, ndim + 1))

    def one_batch(x: jax.Array) -> jax.Array:
        if plan.mode != "zeros":
            x = padding_lib.pad(x, plan.mode_pads, plan.mode)
        cols = _cpu_paths.patches(
            x, window, geometry.stride, geometry.pads, geometry.dilation, geometry.out_sizes
        )
        # batch over the output cells: (*out, N, C_out)
        y = lax.dot_general(cols, kernel, (((ndim + 1,), (ndim,)), (spatial, tuple(range(ndim)))), precision)
        y = jnp.moveaxis(y, ndim, 0)
        return y if bias is None else y + bias.astype(dtype)

    return _args.over_batch(one_batch, x, ndim)
