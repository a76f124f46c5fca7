"""Alternative lowerings of convolution and max pooling for XLA's CPU backend, and the rule that picks them.

`lax.conv_general_dilated` and `lax.reduce_window` stay the reference paths (and the only ones on
GPU/TPU). On CPU, XLA's convolution is slow when the input has few channels (a network's first
layers), and the gradient of `reduce_window` max (select-and-scatter) is slow; the paths here
avoid both. Every path computes the same function, so the choice only changes speed.

Forcing a path (read when a function is traced, so set it before `jax.jit` compiles):

    JAXCNN_CONV_PATH=auto|xla|im2col    (default auto: the rule of `conv_path`)
    JAXCNN_POOL_PATH=auto|xla|reshape   (default auto: the rule of `max_pool_path`)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_PATHS = ("auto", "xla", "im2col")
POOL_PATHS = ("auto", "xla", "reshape")

# Largest C_in (per group) for which the CPU rule takes im2col. Measured on the 2-core benchmark machine
# (float32, batch 128, fwd + grads wrt x and kernel, best of 7 alternating runs, milliseconds, XLA vs im2col):
#   28x28x1 -> 6, 5x5 pad 2:  19.1 vs 10.3      32x32x3 -> 16, 3x3 pad 1:   16.0 vs 10.4
#   14x14x6 -> 16, 5x5:        8.3 vs  5.8      32x32x16 -> 16, 3x3 pad 1:  33.6 vs 72.6
#   16x16x32 -> 32, 3x3:      28.8 vs 72.6      8x8x64 -> 64, 3x3 pad 1:    18.0 vs 26.7
# XLA's convolution is slow with few input channels; with more, building the patch matrix (C_in times
# the input, copied by XLA's concatenate at a few GB/s) costs more than XLA's convolution saves.
# Whole train steps agree: lenet5 (both convolutions on im2col) 1.5x XLA's examples/s, simple_cnn and
# resnet20 (first convolution only) within noise of it. Forward alone, im2col is slower where C_out is
# large for one input channel (simple_cnn's 28x28x1 -> 32, 3x3: 4.5 vs 3.8 ms); the rule optimises
# training. The machine was shared (load 5-9 on 2 cores): single figures swing by 2x, ratios less.
IM2COL_MAX_CHANNELS = 8


def _choice(variable: str, choices: Sequence[str]) -> str:
    value = os.environ.get(variable, "auto").strip().lower() or "auto"
    if value not in choices:
        raise ValueError(
            f"environment variable {variable} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def conv_path(channels_per_group: int, groups: int) -> str:
    """The path, "xla" or "im2col", for a convolution with `channels_per_group` input channels per group.

    `JAXCNN_CONV_PATH` forces a path; "auto" takes im2col only on CPU, for ungrouped convolutions
    with at most `IM2COL_MAX_CHANNELS` input channels (see the measurements above).
    """
    path = _choice("JAXCNN_CONV_PATH", CONV_PATHS)
    if path != "auto":
        return path
    if jax.default_backend() != "cpu":
        return "xla"
    return "im2col" if groups == 1 and channels_per_group <= IM2COL_MAX_CHANNELS else "xla"


def max_pool_path(window: Sequence[int], stride: Sequence[int], pads) -> str:
    """The path, "xla" or "reshape", for a max pool; "reshape" needs `stride == window` and no padding.

    "auto" takes reshape on CPU whenever it applies. Measured as above (fwd + grad, best of 15, ms,
    reduce_window vs reshape + argmax): 128x28x28x6, 2x2: 6.2 vs 2.8 (forward alone 0.6 vs 0.6).
    Overlapping windows (ResNet's 3x3 stride 2) stay on reduce_window: a gradient through stacked
    window slices measured 2x slower there (8x112x112x64: 160 vs 330 ms), as did maxima of strided
    slices with a pad-based gradient for 2x2 (3.1 ms).
    """
    path = _choice("JAXCNN_POOL_PATH", POOL_PATHS)
    applies = tuple(stride) == tuple(window) and not any(lo or hi for lo, hi in pads)
    if path == "reshape" and not applies:
        return "xla"  # forcing cannot change what the window geometry allows
    if path != "auto":
        return path
    return "reshape" if applies and jax.default_backend() == "cpu" else "xla"


def _window_slices(x, window, stride, dilation, out_sizes, spatial_axis):
    """One strided slice of `x` per window position (row-major), spatial dims from `spatial_axis` on."""
    lead, trail = x.shape[:spatial_axis], x.shape[spatial_axis + len(window) :]
    slices = []
    for offset in np.ndindex(*window):
        start = tuple(o * d for o, d in zip(offset, dilation))
        limit = tuple(b + (n - 1) * s + 1 for b, n, s in zip(start, out_sizes, stride))
        slices.append(
            lax.slice(
                x,
                (0,) * len(lead) + start + (0,) * len(trail),
                (*lead, *limit, *trail),
                (1,) * len(lead) + tuple(stride) + (1,) * len(trail),
            )
        )
    return slices


def patches(x, window, stride, pads, dilation, out_sizes):
    """`(N, *spatial, C)` -> `(N, *out_sizes, prod(window) * C)`, window position major, channel minor.

    Built from one strided slice per window position (its gradient is pads and adds, no convolution).
    """
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    slices = _window_slices(padded, window, stride, dilation, out_sizes, spatial_axis=1)
    return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)


def im2col_conv(x, kernel, stride, pads, dilation, groups, out_sizes, precision):
    """Cross-correlation as one matrix product of patches and kernel (one per group).

    `x` `(N, *spatial, C_in)`, `kernel` `(*window, C_in // groups, C_out)` -> `(N, *out_sizes, C_out)`.
    Autodiff turns the product into one GEMM for the kernel gradient and the slices into pads and adds
    (col2im) for the input gradient.
    """
    *window, c_group, c_out = kernel.shape
    taps = math.prod(window)
    if x.shape[-1] == 1:
        # One channel: the patch matrix (taps, N * prod(out)) stacks each slice as one contiguous row,
        # where the channel-minor layout below writes one float at a time, and `kernel^T @ cols` keeps the
        # long axis last (128 x 28x28x1 -> 6, 5x5, fwd + kernel gradient: 4.0 ms vs 5.0 channel-minor).
        padded = jnp.pad(x[..., 0], ((0, 0), *pads))
        cols = jnp.stack(_window_slices(padded, window, stride, dilation, out_sizes, spatial_axis=1))
        y = lax.dot_general(kernel.reshape(taps, c_out), cols, (((0,), (0,)), ((), ())), precision)
        return jnp.moveaxis(y, 0, -1)
    cols = patches(x, window, stride, pads, dilation, out_sizes)
    if groups == 1:
        return lax.dot_general(
            cols, kernel.reshape(taps * c_group, c_out), (((cols.ndim - 1,), (0,)), ((), ())), precision
        )
    lead = cols.shape[:-1]
    cols = cols.reshape(*lead, taps, groups, c_group)
    kernel = kernel.reshape(taps, c_group, groups, c_out // groups)
    batch = len(lead) + 1  # the groups axis of cols
    y = lax.dot_general(cols, kernel, (((batch - 1, batch + 1), (0, 1)), ((batch,), (2,))), precision)
    # y: (groups, *lead, C_out // groups) -> (*lead, C_out), group-major channels as in XLA.
    return jnp.moveaxis(y, 0, -2).reshape(*lead, c_out)


def _window_view(x, window):
    """`(N, *spatial, C)` cropped to whole windows -> `(N, *out, C, prod(window))` (a transposed copy)."""
    ndim = len(window)
    out = tuple(s // w for s, w in zip(x.shape[1:-1], window))
    x = x[(slice(None), *(slice(0, o * w) for o, w in zip(out, window)))]
    split = x.reshape(x.shape[0], *(d for o, w in zip(out, window) for d in (o, w)), x.shape[-1])
    outer = tuple(1 + 2 * i for i in range(ndim))
    inner = tuple(2 + 2 * i for i in range(ndim))
    return split.transpose(0, *outer, 2 * ndim + 1, *inner).reshape(x.shape[0], *out, x.shape[-1], -1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def reshape_max_pool(x, window: tuple[int, ...]):
    """Max pool with `stride == window` and no padding: `(N, *spatial, C)` -> `(N, *spatial // window, C)`.

    The derivative takes the first maximum of each window in row-major order, as `reduce_window`'s
    (select-and-scatter) and PyTorch's do, through an argmax and a one-hot select; its transpose, the
    gradient, is a select and a reshape back instead of XLA's select-and-scatter.
    """
    return _window_view(x, window).max(-1)


@reshape_max_pool.defjvp
def _reshape_max_pool_jvp(window, primals, tangents):
    (x,), (dx,) = primals, tangents
    view = _window_view(x, window)
    first = jnp.argmax(view, axis=-1)[..., None] == jnp.arange(view.shape[-1])
    picked = jnp.where(first, _window_view(dx, window), jnp.zeros((), dx.dtype))
    return view.max(-1), picked.sum(-1)
