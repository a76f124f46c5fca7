"""Argument checking and normalisation shared by the functional ops.

Everything here runs in Python on static shapes, so a misuse is reported with the
argument's name before anything reaches XLA, and the ops stay jit-, grad- and vmap-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcnn._validate import integer, is_int

Pairs = tuple[tuple[int, int], ...]
# The forms the ops' signatures take (each value is still checked at run time, whatever its type):
Size = int | Sequence[int]  # window, stride, dilation: one int for every spatial dim, or one per dim
Padding = str | int | Sequence[int | Sequence[int]]  # "VALID", "SAME", an int, or one int or pair per dim
_Out = TypeVar("_Out")


def _as_array(value: Any, name: str) -> jax.Array:
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        try:
            value = jnp.asarray(value)
        except TypeError as e:
            raise TypeError(f"{name} must be an array, got {type(value).__name__}") from e
    return jnp.asarray(value)


def as_float_array(value: Any, name: str) -> jax.Array:
    """`value` as a JAX array with a floating dtype; TypeError naming `name` otherwise."""
    array = _as_array(value, name)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, ...), got {array.dtype}; "
            f"convert it first, e.g. {name}.astype(jnp.float32)"
        )
    return array


def as_real_array(value: Any, name: str) -> jax.Array:
    """`value` as a JAX array with a floating or integer dtype (not bool); TypeError naming `name`
    otherwise. For the ops that only compare values (max and min pooling)."""
    array = _as_array(value, name)
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"{name} must have a floating or integer dtype, got {array.dtype}")
    return array


def spatial_rank(
    spatial_dims: int | None = None, hint: Any = None, hint_name: str = "window", *, ndim: int
) -> int:
    """How many spatial dims an op without a kernel sees in `x` (`ndim` axes, `(*batch, *spatial, C)`).

    `spatial_dims` when given; else the length of `hint` when it is a tuple (a pooling window, an adaptive
    output size: Flax's convention); else `ndim - 2`, i.e. one batch dim (`(N, *spatial, C)`).
    """
    hinted = isinstance(hint, Sequence) and not isinstance(hint, str)
    if spatial_dims is not None:
        spatial_dims = integer(spatial_dims, "spatial_dims", minimum=1, maximum=3)
        if hinted and len(hint) != spatial_dims:
            raise ValueError(
                f"{hint_name} must be an int or have spatial_dims={spatial_dims} entries, got {hint!r}"
            )
        return spatial_dims
    if hinted:
        if not 1 <= len(hint) <= 3:
            raise ValueError(f"{hint_name} must have 1, 2 or 3 entries (one per spatial dim), got {hint!r}")
        return len(hint)
    return ndim - 2


def batch_shape(x_shape: Sequence[int], spatial_dims: int, name: str = "x") -> tuple[int, ...]:
    """The leading dims of `x` `(*batch, *spatial, C)` (none for an unbatched input), checked."""
    if not 1 <= spatial_dims <= 3 or len(x_shape) < spatial_dims + 1:
        wanted = f"{spatial_dims} spatial dims" if 1 <= spatial_dims <= 3 else "1, 2 or 3 spatial dims"
        raise ValueError(
            f"{name} must have shape (*batch, *spatial, C) with {wanted}, got shape {tuple(x_shape)} "
            f"(ndim {len(x_shape)}); the spatial dims are those of the kernel, of a tuple window or "
            "output_size, or spatial_dims=; by default one batch dim: (N, *spatial, C)"
        )
    return tuple(x_shape[: len(x_shape) - spatial_dims - 1])


def spatial_input(
    x: ArrayLike,
    spatial_dims: int | None = None,
    hint: Any = None,
    hint_name: str = "window",
    *,
    integers: bool = False,
) -> tuple[jax.Array, int]:
    """`(x, spatial rank)` of an op without a kernel (pooling, patches): `x` `(*batch, *spatial, C)` as an
    array of a floating (or, with `integers`, also an integer) dtype, its rank from `spatial_rank`."""
    x = as_real_array(x, "x") if integers else as_float_array(x, "x")
    ndim = spatial_rank(spatial_dims, hint, hint_name, ndim=x.ndim)
    batch_shape(x.shape, ndim)
    return x, ndim


def over_batch(fn: Callable[[jax.Array], _Out], x: jax.Array, spatial_dims: int, name: str = "x") -> _Out:
    """`fn` of `x` `(*batch, *spatial, C)` seen as one batch `(B, *spatial, C)`, B = prod(batch), with
    the leading dims restored on every output (`(B, ...)` -> `(*batch, ...)`): how every op takes an
    unbatched input or several batch dims (Flax's convention), one reshape each way."""
    lead = batch_shape(x.shape, spatial_dims, name)
    y = fn(x.reshape(math.prod(lead), *x.shape[len(lead) :]))
    restored: _Out = jax.tree.map(lambda y: y.reshape(*lead, *y.shape[1:]), y)
    return restored


def same_pads(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """JAX/TensorFlow "SAME": output ceil(size / stride), the odd pad cell on the high side."""
    total = max((math.ceil(size / stride) - 1) * stride + dilation * (window - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(value: Any, name: str) -> tuple[int, int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be a (low, high) pair of ints, got {value!r}")
    if len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r} with {len(value)} entries")
    if not all(is_int(v) for v in value):
        raise TypeError(f"{name} must be a (low, high) pair of ints, got {value!r}")
    low, high = (int(v) for v in value)
    if low < 0 or high < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return low, high


def padding_pairs(
    padding: Padding,
    sizes: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str = "padding",
) -> Pairs:
    """Resolves every padding form of the DESIGN into one (low, high) pair per spatial dim.

    Forms: "VALID", "SAME", "CAUSAL" (1-d: `D*(F - 1)` cells before, none after; any case), an int
    (symmetric, every dim), or a tuple with one entry per spatial dim, each an int (symmetric) or a
    (low, high) pair (Flax's `canonicalize_padding` forms).
    """
    ndim = len(sizes)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * ndim
        if mode == "SAME":
            return tuple(map(same_pads, sizes, window, stride, dilation))
        if mode == "CAUSAL":
            if ndim != 1:
                raise ValueError(f'{name}="CAUSAL" is for one spatial dim, got {ndim}')
            return ((dilation[0] * (window[0] - 1), 0),)
        raise ValueError(
            f'{name} must be "VALID", "SAME", "CAUSAL" (1-d), an int or a tuple, got {padding!r}'
        )
    if is_int(padding):
        return (_pair((padding, padding), name),) * ndim
    if not isinstance(padding, Sequence):
        raise TypeError(
            f'{name} must be "VALID", "SAME", an int or a tuple, got {padding!r} ({type(padding).__name__})'
        )
    entries = tuple(padding)
    if len(entries) != ndim:
        hint = f"; for asymmetric padding write (({entries[0]}, {entries[1]}),)" if ndim == 1 else ""
        raise ValueError(
            f"{name} must have one entry per spatial dim ({ndim}), got {padding!r} "
            f"with {len(entries)} entries{hint}"
        )
    return tuple(
        _pair((p, p), f"{name}[{i}]") if is_int(p) else _pair(p, f"{name}[{i}]")
        for i, p in enumerate(entries)
    )


def output_sizes(
    sizes: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    name: str = "window",
) -> tuple[int, ...]:
    """Output size per spatial dim; ValueError naming the dim where the window does not fit."""
    out = []
    for dim, (size, f, s, (lo, hi), d) in enumerate(zip(sizes, window, stride, pads, dilation)):
        span = d * (f - 1) + 1
        if size + lo + hi < span:
            raise ValueError(
                f"{name} {f} (dilated span {span}) is larger than the padded input "
                f"{size} + {lo} + {hi} = {size + lo + hi} in spatial dim {dim}"
            )
        out.append((size + lo + hi - span) // s + 1)
    return tuple(out)


def ceil_mode_sizes(
    sizes: Sequence[int], window: Sequence[int], stride: Sequence[int], pads: Pairs, dilation: Sequence[int]
) -> tuple[tuple[int, ...], Pairs]:
    """PyTorch's `ceil_mode` pooling: `(out_sizes, pads)`, the high pads grown so the last window fits.

    Per dim: `out = ceil((W + P_lo + P_hi - D*(F - 1) - 1) / S) + 1`, less one when that last window would
    start past the input and the low padding (`(out - 1) * S >= W + P_lo`), PyTorch's rule, so every
    window starts inside the input or the low padding.
    """
    out_sizes, grown = [], []
    for dim, (size, f, s, (lo, hi), d) in enumerate(zip(sizes, window, stride, pads, dilation)):
        span = d * (f - 1) + 1
        out = -(-(size + lo + hi - span) // s) + 1
        if (out - 1) * s >= size + lo:
            out -= 1
        if out < 1:
            raise ValueError(
                f"window {f} (dilated span {span}) leaves no output for the padded input "
                f"{size} + {lo} + {hi} = {size + lo + hi} in spatial dim {dim}, even with ceil_mode"
            )
        out_sizes.append(out)
        grown.append((lo, hi + max((out - 1) * s + span - (size + lo + hi), 0)))
    return tuple(out_sizes), tuple(grown)


def check_pool_padding(pads: Pairs, window: Sequence[int]) -> None:
    """PyTorch's rule: at most half the window per side, so no window lies wholly in padding."""
    for dim, ((lo, hi), f) in enumerate(zip(pads, window)):
        if max(lo, hi) > f // 2:
            raise ValueError(
                f"padding ({lo}, {hi}) in spatial dim {dim} exceeds half the window ({f} // 2 = {f // 2}); "
                "pooling padding must be at most window // 2 per side"
            )
