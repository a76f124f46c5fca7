"""Alternative lowerings of convolution, max pooling and BatchNorm's per-channel sums for XLA's CPU backend,
and the rule that picks them.

`lax.conv_general_dilated` and `lax.reduce_window` stay the reference lowerings (and the only ones on
GPU/TPU). On CPU, float32 convolutions (and bfloat16 ones where the CPU has its arithmetic) and their
gradients run on oneDNN (`_onednn`, jaxcnn's C++ extension) when it loads. Without it, XLA's convolution
is slow when the input has few channels (a network's first layers); and the gradient of `reduce_window`
max (select-and-scatter) is slow; the lowerings here avoid both. Every lowering computes the same
function, so the choice only changes speed (and float rounding).
The choice is the `impl` argument of `jaxcnn.functional.conv` and `max_pool`; "auto" applies the rules
of `conv_impl` and `max_pool_impl`, written from the per-layer measurements in docs/conv-lowerings.md
(`experiments/conv_paths.py` remakes them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike, DTypeLike

from jaxcnn.functional import _onednn
from jaxcnn.functional._args import Pairs
from jaxcnn.functional._xla_conv import xla_conv
from jaxcnn.runtime import xla_cpu_convolutions_threaded

CONV_IMPLS = ("auto", "onednn", "xla", "im2col", "im2col_grad", "tap_grad")
MAX_POOL_IMPLS = ("auto", "xla", "reshape")
# With XLA's threaded convolution, im2col wins a network's first layers: at most 8 input channels and a
# patch matrix N * out_pixels * taps * C_in that stays in the cache (<= 4M floats). With YNNPACK's
# single-threaded one, im2col wins within either bound, and per-window-position GEMMs for the kernel
# gradient ("tap_grad") win beyond both once C_in * C_out >= 512 (docs/conv-lowerings.md).
IM2COL_MAX_CHANNELS = 8
IM2COL_MAX_PATCH_FLOATS = 4 * 2**20
TAP_GRAD_MIN_CHANNEL_PRODUCT = 512
_Conv = Callable[[jax.Array, jax.Array], jax.Array]  # (x, kernel) -> y


def conv_impl(
    impl: str,
    kernel_shape: Sequence[int],
    groups: int,
    batch: int,
    out_sizes: Sequence[int],
    dtype: DTypeLike,
) -> str:
    """The lowering for a convolution with kernel `(*window, C_in // groups, C_out)` and this output size.

    "onednn": oneDNN's convolution and its gradients (`_onednn`), for `onednn_dtypes()` when jaxcnn's
    extension loads (else "xla"). "xla": `lax.conv_general_dilated` and its autodiff. "im2col": patches
    times kernel, and its autodiff. "im2col_grad": XLA's forward when not differentiated, im2col under
    differentiation. "tap_grad": XLA's forward and input gradient, the kernel gradient as one GEMM per
    window position (ungrouped convolutions only: grouped ones take "xla"). "auto" is "onednn" on CPU
    where it applies, else the rule of `xla_conv_impl`; "xla" on GPU/TPU (cuDNN).
    """
    on_cpu = jax.default_backend() == "cpu"
    if impl == "onednn" or (impl == "auto" and on_cpu):
        if np.dtype(dtype) in onednn_dtypes() and batch > 0 and _onednn.available():
            return "onednn"
        if impl == "onednn":
            return "xla"
    if impl == "tap_grad" and groups != 1:
        return "xla"
    if impl != "auto":
        return impl
    if not on_cpu:
        return "xla"
    return xla_conv_impl(kernel_shape, groups, batch, out_sizes, xla_cpu_convolutions_threaded())


def onednn_dtypes() -> tuple[np.dtype[np.generic], ...]:
    """The dtypes convolutions run in on oneDNN: float32, and bfloat16 where the CPU has its arithmetic."""
    return (
        (np.dtype(np.float32), np.dtype(jnp.bfloat16))
        if _onednn.native_bfloat16()
        else (np.dtype(np.float32),)
    )


def xla_conv_impl(
    kernel_shape: Sequence[int], groups: int, batch: int, out_sizes: Sequence[int], threaded: bool
) -> str:
    """The CPU rule among XLA's lowerings (without oneDNN), from the measurements: for ungrouped
    convolutions, the rule of whichever convolution XLA runs (`threaded`: its own, else YNNPACK's, as
    `runtime.xla_cpu_convolutions_threaded` tells); "xla" for grouped ones."""
    if groups != 1:
        return "xla"
    *window, c_in, c_out = kernel_shape
    patch_length = math.prod(window) * c_in
    cached = batch * math.prod(out_sizes) * patch_length <= IM2COL_MAX_PATCH_FLOATS
    few_channels = c_in <= IM2COL_MAX_CHANNELS
    if threaded:
        if not (cached and few_channels):
            return "xla"
    elif not (cached or few_channels):
        return "tap_grad" if c_in * c_out >= TAP_GRAD_MIN_CHANNEL_PRODUCT else "xla"
    return "im2col" if cached and c_out <= patch_length else "im2col_grad"


def max_pool_impl(impl: str, window: Sequence[int], stride: Sequence[int], pads: Pairs) -> str:
    """The lowering, "xla" or "reshape", for a max pool; "reshape" needs `stride == window` and no padding
    (elsewhere it is "xla": forcing cannot change what the window geometry allows).

    "auto" takes reshape on CPU whenever it applies. Measured (fwd + grad, best of 15, ms,
    reduce_window vs reshape + argmax): 128x28x28x6, 2x2: 6.2 vs 2.8 (forward alone 0.6 vs 0.6).
    Overlapping windows (ResNet's 3x3 stride 2) stay on reduce_window: a gradient through stacked
    window slices measured 2x slower there (8x112x112x64: 160 vs 330 ms), as did maxima of strided
    slices with a pad-based gradient for 2x2 (3.1 ms).
    """
    applies = tuple(stride) == tuple(window) and not any(lo or hi for lo, hi in pads)
    if not applies:
        return "xla"
    if impl != "auto":
        return impl
    return "reshape" if jax.default_backend() == "cpu" else "xla"


def _window_slices(
    x: jax.Array,
    window: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    out_sizes: Sequence[int],
    spatial_axis: int,
) -> list[jax.Array]:
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


def patches(
    x: jax.Array,
    window: Sequence[int],
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    out_sizes: Sequence[int],
) -> jax.Array:
    """`(N, *spatial, C)` -> `(N, *out_sizes, prod(window) * C)`, window position major, channel minor.

    Built from one strided slice per window position (its gradient is pads and adds, no convolution).
    """
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    slices = _window_slices(padded, window, stride, dilation, out_sizes, spatial_axis=1)
    return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)


def im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    groups: int,
    out_sizes: Sequence[int],
    precision: lax.PrecisionLike,
) -> jax.Array:
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


def _tap_sum(
    x: jax.Array,
    kernel: jax.Array,
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    out_sizes: Sequence[int],
    precision: lax.PrecisionLike,
) -> jax.Array:
    """The (ungrouped) convolution as a sum over window positions of `slice(x) @ kernel[position]`.

    Slow as a forward pass; written for its transpose wrt `kernel`: per window position one 2-D GEMM
    `slice(x)^T @ cotangent`, `(C_in, N*out) @ (N*out, C_out)`.
    """
    *window, c_in, c_out = kernel.shape
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    taps = kernel.reshape(-1, c_in, c_out)
    pieces = _window_slices(padded, window, stride, dilation, out_sizes, 1)
    terms = [
        lax.dot_general(piece.reshape(-1, c_in), taps[tap], (((1,), (0,)), ((), ())), precision)
        for tap, piece in enumerate(pieces)
    ]
    y: jax.Array = functools.reduce(jnp.add, terms)
    return y.reshape(x.shape[0], *out_sizes, c_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def tap_grad_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    out_sizes: Sequence[int],
    precision: lax.PrecisionLike,
) -> jax.Array:
    """XLA's (ungrouped) convolution and input gradient, with the kernel gradient of `_tap_sum`."""
    return xla_conv(x, kernel, stride, pads, dilation, 1, precision)


def _tap_grad_conv_jvp(
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    out_sizes: Sequence[int],
    precision: lax.PrecisionLike,
    primals: tuple[jax.Array, jax.Array],
    tangents: tuple[jax.Array | SymbolicZero, jax.Array | SymbolicZero],
) -> tuple[jax.Array, jax.Array]:
    (x, kernel), (dx, dkernel) = primals, tangents
    y = xla_conv(x, kernel, stride, pads, dilation, 1, precision)
    terms = []
    if not isinstance(dx, SymbolicZero):  # a network's first layer needs no input gradient
        terms.append(xla_conv(dx, kernel, stride, pads, dilation, 1, precision))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_tap_sum(x, dkernel, stride, pads, dilation, out_sizes, precision))
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


