"""Pooling: windowed max and average, global, and adaptive (PyTorch bins)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn._validate import choice, int_tuple
from jaxcnn.functional import _args, _cpu_paths


def _pool_geometry(x, window, stride, padding):
    x = _args.spatial_input(x)
    ndim = x.ndim - 2
    window = int_tuple(window, ndim, "window")
    stride = window if stride is None else int_tuple(stride, ndim, "stride")
    ones = (1,) * ndim
    pads = _args.padding_pairs(padding, x.shape[1:-1], window, stride, ones)
    _args.check_pool_padding(pads, window)
    _args.output_sizes(x.shape[1:-1], window, stride, pads, ones)
    return x, window, stride, pads


def _reduce_window(x, init, op, window, stride, pads):
    # A concrete numpy identity lets JAX pick its differentiable max/sum window primitives.
    return lax.reduce_window(
        x, np.asarray(init, x.dtype), op, (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))
    )


def max_pool(x, window, stride=None, padding="VALID", *, impl="auto"):
    """Maximum over each window; padded cells hold -inf, so they never win.

    Args:
      x: `(N, *spatial, C)` with 1, 2 or 3 spatial dims.
      window: an int or one int per spatial dim.
      stride: defaults to `window` (non-overlapping windows).
      padding: any form of `conv`'s; at most `window // 2` per side.
      impl: how it is lowered (the same function either way): "auto" (default) takes, on CPU, a reshape
        and an argmax gradient for non-overlapping windows without padding instead of XLA's
        select-and-scatter; "xla" and "reshape" force one (reshape only where it applies).

    Returns:
      `(N, *out_spatial, C)`.
    """
    choice(impl, "impl", _cpu_paths.MAX_POOL_IMPLS)
    x, window, stride, pads = _pool_geometry(x, window, stride, padding)
    if _cpu_paths.max_pool_impl(impl, window, stride, pads) == "reshape":
        return _cpu_paths.reshape_max_pool(x, window)
    return _reduce_window(x, -np.inf, lax.max, window, stride, pads)


def avg_pool(x, window, stride=None, padding="VALID", count_include_pad=True):
    """Mean over each window, with PyTorch's treatment of padded cells.

    Args:
      x: `(N, *spatial, C)`.
      window, stride, padding: as in `max_pool`.
      count_include_pad: divide by the full window size (True, PyTorch's default) or only by
        the number of real input cells in the window (False, TensorFlow's "SAME" behaviour).

    Returns:
      `(N, *out_spatial, C)`.
    """
    x, window, stride, pads = _pool_geometry(x, window, stride, padding)
    sums = _reduce_window(x, 0, lax.add, window, stride, pads)
    if count_include_pad or not any(lo or hi for lo, hi in pads):
        return sums / math.prod(window)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    return sums / _reduce_window(ones, 0, lax.add, window, stride, pads)


def global_avg_pool(x):
    """Mean over all spatial dims: `(N, *spatial, C)` -> `(N, C)`."""
    x = _args.spatial_input(x)
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def global_max_pool(x):
    """Maximum over all spatial dims: `(N, *spatial, C)` -> `(N, C)`."""
    x = _args.spatial_input(x)
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


def _adaptive_output_size(x, output_size) -> tuple[int, ...]:
    sizes = x.shape[1:-1]
    if isinstance(output_size, (tuple, list)) and len(output_size) == len(sizes):
        output_size = tuple(s if o is None else o for o, s in zip(output_size, sizes))
    return int_tuple(output_size, len(sizes), "output_size")


def _adaptive_reduce_axis(x, axis: int, out: int, reduce: str):
    """Pools one axis into `out` bins [floor(i*n/out), ceil((i+1)*n/out)), as PyTorch does."""
    n = x.shape[axis]
    if n % out == 0:  # equal, disjoint bins: a reshape
        binned = x.reshape(*x.shape[:axis], out, n // out, *x.shape[axis + 1 :])
        return binned.max(axis + 1) if reduce == "max" else binned.mean(axis + 1)
    starts = np.arange(out) * n // out
    ends = -(-(np.arange(out) + 1) * n // out)
    width = int((ends - starts).max())
    offsets = starts[:, None] + np.arange(width)[None, :]
    inside = offsets < ends[:, None]
    # Cells past a bin's end repeat its last cell: harmless for max, masked out for the mean.
    index = np.where(inside, offsets, ends[:, None] - 1)
    gathered = jnp.take(x, index.reshape(-1), axis=axis).reshape(
        *x.shape[:axis], out, width, *x.shape[axis + 1 :]
    )
    if reduce == "max":
        return gathered.max(axis + 1)
    mask = jnp.asarray(inside.reshape(out, width, *(1,) * (x.ndim - axis - 1)), x.dtype)
    counts = jnp.asarray((ends - starts).reshape(out, *(1,) * (x.ndim - axis - 1)), x.dtype)
    return (gathered * mask).sum(axis + 1) / counts


def _adaptive_pool(x, output_size, reduce: str):
    x = _args.spatial_input(x)
    for axis, out in enumerate(_adaptive_output_size(x, output_size), start=1):
        x = _adaptive_reduce_axis(x, axis, out, reduce)
    return x


def adaptive_avg_pool(x, output_size):
    """Average pooling to a fixed output size, with PyTorch's bins.

    Output cell i of a dim of length n covers inputs `floor(i*n/out)` to `ceil((i+1)*n/out) - 1`.
    Bins are separable, so the dims are pooled one after the other.

    Args:
      x: `(N, *spatial, C)`.
      output_size: an int or one entry per spatial dim (None keeps that dim's size).

    Returns:
      `(N, *output_size, C)`.
    """
    return _adaptive_pool(x, output_size, "avg")


def adaptive_max_pool(x, output_size):
    """Max pooling to a fixed output size, with `adaptive_avg_pool`'s bins.

    Returns:
      `(N, *output_size, C)`.
    """
    return _adaptive_pool(x, output_size, "max")
