"""`compact`: a small BatchNorm CNN (< 100,000 parameters) for Fashion-MNIST-sized images."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import check_images
from jaxcnn.models.registry import register


@register("compact")
class CompactCNN(nn.Module):
    """Stages of two 3x3 conv-BN-ReLU blocks, each stage but the last followed by 2x2 max
    pooling; then global average pooling, dropout and one dense layer.

    With the default `features=(24, 40, 64)` it has 89,506 parameters (512 of them BatchNorm
    scales and biases), whatever the input size; stage widths are an argument. Inputs at least
    `2 ** (len(features) - 1)` pixels on a side.
    """

    num_classes: int = 10
    features: tuple[int, ...] = (24, 40, 64)
    dropout: float = 0.1
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "compact", min_size=2 ** (len(self.features) - 1))
        for stage, features in enumerate(self.features):
            if stage:
                x = layers.MaxPool(2)(x)
            for _ in range(2):
                x = layers.Conv(features, 3, use_bias=False, dtype=self.dtype)(x)
                x = layers.BatchNorm(
                    use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype
                )(x)
                x = nn.relu(x)
        x = layers.GlobalAvgPool()(x)
        x = layers.Dropout(self.dropout)(x, deterministic=not train)
        return layers.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
