"""The CNN of Flax's MNIST example (`examples/mnist/train.py`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import ZooModel, check_images, image_shape, output_shape
from jaxcnn.models.registry import register


@register("simple_cnn")
class SimpleCNN(ZooModel):
    """conv 3x3x32 - avg pool - conv 3x3x64 - avg pool - dense 256 - dense classes.

    824,458 parameters on 28x28x1 inputs, like Flax's example. Inputs at least 4x4; `input_shape`
    sizes the first dense layer. Feature maps: each conv-pool stage's (strides 2, 4).
    """

    head_name = "fc2"

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.input_shape = image_shape(input_shape, "simple_cnn", min_size=4)
        channels = self.input_shape[-1]
        conv = partial(L.Conv, dtype=dtype, impl=impl, rngs=rngs)
        self.conv1, self.pool1 = conv(channels, 32, 3), L.AvgPool(2)
        self.conv2, self.pool2 = conv(32, 64, 3), L.AvgPool(2)
        self.flatten = L.Flatten()
        flat = math.prod(output_shape(lambda x: self.feature_maps(x)[-1], input_shape))
        self.fc1 = L.Dense(flat, 256, dtype=dtype, rngs=rngs)
        self.fc2 = L.Dense(256, num_classes, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "simple_cnn", min_size=4)
        first = self.pool1(jax.nn.relu(self.conv1(x)))
        return [first, self.pool2(jax.nn.relu(self.conv2(first)))]

    def forward_head(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.fc1(self.flatten(x)))
        return self.fc2(x).astype(jnp.float32)
