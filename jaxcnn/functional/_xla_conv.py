"""XLA's convolution in jaxcnn's layout: the reference lowering of every convolution, the only one off CPU,
and what the oneDNN primitive (`_onednn`) lowers to there. Its own module so that `_cpu_paths` (which picks
among the lowerings) and `_onednn` (which `_cpu_paths` imports) both import it without a circle."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax


def xla_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
    precision: lax.PrecisionLike,
) -> jax.Array:
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
