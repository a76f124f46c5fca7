"""EfficientNet-B0 (Tan and Le, 2019) in torchvision's layout: `efficientnet_b0`.

MBConv blocks: a 1x1 expansion (absent at ratio 1), a depthwise convolution, squeeze-and-excitation, and
a linear 1x1 projection, each convolution with BatchNorm and SiLU (the projection without); where the
shape is kept, the block's branch passes stochastic depth and is added to its input. Module names:
`stem`, `stage{s}_{j}` (torchvision's `features.{s}.{j}`) with `expand`, `depthwise`, `se` (`fc1`, `fc2`)
and `project`, `head`, `classifier`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import boolean, number
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    check_images,
    conv_before_norm,
    image_shape,
    last_at_each_resolution,
    outputs_of,
)
from jaxcnn.models.mobilenet import ConvBN, make_divisible
from jaxcnn.models.registry import register

# (expansion, kernel, first stride, output channels, blocks) of each stage: torchvision's B0 setting.
B0_SETTING = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
# torchvision's Linear init: uniform(-1/sqrt(out_features), 1/sqrt(out_features)).
efficientnet_linear_init = nnx.initializers.variance_scaling(1 / 3, "fan_out", "uniform")


class SqueezeExcitation(nnx.Module):
    """Channel gates from the global average: `x * sigmoid(fc2(silu(fc1(mean(x)))))`, `fc1` and `fc2` 1x1
    convolutions with bias (torchvision's `SqueezeExcitation`). `(N, H, W, C)` -> `(N, H, W, C)`."""

    def __init__(self, features: int, squeeze: int, *, dtype: Any, impl: str, rngs: nnx.Rngs):
        conv = functools.partial(L.Conv, kernel_size=1, dtype=dtype, impl=impl, rngs=rngs)
        self.pool = L.AdaptiveAvgPool(1)
        self.fc1, self.fc2 = conv(features, squeeze), conv(squeeze, features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * jax.nn.sigmoid(self.fc2(jax.nn.silu(self.fc1(self.pool(x)))))


class MBConv(nnx.Module):
    """`expand` (1x1 to `in_features * expand_ratio` channels), `depthwise` (`kernel_size`, `stride`), `se`
    (squeezing to `in_features // 4`), `project` (1x1 to `features`, linear); plus the input, through
    stochastic depth at rate `drop_path`, when `stride == 1` and `in_features == features`.

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
        *,
        conv: Callable,
        norm: Callable,
        dtype: Any,
        impl: str,
        rngs: nnx.Rngs,
    ):
        conv_bn = functools.partial(ConvBN, conv=conv, norm=norm, activation=jax.nn.silu)
        hidden = make_divisible(in_features * expand_ratio)
        self.expand = conv_bn(in_features, hidden, kernel_size=1) if hidden != in_features else None
        self.depthwise = conv_bn(hidden, hidden, kernel_size, stride, groups=hidden)
        self.se = SqueezeExcitation(hidden, max(1, in_features // 4), dtype=dtype, impl=impl, rngs=rngs)
        self.project = conv_bn(hidden, features, kernel_size=1, activation=None)
        self.residual = stride == 1 and in_features == features
        self.drop_path = L.DropPath(drop_path, rngs=rngs) if self.residual else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.se(self.depthwise(y)))
        return x + self.drop_path(y) if self.drop_path is not None else y  # residual: it has a drop_path


class EfficientNet(ZooModel):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    A 3x3/2 stem to 32 channels (BN, SiLU), seven stages of MBConv blocks (`setting`), a 1x1 head to
    1280 channels, global average pooling, dropout and the dense `classifier`. Block i of the 16 drops
    its residual branch with probability `stochastic_depth * i / 16` in training (torchvision's rule).

    Any input of at least 1x1 pixels (every window is padded); 224x224 for B0, where it has 5,288,548
    parameters at 1000 classes, as torchvision's. Feature maps: the last output at each resolution, the
    head's last (strides 2, 4, 8, 16, 32).

    Args:
      remat: recompute each block's (and the stem's and head's) activations in the backward pass instead of
        keeping them (`nnx.remat`): less memory, the same gradients.
    """

    head_name = "classifier"

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        setting: Sequence[tuple[int, int, int, int, int]] = B0_SETTING,
        stem_features: int = 32,
        head_features: int = 1280,
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        number(stochastic_depth, "stochastic_depth", minimum=0.0, below=1.0)
        self.input_shape, self.remat = image_shape(input_shape, "EfficientNet"), boolean(remat, "remat")
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        conv_bn = functools.partial(ConvBN, conv=conv, norm=norm, activation=jax.nn.silu)
        self.stem = conv_bn(self.input_shape[-1], stem_features, stride=2)
        blocks: list[tuple[str, nnx.Module]] = []
        total, strides, width = sum(stage[-1] for stage in setting), [("stem", 2)], stem_features
        for s, (expand_ratio, kernel, first_stride, features, repeats) in enumerate(setting, start=1):
            for j in range(repeats):
                stride = first_stride if j == 0 else 1
                block = MBConv(
                    width, features, kernel, stride, expand_ratio, stochastic_depth * len(blocks) / total,
                    conv=conv, norm=norm, dtype=dtype, impl=impl, rngs=rngs,
                )  # fmt: skip
                blocks.append((f"stage{s}_{j}", block))
                strides.append((blocks[-1][0], stride))
                width = features
        self.block_names = add_layers(self, blocks)
        self.head = conv_bn(width, head_features, kernel_size=1)
        self.stage_ends = last_at_each_resolution([*strides, ("head", 1)])
        self.pool, self.dropout = L.GlobalAvgPool(), L.Dropout(dropout, rngs=rngs)
        self.classifier = L.Dense(
            head_features, num_classes, kernel_init=efficientnet_linear_init, dtype=dtype, rngs=rngs
        )

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "EfficientNet", min_size=1)
        return outputs_of(self, x, ("stem", *self.block_names, "head"), self.stage_ends, self.remat)

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.dropout(self.pool(x))).astype(jnp.float32)


EfficientNetB0 = register("efficientnet_b0", EfficientNet)
