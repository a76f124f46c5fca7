"""MobileNetV2 (Sandler et al., 2018) in torchvision's layout: `mobilenet_v2`.

Inverted residual blocks: a 1x1 expansion, a 3x3 depthwise convolution (`groups` = channels),
both with BatchNorm and ReLU6, then a linear 1x1 projection with BatchNorm; the input is added
back when the shape is kept. Module names: `stem`, `block1`..`block17` (torchvision's
`features.1`..`features.17`), `head`, `classifier`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import batch_norm, check_images, conv_before_norm, dense_kernel_init
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


class ConvBN(nn.Module):
    """Convolution (no bias, padding `kernel_size // 2`), BatchNorm, then ReLU6 unless `relu6=False`;
    children `conv`, `bn` (torchvision's `Conv2dNormActivation`).

    `(N, H, W, C)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1
    relu6: bool = True
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = conv_before_norm(
            self, self.features, self.kernel_size, self.stride, groups=self.groups, name="conv"
        )(x)
        x = batch_norm(self, train, name="bn")(x)
        return nn.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    """`expand` (1x1 to `round(C * expand_ratio)` channels; absent when the ratio is 1),
    `depthwise` (3x3, `stride`, one group per channel), `project` (1x1 to `features`, linear),
    plus the input when `stride == 1` and `C == features`.

    `(N, H, W, C)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    features: int
    stride: int = 1
    expand_ratio: int = 6
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = lambda features, name, **kwargs: ConvBN(
            features, axis_name=self.axis_name, dtype=self.dtype, name=name, **kwargs
        )
        hidden = int(round(x.shape[-1] * self.expand_ratio))
        y = conv(hidden, "expand", kernel_size=1)(x, train) if self.expand_ratio != 1 else x
        y = conv(hidden, "depthwise", stride=self.stride, groups=hidden)(y, train)
        y = conv(self.features, "project", kernel_size=1, relu6=False)(y, train)
        return x + y if self.stride == 1 and x.shape[-1] == self.features else y


@register("mobilenet_v2")
class MobileNetV2(nn.Module):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    A 3x3/2 stem to 32 channels, 17 inverted residual blocks (`INVERTED_RESIDUAL_SETTING`), a
    1x1 head to 1280 channels, global average pooling, dropout and a dense classifier.

    Attributes:
      width_multiplier: scales every width (the paper's alpha), rounded to multiples of 8 by
        `make_divisible`; the head keeps 1280 channels unless the multiplier exceeds 1.
      dropout: rate before the classifier (0.2 as torchvision's).

    Any input of at least 1x1 pixels (every window is padded); 224x224 in the paper, where it
    has 3,504,872 parameters at 1000 classes, as torchvision's.
    """

    num_classes: int = 1000
    width_multiplier: float = 1.0
    dropout: float = 0.2
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "MobileNetV2", min_size=1)
        alpha = self.width_multiplier
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"width_multiplier must be a positive number, got {alpha!r}")
        norm_args = dict(axis_name=self.axis_name, dtype=self.dtype)
        x = ConvBN(make_divisible(32 * alpha), stride=2, name="stem", **norm_args)(x, train)
        block = 0
        for expand_ratio, width, repeats, stride in INVERTED_RESIDUAL_SETTING:
            for i in range(repeats):
                block += 1
                x = InvertedResidual(
                    make_divisible(width * alpha),
                    stride=stride if i == 0 else 1,
                    expand_ratio=expand_ratio,
                    name=f"block{block}",
                    **norm_args,
                )(x, train)
        x = ConvBN(make_divisible(1280 * max(1.0, alpha)), kernel_size=1, name="head", **norm_args)(x, train)
        x = layers.Dropout(self.dropout)(layers.GlobalAvgPool()(x), deterministic=not train)
        x = layers.Dense(
            self.num_classes, kernel_init=dense_kernel_init, dtype=self.dtype, name="classifier"
        )(x)
        return x.astype(jnp.float32)
