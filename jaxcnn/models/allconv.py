"""The all-convolutional net (Springenberg et al., 2015, "Striving for Simplicity", All-CNN-C)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import check_images
from jaxcnn.models.registry import register


@register("allconv")
class AllConvNet(nn.Module):
    """All-CNN-C: every pooling layer replaced by a 3x3 convolution with stride 2.

    Two stages of [3x3, 3x3, 3x3 stride 2] convolutions (`features` channels each), then
    3x3 valid, 1x1, and a 1x1 convolution to `num_classes` maps averaged by global pooling:
    no dense layer at all. Dropout on the input and after each downsampling, as in the paper.
    The paper's widths are (96, 192). Inputs at least 9x9.
    """

    num_classes: int = 10
    features: tuple[int, int] = (96, 192)
    input_dropout: float = 0.2
    dropout: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "allconv", min_size=9)

        def conv(features, kernel, stride=1, padding="SAME"):
            return layers.Conv(features, kernel, stride=stride, padding=padding, dtype=self.dtype)

        x = layers.Dropout(self.input_dropout)(x, deterministic=not train)
        for features in self.features:
            x = nn.relu(conv(features, 3)(x))
            x = nn.relu(conv(features, 3)(x))
            x = nn.relu(conv(features, 3, stride=2)(x))
            x = layers.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(conv(self.features[-1], 3, padding="VALID")(x))
        x = nn.relu(conv(self.features[-1], 1)(x))
        x = conv(self.num_classes, 1)(x)
        return layers.GlobalAvgPool()(x).astype(jnp.float32)