tap_grad_conv.defjvp(_tap_grad_conv_jvp, symbolic_zeros=True)


def forward_then(forward: _Conv, differentiable: _Conv) -> _Conv:
    """`forward(x, kernel)` when not differentiated; under any derivative, `differentiable`'s value and
    derivatives. Both compute the same function (up to float rounding), so the faster one serves each."""

    @jax.custom_jvp
    def fn(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return forward(x, kernel)

    def jvp(
        primals: tuple[jax.Array, ...], tangents: tuple[jax.Array | SymbolicZero, ...]
    ) -> tuple[jax.Array, jax.Array]:
        moving = [i for i, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]

        def of_moving(*args: jax.Array) -> jax.Array:
            full = list(primals)
            for i, a in zip(moving, args):
                full[i] = a
            return differentiable(*full)

        if not moving:
            y = forward(*primals)
            return y, jnp.zeros_like(y)
        return jax.jvp(of_moving, [primals[i] for i in moving], [tangents[i] for i in moving])

    fn.defjvp(jvp, symbolic_zeros=True)
    return fn


def cross_correlate(
    x: jax.Array,
    kernel: jax.Array,
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    groups: int,
    out_sizes: Sequence[int],
    precision: lax.PrecisionLike,
    impl: str,
) -> jax.Array:
    """The convolution of `jaxcnn.functional.conv` (no bias) on the lowering `conv_impl` picks for `impl`."""
    impl = conv_impl(impl, kernel.shape, groups, x.shape[0], out_sizes, x.dtype)
    if impl == "onednn":
        return _onednn.conv(x, kernel, stride, pads, dilation, groups, out_sizes)
    if impl == "tap_grad":
        return tap_grad_conv(x, kernel, stride, pads, dilation, out_sizes, precision)
    xla: _Conv
    xla = lambda x, kernel: xla_conv(x, kernel, stride, pads, dilation, groups, precision)
    if impl == "xla":
        return xla(x, kernel)
    im2col: _Conv
    im2col = lambda x, kernel: im2col_conv(x, kernel, stride, pads, dilation, groups, out_sizes, precision)
    if impl == "im2col":
        return im2col(x, kernel)
    return forward_then(xla, im2col)(x, kernel)


def _window_view(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """`(N, *spatial, C)` cropped to whole windows -> `(N, *out, C, prod(window))` (a transposed copy)."""
    ndim = len(window)
    out = tuple(s // w for s, w in zip(x.shape[1:-1], window))
    x = x[(slice(None), *(slice(0, o * w) for o, w in zip(out, window)))]
    split = x.reshape(x.shape[0], *(d for o, w in zip(out, window) for d in (o, w)), x.shape[-1])
    outer = tuple(1 + 2 * i for i in range(ndim))
    inner = tuple(2 + 2 * i for i in range(ndim))
    return split.transpose(0, *outer, 2 * ndim + 1, *inner).reshape(x.shape[0], *out, x.shape[-1], -1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def reshape_max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Max pool with `stride == window` and no padding: `(N, *spatial, C)` -> `(N, *spatial // window, C)`.

    The derivative takes the first maximum of each window in row-major order, as `reduce_window`'s
    (select-and-scatter) and PyTorch's do, through an argmax and a one-hot select; its transpose, the
    gradient, is a select and a reshape back instead of XLA's select-and-scatter.
    """
    return _window_view(x, window).max(-1)


@reshape_max_pool.defjvp
def _reshape_max_pool_jvp(
    window: tuple[int, ...], primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (dx,) = primals, tangents
    view = _window_view(x, window)
    first = jnp.argmax(view, axis=-1)[..., None] == jnp.arange(view.shape[-1])
    picked = jnp.where(first, _window_view(dx, window), jnp.zeros((), dx.dtype))
    return view.max(-1), picked.sum(-1)


def channel_sum(x: jax.Array) -> jax.Array:
    """`(..., C)` -> `(C,)`: the sum over every axis but the last. On CPU, a product with a row of ones:
    XLA's CPU reduction over the leading axes of an `(M, C)` array runs on one thread, its dot on every
    core (BatchNorm's statistics and gradients, 128x32x32x16, forward and backward: 7.9 ms -> 4.8 ms)."""
    if jax.default_backend() != "cpu":
        return jnp.sum(x, axis=tuple(range(x.ndim - 1)))
    rows = x.reshape(-1, x.shape[-1])
    return jnp.ones(rows.shape[:1], rows.dtype) @ rows


def broadcast_channels(v: ArrayLike, shape: Sequence[int]) -> jax.Array:
    """`(C,)` -> `shape` = `(..., C)`. On CPU, the product of a column of ones and `v` as a row (XLA
    compiles it as the broadcast it is), so that its transpose, the gradient wrt `v`, is `channel_sum`'s
    matrix-vector product instead of a single-threaded reduction."""
    if jax.default_backend() != "cpu":
        return jnp.broadcast_to(v, shape)
    ones = jnp.ones((math.prod(shape[:-1]), 1), jnp.result_type(v))
    return lax.dot_general(ones, jnp.reshape(v, (1, -1)), (((1,), (0,)), ((), ()))).reshape(shape)
