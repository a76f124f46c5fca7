"""Convolution: cross-correlation, true convolution, patches, and the size/parameter formulas."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxcnn._validate import boolean, choice, int_tuple, integer
from jaxcnn.functional import _args, _cpu_paths
from jaxcnn.functional import padding as padding_lib
from jaxcnn.functional._args import Padding, Size


class ConvGeometry(NamedTuple):
    """A convolution's static description as its lowering (`_cpu_paths.cross_correlate`) takes it."""

    stride: tuple[int, ...]
    pads: _args.Pairs
    dilation: tuple[int, ...]
    groups: int
    out_sizes: tuple[int, ...]


class ConvPlan(NamedTuple):
    """A convolution resolved and checked: its spatial rank, the lowering's geometry, and the padding
    mode; with a mode other than "zeros" the input is padded first (`mode_pads`) and the lowering's
    pads are zeros."""

    spatial_dims: int
    geometry: ConvGeometry
    mode: str
    mode_pads: _args.Pairs


def conv_plan(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    stride: Size,
    padding: Padding,
    dilation: Size,
    groups: int,
    padding_mode: str = "zeros",
) -> ConvPlan:
    """Checks a convolution of `x` `(*batch, *spatial, C_in)` by `kernel` `(*window, C_in // groups, C_out)`;
    the kernel's rank gives the spatial dims, the dims before them are batch dims (none or several)."""
    ndim = len(kernel_shape) - 2
    if not 1 <= ndim <= 3:
        raise ValueError(
            f"kernel must have shape (*window, C_in // groups, C_out) with 1, 2 or 3 window dims, "
            f"got kernel shape {tuple(kernel_shape)}"
        )
    _args.batch_shape(x_shape, ndim)
    groups = integer(groups, "groups", minimum=1)
    c_in, (k_in, c_out) = x_shape[-1], kernel_shape[-2:]
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={c_in}")
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide the output channels C_out={c_out} (kernel.shape[-1])")
    if k_in * groups != c_in:
        raise ValueError(
            f"kernel.shape[-2] must be C_in // groups = {c_in} // {groups} = {c_in // groups}, "
            f"got kernel shape {tuple(kernel_shape)}"
        )
    window, sizes = tuple(kernel_shape[:-2]), tuple(x_shape[-ndim - 1 : -1])
    stride = int_tuple(stride, ndim, "stride")
    dilation = int_tuple(dilation, ndim, "dilation")
    pads, mode = padding_lib.conv_pads(padding, padding_mode, sizes, window, stride, dilation)
    out_sizes = _args.output_sizes(sizes, window, stride, pads, dilation, name="kernel window")
    if mode == "zeros":
        return ConvPlan(ndim, ConvGeometry(stride, pads, dilation, groups, out_sizes), mode, ())
    unpadded = ((0, 0),) * ndim
    return ConvPlan(ndim, ConvGeometry(stride, unpadded, dilation, groups, out_sizes), mode, pads)


def _conv_operands(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    stride: Size,
    padding: Padding,
    dilation: Size,
    groups: int,
    padding_mode: str,
    impl: str,
) -> tuple[jax.Array, jax.Array, jax.Array | None, ConvPlan]:
    choice(impl, "impl", _cpu_paths.CONV_IMPLS)
    x = _args.as_float_array(x, "x")
    kernel = _args.as_float_array(kernel, "kernel")
    plan = conv_plan(x.shape, kernel.shape, stride, padding, dilation, groups, padding_mode)
    if bias is not None:
        bias = _args.as_float_array(bias, "bias")
        if bias.shape != (kernel.shape[-1],):
            raise ValueError(
                f"bias must have shape (C_out,) = ({kernel.shape[-1]},), got {tuple(bias.shape)}"
            )
    dtype = jnp.result_type(x, kernel)
    return x.astype(dtype), kernel.astype(dtype), bias, plan


