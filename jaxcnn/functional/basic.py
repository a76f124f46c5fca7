"""The ops without a window: dense, dropout, drop-path, batch and layer normalisation."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxcnn._validate import is_int, number
from jaxcnn.functional import _args, _cpu_paths


def dense(
    x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, precision: lax.PrecisionLike = None
) -> jax.Array:
    """Fully connected layer over the last axis: `x @ kernel + bias`.

    Args:
      x: `(..., D_in)`.
      kernel: `(D_in, D_out)`.
      bias: `(D_out,)` or None.

    Returns:
      `(..., D_out)`.
    """
    x = _args.as_float_array(x, "x")
    kernel = _args.as_float_array(kernel, "kernel")
    if x.ndim < 1:
        raise ValueError(f"x must have at least one axis (..., D_in), got shape {tuple(x.shape)}")
    if kernel.ndim != 2 or kernel.shape[0] != x.shape[-1]:
        raise ValueError(
            f"kernel must have shape (D_in, D_out) with D_in = x.shape[-1] = {x.shape[-1]}, "
            f"got kernel shape {tuple(kernel.shape)}"
        )
    dtype = jnp.result_type(x, kernel)
    y = jnp.matmul(x.astype(dtype), kernel.astype(dtype), precision=precision)
    if bias is None:
        return y
    bias = _args.as_float_array(bias, "bias")
    if bias.shape != (kernel.shape[1],):
        raise ValueError(f"bias must have shape (D_out,) = ({kernel.shape[1]},), got {tuple(bias.shape)}")
    return y + bias.astype(dtype)


def dropout(
    x: ArrayLike,
    rate: float,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by 1/(1-rate).

    Args:
      x: any shape.
      rate: drop probability in [0, 1).
      key: a PRNG key; required unless `deterministic` or `rate == 0`.
      deterministic: if True, return `x` unchanged (evaluation).
      broadcast_dims: axes along which one draw is shared (as `flax.linen.Dropout`'s): e.g. `(1, 2)`
        drops whole channels of `(N, H, W, C)` maps.
    """
    x = _args.as_float_array(x, "x")
    number(rate, "rate", minimum=0.0, below=1.0)
    broadcast_dims = tuple(broadcast_dims)
    if not all(is_int(d) and -x.ndim <= d < x.ndim for d in broadcast_dims):
        raise ValueError(f"broadcast_dims must be axes of x (ndim {x.ndim}), got {broadcast_dims!r}")
    if deterministic or rate == 0:
        return x
    if key is None:
        raise ValueError("key must be a PRNG key when deterministic=False and rate > 0")
    broadcast = {d % x.ndim for d in broadcast_dims}
    mask_shape = tuple(1 if axis in broadcast else size for axis, size in enumerate(x.shape))
    keep = jax.random.bernoulli(key, 1.0 - rate, mask_shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def drop_path(
    x: ArrayLike, rate: float, *, key: jax.Array | None = None, deterministic: bool = False
) -> jax.Array:
    """Stochastic depth ("drop path", Huang et al., 2016): each example's `x` is zeroed with probability
    `rate` and kept scaled by 1/(1-rate) otherwise; applied to a residual branch before the addition, it
    drops the whole branch for that example (torchvision's `StochasticDepth(rate, "row")`).

    Args:
      x: `(N, ...)`: one draw per example.
      rate, key, deterministic: as for `dropout`.
    """
    x = _args.as_float_array(x, "x")
    return dropout(x, rate, key=key, deterministic=deterministic, broadcast_dims=range(1, x.ndim))


def batch_moments(x: ArrayLike, *, axis_name: Hashable | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance over every axis but the last.

    With `axis_name` (inside `pmap`/`shard_map`), the moments are those of the batch over all
    devices on that axis: the cross-device BatchNorm.

    Args:
      x: `(N, ..., C)`.

    Returns:
      `(mean, var)`, each `(C,)` in float32 or wider.
    """
    x = _args.as_float_array(x, "x")
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    # E[x^2] - E[x]^2, as Flax computes it: one pass over x (and one collective across devices) instead of
    # two; the two-pass form cost ResNet-20's train step 4% on CPU.
    count = x.size // x.shape[-1]
    mean, mean_of_squares = _cpu_paths.channel_sum(x) / count, _cpu_paths.channel_sum(jnp.square(x)) / count
    if axis_name is not None:
        mean, mean_of_squares = lax.pmean((mean, mean_of_squares), axis_name)
    return mean, jnp.maximum(mean_of_squares - jnp.square(mean), 0.0)


def batch_norm(
    x: ArrayLike,
    mean: ArrayLike,
    var: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    epsilon: float = 1e-5,
) -> jax.Array:
    """Normalises the last axis with given statistics: `(x - mean) / sqrt(var + eps) * scale + bias`.

    Args:
      x: `(..., C)`.
      mean, var, scale, bias: `(C,)`; scale and bias may be None.
    """
    x = _args.as_float_array(x, "x")
    channels = x.shape[-1]
    for name, value in (("mean", mean), ("var", var), ("scale", scale), ("bias", bias)):
        if value is not None and jnp.shape(value) != (channels,):
            raise ValueError(f"{name} must have shape (C,) = ({channels},), got {tuple(jnp.shape(value))}")
    multiplier = lax.rsqrt(jnp.asarray(var) + epsilon)
    if scale is not None:
        multiplier = multiplier * scale
    # Broadcast by `_cpu_paths`: on CPU the gradients wrt the (C,) vectors then sum on every core.
    per_channel = functools.partial(_cpu_paths.broadcast_channels, shape=x.shape)
    y = (x - per_channel(mean)) * per_channel(multiplier)
    if bias is not None:
        y = y + per_channel(bias)
    return y.astype(x.dtype)


def layer_norm(
    x: ArrayLike, scale: ArrayLike | None = None, bias: ArrayLike | None = None, *, epsilon: float = 1e-6
) -> jax.Array:
    """Normalises each position over its last axis (the channels): `(x - mean) / sqrt(var + eps) * scale
    + bias` with the mean and biased variance of that position's `C` values, as PyTorch's `LayerNorm(C)`
    on channels-last maps (and ConvNeXt's `LayerNorm2d` on channels-first ones).

    Args:
      x: `(..., C)`.
      scale, bias: `(C,)` or None.

    Returns:
      `x`'s shape and dtype; the statistics are computed in float32 or wider.
    """
    x = _args.as_float_array(x, "x")
    channels = x.shape[-1]
    for name, value in (("scale", scale), ("bias", bias)):
        if value is not None and jnp.shape(value) != (channels,):
            raise ValueError(f"{name} must have shape (C,) = ({channels},), got {tuple(jnp.shape(value))}")
    number(epsilon, "epsilon", minimum=0.0)
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(wide, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(wide - mean), axis=-1, keepdims=True)
    y = (wide - mean) * lax.rsqrt(var + epsilon)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)
