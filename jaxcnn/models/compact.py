"""`compact`: a small BatchNorm CNN (< 100,000 parameters) for Fashion-MNIST-sized images."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import add_layers, check_images, image_shape
from jaxcnn.models.registry import register


@register("compact")
class CompactCNN(nnx.Module):
    """Stages of two 3x3 conv-BN-ReLU blocks, each stage but the last followed by 2x2 max
    pooling; then global average pooling, dropout and one dense layer.

    With the default `features=(24, 40, 64)` it has 89,506 parameters (512 of them BatchNorm
    scales and biases), whatever the input size; stage widths are an argument. Inputs at least
    `2 ** (len(features) - 1)` pixels on a side. Modules: `conv{k}`, `bn{k}` for the k-th
    convolution (from 1), `pool{s}` after stage s, `dropout`, `fc`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        features: Sequence[int] = (24, 40, 64),
        dropout: float = 0.1,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.min_size = 2 ** (len(features) - 1)
        channels = image_shape(input_shape, "compact", min_size=self.min_size)[-1]
        conv = partial(L.Conv, use_bias=False, dtype=dtype, impl=impl, rngs=rngs)
        norm = partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        layers, k, width_in = [], 0, channels
        for stage, width in enumerate(features):
            if stage:
                layers.append((f"pool{stage}", L.MaxPool(2, impl=impl)))
            for _ in range(2):
                k += 1
                layers += [(f"conv{k}", conv(width_in, width, 3)), (f"bn{k}", norm(width))]
                width_in = width
        self.layer_names = add_layers(self, layers)
        self.pool = L.GlobalAvgPool()
        self.dropout = L.Dropout(dropout, rngs=rngs)
        self.fc = L.Dense(features[-1], num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, "compact", min_size=self.min_size)
        for name in self.layer_names:
            x = getattr(self, name)(x)
            if name.startswith("bn"):
                x = jax.nn.relu(x)
        x = self.dropout(self.pool(x))
        return self.fc(x).astype(jnp.float32)