def conv_output_shape(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> tuple[int, ...]:
    """The shape `conv` returns for these shapes and arguments, checked as `conv` checks them.

    Args:
      x_shape: `(*batch, *spatial, C_in)`.
      kernel_shape: `(*window, C_in // groups, C_out)`.

    Returns:
      `(*batch, *out_spatial, C_out)`.
    """
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
    plan = conv_plan(x_shape, kernel_shape, stride, padding, dilation, groups, padding_mode)
    batch = x_shape[: len(x_shape) - plan.spatial_dims - 1]
    return (*batch, *plan.geometry.out_sizes, kernel_shape[-1])


def _cross_correlate(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    plan: ConvPlan,
    precision: lax.PrecisionLike,
    impl: str,
) -> jax.Array:
    def one_batch(x: jax.Array) -> jax.Array:
        if plan.mode != "zeros":
            x = padding_lib.pad(x, plan.mode_pads, plan.mode)
        y = _cpu_paths.cross_correlate(x, kernel, *plan.geometry, precision, impl)
        return y if bias is None else y + bias.astype(y.dtype)

    return _args.over_batch(one_batch, x, plan.spatial_dims)


def conv(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    impl: str = "auto",
) -> jax.Array:
    """Cross-correlation, as every deep-learning library computes "convolution".

    `y[n, *o, j] = bias[j] + sum_{w, c} x_pad[n, *(o * stride + w * dilation), g(j) + c] * kernel[*w, c, j]`

    Args:
      x: `(*batch, *spatial, C_in)` with as many spatial dims as the kernel has window dims (1, 2 or 3),
        after any number of batch dims: `(N, H, W, C)`, an unbatched `(H, W, C)`, `(B1, B2, H, W, C)`.
      kernel: `(*window, C_in // groups, C_out)`.
      bias: `(C_out,)` or None.
      stride, dilation: an int or one int per spatial dim.
      padding: "VALID", "SAME", "CAUSAL" (1-d), "CIRCULAR" or "REFLECT" (Flax's: pads
        `((K - 1) // 2, K // 2)` for the dilated window K, in that mode), an int, or a tuple with one
        entry per spatial dim, each an int or a (low, high) pair.
      groups: input and output channels split into this many independent groups
        (`groups == C_in` is a depthwise convolution).
      padding_mode: what the padding holds, PyTorch's `padding_mode`: "zeros" (default), "circular"
        (the input wrapped round), "reflect" (mirrored, the edge not repeated) or "replicate" (the edge
        repeated).
      precision: passed to XLA (e.g. `jax.lax.Precision.HIGHEST` for full float32 on TPU/GPU).
      impl: how the convolution is lowered; every choice computes the same function. "auto" (default):
        on CPU, float32 on oneDNN (jaxcnn's C++ extension, through XLA's FFI) when the extension loads;
        otherwise a network's first layers (few input channels, a small patch matrix) as patches times
        kernel, the others on XLA's convolution; elsewhere XLA's (cuDNN on GPU). "onednn", "xla",
        "im2col", "im2col_grad", "tap_grad" force one (see `jaxcnn.functional._cpu_paths`).

    Returns:
      `(*batch, *out_spatial, C_out)`, each out size `conv_output_size(...)` of its dim.
    """
    x, kernel, bias, plan = _conv_operands(
        x, kernel, bias, stride, padding, dilation, groups, padding_mode, impl
    )
    return _cross_correlate(x, kernel, bias, plan, precision, impl)


def convolve(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    impl: str = "auto",
) -> jax.Array:
    """True convolution: `conv` with the kernel flipped in every spatial dim.

    This is the mathematical definition `(f * g)(t) = sum_s f(s) g(t - s)`; shapes and
    arguments are those of `conv`.
    """
    x, kernel, bias, plan = _conv_operands(
        x, kernel, bias, stride, padding, dilation, groups, padding_mode, impl
    )
    flipped = jnp.flip(kernel, axis=tuple(range(kernel.ndim - 2)))
    return _cross_correlate(x, flipped, bias, plan, precision, impl)


def extract_patches(
    x: ArrayLike,
    window: Size,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    *,
    spatial_dims: int | None = None,
) -> jax.Array:
    """Every window position's inputs, flattened: the "im2col" view of a convolution.

    Args:
      x: `(*batch, *spatial, C)`: the spatial dims are `spatial_dims`, or as many as a tuple `window`
        has, or (an int `window`) all but the first and last dims.
      window, stride, dilation: an int or one int per spatial dim.
      padding: "VALID", "SAME", "CAUSAL" (1-d), an int, or one int or (low, high) pair per spatial dim.

    Returns:
      `(*batch, *out_spatial, prod(window) * C)`, ordered window position first (row-major), then
      channel, so that `conv(x, k) == extract_patches(x, window) @ k.reshape(-1, C_out)`.
    """
    x, ndim = _args.spatial_input(x, spatial_dims, window)
    sizes = x.shape[-ndim - 1 : -1]
    window = int_tuple(window, ndim, "window")
    stride = int_tuple(stride, ndim, "stride")
    dilation = int_tuple(dilation, ndim, "dilation")
    pads = _args.padding_pairs(padding, sizes, window, stride, dilation)
    out_sizes = _args.output_sizes(sizes, window, stride, pads, dilation)
    one_batch = lambda x: _cpu_paths.patches(x, window, stride, pads, dilation, out_sizes)
    return _args.over_batch(one_batch, x, ndim)


def conv_output_size(
    size: int,
    window: int,
    stride: int = 1,
    padding: Padding = "VALID",
    dilation: int = 1,
    *,
    exact: bool = False,
    ceil_mode: bool = False,
) -> int:
    """Output length of one spatial dim: `floor((W + P_lo + P_hi - D*(F - 1) - 1) / S) + 1`.

    With symmetric padding P and no dilation this is the course formula
    `W2 = (W1 - F + 2P) / S + 1`.

    Args:
      size: input length W.
      window: kernel or pooling window F.
      stride: S.
      padding: "VALID", "SAME", "CAUSAL", "CIRCULAR", "REFLECT", an int P or a (low, high) pair.
      dilation: D.
      exact: if True, also require that the windows tile the padded input exactly, i.e.
        `(W + P_lo + P_hi - D*(F - 1) - 1)` divisible by S (no input cells silently dropped).
      ceil_mode: pooling's `ceil_mode` (PyTorch's): ceil instead of floor, less one if that last
        window would start past the input and the low padding.

    Raises:
      ValueError: the window does not fit (output < 1), or `exact` and the stride does not tile.
    """
    size = integer(size, "size", minimum=1)
    window = integer(window, "window", minimum=1)
    stride = integer(stride, "stride", minimum=1)
    dilation = integer(dilation, "dilation", minimum=1)
    boolean(ceil_mode, "ceil_mode")
    if isinstance(padding, (tuple, list)):  # one dim: a (low, high) pair
        padding = (padding,)
    pads, _ = padding_lib.conv_pads(padding, "zeros", (size,), (window,), (stride,), (dilation,))
    if ceil_mode:
        (out,), _ = _args.ceil_mode_sizes((size,), (window,), (stride,), pads, (dilation,))
    else:
        (out,) = _args.output_sizes((size,), (window,), (stride,), pads, (dilation,))
    (lo, hi), span = pads[0], dilation * (window - 1) + 1
    if exact and (size + lo + hi - span) % stride:
        raise ValueError(
            f"stride {stride} does not tile the input exactly: (W + P_lo + P_hi - span) = "
            f"({size} + {lo} + {hi} - {span}) = {size + lo + hi - span} is not divisible by {stride}"
        )
    return out


def conv_param_count(
    window: Size, in_channels: int, out_channels: int, *, groups: int = 1, use_bias: bool = True
) -> int:
    """Parameters of a convolution: `prod(window) * (C_in / groups) * C_out + C_out`.

    For a square F x F kernel on D1 channels with D2 filters: `(F * F * D1) * D2 + D2`.
    `window` is an int (one spatial dim) or a tuple, one entry per spatial dim.
    """
    window = (window,) if not isinstance(window, tuple) else window
    window = int_tuple(window, len(window), "window")
    in_channels = integer(in_channels, "in_channels", minimum=1)
    out_channels = integer(out_channels, "out_channels", minimum=1)
    groups = integer(groups, "groups", minimum=1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )
    return math.prod(window) * (in_channels // groups) * out_channels + (out_channels if use_bias else 0)
