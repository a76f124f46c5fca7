"""Padding modes: what a convolution sees past the input's edges, PyTorch's `padding_mode`.

"zeros" hands the padding to the lowering (XLA pads with zeros on the fly); the other modes pad the input
first, with `jnp.pad`, and the lowering runs unpadded. Every mode is linear in `x`, so gradients and the
transposed convolution follow from autodiff.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcnn._validate import choice
from jaxcnn.functional import _args

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
_NUMPY_MODES = {"circular": "wrap", "reflect": "reflect", "replicate": "edge"}
# Flax's padding strings that pick a mode: its pads, `((K - 1) // 2, K // 2)` for a dilated window K.
_FLAX_MODES = {"CIRCULAR": "circular", "REFLECT": "reflect"}


def conv_pads(
    padding: _args.Padding,
    padding_mode: str,
    sizes: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[_args.Pairs, str]:
    """`(pads, mode)` of a convolution: the (low, high) pair per spatial dim and the padding mode, checked.

    `padding` takes every form of `_args.padding_pairs` and Flax's "CIRCULAR" and "REFLECT" (pads
    `((K - 1) // 2, K // 2)` for the dilated window K, in that mode: the output of size ceil(W / S)).
    """
    choice(padding_mode, "padding_mode", PADDING_MODES)
    flax_mode = _FLAX_MODES.get(padding.upper()) if isinstance(padding, str) else None
    if flax_mode is None:
        pads, mode = _args.padding_pairs(padding, sizes, window, stride, dilation), padding_mode
    elif padding_mode not in ("zeros", flax_mode):
        raise ValueError(
            f"padding={padding!r} pads in padding_mode {flax_mode!r}, "
            f"it cannot be combined with padding_mode={padding_mode!r}"
        )
    else:
        spans = [d * (f - 1) + 1 for f, d in zip(window, dilation)]
        pads, mode = tuple(((k - 1) // 2, k // 2) for k in spans), flax_mode
    _check_mode_pads(pads, sizes, mode)
    return pads, mode


def _check_mode_pads(pads: _args.Pairs, sizes: Sequence[int], mode: str) -> None:
    """PyTorch's limits: a reflection needs `pad < size`, a wrap at most once round (`pad <= size`)."""
    if mode not in ("reflect", "circular"):
        return
    for dim, ((lo, hi), size) in enumerate(zip(pads, sizes)):
        limit = size - 1 if mode == "reflect" else size
        if max(lo, hi) > limit:
            relation = "smaller than" if mode == "reflect" else "at most"
            raise ValueError(
                f"padding ({lo}, {hi}) in spatial dim {dim} must be {relation} the input size {size} "
                f"with padding_mode={mode!r}"
            )


def pad(x: jax.Array, pads: _args.Pairs, mode: str) -> jax.Array:
    """`x` `(N, *spatial, C)` padded in `mode` ("circular", "reflect" or "replicate")."""
    return jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=_NUMPY_MODES[mode])
