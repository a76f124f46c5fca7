"""Transposed convolution: `conv`'s transpose (its gradient with respect to its input), and its size formula.

It is computed as `jax.linear_transpose` of `conv` itself, so the two cannot disagree, and it runs on
whichever lowering `conv`'s `impl` picks (XLA, patches times kernel, ...). Output sizes follow PyTorch
for numeric padding (`padding`, `output_padding`) and Flax / `jax.lax.conv_transpose` for the strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxcnn._validate import choice, int_tuple, integer
from jaxcnn.functional import _args, _cpu_paths
from jaxcnn.functional import padding as padding_lib
from jaxcnn.functional._args import Padding, Size
from jaxcnn.functional.conv import conv

_STRINGS = ("VALID", "SAME", "CAUSAL", "CIRCULAR", "REFLECT")


class TransposePlan(NamedTuple):
    """A transposed convolution resolved and checked, as the convolution it transposes: that one maps
    `out_sizes` to the input's sizes with `pads` in `mode` (cut to the input's sizes where PyTorch's
    `output_padding` reaches a stride past them)."""

    spatial_dims: int
    stride: tuple[int, ...]
    pads: _args.Pairs
    dilation: tuple[int, ...]
    mode: str
    out_sizes: tuple[int, ...]


def _string_size(padding: str, size: int, span: int, stride: int) -> int:
    """Flax's (`lax.conv_transpose`'s) output size for a padding string; CAUSAL as its numbers give."""
    if padding == "VALID":
        return size * stride + max(span - stride, 0)
    return (size - 1) * stride + 1 if padding == "CAUSAL" else size * stride


def transposed_sizes(
    sizes: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    padding: Padding,
    output_padding: Sequence[int],
    dilation: Sequence[int],
    padding_mode: str,
) -> tuple[tuple[int, ...], _args.Pairs, str]:
    """`(out_sizes, pads, mode)`: the transposed convolution's output sizes, and the padding of the
    convolution (from those sizes to `sizes`) that it transposes.

    Numeric padding: `W2 = (W1 - 1)*S - P_lo - P_hi + D*(F - 1) + output_padding + 1`, PyTorch's, with
    `0 <= output_padding < max(S, D)`. Strings: Flax's sizes ("SAME", "CIRCULAR", "REFLECT": `W1*S`;
    "VALID": `W1*S + max(D*(F - 1) + 1 - S, 0)`; "CAUSAL": `(W1 - 1)*S + 1`), output_padding 0.
    """
    spans = [d * (f - 1) + 1 for f, d in zip(window, dilation)]
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in _STRINGS:
            raise ValueError(
                f"padding must be one of {', '.join(map(repr, _STRINGS))}, an int, or one int or "
                f"(low, high) pair per spatial dim, got {padding!r}"
            )
        if any(output_padding):
            raise ValueError(
                f"output_padding must be 0 with padding={padding!r}, whose output size is fixed; "
                f"got {tuple(output_padding)}"
            )
        out_sizes = [_string_size(upper, *dims) for dims in zip(sizes, spans, stride)]
    else:
        pads = _args.padding_pairs(padding, sizes, window, stride, dilation)
        out_sizes = []
        for dim, (size, span, s, (lo, hi), extra, d) in enumerate(
            zip(sizes, spans, stride, pads, output_padding, dilation)
        ):
            if extra >= max(s, d):
                raise ValueError(
                    f"output_padding {extra} in spatial dim {dim} must be smaller than the stride {s} "
                    f"or the dilation {d}"
                )
            out = (size - 1) * s - lo - hi + span + extra
            if out < 1:
                raise ValueError(
                    f"padding ({lo}, {hi}) leaves no output in spatial dim {dim}: (W1 - 1)*S - P_lo - P_hi "
                    f"+ D*(F - 1) + output_padding + 1 = ({size} - 1)*{s} - {lo} - {hi} + {span - 1} + "
                    f"{extra} + 1 = {out}"
                )
            out_sizes.append(out)
        padding = pads
    pads, mode = padding_lib.conv_pads(padding, padding_mode, out_sizes, window, stride, dilation)
    return tuple(out_sizes), pads, mode


def conv_transpose_plan(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    stride: Size,
    padding: Padding,
    output_padding: Size,
    dilation: Size,
    groups: int,
    padding_mode: str = "zeros",
) -> TransposePlan:
    """Checks a transposed convolution of `x` `(*batch, *spatial, C_in)` by `kernel`
    `(*window, C_out // groups, C_in)`, the kernel of the convolution it transposes."""
    ndim = len(kernel_shape) - 2
    if not 1 <= ndim <= 3:
        raise ValueError(
            f"kernel must have shape (*window, C_out // groups, C_in) with 1, 2 or 3 window dims, "
            f"got kernel shape {tuple(kernel_shape)}"
        )
    _args.batch_shape(x_shape, ndim)
    groups = integer(groups, "groups", minimum=1)
    c_in = x_shape[-1]
    if kernel_shape[-1] != c_in:
        raise ValueError(
            f"kernel.shape[-1] must be the input channels C_in = {c_in} (the kernel is that of the "
            f"convolution this transposes: (*window, C_out // groups, C_in)), got kernel shape "
            f"{tuple(kernel_shape)}"
        )
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={c_in}")
    window = tuple(kernel_shape[:-2])
    stride = int_tuple(stride, ndim, "stride")
    dilation = int_tuple(dilation, ndim, "dilation")
    output_padding = int_tuple(output_padding, ndim, "output_padding", minimum=0)
    sizes = tuple(x_shape[-ndim - 1 : -1])
    out_sizes, pads, mode = transposed_sizes(
        sizes, window, stride, padding, output_padding, dilation, padding_mode
    )
    return TransposePlan(ndim, stride, pads, dilation, mode, out_sizes)


def conv_transpose(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Size = 1,
    padding: Padding = 0,
    output_padding: Size = 0,
    dilation: Size = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    impl: str = "auto",
) -> jax.Array:
    """Transposed convolution ("deconvolution"): the transpose of `conv` with respect to its input.

    `conv_transpose(x, k, ...)` is the gradient `vjp` of `x' -> conv(x', k, ...)` applied to `x`: each input
    cell adds `kernel` times its value into a window of the output, `stride` cells apart. It upsamples:
    the output is (about) `stride` times larger than the input.

    Args:
      x: `(*batch, *spatial, C_in)` with as many spatial dims as the kernel has window dims.
      kernel: `(*window, C_out // groups, C_in)`, the kernel of the convolution this transposes (that
        convolution maps C_out channels to C_in). Keras' `Conv2DTranspose` and Flax's `ConvTranspose(...,
        transpose_kernel=True)` hold it so; PyTorch's `(C_in, C_out // groups, *window)` weight is it after
        the same transposition as a convolution's (`weight.permute(2, 3, 1, 0)` in 2-d).
      bias: `(C_out,)` or None.
      stride, dilation: an int or one int per spatial dim.
      padding: PyTorch's: an int, or one int or (low, high) pair per spatial dim, the padding of the
        convolution this transposes: cut from the output. Or Flax's strings: "SAME", "CIRCULAR",
        "REFLECT" (output `W*S`), "VALID" (output `W*S + max(D*(F - 1) + 1 - S, 0)`), "CAUSAL" (1-d).
      output_padding: PyTorch's: cells added at the high end of each spatial dim (an int or one per
        dim, each smaller than the stride or the dilation) to pick among the output sizes that the
        convolution maps to the same input size. Numeric padding only.
      groups: channels split into this many independent groups, as in `conv`.
      padding_mode: that of the convolution this transposes ("zeros", "circular", "reflect",
        "replicate"): its transpose folds what that padding copied back onto the cells it came from.
      precision, impl: as in `conv` (the lowering of the convolution that is transposed).

    Returns:
      `(*batch, *out_spatial, C_out)`, each out size `conv_transpose_output_size(...)` of its dim.
    """
    choice(impl, "impl", _cpu_paths.CONV_IMPLS)
    x = _args.as_float_array(x, "x")
    kernel = _args.as_float_array(kernel, "kernel")
    plan = conv_transpose_plan(
        x.shape, kernel.shape, stride, padding, output_padding, dilation, groups, padding_mode
    )
    c_out = kernel.shape[-2] * groups
    if bias is not None:
        bias = _args.as_float_array(bias, "bias")
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have shape (C_out,) = ({c_out},), got {tuple(bias.shape)}")
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    sizes = x.shape[-plan.spatial_dims - 1 : -1]
    cut = (slice(None), *(slice(0, size) for size in sizes))  # PyTorch's output_padding >= stride

    def one_batch(x: jax.Array) -> jax.Array:
        def transposed(z: jax.Array) -> jax.Array:
            y = conv(
                z,
                kernel,
                stride=plan.stride,
                padding=plan.pads,
                dilation=plan.dilation,
                groups=groups,
                padding_mode=plan.mode,
                precision=precision,
                impl=impl,
            )
            return y[cut]

        y: jax.Array  # linear_transpose's function returns a tuple of Any
        (y,) = jax.linear_transpose(
            transposed, jax.ShapeDtypeStruct((x.shape[0], *plan.out_sizes, c_out), dtype)
        )(x)
        return y if bias is None else y + bias.astype(dtype)

    return _args.over_batch(one_batch, x, plan.spatial_dims)


def conv_transpose_output_size(
    size: int, window: int, stride: int = 1, padding: Padding = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Output length of one spatial dim of `conv_transpose`:
    `W2 = (W1 - 1)*S - 2P + D*(F - 1) + output_padding + 1` (PyTorch's; `- P_lo - P_hi` for a pair).

    Args:
      size: input length W1.
      window: kernel size F.
      stride: S.
      padding: an int P, a (low, high) pair, or a string of `conv_transpose` ("SAME": `W1*S`, ...).
      output_padding: at least 0 and smaller than the stride or the dilation.
      dilation: D.

    Raises:
      ValueError: an argument out of range, or an output smaller than 1.
    """
    size = integer(size, "size", minimum=1)
    window = integer(window, "window", minimum=1)
    stride = integer(stride, "stride", minimum=1)
    dilation = integer(dilation, "dilation", minimum=1)
    output_padding = integer(output_padding, "output_padding", minimum=0)
    if isinstance(padding, (tuple, list)):  # one dim: a (low, high) pair
        padding = (padding,)
    (out,), _, _ = transposed_sizes(
        (size,), (window,), (stride,), padding, (output_padding,), (dilation,), "zeros"
    )
    return out
