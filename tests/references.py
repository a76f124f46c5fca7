"""Plain-numpy oracles for ``jaxcnn.functional`` (channels-last, 1/2/3 spatial dims).

Written from the rules in DESIGN.md ("Conventions" and "jaxcnn.functional") with explicit loops,
clarity over speed, and no JAX at all, so they are independent of the implementation under test.
Every function computes in float64 and returns a float64 numpy array (or ints / lists of pairs).
They are themselves checked against PyTorch and SciPy by the tests marked ``references``.
"""

from __future__ import annotations

import math

import numpy as np


def as_tuple(value, nd):
    """An int broadcast to an ``nd``-tuple, or a sequence returned as a tuple of length ``nd``."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    value = tuple(int(v) for v in value)
    assert len(value) == nd, (value, nd)
    return value


def resolve_padding_ref(padding, in_sizes, window, stride=1, dilation=1):
    """Padding spec ("VALID", "SAME", int, tuple of ints, tuple of pairs) -> list of (low, high) per dim."""
    nd = len(in_sizes)
    window, stride, dilation = (as_tuple(v, nd) for v in (window, stride, dilation))
    if isinstance(padding, str):
        if padding == "VALID":
            return [(0, 0)] * nd
        if padding == "SAME":  # as JAX/TensorFlow: the odd cell goes on the high side
            pairs = []
            for size, f, s, d in zip(in_sizes, window, stride, dilation, strict=True):
                total = max((math.ceil(size / s) - 1) * s + d * (f - 1) + 1 - size, 0)
                pairs.append((total // 2, total - total // 2))
            return pairs
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, (int, np.integer)):
        return [(int(padding), int(padding))] * nd
    padding = tuple(padding)
    assert len(padding) == nd, (padding, nd)
    if all(isinstance(p, (int, np.integer)) for p in padding):
        return [(int(p), int(p)) for p in padding]
    return [(int(lo), int(hi)) for lo, hi in padding]


def output_size_ref(size, window, stride=1, padding="VALID", dilation=1):
    """One spatial dim: floor((W + P_lo + P_hi - D*(F-1) - 1) / S) + 1; may be < 1 (callers check)."""
    if isinstance(padding, str):
        ((lo, hi),) = resolve_padding_ref(padding, (size,), window, stride, dilation)
    elif isinstance(padding, (int, np.integer)):
        lo = hi = int(padding)
    else:
        lo, hi = padding
    return (size + lo + hi - dilation * (window - 1) - 1) // stride + 1


def _pad(x, padding_pairs, value=0.0):
    """Pads the spatial dims of a channels-last array with ``value``; ``None`` means no padding."""
    nd = x.ndim - 2
    pairs = [(0, 0)] * nd if padding_pairs is None else [tuple(p) for p in padding_pairs]
    return np.pad(x, [(0, 0), *pairs, (0, 0)], constant_values=value)


def _out_sizes(padded_sizes, window, stride, dilation):
    """Output sizes of a strided, dilated window sweep over already padded sizes."""
    return [
        (p - d * (f - 1) - 1) // s + 1
        for p, f, s, d in zip(padded_sizes, window, stride, dilation, strict=True)
    ]


def conv_ref(x, k, bias=None, stride=1, padding_pairs=None, dilation=1, groups=1):
    """Grouped N-d cross-correlation, x (N,*S,C_in), k (*F,C_in//groups,C_out), looping outputs and taps."""
    x = np.asarray(x, np.float64)
    k = np.asarray(k, np.float64)
    nd = x.ndim - 2
    window = k.shape[:nd]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    c_in, c_out = x.shape[-1], k.shape[-1]
    cin_g, cout_g = c_in // groups, c_out // groups
    assert k.shape[nd] == cin_g and cin_g * groups == c_in and cout_g * groups == c_out
    xp = _pad(x, padding_pairs)
    out_sizes = _out_sizes(xp.shape[1:-1], window, stride, dilation)
    assert min(out_sizes) >= 1, out_sizes
    out = np.zeros((x.shape[0], *out_sizes, c_out))
    for o in np.ndindex(*out_sizes):
        acc = np.zeros((x.shape[0], c_out))
        for f in np.ndindex(*window):
            pos = tuple(o[i] * stride[i] + f[i] * dilation[i] for i in range(nd))
            v = xp[(slice(None), *pos)]  # (N, C_in): the input cell under tap f
            for g in range(groups):
                ci, co = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
                acc[:, co] += v[:, ci] @ k[f][:, co]
        out[(slice(None), *o)] = acc
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out


def convolve_ref(x, k, bias=None, stride=1, padding_pairs=None, dilation=1, groups=1):
    """True convolution: ``conv_ref`` with the kernel flipped in every spatial dim."""
    nd = np.ndim(x) - 2
    return conv_ref(
        x, np.flip(np.asarray(k), axis=tuple(range(nd))), bias, stride, padding_pairs, dilation, groups
    )


def _pool_windows(x, window, stride, padding_pairs, fill):
    """Yields (output index, window block of shape (N, *window, C)) of the ``fill``-padded input."""
    nd = x.ndim - 2
    window = as_tuple(window, nd)
    stride = window if stride is None else as_tuple(stride, nd)
    xp = _pad(np.asarray(x, np.float64), padding_pairs, fill)
    out_sizes = _out_sizes(xp.shape[1:-1], window, stride, (1,) * nd)
    assert min(out_sizes) >= 1, out_sizes
    for o in np.ndindex(*out_sizes):
        block = tuple(slice(o[i] * stride[i], o[i] * stride[i] + window[i]) for i in range(nd))
        yield o, out_sizes, (slice(None), *block, slice(None)), xp


def max_pool_ref(x, window, stride=None, padding_pairs=None):
    """Max over each window; padding is -inf so padded cells never win."""
    out = None
    for o, out_sizes, block, xp in _pool_windows(x, window, stride, padding_pairs, -np.inf):
        if out is None:
            out = np.zeros((xp.shape[0], *out_sizes, xp.shape[-1]))
        out[(slice(None), *o)] = xp[block].max(axis=tuple(range(1, xp.ndim - 1)))
    return out


def avg_pool_ref(x, window, stride=None, padding_pairs=None, count_include_pad=True):
    """Mean over each window; padded cells are zeros, counted in the divisor iff ``count_include_pad``."""
    nd = np.ndim(x) - 2
    mask_p = _pad(np.ones(np.shape(x)[:-1] + (1,)), padding_pairs, 0.0)  # 1 on real cells, 0 on padding
    axes = tuple(range(1, nd + 1))
    out = None
    for o, out_sizes, block, xp in _pool_windows(x, window, stride, padding_pairs, 0.0):
        if out is None:
            out = np.zeros((xp.shape[0], *out_sizes, xp.shape[-1]))
        total = xp[block].sum(axis=axes)  # (N, C)
        divisor = math.prod(as_tuple(window, nd)) if count_include_pad else mask_p[block].sum(axis=axes)
        out[(slice(None), *o)] = total / divisor
    return out


def adaptive_bins(in_size, out_size):
    """PyTorch adaptive-pool bins: [floor(i*in/out), ceil((i+1)*in/out)) for i in range(out)."""
    return [((i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)) for i in range(out_size)]


def _adaptive(x, output_size, reduce):
    """Applies ``reduce`` over every PyTorch adaptive bin of the spatial dims."""
    x = np.asarray(x, np.float64)
    nd = x.ndim - 2
    output_size = as_tuple(output_size, nd)
    bins = [adaptive_bins(x.shape[1 + i], output_size[i]) for i in range(nd)]
    out = np.zeros((x.shape[0], *output_size, x.shape[-1]))
    for o in np.ndindex(*output_size):
        block = tuple(slice(*bins[i][o[i]]) for i in range(nd))
        out[(slice(None), *o)] = reduce(x[(slice(None), *block)], axis=tuple(range(1, nd + 1)))
    return out


def adaptive_avg_pool_ref(x, output_size):
    """Mean over each PyTorch adaptive bin (bins may overlap when sizes do not divide)."""
    return _adaptive(x, output_size, np.mean)


def adaptive_max_pool_ref(x, output_size):
    """Max over each PyTorch adaptive bin."""
    return _adaptive(x, output_size, np.max)


def global_avg_pool_ref(x):
    """Mean over all spatial dims -> (N, C)."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


def global_max_pool_ref(x):
    """Max over all spatial dims -> (N, C)."""
    x = np.asarray(x, np.float64)
    return x.max(axis=tuple(range(1, x.ndim - 1)))


def dense_ref(x, k, bias=None):
    """x @ kernel (+ bias) over the last axis, by an explicit sum over the contracted axis."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    out = np.zeros(x.shape[:-1] + k.shape[1:])
    for i in range(k.shape[0]):
        out += x[..., i, None] * k[i]
    return out if bias is None else out + np.asarray(bias, np.float64)


def patches_ref(x, window, stride=1, padding_pairs=None, dilation=1):
    """(N,*out,prod(window)*C): per output cell, the taps in row-major window order, channels fastest."""
    x = np.asarray(x, np.float64)
    nd = x.ndim - 2
    window, stride, dilation = (as_tuple(v, nd) for v in (window, stride, dilation))
    xp = _pad(x, padding_pairs)
    out_sizes = _out_sizes(xp.shape[1:-1], window, stride, dilation)
    assert min(out_sizes) >= 1, out_sizes
    out = np.zeros((x.shape[0], *out_sizes, math.prod(window) * x.shape[-1]))
    for o in np.ndindex(*out_sizes):
        taps = []
        for f in np.ndindex(*window):
            pos = tuple(o[i] * stride[i] + f[i] * dilation[i] for i in range(nd))
            taps.append(xp[(slice(None), *pos)])
        out[(slice(None), *o)] = np.concatenate(taps, axis=-1)
    return out
