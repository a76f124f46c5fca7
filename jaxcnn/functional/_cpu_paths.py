"""Alternative lowerings of convolution and max pooling for XLA's CPU backend, and the rule that picks them.

`lax.conv_general_dilated` and `lax.reduce_window` stay the reference paths (and the only ones on
GPU/TPU). On CPU, XLA's convolution is slow when the input has few channels (a network's first
layers), and the gradient of `reduce_window` max (select-and-scatter) is slow; the paths here avoid
both. Every path computes the same function, so the choice only changes speed (and float rounding).

jaxlib 0.10 hands CPU convolutions (all but tiny ones) to YNNPACK, which runs each on one thread: on
2 cores XLA's own convolution is twice as fast (128x14x14x64 -> 64, 3x3: 13.3 ms vs 6.7 ms; both 13 ms
on one core). Importing jaxcnn therefore adds `--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`
to XLA_FLAGS (jaxlib's default less `individual_convolution`: YNNPACK keeps matrix products and
reductions) when JAX's backend has not started yet and XLA_FLAGS does not set that flag already. Set it
yourself to choose otherwise; `...=individual_dot,individual_convolution,reduce` is jaxlib's default.
`conv_path` has one rule for each case.

Forcing a path (read when a function is traced, so set it before `jax.jit` compiles):

    JAXCNN_CONV_PATH=auto|onednn|xla|im2col|im2col_grad|tap_grad   (default auto: the rule of `conv_path`)
    JAXCNN_POOL_PATH=auto|xla|reshape                              (default auto: `max_pool_path`'s rule)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jaxlib.version
import numpy as np
from jax import lax
from jax._src import xla_bridge
from jax.custom_derivatives import SymbolicZero

from jaxcnn.functional import _onednn

CONV_PATHS = ("auto", "onednn", "xla", "im2col", "im2col_grad", "tap_grad")
POOL_PATHS = ("auto", "xla", "reshape")
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_WITHOUT_CONVOLUTIONS = "individual_dot,reduce"
# The jaxlib releases measured to send convolutions to YNNPACK by default, with the default above, as a
# half-open range of (major, minor): 0.10.x. Others are left alone: XLA aborts on a flag it does not know,
# and their default set may differ.
YNN_CONVOLUTION_JAXLIBS = ((0, 10), (0, 11))


def keep_convolutions_off_ynnpack() -> None:
    """Let XLA's multi-threaded convolution serve `lax.conv_general_dilated` on CPU (see above).

    Called when jaxcnn is imported; changes XLA_FLAGS only before JAX's backend starts (XLA reads the
    variable then), only when it does not name the flag, and only on the jaxlib releases above.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    low, high = YNN_CONVOLUTION_JAXLIBS
    if YNN_FLAG in flags or not low <= jaxlib.version.__version_info__[:2] < high:
        return
    if xla_bridge.backends_are_initialized():
        return
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={YNN_WITHOUT_CONVOLUTIONS}".strip()


def xla_convolutions_threaded() -> bool:
    """Whether XLA_FLAGS keeps CPU convolutions on XLA's own (multi-threaded) implementation."""
    values = [
        flag.partition("=")[2]
        for flag in os.environ.get("XLA_FLAGS", "").split()
        if flag.startswith(YNN_FLAG + "=")
    ]
    return bool(values) and "individual_convolution" not in values[-1].split(",")


