"""MobileNetV2 (Sandler et al., 2018) in torchvision's layout: `mobilenet_v2`.

Inverted residual blocks: a 1x1 expansion, a 3x3 depthwise convolution (`groups` = channels),
both with BatchNorm and ReLU6, then a linear 1x1 projection with BatchNorm; the input is added
back when the shape is kept. Module names: `stem`, `block1`..`block17` (torchvision's
`features.1`..`features.17`), `head`, `classifier`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import boolean, integer, is_number
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    check_images,
    conv_before_norm,
    dense_kernel_init,
    image_shape,
    last_at_each_resolution,
    outputs_of,
)
from jaxcnn.models.registry import register

# (expansion t, width c, blocks n, first stride s) of each stage: table 2 of the paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The multiple of `divisor` nearest to `value`, at least `divisor` and never below 90% of
    `value` (torchvision's `_make_divisible`, from the TensorFlow reference implementation)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nnx.Module):
    """Convolution (no bias, padding `kernel_size // 2`), BatchNorm, then `activation` (ReLU6; None:
    linear); children `conv`, `bn` (torchvision's `Conv2dNormActivation`).

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[jax.Array], jax.Array] | None = jax.nn.relu6,
        *,
        conv: Callable,
        norm: Callable,
    ):
        self.conv = conv(in_features, features, kernel_size, stride, groups=groups)
        self.bn, self.activation = norm(features), activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return x if self.activation is None else self.activation(x)


class InvertedResidual(nnx.Module):
    """`expand` (1x1 to `round(in_features * expand_ratio)` channels; absent when the ratio is 1),
    `depthwise` (3x3, `stride`, one group per channel), `project` (1x1 to `features`, linear),
    plus the input when `stride == 1` and `in_features == features`.

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int = 1,
        expand_ratio: int = 6,
        *,
        conv: Callable,
        norm: Callable,
    ):
        conv_bn = functools.partial(ConvBN, conv=conv, norm=norm)
        hidden = int(round(in_features * expand_ratio))
        self.expand = conv_bn(in_features, hidden, kernel_size=1) if expand_ratio != 1 else None
        self.depthwise = conv_bn(hidden, hidden, stride=stride, groups=hidden)
        self.project = conv_bn(hidden, features, kernel_size=1, activation=None)
        self.residual = stride == 1 and in_features == features

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


@register("mobilenet_v2")
class MobileNetV2(ZooModel):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    A 3x3/2 stem to 32 channels, 17 inverted residual blocks (`inverted_residual_setting`), a
    1x1 head to 1280 channels, global average pooling, dropout and a dense classifier.

    Args:
      width_multiplier: scales every width (the paper's alpha), rounded to multiples of 8 by
        `make_divisible`; the head keeps 1280 channels unless the multiplier exceeds 1.
      inverted_residual_setting: the stages, as torchvision's argument of that name: one
        `(expand_ratio t, channels c, repeats n, first stride s)` per stage; the paper's by default.
      dropout: rate before the classifier (0.2 as torchvision's).
      remat: recompute each block's (and the stem's and head's) activations in the backward pass instead of
        keeping them (`nnx.remat`): less memory, the same gradients.

    Any input of at least 1x1 pixels (every window is padded); 224x224 in the paper, where it
    has 3,504,872 parameters at 1000 classes, as torchvision's. Feature maps: the last output at each
    resolution, the head's last (strides 2, 4, 8, 16, 32).
    """

    head_name = "classifier"

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        width_multiplier: float = 1.0,
        inverted_residual_setting: Sequence[Sequence[int]] = INVERTED_RESIDUAL_SETTING,
        dropout: float = 0.2,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        alpha = width_multiplier
        if not (is_number(alpha) and alpha > 0):
            raise ValueError(f"width_multiplier must be a positive number, got {alpha!r}")
        stages = inverted_residual_setting
        if not (
            isinstance(stages, Sequence)
            and stages
            and all(isinstance(stage, Sequence) and len(stage) == 4 for stage in stages)
        ):
            raise ValueError(
                "inverted_residual_setting must be a non-empty sequence of (t, c, n, s) stages, got "
                f"{stages!r}"
            )
        for stage in stages:
            for value, name in zip(stage, ("expand ratio t", "channels c", "repeats n", "stride s")):
                integer(value, f"inverted_residual_setting's {name}", minimum=1)
        self.input_shape, self.remat = image_shape(input_shape, "MobileNetV2"), boolean(remat, "remat")
        channels = self.input_shape[-1]
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        conv_bn = functools.partial(ConvBN, conv=conv, norm=norm)
        width = make_divisible(32 * alpha)
        self.stem = conv_bn(channels, width, stride=2)
        blocks: list[tuple[str, nnx.Module]] = []
        strides = [("stem", 2)]
        for expand_ratio, stage_width, repeats, stride in stages:
            for i in range(repeats):
                out = make_divisible(stage_width * alpha)
                block = InvertedResidual(
                    width, out, stride if i == 0 else 1, expand_ratio, conv=conv, norm=norm
                )
                blocks.append((f"block{len(blocks) + 1}", block))
                strides.append((blocks[-1][0], stride if i == 0 else 1))
                width = out
        self.block_names = add_layers(self, blocks)
        self.stage_ends = last_at_each_resolution([*strides, ("head", 1)])
        head = make_divisible(1280 * max(1.0, alpha))
        self.head = conv_bn(width, head, kernel_size=1)
        self.pool, self.dropout = L.GlobalAvgPool(), L.Dropout(dropout, rngs=rngs)
        self.classifier = L.Dense(head, num_classes, kernel_init=dense_kernel_init, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "MobileNetV2", min_size=1)
        return outputs_of(self, x, ("stem", *self.block_names, "head"), self.stage_ends, self.remat)

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.dropout(self.pool(x))).astype(jnp.float32)
