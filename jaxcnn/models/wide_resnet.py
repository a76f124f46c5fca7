"""Wide residual networks for CIFAR (Zagoruyko and Komodakis, 2016): wrn16_4, wrn28_10, wrn40_4.

WRN-d-k: a 3x3 convolution to 16 channels, three groups of (d - 4) / 6 pre-activation basic blocks
16k, 32k and 64k wide (strides 1, 2, 2), BN-ReLU, global average pooling and a dense layer. A block is
BN-ReLU-3x3 conv-(dropout)-BN-ReLU-3x3 conv plus the input, or, where the shape changes, plus a 1x1
convolution of the first activation (the authors' code). Convolutions have no bias.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import boolean, integer, is_int
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    call_block,
    check_images,
    conv_before_norm,
    image_shape,
)
from jaxcnn.models.registry import register


class WideBasicBlock(nnx.Module):
    """Pre-activation basic block: `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride),
    features)`; `shortcut` (a 1x1 convolution) where the shape changes."""

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int,
        dropout: float,
        *,
        conv: Callable,
        norm: Callable,
        rngs: nnx.Rngs,
    ):
        self.bn1, self.conv1 = norm(in_features), conv(in_features, features, 3, stride)
        self.bn2, self.conv2 = norm(features), conv(features, features, 3)
        self.dropout = L.Dropout(dropout, rngs=rngs)
        change = stride != 1 or in_features != features
        self.shortcut = conv(in_features, features, 1, stride) if change else None

    def __call__(self, x: jax.Array) -> jax.Array:
        activated = jax.nn.relu(self.bn1(x))
        y = self.dropout(jax.nn.relu(self.bn2(self.conv1(activated))))
        return self.conv2(y) + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(ZooModel):
    """WRN-`depth`-`width` for 32x32 images: `(N, H, W, C)` -> logits `(N, num_classes)`.

    At 10 classes wrn16_4 has 2,748,890 parameters, wrn40_4 8,949,210 and wrn28_10 36,479,194 (the
    paper's table 1: 2.7M, 8.9M, 36.5M). Any input of at least 1x1 pixels (every convolution is padded).
    Feature maps: each group's, the last after BN-ReLU (strides 1, 2, 4).

    Args:
      depth: 6n + 4 (16, 22, 28, 40, ...): n blocks per group.
      width: the widening factor k.
      dropout: between a block's convolutions (0.3 in some of the paper's runs).
      remat: recompute each block's activations in the backward pass instead of keeping them
        (`nnx.remat`): less memory, the same gradients.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        dropout: float = 0.0,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if not is_int(depth) or depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"depth must be 6n + 4 for an int n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}"
            )
        integer(width, "width", minimum=1)
        self.input_shape, self.remat = image_shape(input_shape, "WideResNet"), boolean(remat, "remat")
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.conv1 = conv(self.input_shape[-1], 16, 3)
        blocks, in_features, self.group_size = [], 16, (depth - 4) // 6
        for g, features in enumerate((16 * width, 32 * width, 64 * width), start=1):
            for j in range(self.group_size):
                stride = 2 if g > 1 and j == 0 else 1
                block = WideBasicBlock(
                    in_features, features, stride, dropout, conv=conv, norm=norm, rngs=rngs
                )
                blocks.append((f"layer{g}_{j}", block))
                in_features = features
        self.block_names = add_layers(self, blocks)
        self.bn, self.pool = norm(in_features), L.GlobalAvgPool()
        self.fc = L.Dense(in_features, num_classes, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "WideResNet", min_size=1)
        x, maps = self.conv1(x), []
        for i, name in enumerate(self.block_names, start=1):
            x = call_block(getattr(self, name), x, self.remat)
            if i % self.group_size == 0:
                maps.append(x)
        maps[-1] = jax.nn.relu(self.bn(maps[-1]))
        return maps

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.fc(self.pool(x)).astype(jnp.float32)


WRN16_4 = register("wrn16_4", functools.partial(WideResNet, depth=16, width=4))
WRN28_10 = register("wrn28_10", functools.partial(WideResNet, depth=28, width=10))
WRN40_4 = register("wrn40_4", functools.partial(WideResNet, depth=40, width=4))