# The CPU rules of `conv_path`, from per-layer measurements (`experiments/conv_paths.py`, jax 0.10.2,
# float32, best of 9; "train" = forward + gradients, wrt the kernel only for a network's first layer;
# milliseconds, batch 128 unless said).
#
# XLA's own convolution (YNNPACK kept off convolutions; 2-core Intel Xeon with AVX-512):
#
#   layer                             patch floats  xla train/eval  im2col       im2col_grad  tap_grad
#   28x28x1 -> 6, 5x5 (lenet5)              2.5M       6.1 / 3.6     4.8 / 3.7    4.8 / 3.5   11.8 / 3.6
#   14x14x6 -> 16, 5x5 (lenet5)             1.9M       6.2 / 0.9     4.6 / 0.9    4.6 / 0.9    6.8 / 0.9
#   28x28x1 -> 32, 3x3 (simple_cnn)         0.9M       8.2 / 2.3     5.8 / 2.2    5.8 / 2.2   14.4 / 2.3
#   32x32x3 -> 16, 3x3 (resnet20 stem)      3.5M      10.7 / 3.5     9.7 / 3.7   10.0 / 3.7   11.6 / 3.8
#   224x224x3 -> 64, 7x7/2, batch 8        14.7M      60.5 / 11.1   89.6 / 11.5  92.2 / 11.0 111.1 / 11.2
#   28x28x8 -> 32, 3x3                      7.2M      39.3 / 3.0    55.6 / 3.1   54.4 / 3.0   51.5 / 2.8
#   14x14x32 -> 64, 3x3 (simple_cnn)        7.2M      26.2 / 3.4    41.9 / 3.3   45.1 / 3.6   32.5 / 3.7
#   28x28x24 -> 24, 3x3 (compact)          21.7M      53.1 / 6.6   108.7 / 6.6  109.4 / 6.5   76.8 / 6.2
#   32x32x16 -> 16, 3x3 (resnet20)         18.9M      36.7 / 4.3    86.3 / 4.5   86.5 / 4.7   58.3 / 4.1
#   32x32x16 -> 32, 3x3/2 (resnet20)        4.7M      23.9 / 1.6    29.6 / 1.6   19.2 / 1.6   22.7 / 1.8
#   16x16x32 -> 32, 3x3 (resnet20)          9.4M      20.8 / 2.8    48.6 / 2.7   49.1 / 2.7   23.0 / 2.6
#   14x14x40 -> 40, 3x3 (compact)           9.0M      24.1 / 3.5    47.7 / 3.6   49.3 / 3.7   32.7 / 3.6
#   8x8x64 -> 64, 3x3 (resnet20)            4.7M      11.9 / 2.3    16.3 / 2.3   17.3 / 2.2   18.4 / 2.3
#   16x16x32 -> 64, 3x3/2 (resnet20)        2.4M      10.4 / 1.3     9.9 / 1.3   10.9 / 1.3   12.6 / 1.3
#   7x7x64 -> 64, 3x3 (compact)             3.6M       9.7 / 1.8    12.9 / 1.9   13.0 / 1.9   14.8 / 1.8
#   56x56x64 -> 64, 3x3, batch 8           14.5M      36.7 / 6.8    83.1 / 7.1   84.8 / 6.9   77.1 / 7.1
#   7x7x512 -> 512, 3x3, batch 8            1.8M      25.6 / 7.0    22.6 / 7.2   22.9 / 7.6   24.0 / 6.5
#   16x16x32 -> 32, 3x3, batch 512         37.7M     101.8 / 11.3  194.5 / 10.7 188.6 / 11.1 124.5 / 11.0
#
# Here XLA wins every layer but the first ones: with at most 8 input channels and a patch matrix
# N * out_pixels * taps * C_in that stays in the cache (<= 4M floats, 16 MiB), im2col (patches times
# kernel, one GEMM) is 10-30% faster; its forward alone wins only when, in addition, C_out <= taps * C_in
# (otherwise "im2col_grad": XLA's forward, im2col's derivatives). The few wins of the other paths on wide
# layers (7x7x512, 16x16x32 -> 64/2) are within the +-20% these figures swing.
#
# YNNPACK's single-threaded convolution (jaxlib's default; 2-core AMD EPYC):
#
#   layer                             patch floats  xla train/eval  im2col       im2col_grad  tap_grad
#   28x28x1 -> 6, 5x5 (lenet5)              2.5M      10.1 / 6.1     6.2 / 2.0   6.7 / 6.1   15.7 / 6.0
#   14x14x6 -> 16, 5x5 (lenet5)             1.9M       8.2 / 1.1     6.7 / 1.5   6.8 / 1.1    7.6 / 1.1
#   28x28x1 -> 32, 3x3 (simple_cnn)         0.9M      20.4 / 1.3    10.1 / 2.9  10.3 / 1.3   12.5 / 1.5
#   32x32x3 -> 16, 3x3 (resnet20 stem)      3.5M      19.6 / 5.5    12.8 / 4.2  12.8 / 5.4   14.7 / 5.6
#   224x224x3 -> 64, 7x7/2, batch 8        14.7M     296.0 / 22.3  131.7 / 76.2 144.7 / 23.1 178.5 / 23.6
#   28x28x8 -> 32, 3x3                      7.2M     156.0 / 7.9    82.8 / 33.5 102.6 / 7.6  84.1 / 7.9
#   32x32x16 -> 16, 3x3 (resnet20)         18.9M      64.7 / 5.9   119.0 / 64.8 132.5 / 6.1  84.0 / 6.1
#   32x32x16 -> 32, 3x3/2 (resnet20)        4.7M      47.9 / 6.9    48.0 / 9.0  51.6 / 6.5   40.4 / 7.0
#   16x16x32 -> 32, 3x3 (resnet20)          9.4M      52.1 / 9.1    68.6 / 33.3 69.6 / 9.0   39.8 / 8.7
#   14x14x40 -> 40, 3x3 (compact)           9.0M      57.6 / 10.1   69.5 / 33.1 69.4 / 9.9   39.7 / 9.9
#   8x8x64 -> 64, 3x3 (resnet20)            4.7M      40.5 / 8.5    43.2 / 19.1 38.2 / 7.8   29.7 / 8.2
#   16x16x32 -> 64, 3x3/2 (resnet20)        2.4M      26.8 / 5.1    18.3 / 4.3  16.8 / 4.9   22.8 / 4.7
#   7x7x64 -> 64, 3x3 (compact)             3.6M      27.6 / 6.8    18.2 / 6.2  18.3 / 6.6   22.9 / 6.8
#   7x7x512 -> 512, 3x3, batch 8            1.8M      59.7 / 15.1   36.7 / 11.3 36.7 / 15.6  50.1 / 15.1
#   16x16x32 -> 32, 3x3, batch 512         37.7M     288.0 / 35.8  266.9 / 139.7 273.2 / 33.7 195.8 / 33.5
#
# Here im2col wins training while the patch matrix stays in the cache or the input has few channels
# (YNNPACK's convolution is at its slowest there); its forward alone wins as above. Above that size,
# building the patch matrix costs more than it saves, and the kernel-gradient convolution is the slow
# part: per-window-position GEMMs ("tap_grad") replace it once C_in * C_out >= 512; below, XLA's own path
# is as fast.
IM2COL_MAX_CHANNELS = 8
IM2COL_MAX_PATCH_FLOATS = 4 * 2**20
TAP_GRAD_MIN_CHANNEL_PRODUCT = 512


