"""The CNN of Flax's MNIST example (`examples/mnist/train.py`)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import check_images
from jaxcnn.models.registry import register


@register("simple_cnn")
class SimpleCNN(nn.Module):
    """conv 3x3x32 - avg pool - conv 3x3x64 - avg pool - dense 256 - dense classes.

    824,458 parameters on 28x28x1 inputs, like Flax's example. Inputs at least 4x4.
    """

    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "simple_cnn", min_size=4)
        for features in (32, 64):
            x = layers.AvgPool(2)(nn.relu(layers.Conv(features, 3, dtype=self.dtype)(x)))
        x = layers.Flatten()(x)
        x = nn.relu(layers.Dense(256, dtype=self.dtype)(x))
        return layers.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
