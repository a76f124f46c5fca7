"""Pooling: windowed reductions (max, min, average, any monoid), global, and adaptive (PyTorch bins).

Every op takes `x` `(*batch, *spatial, C)`: the spatial dims are `spatial_dims`, or as many as a tuple
`window` (`output_size`) has, or, by default, all but the first and the last dims (`(N, *spatial, C)`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from jaxcnn._validate import boolean, choice, int_tuple, is_number
from jaxcnn.functional import _args, _cpu_paths
from jaxcnn.functional._args import Padding, Size

Reducer = Callable[[jax.Array, jax.Array], jax.Array]  # e.g. lax.max, lax.min, lax.add
OutputSize = int | Sequence[int | None]  # adaptive pooling's: None keeps that dim's size


class PoolPlan(NamedTuple):
    """A windowed pooling resolved and checked. `pads` are the padding asked for; `reduce_pads` add
    the cells `ceil_mode` needs past the high end (equal to `pads` without it)."""

    spatial_dims: int
    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: _args.Pairs
    reduce_pads: _args.Pairs
    out_sizes: tuple[int, ...]


def pool_plan(
    x_shape: Sequence[int],
    window: Size,
    stride: Size | None,
    padding: Padding,
    dilation: Size,
    ceil_mode: bool,
    spatial_dims: int | None,
) -> PoolPlan:
    """Checks a pooling of `x` of `x_shape`; `stride` defaults to `window`. Padding is at most half the
    window per side (PyTorch's rule), past which only `ceil_mode` extends the last window."""
    ndim = _args.spatial_rank(spatial_dims, window, ndim=len(x_shape))
    _args.batch_shape(x_shape, ndim)
    sizes = tuple(x_shape[-ndim - 1 : -1])
    window = int_tuple(window, ndim, "window")
    stride = window if stride is None else int_tuple(stride, ndim, "stride")
    dilation = int_tuple(dilation, ndim, "dilation")
    pads = _args.padding_pairs(padding, sizes, window, stride, dilation)
    _args.check_pool_padding(pads, window)
    if boolean(ceil_mode, "ceil_mode"):
        out_sizes, reduce_pads = _args.ceil_mode_sizes(sizes, window, stride, pads, dilation)
    else:
        out_sizes, reduce_pads = _args.output_sizes(sizes, window, stride, pads, dilation), pads
    return PoolPlan(ndim, window, stride, dilation, pads, reduce_pads, out_sizes)


def _reduce_window(
    x: jax.Array, init: float, reducer: Reducer, plan: PoolPlan, pads: _args.Pairs | None = None
) -> jax.Array:
    """`lax.reduce_window` over the spatial dims of `x` `(N, *spatial, C)`, padded cells `init`."""
    pads = plan.reduce_pads if pads is None else pads
    # A concrete numpy identity lets JAX pick its differentiable max/min/sum window primitives.
    y: jax.Array = lax.reduce_window(
        x,
        np.asarray(init, x.dtype),
        reducer,
        (1, *plan.window, 1),
        (1, *plan.stride, 1),
        ((0, 0), *pads, (0, 0)),
        window_dilation=(1, *plan.dilation, 1),
    )
    return y


def _identity(init: Any, dtype: DTypeLike, name: str = "init") -> float:
    """`init` as a scalar of `dtype`: a number, refused (ValueError) where `dtype` cannot hold it."""
    if not is_number(init):
        raise TypeError(f"{name} must be a number (the reducer's identity), got {init!r}")
    if jnp.issubdtype(dtype, jnp.integer) and (not math.isfinite(init) or init != int(init)):
        raise ValueError(f"{name} must be an integer for an integer x ({dtype}), got {init!r}")
    if jnp.issubdtype(dtype, jnp.integer) and not jnp.iinfo(dtype).min <= init <= jnp.iinfo(dtype).max:
        raise ValueError(f"{name} {init!r} does not fit x's dtype {dtype}")
    identity: float = init  # a checked number (an int stays an int: int64's are not all floats)
    return identity


def pool(
    x: ArrayLike,
    reducer: Reducer,
    init: float,
    window: Size,
    stride: Size | None = None,
    padding: Padding = "VALID",
    *,
    dilation: Size = 1,
    ceil_mode: bool = False,
    spatial_dims: int | None = None,
) -> jax.Array:
    """`reducer` folded over each window: the pooling every other one is made of.

    Args:
      x: `(*batch, *spatial, C)` of a floating or integer dtype.
      reducer: an associative binary function of two arrays, e.g. `jax.lax.max`, `jax.lax.min`,
        `jax.lax.add` (the differentiable ones: max and min with their identity as `init`, their
        gradient as `max_pool`'s; any other is forward only).
      init: its identity (`-inf` for max, `inf` for min, `0` for add), the value padded cells hold.
      window: an int or one int per spatial dim.
      stride: defaults to `window` (non-overlapping windows).
      padding: "VALID", "SAME", "CAUSAL" (1-d), an int, or one int or (low, high) pair per spatial dim;
        at most `window // 2` per side.
      dilation: the gap between a window's cells, an int or one int per spatial dim.
      ceil_mode: PyTorch's: the output size rounds up (`conv_output_size(..., ceil_mode=True)`), the
        last window running past the high padding where it must.
      spatial_dims: how many dims before C are spatial (default: those of a tuple `window`, or all but
        the first).

    Returns:
      `(*batch, *out_spatial, C)`.
    """
    if not callable(reducer):
        raise TypeError(f"reducer must be a function of two arrays (e.g. jax.lax.max), got {reducer!r}")
    x, _ = _args.spatial_input(x, spatial_dims, window, integers=True)
    plan = pool_plan(x.shape, window, stride, padding, dilation, ceil_mode, spatial_dims)
    init = _identity(init, x.dtype)
    if reducer in (lax.max, lax.min) and init == _extreme_identity(reducer, x.dtype):
        one_batch: Callable[[jax.Array], jax.Array] = lambda x: _extreme_pool(x, reducer, plan)
    else:
        one_batch = lambda x: _reduce_window(x, init, reducer, plan)
    return _args.over_batch(one_batch, x, plan.spatial_dims)


def _extreme_identity(reducer: Reducer, dtype: DTypeLike) -> float:
    """The identity of `reducer` (`lax.max` or `lax.min`) for `dtype`: -inf (inf), or the lowest (highest)
    integer; padded cells hold it, so they never win."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf if reducer is lax.max else np.inf
    return jnp.iinfo(dtype).min if reducer is lax.max else jnp.iinfo(dtype).max


def _first_extreme_jvp(
    values: jax.Array, tangents: jax.Array, axis: int, reducer: Reducer
) -> tuple[jax.Array, jax.Array]:
    """`(extreme, its tangent)` of `values` along `axis` (`reducer` `lax.max` or `lax.min`): the tangent of
    the first extreme cell in order, PyTorch's rule, so tied cells (common after a ReLU) pass the whole
    gradient to one of them where `jnp.max`'s derivative would share it among all. A NaN is extreme: the
    first NaN takes the gradient (PyTorch's the last)."""
    extreme = _first_extreme(values, axis, reducer)
    position = lax.broadcasted_iota(np.int32, values.shape, axis % values.ndim)
    # The first index holding the extreme by two plain reductions: faster than an argmax on XLA's CPU.
    extremal = (values == jnp.expand_dims(extreme, axis)) | (values != values)
    first = jnp.where(extremal, position, values.shape[axis]).min(axis, keepdims=True)
    return extreme, jnp.where(position == first, tangents, jnp.zeros((), tangents.dtype)).sum(axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _first_extreme(values: jax.Array, axis: int, reducer: Reducer) -> jax.Array:
    """`values` reduced along `axis` by `reducer` (`lax.max` or `lax.min`), differentiated as
    `_first_extreme_jvp` says."""
    return values.max(axis) if reducer is lax.max else values.min(axis)


@_first_extreme.defjvp
def _first_extreme_rule(
    axis: int, reducer: Reducer, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    return _first_extreme_jvp(primals[0], tangents[0], axis, reducer)


def _extreme_pool(x: jax.Array, reducer: Reducer, plan: PoolPlan) -> jax.Array:
    """Max or min pool (`reducer` `lax.max` or `lax.min`) of `x` `(N, *spatial, C)`: XLA's reduce_window,
    whose derivative (select-and-scatter) takes each window's first extreme cell, as PyTorch's does; JAX
    has none for dilated windows, which take `_dilated_extreme_pool`'s."""
    if all(d == 1 for d in plan.dilation):
        return _reduce_window(x, _extreme_identity(reducer, x.dtype), reducer, plan)
    return _dilated_extreme_pool(x, reducer, plan)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _dilated_extreme_pool(x: jax.Array, reducer: Reducer, plan: PoolPlan) -> jax.Array:
    """`_extreme_pool` with dilated windows: reduce_window forward; the derivative picks each window's first
    extreme cell in scan order (row-major) among one strided slice of the padded `x` per window position."""
    return _reduce_window(x, _extreme_identity(reducer, x.dtype), reducer, plan)


@_dilated_extreme_pool.defjvp
def _dilated_extreme_pool_rule(
    reducer: Reducer, plan: PoolPlan, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    def windows(a: jax.Array, fill: float) -> jax.Array:  # (prod(window), N, *out_sizes, C)
        padded = jnp.pad(a, ((0, 0), *plan.reduce_pads, (0, 0)), constant_values=fill)
        window_args = plan.window, plan.stride, plan.dilation, plan.out_sizes
        return jnp.stack(_cpu_paths._window_slices(padded, *window_args, spatial_axis=1))

    (x,), (dx,) = primals, tangents
    return _first_extreme_jvp(windows(x, _extreme_identity(reducer, x.dtype)), windows(dx, 0), 0, reducer)


def max_pool(
    x: ArrayLike,
    window: Size,
    stride: Size | None = None,
    padding: Padding = "VALID",
    *,
    dilation: Size = 1,
    ceil_mode: bool = False,
    spatial_dims: int | None = None,
    impl: str = "auto",
) -> jax.Array:
    """Maximum over each window; padded cells hold -inf (the lowest integer), so they never win. Each
    window's gradient goes to its first maximal cell in scan order (row-major), as PyTorch's does.

    Args:
      x: `(*batch, *spatial, C)` of a floating or integer dtype.
      window, stride, padding, dilation, ceil_mode, spatial_dims: as in `pool`.
      impl: how it is lowered (the same function either way): "auto" (default) takes, on CPU, a reshape
        and an argmax gradient for non-overlapping windows without padding or dilation instead of XLA's
        select-and-scatter; "xla" and "reshape" force one (reshape only where it applies).

    Returns:
      `(*batch, *out_spatial, C)`.
    """
    choice(impl, "impl", _cpu_paths.MAX_POOL_IMPLS)
    x, _ = _args.spatial_input(x, spatial_dims, window, integers=True)
    plan = pool_plan(x.shape, window, stride, padding, dilation, ceil_mode, spatial_dims)
    undilated = all(d == 1 for d in plan.dilation)
    if undilated and _cpu_paths.max_pool_impl(impl, plan.window, plan.stride, plan.reduce_pads) == "reshape":
        one_batch = lambda x: _cpu_paths.reshape_max_pool(x, plan.window)
    else:
        one_batch = lambda x: _extreme_pool(x, lax.max, plan)
    return _args.over_batch(one_batch, x, plan.spatial_dims)


def min_pool(
    x: ArrayLike,
    window: Size,
    stride: Size | None = None,
    padding: Padding = "VALID",
    *,
    dilation: Size = 1,
    ceil_mode: bool = False,
    spatial_dims: int | None = None,
) -> jax.Array:
    """Minimum over each window, `pool(x, lax.min, inf, ...)`: padded cells never win; each window's
    gradient goes to its first minimal cell, as `max_pool`'s to its first maximal one.

    Arguments and shapes as in `max_pool`.
    """
    x = _args.as_real_array(x, "x")
    return pool(
        x,
        lax.min,
        _extreme_identity(lax.min, x.dtype),
        window,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        spatial_dims=spatial_dims,
    )


def avg_pool(
    x: ArrayLike,
    window: Size,
    stride: Size | None = None,
    padding: Padding = "VALID",
    count_include_pad: bool = True,
    *,
    ceil_mode: bool = False,
    spatial_dims: int | None = None,
) -> jax.Array:
    """Mean over each window, with PyTorch's treatment of padded cells.

    Args:
      x: `(*batch, *spatial, C)` of a floating dtype.
      window, stride, padding, ceil_mode, spatial_dims: as in `pool`.
      count_include_pad: divide by the number of input and padding cells in the window (True,
        PyTorch's default: the full window, but for the cells `ceil_mode` adds) or only by the number
        of input cells (False, TensorFlow's "SAME" behaviour).

    Returns:
      `(*batch, *out_spatial, C)`.
    """
    x, _ = _args.spatial_input(x, spatial_dims, window)
    boolean(count_include_pad, "count_include_pad")
    plan = pool_plan(x.shape, window, stride, padding, 1, ceil_mode, spatial_dims)
    sizes = x.shape[-plan.spatial_dims - 1 : -1]
    if plan.reduce_pads == plan.pads and (count_include_pad or not any(lo or hi for lo, hi in plan.pads)):
        divisor: int | jax.Array = math.prod(plan.window)
    else:  # per window, the cells that count: input cells, and padding ones with count_include_pad
        if count_include_pad:
            counted = tuple(s + lo + hi for s, (lo, hi) in zip(sizes, plan.pads))
            around = tuple((0, grown - hi) for (_, hi), (_, grown) in zip(plan.pads, plan.reduce_pads))
        else:
            counted, around = sizes, plan.reduce_pads
        divisor = _reduce_window(jnp.ones((1, *counted, 1), x.dtype), 0, lax.add, plan, around)
    return _args.over_batch(lambda x: _reduce_window(x, 0, lax.add, plan) / divisor, x, plan.spatial_dims)


def _global_axes(x: jax.Array, spatial_dims: int | None) -> tuple[int, ...]:
    ndim = _args.spatial_rank(spatial_dims, ndim=x.ndim)
    _args.batch_shape(x.shape, ndim)
    return tuple(range(x.ndim - ndim - 1, x.ndim - 1))


def global_avg_pool(x: ArrayLike, *, keepdims: bool = False, spatial_dims: int | None = None) -> jax.Array:
    """Mean over all spatial dims: `(*batch, *spatial, C)` -> `(*batch, C)`, or `(*batch, 1, ..., 1, C)`
    with `keepdims`. The spatial dims are `spatial_dims`, by default all but the first and the last."""
    x = _args.as_float_array(x, "x")
    return jnp.mean(x, axis=_global_axes(x, spatial_dims), keepdims=boolean(keepdims, "keepdims"))


def global_max_pool(x: ArrayLike, *, keepdims: bool = False, spatial_dims: int | None = None) -> jax.Array:
    """Maximum over all spatial dims (floating or integer `x`), shapes as `global_avg_pool`'s; its gradient
    goes to the first maximal cell (row-major), as PyTorch's `adaptive_max_pool(x, 1)`'s does."""
    x = _args.as_real_array(x, "x")
    axes = _global_axes(x, spatial_dims)
    flat = x.reshape(*x.shape[: axes[0]], -1, x.shape[-1])
    y = _first_extreme(flat, -2, lax.max)
    if boolean(keepdims, "keepdims"):
        return y.reshape(*x.shape[: axes[0]], *(1,) * len(axes), x.shape[-1])
    return y


def _adaptive_output_size(sizes: Sequence[int], output_size: OutputSize) -> tuple[int, ...]:
    if isinstance(output_size, (tuple, list)) and len(output_size) == len(sizes):
        output_size = tuple(s if o is None else o for o, s in zip(output_size, sizes))
    return int_tuple(output_size, len(sizes), "output_size")


def _adaptive_reduce_axis(x: jax.Array, axis: int, out: int, reduce: str) -> jax.Array:
    """Pools one axis into `out` bins [floor(i*n/out), ceil((i+1)*n/out)), as PyTorch does."""
    n = x.shape[axis]
    if n % out == 0:  # equal, disjoint bins: a reshape
        binned = x.reshape(*x.shape[:axis], out, n // out, *x.shape[axis + 1 :])
        return _first_extreme(binned, axis + 1, lax.max) if reduce == "max" else binned.mean(axis + 1)
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
        return _first_extreme(gathered, axis + 1, lax.max)
    mask = jnp.asarray(inside.reshape(out, width, *(1,) * (x.ndim - axis - 1)), x.dtype)
    counts = jnp.asarray((ends - starts).reshape(out, *(1,) * (x.ndim - axis - 1)), x.dtype)
    return (gathered * mask).sum(axis + 1) / counts


def _adaptive_pool(x: ArrayLike, output_size: OutputSize, reduce: str, spatial_dims: int | None) -> jax.Array:
    x, ndim = _args.spatial_input(x, spatial_dims, output_size, "output_size", integers=reduce == "max")
    output_size = _adaptive_output_size(x.shape[-ndim - 1 : -1], output_size)

    def one_batch(x: jax.Array) -> jax.Array:
        # The last dim first: each bin's first maximum along it, then the first of those along the dim
        # before, is the bin's first maximum in row-major order, the cell PyTorch's gradient picks.
        for axis, out in reversed(list(enumerate(output_size, start=1))):
            x = _adaptive_reduce_axis(x, axis, out, reduce)
        return x

    return _args.over_batch(one_batch, x, ndim)


def adaptive_avg_pool(x: ArrayLike, output_size: OutputSize, *, spatial_dims: int | None = None) -> jax.Array:
    """Average pooling to a fixed output size, with PyTorch's bins.

    Output cell i of a dim of length n covers inputs `floor(i*n/out)` to `ceil((i+1)*n/out) - 1`.
    Bins are separable, so the dims are pooled one after the other.

    Args:
      x: `(*batch, *spatial, C)`: the spatial dims are `spatial_dims`, or as many as a tuple
        `output_size` has, or (an int `output_size`) all but the first and the last dims.
      output_size: an int or one entry per spatial dim (None keeps that dim's size).

    Returns:
      `(*batch, *output_size, C)`.
    """
    return _adaptive_pool(x, output_size, "avg", spatial_dims)


def adaptive_max_pool(x: ArrayLike, output_size: OutputSize, *, spatial_dims: int | None = None) -> jax.Array:
    """Max pooling to a fixed output size (floating or integer `x`), with `adaptive_avg_pool`'s bins.
    Each bin's gradient goes to its first maximal cell (row-major), as PyTorch's does.

    Returns:
      `(*batch, *output_size, C)`.
    """
    return _adaptive_pool(x, output_size, "max", spatial_dims)