def _choice(variable: str, choices: Sequence[str]) -> str:
    value = os.environ.get(variable, "auto").strip().lower() or "auto"
    if value not in choices:
        raise ValueError(
            f"environment variable {variable} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def conv_path(kernel_shape: Sequence[int], groups: int, batch: int, out_sizes: Sequence[int], dtype) -> str:
    """The path for a convolution with kernel `(*window, C_in // groups, C_out)` and this output size.

    "onednn": oneDNN's convolutions and their gradients (`_onednn`), on CPU for float32 when jaxcnn's
    extension loads. "xla": `lax.conv_general_dilated` and its autodiff. "im2col": patches times kernel,
    and its autodiff. "im2col_grad": XLA's forward when not differentiated, im2col under differentiation.
    "tap_grad": XLA's forward and input gradient, the kernel gradient as one GEMM per window position.
    `JAXCNN_CONV_PATH` forces a path where it applies ("onednn" needs the extension and float32,
    "tap_grad" `groups == 1`; else "xla"). "auto" is "onednn" where it applies on CPU, else the rule of
    `xla_conv_path`, and "xla" on GPU/TPU (cuDNN).
    """
    path = _choice("JAXCNN_CONV_PATH", CONV_PATHS)
    on_cpu = jax.default_backend() == "cpu"
    if path == "onednn" or (path == "auto" and on_cpu):
        if np.dtype(dtype) == np.float32 and batch > 0 and _onednn.available():
            return "onednn"
        if path == "onednn":
            return "xla"
    if path == "tap_grad" and groups != 1:
        return "xla"
    if path != "auto":
        return path
    return xla_conv_path(kernel_shape, groups, batch, out_sizes) if on_cpu else "xla"


def xla_conv_path(kernel_shape: Sequence[int], groups: int, batch: int, out_sizes: Sequence[int]) -> str:
    """The CPU rule among XLA's lowerings (without oneDNN), from the measurements above: for ungrouped
    convolutions, the rule of whichever convolution XLA runs; "xla" for grouped ones."""
    if groups != 1:
        return "xla"
    *window, c_in, c_out = kernel_shape
    patch_length = math.prod(window) * c_in
    cached = batch * math.prod(out_sizes) * patch_length <= IM2COL_MAX_PATCH_FLOATS
    few_channels = c_in <= IM2COL_MAX_CHANNELS
    if xla_convolutions_threaded():
        if not (cached and few_channels):
            return "xla"
    elif not (cached or few_channels):
        return "tap_grad" if c_in * c_out >= TAP_GRAD_MIN_CHANNEL_PRODUCT else "xla"
    return "im2col" if cached and c_out <= patch_length else "im2col_grad"


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


def xla_conv(x, kernel, stride, pads, dilation, groups, precision):
    """`lax.conv_general_dilated` on `(N, *spatial, C_in)` and `(*window, C_in // groups, C_out)`."""
    ndim = x.ndim - 2
    spatial = tuple(range(1, ndim + 1))
    numbers = lax.ConvDimensionNumbers(
        lhs_spec=(0, ndim + 1, *spatial),
        rhs_spec=(ndim + 1, ndim, *range(ndim)),
        out_spec=(0, ndim + 1, *spatial),
    )
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=numbers,
        feature_group_count=groups,
        precision=precision,
    )


