"""`compact`: a small BatchNorm CNN (< 100,000 parameters) for Fashion-MNIST-sized images."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import ZooModel, add_layers, check_images, image_shape, pool_impl
from jaxcnn.models.registry import register


@register("compact")
class CompactCNN(ZooModel):
    """Stages of two 3x3 conv-BN-ReLU blocks, each stage but the last followed by 2x2 max
    pooling; then global average pooling, dropout and one dense layer.

    With the default `features=(24, 40, 64)` it has 89,506 parameters (512 of them BatchNorm
    scales and biases), whatever the input size; stage widths are an argument. Inputs at least
    `2 ** (len(features) - 1)` pixels on a side. Modules: `conv{k}`, `bn{k}` for the k-th
    convolution (from 1), `pool{s}` after stage s, `dropout`, `fc`. Feature maps: each stage's (strides 1,
    2, 4 with the default widths).
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
        self.input_shape = image_shape(input_shape, "compact", min_size=self.min_size)
        channels = self.input_shape[-1]
        conv = partial(L.Conv, use_bias=False, dtype=dtype, impl=impl, rngs=rngs)
        norm = partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        layers: list[tuple[str, nnx.Module]] = []
        k, width_in = 0, channels
        for stage, width in enumerate(features):
            if stage:
                layers.append((f"pool{stage}", L.MaxPool(2, impl=pool_impl(impl))))
            for _ in range(2):
                k += 1
                layers += [(f"conv{k}", conv(width_in, width, 3)), (f"bn{k}", norm(width))]
                width_in = width
        self.layer_names = add_layers(self, layers)
        self.pool = L.GlobalAvgPool()
        self.dropout = L.Dropout(dropout, rngs=rngs)
        self.fc = L.Dense(features[-1], num_classes, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "compact", min_size=self.min_size)
        maps = []
        for name in self.layer_names:
            if name.startswith("pool"):  # a stage ends
                maps.append(x)
            x = getattr(self, name)(x)
            if name.startswith("bn"):
                x = jax.nn.relu(x)
        return [*maps, x]

    def forward_head(self, x: jax.Array) -> jax.Array:
        x = self.dropout(self.pool(x))
        return self.fc(x).astype(jnp.float32)
