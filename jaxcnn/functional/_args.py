"""Argument checking and normalisation shared by the functional ops.

Everything here runs in Python on static shapes, so a misuse is reported with the
argument's name before anything reaches XLA, and the ops stay jit-, grad- and vmap-safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcnn._validate import is_int

Pairs = tuple[tuple[int, int], ...]


def as_float_array(value, name: str) -> jax.Array:
    """`value` as a JAX array with a floating dtype; TypeError naming `name` otherwise."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        try:
            value = jnp.asarray(value)
        except TypeError as e:
            raise TypeError(f"{name} must be an array, got {type(value).__name__}") from e
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, ...), got {value.dtype}; "
            f"convert it first, e.g. {name}.astype(jnp.float32)"
        )
    return jnp.asarray(value)


def spatial_input(x, name: str = "x") -> jax.Array:
    """Checks a channels-last batch `(N, *spatial, C)` with 1 to 3 spatial dims."""
    x = as_float_array(x, name)
    if not 3 <= x.ndim <= 5:
        raise ValueError(
            f"{name} must have shape (N, *spatial, C) with 1, 2 or 3 spatial dims "
            f"(ndim 3 to 5), got shape {tuple(x.shape)} (ndim {x.ndim})"
        )
    return x


def same_pads(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """JAX/TensorFlow "SAME": output ceil(size / stride), the odd pad cell on the high side."""
    total = max((math.ceil(size / stride) - 1) * stride + dilation * (window - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(value, name: str) -> tuple[int, int]:
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
    padding,
    sizes: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str = "padding",
) -> Pairs:
    """Resolves every padding form of the DESIGN into one (low, high) pair per spatial dim.

    Forms: "VALID", "SAME" (any case), an int (symmetric, every dim), a tuple of ints
    (symmetric per dim) or a tuple of (low, high) pairs.
    """
    ndim = len(sizes)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * ndim
        if mode == "SAME":
            return tuple(map(same_pads, sizes, window, stride, dilation))
        raise ValueError(f'{name} must be "VALID", "SAME", an int or a tuple, got {padding!r}')
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
    if all(is_int(p) for p in entries):
        return tuple(_pair((p, p), name) for p in entries)
    return tuple(_pair(p, f"{name}[{i}]") for i, p in enumerate(entries))


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


def check_pool_padding(pads: Pairs, window: Sequence[int]) -> None:
    """PyTorch's rule: at most half the window per side, so no window lies wholly in padding."""
    for dim, ((lo, hi), f) in enumerate(zip(pads, window)):
        if max(lo, hi) > f // 2:
            raise ValueError(
                f"padding ({lo}, {hi}) in spatial dim {dim} exceeds half the window ({f} // 2 = {f // 2}); "
                "pooling padding must be at most window // 2 per side"
            )