def _tap_sum(x, kernel, stride, pads, dilation, out_sizes, precision):
    """The (ungrouped) convolution as a sum over window positions of `slice(x) @ kernel[position]`.

    Slow as a forward pass; written for its transpose wrt `kernel`: per window position one 2-D GEMM
    `slice(x)^T @ cotangent`, `(C_in, N*out) @ (N*out, C_out)`.
    """
    *window, c_in, c_out = kernel.shape
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    taps = kernel.reshape(-1, c_in, c_out)
    y = None
    for tap, piece in enumerate(_window_slices(padded, window, stride, dilation, out_sizes, 1)):
        term = lax.dot_general(piece.reshape(-1, c_in), taps[tap], (((1,), (0,)), ((), ())), precision)
        y = term if y is None else y + term
    return y.reshape(x.shape[0], *out_sizes, c_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def tap_grad_conv(x, kernel, stride, pads, dilation, out_sizes, precision):
    """XLA's (ungrouped) convolution and input gradient, with the kernel gradient of `_tap_sum`."""
    return xla_conv(x, kernel, stride, pads, dilation, 1, precision)


def _tap_grad_conv_jvp(stride, pads, dilation, out_sizes, precision, primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    y = xla_conv(x, kernel, stride, pads, dilation, 1, precision)
    terms = []
    if not isinstance(dx, SymbolicZero):  # a network's first layer needs no input gradient
        terms.append(xla_conv(dx, kernel, stride, pads, dilation, 1, precision))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_tap_sum(x, dkernel, stride, pads, dilation, out_sizes, precision))
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


tap_grad_conv.defjvp(_tap_grad_conv_jvp, symbolic_zeros=True)


def forward_then(forward, differentiable):
    """`forward(x, kernel)` when not differentiated; under any derivative, `differentiable`'s value and
    derivatives. Both compute the same function (up to float rounding), so the faster one serves each."""

    @jax.custom_jvp
    def fn(x, kernel):
        return forward(x, kernel)

    def jvp(primals, tangents):
        moving = [i for i, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]

        def of_moving(*args):
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


def cross_correlate(x, kernel, stride, pads, dilation, groups, out_sizes, precision):
    """The convolution of `jaxcnn.functional.conv` (no bias) on the path `conv_path` picks."""
    path = conv_path(kernel.shape, groups, x.shape[0], out_sizes, x.dtype)
    if path == "onednn":
        return _onednn.conv(x, kernel, stride, pads, dilation, groups, out_sizes)
    if path == "tap_grad":
        return tap_grad_conv(x, kernel, stride, pads, dilation, out_sizes, precision)
    xla = lambda x, kernel: xla_conv(x, kernel, stride, pads, dilation, groups, precision)
    if path == "xla":
        return xla(x, kernel)
    im2col = lambda x, kernel: im2col_conv(x, kernel, stride, pads, dilation, groups, out_sizes, precision)
    if path == "im2col":
        return im2col(x, kernel)
    return forward_then(xla, im2col)(x, kernel)


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
